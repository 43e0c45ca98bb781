"""`rsuper check`: validate a dataset (and its reports table) before preparing or training."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from rsuper.data.constants import AFFINE_TOLERANCE_MM
from rsuper.paths import exit_if_output_overlaps


def register(app: typer.Typer) -> None:
    """Adds the `check` command to the rsuper app."""

    @app.command("check")
    def check(
        dataset: Path = typer.Argument(
            ..., metavar="DATASET", help="Dataset folder: DATASET/<case>/ct.nii.gz layout or nnU-Net raw."
        ),
        reports: Path | None = typer.Option(
            None, "--reports", metavar="CSV",
            help="Reports CSV (BDMAP ID / Encrypted Accession Number / id + Report / Findings).",
        ),
        reports_dataset: bool | None = typer.Option(
            None, "--reports-dataset/--mask-dataset", show_default="on with --reports",
            help="Cases with a report are report cases: any lesion file there is flagged.",
        ),
        json_out: Path | None = typer.Option(None, "--json", metavar="FILE", help="Also write the problems to FILE."),
        tol_mm: float = typer.Option(
            AFFINE_TOLERANCE_MM, "--tol-mm", metavar="MM", help="CT/mask affine tolerance in mm."
        ),
    ) -> None:
        """Validate a dataset (and its reports table) before preparing or training.

        Finds unreadable files, CT/mask grid mismatches, non-binary masks, non-HU CTs, NaN/Inf, lesion files
        in report cases, reports without CT and CTs without report, duplicate ids. Exits with code 1 when a
        blocking problem exists. Input files are only read.

        Example: rsuper check data/reports --reports data/reports.csv --json check.json
        """
        from rsuper.atomic import write_json_atomic
        from rsuper.data.cases import DatasetLayoutError, discover_cases
        from rsuper.data.checks import check_dataset

        console = Console()
        exit_if_output_overlaps(json_out, {"DATASET": dataset, "--reports": reports}, "--json")
        if reports is not None and not reports.is_file():
            raise typer.BadParameter(f"reports CSV not found: {reports}", param_hint="--reports")
        try:
            total = len(discover_cases(dataset))
        except DatasetLayoutError:
            total = None  # check_dataset reports the layout problem itself
        with Progress(
            TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.description}"), console=console, transient=True,
        ) as progress:
            task = progress.add_task("", total=total)
            try:
                problems = check_dataset(
                    dataset, reports, reports_dataset, tol_mm,
                    on_case=lambda case: progress.update(task, advance=1, description=case.case_id),
                )
            except ValueError as exc:
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(2) from None
        n_blocking = sum(p.blocking for p in problems)
        if problems:
            table = Table(title=f"Problems in {dataset}", show_lines=False)
            for column in ("case", "severity", "problem"):
                table.add_column(column, no_wrap=True)
            table.add_column("file", overflow="fold", ratio=1)
            table.add_column("detail", overflow="fold", ratio=2)
            for p in problems:
                severity = "[red]ERROR[/red]" if p.blocking else "[yellow]warning[/yellow]"
                table.add_row(p.case_id, severity, p.kind, p.file, p.message)
            console.print(table)
        if json_out is not None:
            write_json_atomic(json_out, {
                "dataset": str(dataset), "reports": str(reports) if reports else None,
                "n_cases": total, "n_blocking": n_blocking, "problems": [p.to_dict() for p in problems],
            })
        summary = f"{total if total is not None else '?'} cases, {n_blocking} blocking problems, " \
                  f"{len(problems) - n_blocking} warnings"
        if n_blocking:
            console.print(f"[red]FAILED[/red]: {summary}")
            raise typer.Exit(1)
        console.print(f"[green]OK[/green]: {summary}")
