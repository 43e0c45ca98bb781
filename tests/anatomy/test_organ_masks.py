"""Organ-mask ingestion, grid checks, TotalSegmentator tables, the real example and `rsuper organs`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cc3d
import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from rsuper.anatomy import organ_masks, totalseg
from rsuper.anatomy.subsegments import voxel_to_world
from rsuper.cli import app
from rsuper.data.cases import discover_cases
from rsuper.io import load_nifti

PARTS = ("pancreas_head", "pancreas_body", "pancreas_tail")
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def save(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def tiny_case(root: Path, case_id: str = "case1") -> tuple[np.ndarray, Path]:
    """A 40x24x20 CT (body = -1000 outside) and a TotalSegmentator-style `total` label map (no header)."""
    ct = np.full((40, 24, 20), -1000, dtype=np.int16)
    ct[4:36, 2:22] = 40
    save(ct, AFFINE, root / "data" / case_id / "ct.nii.gz")
    seg = np.zeros(ct.shape, dtype=np.uint8)
    seg[28:33, 8:13, 5:14] = 2  # kidney_right: high x = patient right
    seg[7:12, 8:13, 5:14] = 3  # kidney_left
    seg[8:34, 15:18, 9:12] = 7  # pancreas
    seg[30:35, 2:6, 14:18] = 5  # liver
    return seg, save(seg, AFFINE, root / "ts" / f"{case_id}.nii.gz")


def digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_totalsegmentator_tables_match_the_published_ids():
    ids = totalseg.TOTAL_V2_IDS
    assert len(ids) == 117 and ids[117] == "costal_cartilages"
    expected = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver", 6: "stomach",
                7: "pancreas", 8: "adrenal_gland_right", 9: "adrenal_gland_left", 15: "esophagus",
                18: "small_bowel", 19: "duodenum", 20: "colon", 21: "urinary_bladder", 52: "aorta",
                63: "inferior_vena_cava", 64: "portal_vein_and_splenic_vein"}  # shared/data/PROVENANCE.md
    assert {k: ids[k] for k in expected} == expected
    assert totalseg.LIVER_SEGMENTS_IDS == {i: f"liver_segment_{i}" for i in range(1, 9)}
    assert totalseg.guess_task("case1_liver_segments.nii.gz") == "liver_segments"
    with pytest.raises(ValueError, match="unknown TotalSegmentator task"):
        totalseg.task_ids("lungs")


def test_label_map_ingestion_writes_canonical_files_on_the_ct_grid(tmp_path):
    seg, ml = tiny_case(tmp_path)
    case = discover_cases(tmp_path / "data")[0]
    summary = organ_masks.process_case(case, tmp_path / "out", ml_paths=[ml])
    out = tmp_path / "out" / "case1" / "segmentations"
    for name in ("liver", "pancreas", "kidney_left", "kidney_right", *PARTS):
        volume = load_nifti(out / f"{name}.nii.gz")
        assert volume.shape == seg.shape and np.allclose(volume.affine, AFFINE) and volume.array.dtype == np.uint8
    assert (load_nifti(out / "kidney_right.nii.gz").array > 0).sum() == (seg == 2).sum()
    parts = sum(load_nifti(out / f"{p}.nii.gz").array.astype(int) for p in PARTS)
    assert (parts == (seg == 7)).all()
    assert summary["derived"] == list(PARTS) and summary["liver_segments"] == "none"
    assert json.loads((tmp_path / "out" / "case1" / "organs.json").read_text())["classes"]["liver"]["voxels"] > 0


def test_combined_kidney_and_liver_segments_are_handled(tmp_path):
    seg, _ = tiny_case(tmp_path)
    kidney = np.isin(seg, (2, 3)).astype(np.uint8)
    save(kidney, AFFINE, tmp_path / "data" / "case1" / "segmentations" / "kidney.nii.gz")
    segments = np.zeros(seg.shape, np.uint8)
    segments[30:35, 2:6, 14:16], segments[30:35, 2:6, 16:18] = 7, 8
    ml = save(segments, AFFINE, tmp_path / "ts" / "case1" / "liver_segments.nii.gz")
    case = discover_cases(tmp_path / "data")[0]
    summary = organ_masks.process_case(case, tmp_path / "out", ml_paths=[ml])
    assert {"kidney_left", "kidney_right", "liver"} <= set(summary["derived"])
    assert summary["liver_segments"] == "totalsegmentator"
    out = tmp_path / "out" / "case1" / "segmentations"
    assert ((load_nifti(out / "kidney_right.nii.gz").array > 0) == (seg == 2)).all()
    assert (load_nifti(out / "liver_segment_8.nii.gz").array > 0).sum() == 5 * 4 * 2


def test_lps_written_label_map_is_reoriented_and_sides_survive(tmp_path):
    seg, ml = tiny_case(tmp_path)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = seg.shape[0] - 1, seg.shape[1] - 1
    save(seg[::-1, ::-1].copy(), AFFINE @ flip, ml)
    case = discover_cases(tmp_path / "data")[0]
    organ_masks.process_case(case, tmp_path / "out", ml_paths=[ml])
    right = load_nifti(tmp_path / "out" / "case1" / "segmentations" / "kidney_right.nii.gz")
    assert ((right.array > 0) == (seg == 2)).all()


def test_mismatched_grid_names_the_file(tmp_path):
    seg, ml = tiny_case(tmp_path)
    save(seg[:-2], AFFINE, ml)
    case = discover_cases(tmp_path / "data")[0]
    with pytest.raises(organ_masks.GridMismatchError, match=r"case1\.nii\.gz.*does not match the CT grid"):
        organ_masks.process_case(case, tmp_path / "out", ml_paths=[ml])
    shifted = AFFINE.copy()
    shifted[0, 3] = 5.0
    save(seg, shifted, ml)
    with pytest.raises(organ_masks.GridMismatchError, match="affine difference 5"):
        organ_masks.process_case(case, tmp_path / "out", ml_paths=[ml])


def test_empty_masks_unknown_ids_and_swapped_kidneys_warn(tmp_path):
    seg, ml = tiny_case(tmp_path)
    seg[seg == 7] = 0
    seg[seg == 2] = 3
    seg[7:12, 8:13, 5:14] = 2  # right kidney label on the patient's left
    seg[0, 0, 0] = 200
    save(seg, AFFINE, ml)
    segs = tmp_path / "data" / "case1" / "segmentations"
    save(np.zeros(seg.shape, np.uint8), AFFINE, segs / "pancreas.nii.gz")
    case = discover_cases(tmp_path / "data")[0]
    warnings = "\n".join(organ_masks.process_case(case, tmp_path / "out", ml_paths=[ml])["warnings"])
    assert "[200]" in warnings
    assert "empty mask: pancreas" in warnings and "head/body/tail not derived" in warnings
    assert "flipped" in warnings


def test_nnunet_label_map_with_dataset_json(tmp_path):
    seg, _ = tiny_case(tmp_path)
    root = tmp_path / "nnunet"
    (root / "imagesTr").mkdir(parents=True)
    shutil.copy(tmp_path / "data" / "case1" / "ct.nii.gz", root / "imagesTr" / "c1_0000.nii.gz")
    nn = np.zeros(seg.shape, np.uint8)
    nn[seg == 7], nn[seg == 5] = 1, 2
    save(nn, AFFINE, root / "labelsTr" / "c1.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "pancreas": 1, "liver": 2}}))
    summary = organ_masks.process_case(discover_cases(root)[0], tmp_path / "out")
    assert set(summary["classes"]) == {"pancreas", "liver", *PARTS}


def test_real_totalsegmentator_example(shared_data, tmp_path):
    example = shared_data / "totalseg_example"
    (tmp_path / "data" / "example").mkdir(parents=True)
    (tmp_path / "data" / "example" / "ct.nii.gz").symlink_to(example / "example_ct_sm.nii.gz")
    case = discover_cases(tmp_path / "data")[0]
    summary = organ_masks.process_case(
        case, tmp_path / "out", ml_paths=[example / "example_seg.nii.gz"], preview=True
    )
    out = tmp_path / "out" / "example"
    ct = load_nifti(example / "example_ct_sm.nii.gz")
    masks = {}
    for name in ("liver", "spleen", "kidney_left", "kidney_right", "pancreas", "postcava", "aorta", *PARTS):
        volume = load_nifti(out / "segmentations" / f"{name}.nii.gz")
        assert volume.shape == ct.shape and np.allclose(volume.affine, ct.affine)
        masks[name] = volume.array > 0
    assert masks["liver"].sum() == 38634 and masks["pancreas"].sum() == 644
    pancreas = masks["pancreas"]
    assert (sum(masks[p].astype(int) for p in PARTS) == pancreas).all()
    # The TotalSegmentator pancreas is 2 pieces (312 + 331 voxels, 19 mm apart) plus 1 isolated voxel:
    # each part is one component on the pieces that matter; the head is exactly one component.
    assert cc3d.connected_components(masks["pancreas_head"], connectivity=26, return_N=True)[1] == 1
    main = cc3d.dust(pancreas, threshold=10, connectivity=26)
    for name in PARTS:
        assert cc3d.connected_components(masks[name] & main, connectivity=26, return_N=True)[1] == 1, name
    fractions = {p: masks[p].sum() / pancreas.sum() for p in PARTS}
    assert 0.30 <= fractions["pancreas_head"] <= 0.60
    assert 0.15 <= fractions["pancreas_body"] <= 0.40
    assert 0.15 <= fractions["pancreas_tail"] <= 0.40
    x = {p: voxel_to_world(np.argwhere(masks[p]).mean(0)[None], ct.affine)[0, 0] for p in PARTS}
    assert x["pancreas_head"] > x["pancreas_body"] > x["pancreas_tail"]  # RAS world: larger x = patient right
    assert summary["warnings"] == []
    png = (out / "preview.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_cli_writes_resumes_and_never_touches_inputs(tmp_path):
    _, ml = tiny_case(tmp_path)
    before = digest(tmp_path / "data") | digest(tmp_path / "ts")
    runner = CliRunner()
    args = ["organs", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--ml", str(tmp_path / "ts")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert (tmp_path / "out" / "case1" / "segmentations" / "pancreas_tail.nii.gz").is_file()
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "1 already done" in second.output
    assert digest(tmp_path / "data") | digest(tmp_path / "ts") == before
    assert "Example" in runner.invoke(app, ["organs", "--help"]).output


def test_cli_reports_a_bad_case_and_fails(tmp_path):
    seg, ml = tiny_case(tmp_path)
    save(seg[:-1], AFFINE, ml)
    result = CliRunner().invoke(app, ["organs", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--ml", str(ml)])
    assert result.exit_code == 1 and "case1" in result.output


def test_missing_totalsegmentator_gives_the_install_command(tmp_path, monkeypatch):
    tiny_case(tmp_path)
    monkeypatch.setattr(totalseg.shutil, "which", lambda name: None)
    result = CliRunner().invoke(app, ["organs", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--run-totalsegmentator"])
    assert result.exit_code == 3
    assert "pip install TotalSegmentator" in " ".join(result.output.split())


def test_label_map_names_that_are_paths_are_refused():
    """Issue #26 item 2: a label table (file header or task table) naming ``../x`` must not become a file name."""
    array = np.zeros((4, 4, 4), np.uint8)
    array[0] = 1
    array[1] = 2
    masks, _ = organ_masks.masks_from_label_map(array, {1: "Liver", 2: "spleen"}, "ml.nii.gz")
    assert set(masks) == {"liver", "spleen"}
    with pytest.raises(ValueError, match=r"ml\.nii\.gz: class name '\.\./\.\./x' is not allowed"):
        organ_masks.masks_from_label_map(array, {1: "liver", 2: "../../x"}, "ml.nii.gz")
