import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from rsuper.atomic import atomic_dir, atomic_path, write_json_atomic, write_text_atomic
from rsuper.io import Volume, save_nifti


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(".csv") and tmp.parent == target.parent
        tmp.write_text("a,b\n")
    assert target.read_text() == "a,b\n"

    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "a,b\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.csv"]


def test_write_json_atomic(tmp_path):
    write_json_atomic(tmp_path / "x.json", {"spacing_mm": [1.0, 1.0, 2.5]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"spacing_mm": [1.0, 1.0, 2.5]}


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_get_the_modes_of_a_plain_write(tmp_path, umask):
    """Issue #26 item 9: 0666 & ~umask, not tempfile's 0600."""
    write_text_atomic(tmp_path / "a" / "plain.txt", "x")
    save_nifti(Volume(np.zeros((2, 2, 2), np.uint8), np.eye(4)), tmp_path / "a" / "mask.nii.gz")
    (tmp_path / "a" / "reference.txt").write_text("x")
    assert _mode(tmp_path / "a" / "reference.txt") == 0o666 & ~umask
    for name in ("plain.txt", "mask.nii.gz"):
        assert _mode(tmp_path / "a" / name) == 0o666 & ~umask, name
    assert _mode(tmp_path / "a") == 0o777 & ~umask


def test_atomic_dir_gets_the_modes_of_mkdir_and_replaces_only_on_success(tmp_path, umask):
    target = tmp_path / "case"
    with atomic_dir(target) as tmp:
        (tmp / "ct.npy").write_bytes(b"1")
    assert _mode(target) == 0o777 & ~umask and (target / "ct.npy").read_bytes() == b"1"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "ct.npy").write_bytes(b"half")
            raise RuntimeError("crash")
    assert (target / "ct.npy").read_bytes() == b"1" and sorted(p.name for p in tmp_path.iterdir()) == ["case"]
    with atomic_dir(target) as tmp:
        (tmp / "other.npy").write_bytes(b"2")
    assert sorted(p.name for p in target.iterdir()) == ["other.npy"]


def test_prepared_cache_folders_get_the_modes_of_mkdir(tmp_path, umask):
    from rsuper.data.preprocess import prepare_dataset

    ct = np.full((8, 8, 8), -1000, np.int16)
    ct[2:6, 2:6, 2:6] = 300
    save_nifti(Volume(ct, np.eye(4)), tmp_path / "data" / "c1" / "ct.nii.gz")
    save_nifti(Volume((ct > 0).astype(np.uint8), np.eye(4)), tmp_path / "data" / "c1" / "segmentations" / "liver.nii.gz")
    assert prepare_dataset(tmp_path / "data", tmp_path / "cache", 2.0).prepared == ["c1"]
    case = tmp_path / "cache" / "c1"
    for folder in (case, case / "masks"):
        assert _mode(folder) == 0o777 & ~umask, folder
    for file in (case / "ct.npy", case / "meta.json", case / "masks" / "liver.npy", tmp_path / "cache" / "manifest.json"):
        assert _mode(file) == 0o666 & ~umask, file


def test_checkpoints_and_tables_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_text_atomic(tmp_path / "table.csv", "a\n")
    assert events == [("fsync", "file"), ("replace", "table.csv"), ("fsync", "dir")]
    events.clear()
    from rsuper.models.checkpoint import make_payload, save_checkpoint

    save_checkpoint(tmp_path / "last.pt", make_payload("dynunet_small", 1, ["liver"], spacing_mm=(1.0, 1.0, 1.0),
                                                       patch_size=(16, 16, 16), state_dict={}))
    assert events == [("fsync", "file"), ("replace", "last.pt"), ("fsync", "dir")]
