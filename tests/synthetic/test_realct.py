"""realct phantom family: the demo family's layout, a real CT deformed per patient, hypodense tumors inside
their organs, reports the rules extractor reads back, determinism. Skips without ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from rsuper.synthetic.phantoms import TRUTH_COLUMNS
from rsuper.reports.rules import extract_rules
from rsuper.reports.tables import read_tumors_csv
from rsuper.synthetic.realct import RealCTSettings, generate_case, generate_realct_dataset, make_case

ORGANS = {"liver", "pancreas", "kidney_left", "kidney_right", "spleen"}
LESIONS = {"liver_lesion", "pancreatic_lesion", "kidney_lesion"}
TRUTH = {"pancreas_head", "pancreas_body", "pancreas_tail"} | {f"liver_segment_{i}" for i in range(1, 9)} | LESIONS
SPACING = 3.0


def _source(shared_data: Path) -> dict:
    example = shared_data / "totalseg_example"
    return {"ct_path": example / "example_ct_sm.nii.gz", "seg_path": example / "example_seg.nii.gz"}


@pytest.fixture(scope="module")
def dataset(shared_data, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("realct")
    summary = generate_realct_dataset(out, n_mask=2, n_report=2, n_test=2, seed=0, healthy_fraction=0.0,
                                      phase_weights=(0.4, 0.3, 0.3), **_source(shared_data))
    return out, summary


def _canonical(path: Path) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj)


def _stems(folder: Path) -> set[str]:
    return {p.name.removesuffix(".nii.gz") for p in folder.glob("*.nii.gz")}


def _case_dirs(out: Path) -> list[Path]:
    return [case for split in ("masks", "reports", "test") for case in sorted((out / split).iterdir())]


@pytest.mark.realdata
def test_layout_is_the_demo_familys(dataset):
    out, summary = dataset
    assert {p.name for p in out.iterdir()} == {"masks", "reports", "test", "truth", "gold", "reports.csv",
                                               "phantoms.json"}
    assert {p.name for p in (out / "gold").iterdir()} == {"tumors.csv", "cases.csv", "tumors_truth.csv"}
    for split in ("masks", "reports", "test"):
        cases = sorted((out / split).iterdir())
        assert len(cases) == 2
        for case in cases:
            assert {p.name for p in case.iterdir()} == {"ct.nii.gz", "segmentations"}
            assert _stems(case / "segmentations") == (ORGANS if split == "reports" else ORGANS | LESIONS)
            assert _stems(out / "truth" / case.name / "segmentations") == TRUTH
    reports = pd.read_csv(out / "reports.csv")
    assert list(reports.columns) == ["BDMAP ID", "Report", "split"] and len(reports) == 6
    assert list(pd.read_csv(out / "gold" / "tumors_truth.csv").columns) == TRUTH_COLUMNS
    recorded = json.loads((out / "phantoms.json").read_text())
    assert recorded["family"] == summary["family"] == "realct"
    assert recorded["settings"]["tumor_contrast_hu"] == [-70.0, -20.0]
    assert len(recorded["case_info"]) == 6 and summary["tumors"] > 0


@pytest.mark.realdata
def test_ct_in_hu_with_plausible_organs(dataset):
    out, summary = dataset
    fatty = {c["case"]: c["findings"]["fatty_liver"] for c in summary["case_info"]}
    ml = SPACING**3 / 1000.0
    for case in _case_dirs(out):
        image = nib.load(str(case / "ct.nii.gz"))
        ct = _canonical(case / "ct.nii.gz")
        assert ct.dtype == np.int16 and np.allclose(image.header.get_zooms(), (SPACING,) * 3)
        assert ct.shape == tuple(summary["shape_vox"]) and -1100 <= ct.min() and ct.max() <= 3071
        organs = {o: _canonical(case / "segmentations" / f"{o}.nii.gz").astype(bool) for o in ORGANS}
        assert sum(o.astype(int) for o in organs.values()).max() == 1
        assert 650 <= organs["liver"].sum() * ml <= 1500 and 8 <= organs["pancreas"].sum() * ml <= 45
        median = {o: float(np.median(ct[ndimage.binary_erosion(m)])) for o, m in organs.items() if o != "pancreas"}
        liver_range = (-20, 100) if fatty[case.name] else (30, 140)
        assert liver_range[0] <= median["liver"] <= liver_range[1] and 20 <= median["spleen"] <= 150, median
        assert all(-10 <= median[k] <= 260 for k in ("kidney_left", "kidney_right")), (case.name, median)
        assert -80 <= float(np.median(ct[organs["pancreas"]])) <= 120
        fat = ct[(ct > -150) & (ct < -50)]
        assert len(fat) > 1000  # subcutaneous / retroperitoneal fat is there
        # True sub-segments partition their organs; anatomy sides as in RAS.
        truth = out / "truth" / case.name / "segmentations"
        segments = [_canonical(truth / f"liver_segment_{i}.nii.gz") for i in range(1, 9)]
        assert all(s.any() for s in segments)
        assert np.array_equal(sum(s.astype(int) for s in segments), organs["liver"].astype(int))
        parts = {p: _canonical(truth / f"pancreas_{p}.nii.gz").astype(bool) for p in ("head", "body", "tail")}
        assert np.array_equal(sum(p.astype(int) for p in parts.values()), organs["pancreas"].astype(int))
        x = {p: np.argwhere(m)[:, 0].mean() for p, m in parts.items()}
        assert x["head"] > x["body"] > x["tail"]
        assert np.argwhere(organs["kidney_right"])[:, 0].mean() > np.argwhere(organs["kidney_left"])[:, 0].mean()


@pytest.mark.realdata
def test_contrast_phases_shift_organs_as_documented(shared_data):
    """One patient (same draws) in the three phases: same anatomy, organ HU as in PHASE_SHIFT_HU."""
    median: dict[str, dict[str, float]] = {}
    masks = None
    for weights, phase in (((1, 0, 0), "portal venous"), ((0, 1, 0), "arterial"), ((0, 0, 1), "non-contrast")):
        settings = RealCTSettings(**{k: str(v) for k, v in _source(shared_data).items()}, phase_weights=weights,
                                  healthy_fraction=1.0)
        phantom, info = generate_case(2, "reports", 5, settings)
        assert info["phase"] == phase
        if masks is None:
            masks = {o: ndimage.binary_erosion(m.astype(bool)) for o, m in phantom.organs.items()}
        assert all(np.array_equal(ndimage.binary_erosion(m.astype(bool)), masks[o]) for o, m in phantom.organs.items())
        median[phase] = {o: float(np.median(phantom.ct_hu[m])) for o, m in masks.items() if o != "pancreas"}
    pv, art, nc = median["portal venous"], median["arterial"], median["non-contrast"]
    assert pv["liver"] - nc["liver"] > 35 and 0 < art["liver"] - nc["liver"] < 35  # liver: portal venous
    assert pv["spleen"] - nc["spleen"] > 45 and art["spleen"] - nc["spleen"] > 35
    for side in ("kidney_left", "kidney_right"):
        assert pv[side] - nc[side] > 70 and art[side] - nc[side] > 40


@pytest.mark.realdata
def test_tumors_inside_their_organ_and_darker_by_the_drawn_contrast(dataset):
    out, summary = dataset
    truth = pd.read_csv(out / "gold" / "tumors_truth.csv")
    assert len(truth) == summary["tumors"] and summary["inside_fraction_min"] >= 0.5
    errors, measured_all = [], []
    for _, t in truth.iterrows():
        split, cid = t["split"], t["BDMAP ID"]
        seg = out / split / cid / "segmentations"
        lesion = _canonical((seg if split != "reports" else out / "truth" / cid / "segmentations")
                            / f"{t['lesion class']}.nii.gz")
        labels, _ = ndimage.label(lesion)
        centre = tuple(int(v) for v in (t["centre_i_vox"], t["centre_j_vox"], t["centre_k_vox"]))
        tumor = labels == labels[centre]
        assert labels[centre] > 0 and tumor.sum() * SPACING**3 == pytest.approx(t["volume_vox_mm3"])
        classes = ["kidney_left", "kidney_right"] if t["organ"] == "kidney" else [t["organ"]]
        organ = sum(_canonical(seg / f"{c}.nii.gz").astype(bool) for c in classes).astype(bool)
        assert not (tumor & ~organ).any(), "tumor voxels outside its organ"
        assert -70.0 <= t["contrast_hu"] <= -20.0
        ct = _canonical(out / split / cid / "ct.nii.gz").astype(float)
        core = ndimage.binary_erosion(tumor) if ndimage.binary_erosion(tumor).sum() >= 4 else tumor
        near = ndimage.binary_dilation(tumor, iterations=5) & ~ndimage.binary_dilation(tumor, iterations=2)
        if t["organ"] == "pancreas":  # a thin, fatty gland: its parenchyma is the upper half of its voxels
            values = ct[ndimage.binary_dilation(tumor, iterations=8) & ~ndimage.binary_dilation(tumor) & organ]
            measured = ct[core].mean() - values[values >= np.median(values)].mean()
        else:  # the organ's interior around the tumor
            measured = ct[core].mean() - ct[near & ndimage.binary_erosion(organ)].mean()
            errors.append(measured - t["contrast_hu"])
        assert measured < 0.0, (cid, t["organ"], measured)  # darker than its organ, always
        measured_all.append(measured)
    # By about the drawn contrast: noise, blur and the arterial kidney (a central tumor next to the darker
    # medulla) blur it case by case.
    assert np.mean(np.array(measured_all) <= -10.0) >= 0.75, measured_all
    assert errors and np.median(np.abs(errors)) <= 10.0, errors
    assert np.mean(np.abs(errors) <= 20.0) >= 0.75, errors


@pytest.mark.realdata
def test_kidney_tumors_land_on_either_side(shared_data):
    settings = RealCTSettings(**{k: str(v) for k, v in _source(shared_data).items()}, healthy_fraction=0.0,
                              organ_weights={"kidney": 1.0}, max_tumors=1)
    sides = []
    for index in range(4):
        phantom, _ = generate_case(index, "reports", 11, settings)
        for tumor in phantom.tumors:
            assert tumor.tokens == [tumor.plan.token]  # in the kidney it was planned for
            sides.append(tumor.plan.token)
    assert set(sides) == {"left", "right"}


@pytest.mark.realdata
def test_reports_parse_back_to_the_true_tumors(dataset):
    """The rules extractor reads each stated tumor back (organ, location, size); what a report states agrees
    with the truth; overall, most true tumors come back with their true organ, location and size (the rest are
    by design unsized, unlocated or folded into a "multiple" row)."""
    out, _ = dataset
    reports = pd.read_csv(out / "reports.csv").set_index("BDMAP ID")["Report"]
    truth = pd.read_csv(out / "gold" / "tumors_truth.csv")
    gold = read_tumors_csv(out / "gold" / "tumors.csv")
    stated = read_back = true_back = 0
    for _, t in truth.iterrows():
        true_tokens = set(t["location"].split(" / "))
        diameters = sorted((float(v) for v in t["diameters (mm)"].split(" x ")), reverse=True)
        extracted = [x for x in extract_rules(t["BDMAP ID"], reports[t["BDMAP ID"]]).lesions if not x.multiple]
        true_back += any(x.organ == t["organ"] and x.size_mm and abs(max(x.size_mm) - diameters[0]) <= 1.0
                         and set(x.location) & true_tokens for x in extracted)
        if t["Gold Tumor ID"] == "multiple":
            continue
        said = gold[t["BDMAP ID"]].lesions[int(t["Gold Tumor ID"].split()[1]) - 1]
        assert said.organ == t["organ"] and said.evidence in reports[t["BDMAP ID"]]
        assert not said.location or set(said.location) & true_tokens, (said.location, true_tokens)
        if said.size_mm:
            assert all(abs(a - b) <= 0.51 for a, b in zip(said.size_mm, diameters)), (said.size_mm, diameters)
        stated += 1
        read_back += any(x.organ == said.organ and set(x.location) == set(said.location) and x.size_mm == said.size_mm
                         for x in extracted)
    assert stated and read_back >= 0.8 * stated, (read_back, stated)
    assert true_back >= 0.5 * len(truth), (true_back, len(truth))


@pytest.mark.realdata
def test_deterministic_per_seed_and_patients_differ(shared_data, tmp_path):
    settings = RealCTSettings(**{k: str(v) for k, v in _source(shared_data).items()})
    a = make_case(tmp_path / "a", 3, "masks", 7, settings)
    b = make_case(tmp_path / "b", 3, "masks", 7, settings)
    c = make_case(tmp_path / "c", 4, "masks", 7, settings)

    def read(root: Path, cid: str, name: str) -> np.ndarray:
        return _canonical(root / "masks" / cid / name)

    assert a["report"] == b["report"] and a["truth"] == b["truth"] and a["info"]["phase"] == b["info"]["phase"]
    for name in ("ct.nii.gz", "segmentations/liver.nii.gz", "segmentations/pancreas.nii.gz"):
        assert np.array_equal(read(tmp_path / "a", a["case_id"], name), read(tmp_path / "b", b["case_id"], name))
    liver_a = read(tmp_path / "a", a["case_id"], "segmentations/liver.nii.gz").astype(bool)
    liver_c = read(tmp_path / "c", c["case_id"], "segmentations/liver.nii.gz").astype(bool)
    assert (liver_a & liver_c).sum() / (liver_a | liver_c).sum() < 0.95  # another deformation, another patient
    assert a["info"]["scale"] != c["info"]["scale"]


def test_missing_example_ct_is_a_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        generate_realct_dataset(tmp_path / "out", n_mask=1, n_report=0, n_test=0, seed=0,
                                ct_path=tmp_path / "absent.nii.gz", seg_path=tmp_path / "absent_seg.nii.gz")
    message = str(error.value)
    assert "\n" not in message and "absent.nii.gz" in message and "real example CT" in message
    assert not (tmp_path / "out").exists()
