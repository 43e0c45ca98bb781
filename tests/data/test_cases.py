"""rsuper.data.cases: AbdomenAtlas and nnU-Net raw layouts, class-name aliases, duplicates, bad layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rsuper.data.cases import DatasetLayoutError, discover_cases, discover_masks, read_nnunet_labels
from rsuper.io import Volume, save_nifti

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def _save(path, array):
    save_nifti(Volume(np.asarray(array), AFFINE), path)


def _ct():
    return np.full((8, 8, 6), -100, dtype=np.int16)


def test_abdomenatlas_layout_with_aliases(tmp_path):
    for case in ("BDMAP_2", "BDMAP_1"):
        _save(tmp_path / case / "ct.nii.gz", _ct())
        seg = tmp_path / case / "segmentations"
        _save(seg / "liver.nii.gz", np.ones((8, 8, 6), np.uint8))
        _save(seg / "gall_bladder.nii.gz", np.zeros((8, 8, 6), np.uint8))
        _save(seg / "pancreas_tumor.nii.gz", np.zeros((8, 8, 6), np.uint8))
    (tmp_path / "notes").mkdir()  # a folder without ct.nii.gz is not a case
    cases = discover_cases(tmp_path)
    assert [c.case_id for c in cases] == ["BDMAP_1", "BDMAP_2"]
    assert cases[0].classes == ["gallbladder", "liver", "pancreatic_lesion"]
    assert cases[0].ct_path == tmp_path / "BDMAP_1" / "ct.nii.gz"
    liver = cases[0].load_mask("liver")
    assert liver.array.dtype == np.uint8 and liver.array.all()
    np.testing.assert_allclose(liver.affine, AFFINE)


def test_duplicate_class_after_alias_is_an_error(tmp_path):
    _save(tmp_path / "c1" / "ct.nii.gz", _ct())
    _save(tmp_path / "c1" / "segmentations" / "gallbladder.nii.gz", np.zeros((8, 8, 6), np.uint8))
    _save(tmp_path / "c1" / "segmentations" / "gall_bladder.nii.gz", np.zeros((8, 8, 6), np.uint8))
    with pytest.raises(DatasetLayoutError, match="duplicate class 'gallbladder'"):
        discover_cases(tmp_path)


def test_non_binary_mask_file_is_refused_on_load(tmp_path):
    _save(tmp_path / "c1" / "ct.nii.gz", _ct())
    labels = np.zeros((8, 8, 6), np.uint8)
    labels[0, 0, 0] = 2
    _save(tmp_path / "c1" / "segmentations" / "liver.nii.gz", labels)
    (case,) = discover_cases(tmp_path)
    with pytest.raises(ValueError, match="not binary"):
        case.load_mask("liver")


def _nnunet(tmp_path, labels):
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels, "file_ending": ".nii.gz"}))
    label_map = np.zeros((8, 8, 6), np.uint8)
    label_map[:4] = 1
    label_map[4:6] = 2
    for case in ("case_001", "case_000"):
        _save(tmp_path / "imagesTr" / f"{case}_0000.nii.gz", _ct())
        _save(tmp_path / "labelsTr" / f"{case}.nii.gz", label_map)
    _save(tmp_path / "imagesTs" / "case_100_0000.nii.gz", _ct())


def test_nnunet_layout_masks_come_from_the_label_map(tmp_path):
    _nnunet(tmp_path, {"background": 0, "Liver": 1, "urinary_bladder": 2})
    cases = discover_cases(tmp_path)
    assert [c.case_id for c in cases] == ["case_000", "case_001", "case_100"]
    first = cases[0]
    assert first.layout == "nnunet"
    assert first.classes == ["bladder", "liver"]
    assert first.mask_labels == {"liver": 1, "bladder": 2}
    masks = first.load_masks()
    assert masks["liver"].array.sum() == 4 * 8 * 6
    assert masks["bladder"].array.sum() == 2 * 8 * 6
    assert set(np.unique(masks["bladder"].array)) == {0, 1}
    assert cases[2].mask_paths == {}  # imagesTs case has no labels


def test_nnunet_v1_labels_and_duplicate_ids(tmp_path):
    (tmp_path / "v1.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "ivc"}}))
    assert read_nnunet_labels(tmp_path / "v1.json") == {"liver": 1, "postcava": 2}
    (tmp_path / "dup.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "spleen": 1}}))
    with pytest.raises(DatasetLayoutError, match="label id 1 is used by both 'liver' and 'spleen'"):
        read_nnunet_labels(tmp_path / "dup.json")
    (tmp_path / "alias.json").write_text(json.dumps({"labels": {"background": 0, "ivc": 1, "postcava": 2}}))
    with pytest.raises(DatasetLayoutError, match="both mean class 'postcava'"):
        read_nnunet_labels(tmp_path / "alias.json")


def test_unknown_layout_error_names_the_folder_and_hints_subfolders(tmp_path):
    _save(tmp_path / "masks" / "c1" / "ct.nii.gz", _ct())
    with pytest.raises(DatasetLayoutError, match=r"no cases found.*\['masks'\]"):
        discover_cases(tmp_path)
    with pytest.raises(DatasetLayoutError, match="not found"):
        discover_cases(tmp_path / "nope")


def test_discover_masks_without_ct(tmp_path):
    _save(tmp_path / "c1" / "segmentations" / "kidney_l.nii.gz", np.zeros((8, 8, 6), np.uint8))
    assert discover_masks(tmp_path) == {"c1": {"kidney_left": tmp_path / "c1" / "segmentations" / "kidney_l.nii.gz"}}


def test_path_like_class_names_in_dataset_json_and_mask_files_are_refused(tmp_path):
    """Issue #26 item 2: a label ``../x`` would become a mask file outside the cache."""
    _nnunet(tmp_path, {"background": 0, "liver": 1, "../../../escaped": 2})
    with pytest.raises(DatasetLayoutError, match=r"dataset\.json: class name '\.\./\.\./\.\./escaped' is not allowed"):
        discover_cases(tmp_path)
    other = tmp_path / "atlas"
    _save(other / "c1" / "ct.nii.gz", _ct())
    _save(other / "c1" / "segmentations" / "liver.v2.nii.gz", np.zeros((8, 8, 6), np.uint8))
    with pytest.raises(DatasetLayoutError, match=r"liver\.v2\.nii\.gz: class name 'liver\.v2' is not allowed"):
        discover_cases(other)
