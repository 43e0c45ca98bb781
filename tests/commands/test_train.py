"""`rsuper train --help`: every option shows its default (TrainConfig's) and the example stays."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from rsuper.cli import app


def test_train_help_shows_every_default_and_the_example():
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0, result.output
    flat = re.sub(r"[\s│]+", "", result.output)  # rich wraps cells over lines inside its box
    for shown in ("--steps", "(1000)", "--lr", "(0.0003)", "--patch-size", "(128,128,128)", "--batch-size", "(2)",
                  "--workers", "--model", "(medformer)", "--out", "(runs/train)", "--device", "(auto)", "--amp"):
        assert shown in flat, shown
    options = ("--config", "--cache", "--tumors", "--out", "--stage", "--init", "--steps", "--model", "--patch-size",
               "--batch-size", "--lr", "--workers", "--amp", "--device", "--seed", "--resume", "--print-config",
               "--progress")
    assert all(option in flat for option in options)
    assert flat.count("[default:") == len(options)  # every option but --help
    assert "Example:rsupertrain--cache" in flat
