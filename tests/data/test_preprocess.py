"""`rsuper prepare` and the cache reader: geometry, resampling, resume after interruption, mmap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rsuper.cli import app
from rsuper.data.preprocess import load_cached_case, load_manifest, parse_spacing, prepare_dataset
from rsuper.io import CT_NORMALISATION, Volume, normalize_ct, resample_to_grid, save_nifti

runner = CliRunner()
# LPS-oriented, anisotropic grid: (2, 2, 4) mm.
AFFINE = np.array([[-2.0, 0, 0, 40.0], [0, -2.0, 0, 30.0], [0, 0, 4.0, -60.0], [0, 0, 0, 1]])
SHAPE = (32, 28, 12)


def _write_case(root, case_id, seed):
    rng = np.random.default_rng(seed)
    ct = np.full(SHAPE, -1000, np.int16)
    ct[4:28, 4:24, 2:10] = rng.normal(40, 10, (24, 20, 8)).astype(np.int16)
    ct[29:31, 10:14, 4:8] = 400  # a vertebra: without bone (max < 100 HU) the CT would not pass as HU
    save_nifti(Volume(ct, AFFINE), root / case_id / "ct.nii.gz")
    liver = np.zeros(SHAPE, np.uint8)
    liver[6:14, 6:16, 3:9] = 1  # array axis 0 points Left in LPS
    save_nifti(Volume(liver, AFFINE), root / case_id / "segmentations" / "liver.nii.gz")


def _dataset(tmp_path, n=3):
    root = tmp_path / "data"
    for i in range(n):
        _write_case(root, f"case_{i}", i)
    return root


def test_parse_spacing():
    assert parse_spacing("2.5") == (2.5, 2.5, 2.5)
    assert parse_spacing("1,1,3") == (1.0, 1.0, 3.0)
    assert parse_spacing([1, 2, 3]) == (1.0, 2.0, 3.0)
    for bad in ("1,2", "0", "a", "-1"):
        with pytest.raises(ValueError):
            parse_spacing(bad)


def test_cache_contents_geometry_and_mmap(tmp_path):
    root = _dataset(tmp_path, n=1)
    organs = tmp_path / "organs"
    spleen = np.zeros(SHAPE, np.uint8)
    spleen[20:26, 10:14, 4:8] = 1
    save_nifti(Volume(spleen, AFFINE), organs / "case_0" / "segmentations" / "spleen.nii.gz")
    cache = tmp_path / "cache"
    result = prepare_dataset(root, cache, "1,1,2", masks_dirs=[organs])
    assert result.prepared == ["case_0"] and not result.failed
    manifest = load_manifest(cache)
    assert manifest["spacing_mm"] == [1.0, 1.0, 2.0]
    assert manifest["orientation"] == "RAS"
    assert manifest["normalisation"] == CT_NORMALISATION
    entry = manifest["cases"]["case_0"]
    assert entry["dir"] == "case_0" and entry["classes"] == ["liver", "spleen"]
    assert entry["shape"] == [64, 56, 24]

    case = load_cached_case(cache, "case_0", mmap=True)
    assert isinstance(case.image, np.memmap) and all(isinstance(m, np.memmap) for m in case.masks.values())
    assert case.image.dtype == np.float32 and case.image.shape == (64, 56, 24)
    assert case.masks["liver"].dtype == np.uint8 and set(np.unique(case.masks["liver"])) == {0, 1}
    assert case.spacing_mm == (1.0, 1.0, 2.0)
    assert case.image.min() >= -1 and case.image.max() <= 1
    np.testing.assert_allclose(case.image[0, 0, 0], normalize_ct(np.array(-1000.0)), atol=1e-6)
    # canonical RAS: voxel (0,0,0) of the cache is the world point of the original's most right/posterior/inferior voxel
    np.testing.assert_allclose(case.affine[:3, :3], np.diag([1.0, 1.0, 2.0]))
    np.testing.assert_allclose(case.affine[:3, 3], AFFINE[:3, :3] @ [31, 27, 0] + AFFINE[:3, 3])
    # the liver keeps its physical volume (nearest neighbour, 2x2x4 -> 1x1x2 mm: exact upsampling)
    assert case.masks["liver"].sum() * 2.0 == pytest.approx(8 * 10 * 6 * 16.0)
    meta = case.meta
    assert meta["original"]["shape"] == list(SHAPE) and meta["original"]["orientation"] == "LPS"
    np.testing.assert_allclose(meta["original"]["affine"], AFFINE)
    assert meta["sources"]["masks"]["spleen"]["path"].endswith("organs/case_0/segmentations/spleen.nii.gz")
    # back onto the original LPS grid through the affines gives the original mask exactly
    back = resample_to_grid(Volume(np.asarray(case.masks["liver"]), case.affine), SHAPE, AFFINE, order=0)
    original = np.zeros(SHAPE, np.uint8)
    original[6:14, 6:16, 3:9] = 1
    np.testing.assert_array_equal(back.array, original)
    plain = load_cached_case(cache, "case_0", mmap=False)
    assert not isinstance(plain.image, np.memmap)
    with pytest.raises(FileNotFoundError, match="case_9"):
        load_cached_case(cache, "case_9")


def test_interrupted_run_resumes_without_redoing_finished_cases(tmp_path):
    root = _dataset(tmp_path, n=3)
    cache = tmp_path / "cache"

    class Interrupt(Exception):
        pass

    def stop_after_first(case_id, status):
        raise Interrupt(case_id)

    with pytest.raises(Interrupt):
        prepare_dataset(root, cache, 2.0, on_case=stop_after_first)
    assert sorted(load_manifest(cache)["cases"]) == ["case_0"]
    first_mtime = (cache / "case_0" / "ct.npy").stat().st_mtime_ns

    statuses = {}
    result = prepare_dataset(root, cache, 2.0, on_case=lambda c, s: statuses.__setitem__(c, s))
    assert result.skipped == ["case_0"] and sorted(result.prepared) == ["case_1", "case_2"]
    assert statuses == {"case_0": "skipped", "case_1": "prepared", "case_2": "prepared"}
    assert (cache / "case_0" / "ct.npy").stat().st_mtime_ns == first_mtime
    assert sorted(load_manifest(cache)["cases"]) == ["case_0", "case_1", "case_2"]
    assert not list(cache.glob(".partial-*"))

    # a changed source file or another spacing invalidates the cached case
    _write_case(root, "case_1", seed=99)
    result = prepare_dataset(root, cache, 2.0)
    assert result.prepared == ["case_1"]
    result = prepare_dataset(root, cache, 3.0)
    assert sorted(result.prepared) == ["case_0", "case_1", "case_2"]


def test_cli_unreadable_case_fails_then_rerun_completes(tmp_path):
    root = _dataset(tmp_path, n=3)
    ct = root / "case_1" / "ct.nii.gz"
    good = ct.read_bytes()
    ct.write_bytes(good[: len(good) // 2])
    cache = tmp_path / "cache"
    result = runner.invoke(app, ["prepare", str(root), "--out", str(cache), "--spacing", "2.5", "--workers", "2"],
                           terminal_width=200)
    assert result.exit_code == 1, result.output
    assert "case_1" in result.output and "2 prepared" in result.output and "1 failed" in result.output
    assert sorted(json.loads((cache / "manifest.json").read_text())["cases"]) == ["case_0", "case_2"]
    mtimes = {c: (cache / c / "meta.json").stat().st_mtime_ns for c in ("case_0", "case_2")}

    ct.write_bytes(good)
    result = runner.invoke(app, ["prepare", str(root), "--out", str(cache), "--spacing", "2.5"])
    assert result.exit_code == 0, result.output
    assert "1 prepared, 2 already done, 0 failed" in result.output
    assert {c: (cache / c / "meta.json").stat().st_mtime_ns for c in mtimes} == mtimes
    assert load_cached_case(cache, "case_1").image.shape == (26, 22, 19)


def test_mask_off_the_ct_grid_fails_the_case(tmp_path):
    root = _dataset(tmp_path, n=1)
    shifted = AFFINE.copy()
    shifted[2, 3] += 4.0
    save_nifti(Volume(np.zeros(SHAPE, np.uint8), shifted), root / "case_0" / "segmentations" / "spleen.nii.gz")
    result = prepare_dataset(root, tmp_path / "cache", 2.0)
    assert "not on its CT's grid" in result.failed["case_0"]
    assert not (tmp_path / "cache" / "case_0").exists()


def test_two_datasets_share_one_cache(tmp_path):
    masks = tmp_path / "masks"
    reports = tmp_path / "reports"
    _write_case(masks, "mask_0", 0)
    _write_case(reports, "report_0", 1)
    cache = tmp_path / "cache"
    prepare_dataset(masks, cache, 2.0)
    prepare_dataset(reports, cache, 2.0)
    manifest = load_manifest(cache)
    assert sorted(manifest["cases"]) == ["mask_0", "report_0"]
    assert [Path(d["dataset"]).name for d in manifest["datasets"]] == ["masks", "reports"]
    with pytest.raises(ValueError, match="use another --out"):
        prepare_dataset(reports, cache, 3.0)


def test_cli_refuses_dataset_json_label_that_is_a_path(tmp_path):
    """Issue #26 item 2: an nnU-Net label ``../../../escaped`` must not become a file outside the cache."""
    root = tmp_path / "nnunet"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "../../../escaped": 1}}))
    ct = np.full(SHAPE, -100, np.int16)
    save_nifti(Volume(ct, AFFINE), root / "imagesTr" / "case_0_0000.nii.gz")
    save_nifti(Volume(np.ones(SHAPE, np.uint8), AFFINE), root / "labelsTr" / "case_0.nii.gz")
    result = runner.invoke(app, ["prepare", str(root), "--out", str(tmp_path / "work" / "a" / "cache")])
    assert result.exit_code == 2, result.output
    output = "".join(result.output.split())  # rich folds long paths anywhere
    assert "dataset.json:classname'../../../escaped'isnotallowed" in output
    assert not list(tmp_path.rglob("escaped*"))


def test_cache_class_names_are_checked_when_read(tmp_path):
    """Issue #26 item 2: class names in a cache's meta.json / manifest.json become .npy paths when read."""
    from rsuper.data.dataset import collect_training_cases

    cache = tmp_path / "cache"
    prepare_dataset(_dataset(tmp_path, n=1), cache, "4")
    meta_path = cache / "case_0" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["classes"] = ["../../outside"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"meta\.json: class name '\.\./\.\./outside' is not allowed"):
        load_cached_case(cache, "case_0")
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["cases"]["case_0"]["classes"] = ["liver/../x"]
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"manifest\.json: class name 'liver/\.\./x' is not allowed"):
        collect_training_cases(cache, None, ["liver", "liver_lesion"], ["liver"])
