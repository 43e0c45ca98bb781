"""`rsuper export-nnunet`: a valid nnU-Net v2 raw dataset + the report sidecar (no nnunetv2 needed)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rsuper.cli import app
from rsuper.nnunet import EXT_TRAINER_DIR
from rsuper.nnunet.export import ExportError, export_nnunet
from rsuper.nnunet.sidecar import Sidecar, choose_group, lesion_channels, lesion_logits, zoom_factor
from rsuper.reports.tables import read_tumors_csv

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(phantom_inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("raw") / "Dataset501_Phantom"
    data = phantom_inputs / "data"
    result = runner.invoke(app, ["export-nnunet", "--masks", str(data / "masks"), "--reports", str(data / "reports"),
                                 "--tumors", str(phantom_inputs / "extract" / "tumors.csv"),
                                 "--organs", str(phantom_inputs / "organs"), "--test", str(data / "test"),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"nnUNet_extTrainer={EXT_TRAINER_DIR}" in result.output
    return out


def test_dataset_json_is_nnunet_v2(exported: Path):
    ds = json.loads((exported / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "CT"} and ds["file_ending"] == ".nii.gz"
    values = list(ds["labels"].values())
    assert values == list(range(len(values))) and ds["labels"]["background"] == 0
    assert ds["labels"]["ignore"] == max(values)  # nnU-Net: the ignore label is the highest value
    assert {"pancreas_head", "pancreas_body", "pancreas_tail", "liver", "kidney_left", "kidney_right"} <= set(ds["labels"])
    assert {"pancreatic_lesion", "kidney_lesion", "liver_lesion"} <= set(ds["labels"])
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (exported / "imagesTr").iterdir())
    assert ds["numTraining"] == len(cases) == 10
    assert sorted(p.name[: -len(".nii.gz")] for p in (exported / "labelsTr").iterdir()) == cases
    assert len(list((exported / "imagesTs").iterdir())) == 3
    image, label = (nib.load(exported / d / n) for d, n in (("imagesTr", f"{cases[0]}_0000.nii.gz"),
                                                             ("labelsTr", f"{cases[0]}.nii.gz")))
    assert image.shape == label.shape and np.allclose(image.affine, label.affine)
    assert set(np.unique(np.asarray(label.dataobj))) <= set(values) - {ds["labels"]["ignore"]}


def test_sidecar_holds_the_report_facts(exported: Path, phantom_inputs: Path):
    sidecar = Sidecar.load(exported / "rsuper_reports.json")
    labels = sidecar.labels
    assert len(sidecar.mask_cases) == 4 and len(sidecar.report_cases) == 6
    findings = read_tumors_csv(phantom_inputs / "extract" / "tumors.csv")
    usable = 0
    for cid in sidecar.report_cases:
        facts = sidecar.cases[cid]
        label_map = np.asarray(nib.load(exported / "labelsTr" / f"{cid}.nii.gz").dataobj)
        assert not np.isin(label_map, list(sidecar.lesion_labels.values())).any()  # a report CT has no lesion voxel
        reported = sorted(round(lesion.volume_mm3, 1) for lesion in findings[cid].lesions if lesion.volume_mm3)
        in_groups = sorted(round(v, 1) for g in facts.groups for v in g.volumes_mm3)
        assert in_groups == reported
        for group in facts.groups:
            assert set(group.labels) <= set(facts.unknown_ids)  # the group's voxels are lesion-unknown
            assert np.isin(label_map, group.labels).any()
            usable += group.usable
        if facts.groups and any(g.lesion_class == "pancreatic_lesion" and not g.organ_level for g in facts.groups):
            assert set(facts.unknown_labels["pancreatic_lesion"]) <= {labels[p] for p in
                                                                     ("pancreas_head", "pancreas_body", "pancreas_tail")}
    assert usable >= 2


def test_group_choice_zoom_and_lesion_logits(exported: Path):
    sidecar = Sidecar.load(exported / "rsuper_reports.json")
    cid = next(c for c in sidecar.report_cases if sidecar.cases[c].usable_groups)
    facts = sidecar.cases[cid]
    seg = torch.from_numpy(np.asarray(nib.load(exported / "labelsTr" / f"{cid}.nii.gz").dataobj).astype(np.int16))
    picked = choose_group(seg, facts)
    assert picked is not None
    _, group = picked
    assert choose_group(seg[:, :, : seg.shape[2] // 8], facts) != picked  # a cut group is not used
    spacing = (8.0, 8.0, 8.0)
    voxels = int(torch.isin(seg, torch.tensor(group.labels, dtype=seg.dtype)).sum())
    assert zoom_factor(voxels, group.group_volume_mm3, spacing) == 1.0
    assert zoom_factor(voxels * 8, group.group_volume_mm3, spacing) == pytest.approx(2.0)  # magnified x2
    channels = lesion_channels(seg, [facts.unknown_labels.get(n, ()) for n in sidecar.lesion_names])
    assert channels.shape == (len(sidecar.lesion_names), *seg.shape)
    logits = torch.randn(2, len(sidecar.labels) - 1, 4, 4, 4)  # nnU-Net's outputs: every label but ignore
    ids = list(sidecar.lesion_labels.values())
    assert torch.allclose(torch.sigmoid(lesion_logits(logits, ids)), torch.softmax(logits, 1)[:, ids], atol=1e-6)


def test_export_errors_are_one_line(phantom_inputs: Path, tmp_path: Path):
    data = phantom_inputs / "data"
    with pytest.raises(ExportError, match="DatasetNNN_Name"):
        export_nnunet(data / "masks", None, None, [], tmp_path / "raw" / "Phantom")
    with pytest.raises(ExportError, match="--tumors"):
        export_nnunet(None, data / "reports", None, [], tmp_path / "raw" / "Dataset502_X")
    result = runner.invoke(app, ["export-nnunet", "--masks", str(data / "masks"), "--out", str(data / "masks" / "x")])
    assert result.exit_code == 2 and "error" in result.output
