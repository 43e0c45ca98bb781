"""`rsuper models` (list the network registry) and `rsuper convert-checkpoint` (R-Super -> rsuper)."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from rsuper.paths import exit_if_output_overlaps

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Adds the `models` and `convert-checkpoint` commands to the rsuper app."""

    @app.command("models")
    def models() -> None:
        """List the networks that `rsuper train` can build (name, description, input multiple).

        Any network returning (final logits, deep-supervision logits) can be added with
        `rsuper.models.register_model` or named as `package.module:factory`; see docs/models.md.

        Example: rsuper models
        """
        import torch

        from rsuper.models.registry import available_models, build_model

        table = Table("name", "input multiple", "description")
        for name, description in available_models().items():
            with torch.device("meta"):  # shapes only: no memory, no initialisation cost
                divisor = build_model(name, 1, 2).size_divisor
            table.add_row(name, str(divisor), description)
        Console().print(table)

    @app.command("convert-checkpoint")
    def convert_checkpoint(
        source: Path = typer.Argument(..., metavar="R_SUPER_CKPT", help="R-Super MedFormer checkpoint (.pth/.pt)."),
        out: Path = typer.Argument(..., metavar="CKPT", help="rsuper checkpoint to write (.pt, for `rsuper predict`)."),
        classes: Path = typer.Option(
            ..., "--classes", metavar="FILE",
            help="Text file with the network's output class names, one per line in channel order (# comments).",
        ),
        use_ema: bool = typer.Option(True, "--use-ema/--no-ema", help="EMA weights (default) or the raw weights."),
        spacing: str = typer.Option(
            "1,1,1", "--spacing", metavar="MM",
            help="Spacing in mm the network was trained at: one number (isotropic) or three (R-Super: 1 mm).",
        ),
        patch: str = typer.Option(
            "128,128,128", "--patch", metavar="VOXELS", help="Sliding-window patch size in voxels: three numbers."
        ),
        trust_checkpoint: bool = typer.Option(
            False, "--trust-checkpoint",
            help="Allow unpickling a whole model object (R-Super DDP checkpoints). Runs code from the file: "
                 "only for files from a source you trust.",
        ),
    ) -> None:
        """Convert an R-Super MedFormer checkpoint (R_SUPER_CKPT) into an rsuper checkpoint (CKPT).

        CKPT holds the weights, loaded strictly into rsuper's MedFormer, plus the class list, config and
        spacing. The input is not modified.

        Example: rsuper convert-checkpoint rsuper_medformer.pth models/rsuper.pt --classes classes.txt --spacing 1
        """
        from rsuper.data.preprocess import parse_spacing
        from rsuper.models.convert import convert_rsuper_checkpoint, load_class_list

        classes_file = Path(classes) if Path(classes).is_file() else None
        exit_if_output_overlaps(out, {"R_SUPER_CKPT": source, "--classes": classes_file}, "CKPT")

        try:
            spacing_mm = parse_spacing(spacing)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--spacing") from None
        try:
            patch_size = [int(p) for p in patch.replace("x", ",").split(",")]
            if len(patch_size) != 3 or min(patch_size) < 1:
                raise ValueError
        except ValueError:
            raise typer.BadParameter(f"give three positive integers, got {patch!r}", param_hint="--patch") from None
        try:
            class_names = load_class_list(classes)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                payload = convert_rsuper_checkpoint(
                    source, out, class_names, use_ema=use_ema, spacing_mm=spacing_mm, patch_size=patch_size,
                    trust_checkpoint=trust_checkpoint,
                )
        except ValueError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        for warning in caught:
            console.print(f"[yellow]warning:[/yellow] {warning.message}")
        console.print(
            f"wrote {out}: {payload['model']['name']}, {len(class_names)} classes, "
            f"weights {payload['config']['weights']}, spacing {payload['spacing_mm']} mm, patch {payload['patch_size']}"
        )
