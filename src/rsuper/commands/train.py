"""`rsuper train`: one training stage from a YAML run file and/or flags (docs/method.md §6)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from typer.core import TyperCommand

from rsuper.paths import exit_if_output_overlaps
from rsuper.errors import ConfigError, exit_config_error

console = Console(stderr=True)

# Option -> the TrainConfig setting it overrides (old flat key or field; rsuper.config.FLAT_KEYS places it).
OPTION_KEYS = ("cache", "tumors", "out", "stage", "init", "steps", "model", "patch_size", "batch_size", "lr",
               "workers", "amp", "device", "seed")


class TrainCommand(TyperCommand):
    """`rsuper train` shows each option's default, TrainConfig's: the options default to None ("not given: the
    run file's value, else TrainConfig's"), and rsuper.config is imported only when the help is shown."""

    def format_help(self, ctx, formatter):  # type: ignore[no-untyped-def]
        from rsuper.config import FLAT_KEYS, TrainConfig

        defaults = TrainConfig().model_dump(mode="json")
        for param in self.params:
            if param.name in OPTION_KEYS:
                value = defaults
                for part in FLAT_KEYS.get(param.name, param.name).split("."):
                    value = value[part]
                param.show_default = _shown(value)
            elif param.name in ("config", "resume", "print_config"):
                param.show_default = "none" if param.name == "config" else "off"
        return super().format_help(ctx, formatter)


def _shown(value: object) -> str:
    if value is None or value == []:
        return "none"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _parse_patch(value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    parts = [p for p in value.replace("x", ",").split(",") if p.strip()]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise typer.BadParameter(f"--patch-size {value!r}: give 1 or 3 integers, e.g. 96 or 96,96,64") from None
    if len(sizes) == 1:
        sizes *= 3
    if len(sizes) != 3 or min(sizes) < 1:
        raise typer.BadParameter(f"--patch-size {value!r}: give 1 or 3 positive integers, e.g. 96 or 96,96,64")
    return tuple(sizes)  # type: ignore[return-value]


def register(app: typer.Typer) -> None:
    """Adds the `train` command to the rsuper app."""

    @app.command("train", cls=TrainCommand)
    def train_command(
        config: Path | None = typer.Option(
            None, "--config", "-c", help="YAML run file (TrainConfig fields, nested or the old flat layout)."
        ),
        cache: list[Path] | None = typer.Option(
            None, "--cache", help="Prepared cache folder (`rsuper prepare --out`); repeat for masks + reports."
        ),
        tumors: Path | None = typer.Option(None, "--tumors", help="Per-tumor findings CSV (stage 2)."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Run folder for checkpoints and metrics."),
        stage: int | None = typer.Option(None, "--stage", min=1, max=2, help="1 = masks only, 2 = masks + reports."),
        init: Path | None = typer.Option(None, "--init", help="Stage-1 checkpoint to start stage 2 from."),
        steps: int | None = typer.Option(None, "--steps", min=1, help="Optimiser steps of this stage."),
        model: str | None = typer.Option(
            None, "--model", help="Network: medformer, medformer_small, dynunet, ... or your own package.module:factory "
                                  "(name it again with --resume: a checkpoint alone never imports code).",
        ),
        patch_size: str | None = typer.Option(None, "--patch-size", help="Patch in voxels: 96 or 96,96,64."),
        batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Samples per process (per GPU)."),
        lr: float | None = typer.Option(None, "--lr", help="Peak stage-1 learning rate (stage 2 uses x0.1)."),
        workers: int | None = typer.Option(None, "--workers", min=0, help="DataLoader workers per process."),
        amp: str | None = typer.Option(None, "--amp", help="Mixed precision on GPU: none, bf16, fp16."),
        device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N."),
        seed: int | None = typer.Option(None, "--seed", help="Random seed (samples and initial weights)."),
        resume: bool = typer.Option(False, "--resume", help="Continue exactly from OUT/last.pt."),
        print_config: bool = typer.Option(False, "--print-config", help="Print the effective config (YAML), exit."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
    ) -> None:
        """Train one stage: stage 1 on mask cases, stage 2 on masks + report cases from a stage-1 checkpoint.

        An option overrides the run file (--config); the defaults shown are TrainConfig's (docs/training.md).

        Multi-GPU: `torchrun --nproc_per_node 4 $(which rsuper) train --config RUN.yaml` (batch size is per
        GPU; the learning rate is not scaled with the number of GPUs).

        Example: rsuper train --cache cache/masks --cache cache/reports --tumors extract_rules/tumors.csv --stage 2 --init runs/stage1/final.pt --out runs/stage2 --model medformer_small --patch-size 96
        """
        from rsuper.config import TrainConfig

        overrides = {
            "cache": cache or None, "tumors": tumors, "out": out, "stage": stage, "init": init, "steps": steps,
            "model": model, "patch_size": _parse_patch(patch_size), "batch_size": batch_size, "lr": lr,
            "workers": workers, "amp": amp, "device": device, "seed": seed, "resume": resume or None,
        }
        try:
            cfg = TrainConfig.from_yaml(config, overrides)
        except (ValueError, FileNotFoundError) as err:
            exit_config_error(console, err, "invalid training configuration")
        if print_config:
            typer.echo(cfg.to_yaml(), nl=False)
            return
        exit_if_output_overlaps(cfg.out, {"--cache": cfg.cache, "--tumors": cfg.tumors, "--init": cfg.init,
                                          "--config": config})
        from rsuper.train.trainer import TrainingDiverged, train

        try:
            final = train(cfg, show_progress=progress)
        except ConfigError as err:
            exit_config_error(console, err, "invalid training configuration")
        except (TrainingDiverged, ValueError, FileNotFoundError) as err:
            console.print(f"[red]training failed[/]: {err}")
            raise typer.Exit(1) from None
        console.print(f"[green]final checkpoint[/] {final}")
