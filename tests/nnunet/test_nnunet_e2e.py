"""End to end on CPU: phantoms -> export-nnunet -> nnUNetv2_plan_and_preprocess -> nnUNetv2_train
(nnUNetTrainerRSuper, 2 epochs x 8 iterations) -> nnUNetv2_predict -> rsuper evaluate.

nnU-Net's commands run as a user runs them, from the venv in ``RSUPER_NNUNET_BIN`` (the Makefile's
``.venv-nnunet``), else this interpreter's bin folder or PATH; skipped when none has nnU-Net. The trainer's debug
records (``RSUPER_NNUNET_DEBUG``) show what reached the report losses after nnU-Net's augmentation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from rsuper.cli import app
from rsuper.nnunet import EXT_TRAINER_DIR
from rsuper.nnunet.sidecar import Sidecar

COMMANDS = ("nnUNetv2_plan_and_preprocess", "nnUNetv2_train", "nnUNetv2_predict")
runner = CliRunner()


def nnunet_bin() -> Path | None:
    """Folder holding nnU-Net's commands: $RSUPER_NNUNET_BIN, this interpreter's bin folder, else PATH."""
    for candidate in (os.environ.get("RSUPER_NNUNET_BIN"), str(Path(sys.executable).parent)):
        if candidate and all((Path(candidate) / c).is_file() for c in COMMANDS):
            return Path(candidate)
    found = shutil.which(COMMANDS[1])
    return Path(found).parent if found else None


def _run(bin_dir: Path, args: list[str], env: dict[str, str], log: Path) -> None:
    with open(log, "w") as handle:
        result = subprocess.run([str(bin_dir / args[0]), *args[1:]], env=env, stdout=handle, stderr=subprocess.STDOUT,
                                timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{log.read_text()[-4000:]}"


@pytest.mark.slow
def test_export_plan_train_predict_evaluate(phantom_inputs: Path, tmp_path: Path):
    bin_dir = nnunet_bin()
    if bin_dir is None:
        pytest.skip("nnU-Net v2 not installed (make nnunet, or pip install 'rsuper[nnunet]')")
    data = phantom_inputs / "data"
    raw = tmp_path / "nnUNet_raw" / "Dataset501_Phantom"
    result = runner.invoke(app, ["export-nnunet", "--masks", str(data / "masks"), "--reports", str(data / "reports"),
                                 "--tumors", str(phantom_inputs / "extract" / "tumors.csv"), "--organs",
                                 str(phantom_inputs / "organs"), "--test", str(data / "test"), "--out", str(raw)])
    assert result.exit_code == 0, result.output
    debug = tmp_path / "report_losses.jsonl"
    env = {**os.environ, "nnUNet_raw": str(raw.parent), "nnUNet_preprocessed": str(tmp_path / "pre"),
           "nnUNet_results": str(tmp_path / "results"), "nnUNet_extTrainer": str(EXT_TRAINER_DIR),
           "nnUNet_compile": "f", "OMP_NUM_THREADS": "1", "nnUNet_n_proc_DA": "1", "RSUPER_NNUNET_EPOCHS": "2",
           # 2 of the 6 report CTs hold usable groups; nnU-Net draws cases at random: 2 x 8 batches of 2 miss both with
           # probability (7/9)^32 = 3e-4 (2 x 2 batches missed them in 13 % of runs)
           "RSUPER_NNUNET_ITERS": "8", "RSUPER_NNUNET_VAL_ITERS": "1", "RSUPER_NNUNET_FINAL_VALIDATION": "0",
           "RSUPER_NNUNET_DEBUG": str(debug)}
    _run(bin_dir, ["nnUNetv2_plan_and_preprocess", "-d", "501", "-c", "3d_fullres", "-npfp", "1", "-np", "1",
                   "--verify_dataset_integrity"], env, tmp_path / "plan.log")
    env["nnUNet_n_proc_DA"] = "0"  # augmentation in the training process (planning needs >= 1)
    _run(bin_dir, ["nnUNetv2_train", "501", "3d_fullres", "0", "-tr", "nnUNetTrainerRSuper", "-device", "cpu"],
         env, tmp_path / "train.log")
    train_log = (tmp_path / "train.log").read_text()
    assert "3 mask CTs + 6 report CTs train, 1 mask CTs validate" in train_log

    sidecar = Sidecar.load(raw / "rsuper_reports.json")
    assert debug.is_file(), "no report sample with a usable group was drawn (see the comment on RSUPER_NNUNET_ITERS)"
    records = [json.loads(line) for line in debug.read_text().splitlines()]
    reached = [r for r in records if r["reached"]]
    assert reached, f"no report sample reached the report losses: {records}"
    for record in reached:
        group = sidecar.cases[record["key"]].groups[record["group"]]
        assert record["group_labels"] == list(group.labels) and record["lesion_class"] == group.lesion_class
        assert record["volumes_mm3"] == list(group.volumes_mm3)  # sizes reach the losses in mm, unchanged
        assert record["diameters_mm"] == list(group.diameters_mm)
        assert record["ball_region_voxels"] == record["region_voxels"] > 0 and record["aux_region_voxels"] > 0
        # the region after augmentation still covers the reported sub-segment(s): its volume at the spacing used
        # (plan spacing / zoom) is the group's exported volume within nearest-neighbour noise
        assert record["region_volume_mm3"] == pytest.approx(group.group_volume_mm3, rel=0.25)
        assert record["ball_unknown_voxels"] >= record["region_voxels"]
        assert record["ball"] >= 0 and 0 <= record["volume"] <= 1

    pred = tmp_path / "pred"
    _run(bin_dir, ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", "501", "-c", "3d_fullres",
                   "-f", "0", "-tr", "nnUNetTrainerRSuper", "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"],
         env, tmp_path / "predict.log")
    assert len(list(pred.glob("*.nii.gz"))) == 3
    result = runner.invoke(app, ["evaluate", "--pred", str(pred), "--reports", str(data / "gold" / "tumors.csv"),
                                 "--masks", str(data / "test"), "--out", str(tmp_path / "eval"), "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    per_case = pd.read_csv(tmp_path / "eval" / "per_case.csv")
    assert per_case["case_id"].nunique() == 3
    assert set(per_case["organ"]) == {"pancreas", "kidney", "liver"} and per_case["dsc"].notna().all()
    assert (tmp_path / "eval" / "predictions" / per_case["case_id"][0] / "segmentations" / "pancreas.nii.gz").is_file()
