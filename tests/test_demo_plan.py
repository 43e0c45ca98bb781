"""DemoPlan: the plan file round trip and the stage-2 options (no training here)."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from pydantic import ValidationError

from rsuper.demo import DemoPlan, check_same_plan, exit_with_parent
from rsuper.errors import ConfigError


def _write(plan: DemoPlan, path: Path) -> Path:
    path.write_text(json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(plan).items()}))
    return path


def test_plan_file_round_trip(tmp_path):
    plan = DemoPlan.default(tmp_path / "demo", seed=3)
    plan.stage2_options = {"ball_weight": 0.0}
    assert DemoPlan.load(_write(plan, tmp_path / "plan.json")) == plan


def test_plan_file_with_unknown_field_is_a_clear_error(tmp_path):
    path = _write(DemoPlan.default(tmp_path), tmp_path / "plan.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), "n_masks": 3}))
    with pytest.raises(ValueError, match="unknown demo plan fields \\['n_masks'\\]"):
        DemoPlan.load(path)


def test_stage2_options_reach_both_stage2_arms_only(tmp_path):
    plan = DemoPlan(out=tmp_path, stage2_options={"ball_weight": 0.0, "ball_rank_weighted": True})
    stage1 = plan.train_config("stage1", 1, 10, None, 0.0)
    arm = plan.train_config("R-Super", 2, 10, tmp_path / "stage1.pt", 0.5)
    assert (stage1.loss.ball.weight, stage1.loss.ball.rank_weighted) == (1.0, False)
    assert (arm.loss.ball.weight, arm.loss.ball.rank_weighted, arm.data.report_fraction) == (0.0, True, 0.5)
    with pytest.raises(ValidationError, match="bal_weight"):
        DemoPlan(out=tmp_path, stage2_options={"bal_weight": 0.0}).train_config("R-Super", 2, 10, tmp_path, 0.5)


def _orphan_worker(parent_pid: int) -> None:
    exit_with_parent(parent_pid, interval_s=0.05)
    time.sleep(60)


def test_stage2_worker_exits_when_its_parent_is_gone():
    """A worker whose recorded parent is not its parent (the demo was killed) stops instead of training on."""
    process = multiprocessing.get_context("spawn").Process(target=_orphan_worker, args=(-1,))
    process.start()
    process.join(timeout=120)  # a spawned child imports torch first: 30 s were not enough on a loaded 2-core box
    assert process.exitcode == 1
    alive = multiprocessing.get_context("spawn").Process(target=_orphan_worker, args=(os.getpid(),))
    alive.start()
    alive.join(timeout=3)
    assert alive.is_alive()  # its parent is still here
    alive.terminate()
    alive.join()


def test_device_reaches_every_training_run(tmp_path):
    plan = DemoPlan.default(tmp_path, device="cuda:1")
    assert plan.train_config("stage1", 1, 10, None, 0.0).device == "cuda:1"
    assert plan.train_config("R-Super", 2, 10, tmp_path / "stage1.pt", 0.5).device == "cuda:1"
    assert DemoPlan.default(tmp_path, quick=True).device == "auto"


def test_unknown_predict_tta_fails_before_any_step(tmp_path):
    assert DemoPlan.default(tmp_path).predict_tta == "mirror"  # adopted in session 16 (BENCHMARKS.md)
    with pytest.raises(ValueError, match="predict_tta must be one of auto, none, mirror, flips"):
        DemoPlan(out=tmp_path, predict_tta="lr")


def test_resuming_with_another_plan_is_a_clear_error(tmp_path):
    plan = DemoPlan.default(tmp_path, seed=1)
    check_same_plan(plan)  # nothing there yet
    _write(plan, tmp_path / "demo_plan.json")
    check_same_plan(dataclasses.replace(plan, parallel_stage2=False, device="cpu"))  # how it runs, not what
    with pytest.raises(ValueError, match="stage2_steps: 1200 -> 400"):
        check_same_plan(dataclasses.replace(plan, stage2_steps=400))


def test_resuming_a_run_of_an_older_plan_without_a_newer_field_is_a_clear_error(tmp_path):
    plan = DemoPlan.default(tmp_path)
    written = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(plan).items()}
    del written["mask_cover_locations"]  # an rsuper version before that field
    (tmp_path / "demo_plan.json").write_text(json.dumps(written))
    with pytest.raises(ValueError, match=r"mask_cover_locations: \(not recorded\) -> True"):
        check_same_plan(plan)


def test_plan_of_an_older_rsuper_with_removed_options(tmp_path):
    """Options removed since (BENCHMARKS.md decisions) load at their "off" values and are refused otherwise."""
    plan = DemoPlan.default(tmp_path, seed=2)
    old = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(plan).items()}
    old.update(absence_weight=0.0, organ_shift_hu=0.0, lesion_organ_bce=0.0, lesion_organ_bce_organs=None)
    (tmp_path / "demo_plan.json").write_text(json.dumps(old))
    assert DemoPlan.load(tmp_path / "demo_plan.json") == plan
    check_same_plan(plan)  # the same plan: its finished steps are reused
    old.update(absence_weight=1.0, lesion_organ_bce=0.5)
    (tmp_path / "demo_plan.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError) as caught:
        DemoPlan.load(tmp_path / "demo_plan.json")
    assert str(caught.value).splitlines() == [
        f"invalid demo plan in {tmp_path / 'demo_plan.json'}:",
        "  absence_weight was removed: not adopted, see BENCHMARKS.md decisions; delete it from the plan, got 1.0",
        "  lesion_organ_bce was removed: not adopted, see BENCHMARKS.md decisions; delete it from the plan, got 0.5",
    ]
