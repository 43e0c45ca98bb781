"""Configuration errors: one readable line per problem (field, value, what is allowed) and exit code 2."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rsuper.cli import app
from rsuper.config import TrainConfig
from rsuper.errors import USAGE_ERROR, ConfigError

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures" / "config"


def _lines(output: str) -> list[str]:
    return [line.rstrip() for line in output.strip().splitlines()]


def test_usage_error_code_is_clicks():
    assert USAGE_ERROR == 2


def test_train_config_file_errors_one_line_each(tmp_path):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("stage: 3\nsteps: -3\nlr: abc\ncache: [a]\nstpes: 5\n")
    result = runner.invoke(app, ["train", "--config", str(run_yaml), "--print-config"])
    assert result.exit_code == 2
    assert _lines(result.output) == [
        f"error: invalid training configuration in {run_yaml}:",
        "  stage must be 1 or 2, got 3",
        "  steps must be greater than or equal to 1, got -3",
        "  lr must be a valid number, unable to parse string as a number, got 'abc'",
        "  stpes is not a TrainConfig field (did you mean steps?)",
    ]


def test_train_config_file_that_is_not_yaml(tmp_path):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("steps: [1, 2\n")
    result = runner.invoke(app, ["train", "--config", str(run_yaml)])
    assert result.exit_code == 2
    lines = _lines(result.output)
    assert lines[0] == f"error: invalid training configuration in {run_yaml}:"
    assert lines[1].startswith("  not valid YAML (line 2, column 1): ")
    assert len(lines) == 2


def test_train_option_errors_one_line_each(tmp_path):
    result = runner.invoke(app, ["train", "--amp", "fp8", "--print-config"])
    assert result.exit_code == 2
    assert _lines(result.output) == [
        "error: invalid training configuration:",
        "  amp must be 'none', 'bf16' or 'fp16', got 'fp8'",
    ]
    result = runner.invoke(app, ["train", "--stage", "2", "--out", str(tmp_path / "run"), "--print-config"])
    assert result.exit_code == 2
    assert _lines(result.output) == [
        "error: invalid training configuration:",
        "  stage 2 starts from a stage-1 checkpoint: set `init` (--init PATH/final.pt)",
    ]
    assert "input_value" not in result.output and "PosixPath" not in result.output


def test_train_configuration_checked_by_the_trainer_exits_2(tmp_path):
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code == 2
    assert _lines(result.output) == [
        "error: invalid training configuration:",
        "  no cache given: set `cache` in the config or pass --cache CACHE (from `rsuper prepare`)",
    ]


def test_model_and_patch_checked_by_the_trainer_exit_2(tmp_path):
    from train_helpers import make_cache

    make_cache(tmp_path / "cache")
    base = ["train", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), "--device", "cpu"]
    result = runner.invoke(app, [*base, "--model", "nonet"])
    assert result.exit_code == 2
    lines = _lines(result.output)
    assert lines[-2] == "error: invalid training configuration:"
    assert lines[-1].startswith("  unknown model 'nonet'; registered: [")
    result = runner.invoke(app, [*base, "--model", "dynunet_small", "--patch-size", "33"])
    assert result.exit_code == 2
    assert _lines(result.output)[-2:] == [
        "error: invalid training configuration:",
        "  patch_size (33, 33, 33) must be a multiple of 16 for model 'dynunet_small'",
    ]
    (tmp_path / "run.yaml").write_text("model: dynunet_small\nmodel_kwargs: {widht: 2}\n")
    result = runner.invoke(app, [*base, "--config", str(tmp_path / "run.yaml")])
    assert result.exit_code == 2
    lines = _lines(result.output)
    assert lines[-2] == "error: invalid training configuration:"
    assert lines[-1].startswith("  model_kwargs {'widht': 2} do not fit model 'dynunet_small': ")


def test_configuration_stored_in_a_checkpoint_one_line_each(tmp_path):
    from rsuper.models.checkpoint import make_payload, save_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    old = yaml.safe_load((FIXTURES / "flat_config_0acd596.yaml").read_text())  # a checkpoint of the flat layout
    stored = {**old, "out": str(run), "lr": -1.0, "stpes": 3}
    save_checkpoint(run / "last.pt", make_payload("dynunet_small", 1, ["liver"], (2.0, 2.0, 2.0), (32, 32, 32),
                                                  state_dict={}, config=stored))
    result = runner.invoke(app, ["train", "--resume", "--out", str(run), "--device", "cpu"])
    assert result.exit_code == 2
    assert _lines(result.output) == [
        f"error: invalid training configuration in {run / 'last.pt'}:",
        "  lr must be greater than 0, got -1.0",
        "  stpes is not a TrainConfig field (did you mean steps?)",
    ]
    nested = TrainConfig(out=run).to_dict()
    stored = {**nested, "optim": {**nested["optim"], "lr": -1.0, "stpes": 3}}
    save_checkpoint(run / "last.pt", make_payload("dynunet_small", 1, ["liver"], (2.0, 2.0, 2.0), (32, 32, 32),
                                                  state_dict={}, config=stored))
    result = runner.invoke(app, ["train", "--resume", "--out", str(run), "--device", "cpu"])
    assert result.exit_code == 2
    assert _lines(result.output)[1:] == [
        "  optim.lr must be greater than 0, got -1.0",
        "  optim.stpes is not a TrainConfig field (did you mean optim.steps?)",
    ]


def test_demo_plan_file_errors_one_line_each(tmp_path):
    from rsuper.demo import DemoPlan

    plan = DemoPlan.default(tmp_path, quick=True)
    raw = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(plan).items()}
    raw.update(stage1_steps=0, stage2_options={"ball_weight": -1, "bogus": 1})
    (tmp_path / "demo_plan.json").write_text(json.dumps(raw))
    result = runner.invoke(app, ["demo", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert _lines(result.output) == [
        f"error: invalid demo plan in {tmp_path / 'demo_plan.json'}:",
        "  stage1_steps must be greater than or equal to 1, got 0",
        "  stage2_options.ball_weight must be greater than or equal to 0, got -1",
        "  stage2_options.bogus is not a TrainConfig field",
    ]


def test_demo_plan_is_checked_before_any_step(tmp_path):
    from rsuper.demo import DemoPlan, run_demo

    plan = DemoPlan(out=tmp_path / "demo", lr=-1.0, stage2_options={"bal_weight": 0.0})
    with pytest.raises(ConfigError) as caught:
        run_demo(plan, log=lambda message: None)
    assert str(caught.value).splitlines() == [
        "invalid demo plan:",
        "  lr must be greater than 0, got -1.0",
        "  stage2_options.bal_weight is not a TrainConfig field (did you mean ball_weight?)",
    ]
    assert not (tmp_path / "demo").exists()


def test_predict_options_error_is_one_line():
    from rsuper.infer.predict import PredictOptions

    with pytest.raises(ConfigError) as caught:
        PredictOptions(tta="sometimes")
    assert str(caught.value) == "tta must be one of auto, none, mirror, flips, got 'sometimes'"
    result = runner.invoke(app, ["predict", "--checkpoint", "x.pt", "ct.nii.gz", "out", "--overlap", "1.5"])
    assert result.exit_code == 2
