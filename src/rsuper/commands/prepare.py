"""`rsuper prepare`: cache every case canonical (RAS) at the training spacing as memory-mappable arrays."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from rsuper.paths import exit_if_output_overlaps


def register(app: typer.Typer) -> None:
    """Adds the `prepare` command to the rsuper app."""

    @app.command("prepare")
    def prepare(
        dataset: Path = typer.Argument(
            ..., metavar="DATASET", help="Dataset folder: DATASET/<case>/ct.nii.gz layout or nnU-Net raw."
        ),
        out: Path = typer.Option(..., "--out", "-o", metavar="CACHE", help="Cache folder (created; reruns resume)."),
        spacing: str = typer.Option(
            "1.0", "--spacing", metavar="MM",
            help="Training spacing in mm: one number (isotropic) or three, e.g. 1,1,3.",
        ),
        masks_dir: list[Path] = typer.Option(
            [], "--masks-dir", metavar="DIR",
            help="Extra masks DIR/<case>/segmentations/<class>.nii.gz (e.g. `rsuper organs` output); repeatable. "
                 "The dataset's own masks win on conflicts.",
        ),
        workers: int = typer.Option(1, "--workers", "-j", min=1, metavar="N", help="Parallel worker processes."),
        allow_non_hu: bool = typer.Option(
            False, "--allow-non-hu",
            help="Prepare CTs whose values are not Hounsfield units (`rsuper check`: not_hu) as they are; by "
                 "default such a case fails, since the HU normalisation would make it meaningless.",
        ),
    ) -> None:
        """Cache every case canonical (RAS) at the training spacing as memory-mappable arrays.

        Resamples each case to --spacing (CT linear + normalised, masks nearest) and writes .npy files with a
        manifest. Finished cases are skipped on rerun. A CT that is not in Hounsfield units fails its case
        unless --allow-non-hu.

        Example: rsuper prepare data/masks --out cache/masks --spacing 2.5 --masks-dir organs/ --workers 4
        """
        from rsuper.data.cases import DatasetLayoutError, discover_cases
        from rsuper.data.preprocess import parse_spacing, prepare_dataset

        console = Console()
        exit_if_output_overlaps(out, {"DATASET": dataset, "--masks-dir": masks_dir})
        try:
            spacing_mm = parse_spacing(spacing)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--spacing") from None
        for folder in masks_dir:
            if not folder.is_dir():
                raise typer.BadParameter(f"masks folder not found: {folder}", param_hint="--masks-dir")
        try:
            total = len(discover_cases(dataset))
        except DatasetLayoutError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        with Progress(
            TextColumn("preparing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.description}"), console=console, transient=True,
        ) as progress:
            task = progress.add_task("", total=total)
            result = prepare_dataset(
                dataset, out, spacing_mm, masks_dir, workers,
                on_case=lambda case_id, status: progress.update(task, advance=1, description=f"{case_id} {status}"),
                allow_non_hu=allow_non_hu,
            )
        if result.failed:
            table = Table(title="Failed cases")
            table.add_column("case", no_wrap=True)
            table.add_column("error", overflow="fold")
            for case_id, error in sorted(result.failed.items()):
                table.add_row(case_id, error)
            console.print(table)
        spacing_text = " x ".join(f"{s:g}" for s in spacing_mm)
        console.print(
            f"{len(result.prepared)} prepared, {len(result.skipped)} already done, {len(result.failed)} failed "
            f"-> {out} ({spacing_text} mm, RAS)"
        )
        if result.failed:
            console.print("[red]Fix the failed cases (see `rsuper check`) and rerun: finished cases are kept.[/red]")
            raise typer.Exit(1)
