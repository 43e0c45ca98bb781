"""Phantom generator: layout (docs/phantoms.md), determinism, anatomy truth, tumors, reports and gold tables."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from rsuper.cli import app
from rsuper.reports.tables import read_tumors_csv
from rsuper.synthetic.anatomy import AnatomySettings
from rsuper.synthetic.phantoms import PhantomSettings, generate_dataset, make_case

ORGANS = {"liver", "pancreas", "kidney_left", "kidney_right", "spleen"}
LESIONS = {"liver_lesion", "pancreatic_lesion", "kidney_lesion"}
TRUTH = {"pancreas_head", "pancreas_body", "pancreas_tail"} | {f"liver_segment_{i}" for i in range(1, 9)} | LESIONS
SPACING = 4.0  # coarse grid keeps the test fast; anatomy is defined in mm


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("phantoms")
    summary = generate_dataset(
        out, n_mask=2, n_report=7, n_test=2, spacing_mm=SPACING, seed=3, healthy_fraction=0.3, lps_fraction=0.3
    )
    return out, summary


def _canonical(path: Path) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj)


def _stems(folder: Path) -> set[str]:
    return {p.name.removesuffix(".nii.gz") for p in folder.glob("*.nii.gz")}


def test_layout_is_contract_4(dataset):
    out, summary = dataset
    top = {"masks", "reports", "test", "truth", "gold", "reports.csv", "phantoms.json"}
    assert {p.name for p in out.iterdir()} == top
    assert {p.name for p in (out / "gold").iterdir()} == {"tumors.csv", "cases.csv", "tumors_truth.csv"}
    counts = {"masks": 2, "reports": 7, "test": 2}
    for split, n in counts.items():
        cases = sorted((out / split).iterdir())
        assert len(cases) == n
        for case in cases:
            assert {p.name for p in case.iterdir()} == {"ct.nii.gz", "segmentations"}
            expected = ORGANS if split == "reports" else ORGANS | LESIONS
            assert _stems(case / "segmentations") == expected
            assert _stems(out / "truth" / case.name / "segmentations") == TRUTH
    reports = pd.read_csv(out / "reports.csv")
    assert list(reports.columns) == ["BDMAP ID", "Report", "split"]
    assert reports["split"].value_counts().to_dict() == counts
    assert summary["lps_cases"] >= 1


def test_deterministic_per_seed(tmp_path):
    args = dict(index=4, split="masks", settings=PhantomSettings(anatomy=AnatomySettings(spacing_mm=(6.0, 6.0, 6.0))))
    a = make_case(tmp_path / "a", seed=1, **args)
    b = make_case(tmp_path / "b", seed=1, **args)
    make_case(tmp_path / "c", seed=2, **args)
    ct = [np.asarray(nib.load(str(tmp_path / r / "masks" / "phantom_00004" / "ct.nii.gz")).dataobj) for r in "abc"]
    assert np.array_equal(ct[0], ct[1]) and a["report"] == b["report"] and a["truth"] == b["truth"]
    assert not np.array_equal(ct[0], ct[2])


def test_masks_binary_inside_body_and_in_ct_grid(dataset):
    out, _ = dataset
    for case in sorted((out / "masks").iterdir()) + sorted((out / "reports").iterdir()):
        ct_img = nib.load(str(case / "ct.nii.gz"))
        ct = _canonical(case / "ct.nii.gz")
        assert np.allclose(ct_img.header.get_zooms(), (SPACING,) * 3)
        assert -1100 <= ct.min() and ct.max() <= 3071 and ct.dtype == np.int16
        body = np.stack([ndimage.binary_fill_holes(ct[:, :, k] > -500) for k in range(ct.shape[2])], axis=2)
        for path in (case / "segmentations").glob("*.nii.gz"):
            img = nib.load(str(path))
            assert np.allclose(img.affine, ct_img.affine) and img.shape == ct_img.shape
            mask = _canonical(path)
            assert set(np.unique(mask)) <= {0, 1}, path
            assert not (mask.astype(bool) & ~body).any(), f"{path} has voxels outside the body"


def test_organs_plausible_and_subsegments_partition(dataset):
    out, _ = dataset
    ml = SPACING**3 / 1000.0
    ranges = {"liver": (700, 2300), "spleen": (50, 350), "kidney_left": (60, 260), "kidney_right": (60, 260),
              "pancreas": (40, 150)}
    for case in sorted((out / "reports").iterdir()):
        seg, truth = case / "segmentations", out / "truth" / case.name / "segmentations"
        organs = {o: _canonical(seg / f"{o}.nii.gz").astype(bool) for o in ORGANS}
        for organ, (lo, hi) in ranges.items():
            assert lo <= organs[organ].sum() * ml <= hi, (case.name, organ, organs[organ].sum() * ml)
        assert sum(o.astype(int) for o in organs.values()).max() == 1  # organs do not overlap
        segs = [_canonical(truth / f"liver_segment_{i}.nii.gz") for i in range(1, 9)]
        assert all(s.any() for s in segs)
        assert np.array_equal(sum(s.astype(int) for s in segs), organs["liver"].astype(int))
        parts = {p: _canonical(truth / f"pancreas_{p}.nii.gz").astype(bool) for p in ("head", "body", "tail")}
        assert np.array_equal(sum(p.astype(int) for p in parts.values()), organs["pancreas"].astype(int))
        x = {p: np.argwhere(m)[:, 0].mean() for p, m in parts.items()}
        assert x["head"] > x["body"] > x["tail"]  # head on the patient's right (canonical axis 0 = Right)
        assert np.argwhere(organs["liver"])[:, 0].mean() > np.argwhere(organs["spleen"])[:, 0].mean()
        assert np.argwhere(organs["kidney_right"])[:, 0].mean() > np.argwhere(organs["kidney_left"])[:, 0].mean()


def test_tumors_inside_organ_and_subsegment(dataset):
    out, summary = dataset
    truth = pd.read_csv(out / "gold" / "tumors_truth.csv")
    assert len(truth) == summary["tumors"] > 0
    for _, t in truth.iterrows():
        case_dir = out / t["split"] / t["BDMAP ID"] if t["split"] != "reports" else out / "truth" / t["BDMAP ID"]
        lesion = _canonical(case_dir / "segmentations" / f"{t['lesion class']}.nii.gz")
        labels, _ = ndimage.label(lesion)
        centre = tuple(int(v) for v in (t["centre_i_vox"], t["centre_j_vox"], t["centre_k_vox"]))
        component = labels == labels[centre]
        assert labels[centre] > 0
        assert component.sum() * SPACING**3 == pytest.approx(t["volume_vox_mm3"])
        seg = out / t["split"] / t["BDMAP ID"] / "segmentations"
        organ_classes = ["kidney_left", "kidney_right"] if t["organ"] == "kidney" else [t["organ"]]
        organ = sum(_canonical(seg / f"{c}.nii.gz").astype(bool) for c in organ_classes)
        assert not (component & ~organ.astype(bool)).any(), "tumor voxels outside its organ"
        subs = t["sub-segment classes"].split(" / ")
        where = out / "truth" / t["BDMAP ID"] / "segmentations" if t["organ"] != "kidney" else seg
        region = sum(_canonical(where / f"{c}.nii.gz").astype(bool) for c in subs).astype(bool)
        assert (component & region).sum() / component.sum() >= 0.75
        # Voxel volume agrees with the ellipsoid of the true diameters (docs/method.md §2) within discretisation.
        assert t["volume_vox_mm3"] == pytest.approx(t["volume_from_diameters_mm3"], rel=0.6)


_SIZE = re.compile(r"(\d+(?:\.\d+)?)(?:\s*x\s*(\d+(?:\.\d+)?))?(?:\s*x\s*(\d+(?:\.\d+)?))?\s*(cm|mm)?")


def test_reports_state_true_sizes_and_gold_matches(dataset):
    out, _ = dataset
    reports = pd.read_csv(out / "reports.csv").set_index("BDMAP ID")["Report"]
    gold = read_tumors_csv(out / "gold" / "tumors.csv")
    truth = pd.read_csv(out / "gold" / "tumors_truth.csv")
    assert set(gold) == set(reports.index)
    checked = 0
    for _, t in truth.iterrows():
        if t["Gold Tumor ID"] == "multiple":
            continue
        lesion = gold[t["BDMAP ID"]].lesions[int(t["Gold Tumor ID"].split()[1]) - 1]
        assert lesion.organ == t["organ"] and lesion.evidence in reports[t["BDMAP ID"]]
        assert set(lesion.location) <= set(t["location"].split(" / ")) or lesion.location == [] or (
            t["organ"] == "liver" and set(t["location"].split(" / ")) <= set(lesion.location)
        )
        if lesion.size_mm is None:
            continue
        true_d = sorted((float(v) for v in t["diameters (mm)"].split(" x ")), reverse=True)
        for said, true in zip(lesion.size_mm, true_d):
            assert abs(said - true) <= 0.51, (lesion.evidence, true_d)
        # The size is written in the sentence: parse the first size phrase after the organ words.
        text = re.sub(r"\(series \d+, image \d+\)|previously.*|increased from.*", "", lesion.evidence)
        values = None
        for m in _SIZE.finditer(text):
            nums = [float(v) for v in m.groups()[:3] if v]
            scale = 10.0 if m.group(4) == "cm" else 1.0
            if [round(n * scale, 1) for n in nums] == lesion.size_mm:
                values = nums
        assert values is not None, lesion.evidence
        checked += 1
    assert checked >= 3


def test_healthy_reports_say_no_lesion(dataset):
    out, _ = dataset
    reports = pd.read_csv(out / "reports.csv").set_index("BDMAP ID")["Report"]
    gold = read_tumors_csv(out / "gold" / "tumors.csv")
    truth = pd.read_csv(out / "gold" / "tumors_truth.csv")
    healthy = set(reports.index) - set(truth["BDMAP ID"])
    assert healthy and all(gold[c].no_lesion for c in healthy)
    for case in healthy:
        findings = reports[case].split("FINDINGS:")[1].split("IMPRESSION:")[0]
        for sentence in re.split(r"(?<=\.)\s+|\n", findings):
            if re.search(r"mass|lesion|nodule|metasta", sentence, re.I):
                assert re.search(r"\bno\b|without", sentence, re.I), sentence


def test_cli_writes_dataset(tmp_path):
    out = tmp_path / "ph"
    result = CliRunner().invoke(app, ["phantoms", str(out), "--n-mask", "1", "--n-report", "1", "--n-test", "0",
                                      "--spacing", "6", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert (out / "reports.csv").is_file() and (out / "gold" / "tumors.csv").is_file()
    assert len(list((out / "reports").iterdir())) == 1


def test_refuses_a_non_phantom_folder_and_replaces_an_old_dataset(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not a phantom dataset"):
        generate_dataset(tmp_path, n_mask=1, n_report=0, n_test=0, spacing_mm=6.0)
    out = tmp_path / "ph"
    generate_dataset(out, n_mask=0, n_report=2, n_test=0, spacing_mm=6.0)
    generate_dataset(out, n_mask=0, n_report=1, n_test=0, spacing_mm=6.0)
    assert [p.name for p in (out / "reports").iterdir()] == ["phantom_00000"]
    assert len(pd.read_csv(out / "reports.csv")) == 1


def test_mask_split_can_be_tumor_enriched(tmp_path):
    summary = generate_dataset(
        tmp_path, n_mask=6, n_report=0, n_test=0, spacing_mm=8.0, seed=5, healthy_fraction=1.0, mask_healthy_fraction=0.0
    )
    truth = pd.read_csv(tmp_path / "gold" / "tumors_truth.csv")
    assert summary["healthy_cases"] == 0
    assert truth["BDMAP ID"].nunique() == 6
    other = generate_dataset(tmp_path / "b", n_mask=0, n_report=3, n_test=3, spacing_mm=8.0, seed=5,
                             healthy_fraction=1.0, mask_healthy_fraction=0.0)
    assert other["healthy_cases"] == 6 and other["tumors"] == 0


def test_mask_cases_can_cover_every_location_without_changing_the_other_splits(tmp_path):
    common = dict(n_mask=6, n_report=3, n_test=2, spacing_mm=8.0, seed=3, mask_healthy_fraction=0.0)
    generate_dataset(tmp_path / "drawn", **common)
    generate_dataset(tmp_path / "cover", mask_cover_locations=True, **common)
    drawn = pd.read_csv(tmp_path / "drawn" / "gold" / "tumors_truth.csv")
    cover = pd.read_csv(tmp_path / "cover" / "gold" / "tumors_truth.csv")
    first = cover[cover["split"] == "masks"].groupby("BDMAP ID").first()
    # The first tumor of mask case j sits at mask_location(j): organs in turn, the one with most sub-segments
    # first; each organ's sub-segments most frequent first.
    assert list(zip(first["organ"], first["location"])) == [
        ("liver", "segment 7"), ("pancreas", "head"), ("kidney", "left"),
        ("liver", "segment 8"), ("pancreas", "body"), ("kidney", "right"),
    ]
    others = ["BDMAP ID", "organ", "location", "diameters (mm)"]
    pd.testing.assert_frame_equal(drawn[drawn["split"] != "masks"][others].reset_index(drop=True),
                                  cover[cover["split"] != "masks"][others].reset_index(drop=True))
    reports = [pd.read_csv(tmp_path / name / "reports.csv").query("split != 'masks'") for name in ("drawn", "cover")]
    pd.testing.assert_frame_equal(reports[0].reset_index(drop=True), reports[1].reset_index(drop=True))


def test_masks_split_can_come_from_another_site(tmp_path):
    generate_dataset(tmp_path, n_mask=3, n_report=3, n_test=0, spacing_mm=8.0, seed=2,
                     phase_weights=(0.0, 0.0, 1.0), mask_phase_weights=(1.0, 0.0, 0.0))
    reports = pd.read_csv(tmp_path / "reports.csv").set_index("split")["Report"]
    assert all("portal venous" in text for text in reports.loc[["masks"]])
    assert all("contrast" in text.lower() and "portal" not in text and "arterial" not in text
               for text in reports.loc[["reports"]])
