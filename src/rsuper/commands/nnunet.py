"""`rsuper export-nnunet`: mask CTs + report CTs as one nnU-Net v2 raw dataset with the report sidecar."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rsuper.paths import exit_if_output_overlaps

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Adds the `export-nnunet` command to the rsuper app."""

    @app.command("export-nnunet")
    def export_nnunet(
        out: Path = typer.Option(
            ..., "--out", "-o", metavar="OUT", help="nnUNet_raw/DatasetNNN_Name (replaced when it exists)."),
        masks: Path = typer.Option(
            None, "--masks", metavar="DATASET", help="Mask CTs: DATASET/<case>/ct.nii.gz + segmentations/ with lesions."),
        reports: Path = typer.Option(
            None, "--reports", metavar="DATASET", help="Report CTs: DATASET/<case>/ct.nii.gz + organ masks."),
        tumors: Path = typer.Option(
            None, "--tumors", metavar="CSV", help="tumors.csv of the report CTs (`rsuper extract`)."),
        organs: list[Path] = typer.Option(
            [], "--organs", metavar="DIR",
            help="`rsuper organs` output DIR/<case>/segmentations/ (sub-segments); repeatable."),
        test: Path = typer.Option(
            None, "--test", metavar="DATASET", help="CTs to put in imagesTs (for nnUNetv2_predict)."),
        target_organs: str = typer.Option(
            "pancreas,kidney,liver", "--target-organs", metavar="ORGANS", help="Organs with a lesion label."),
    ) -> None:
        """Write an nnU-Net v2 raw dataset (imagesTr, labelsTr, dataset.json) plus the report sidecar.

        Organs and sub-segments become label values, one lesion label per target organ, and nnU-Net's ignore
        label is declared last. A report CT keeps its sub-segment values where its tumors are; the sidecar
        rsuper_reports.json lists, per case, which label values are lesion-unknown and the reported tumor
        groups (volumes mm^3, diameters mm). nnUNetTrainerRSuper reads it; nnunetv2 is not needed here.
        See docs/nnunet.md.

        Example: rsuper export-nnunet --masks data/masks --reports data/reports --tumors extract/tumors.csv --organs organs --out nnUNet_raw/Dataset501_RSuper
        """
        from rsuper.nnunet import EXT_TRAINER_DIR
        from rsuper.nnunet.export import ExportError
        from rsuper.nnunet.export import export_nnunet as run_export

        if masks is None and reports is None:
            console.print("[red]error:[/red] give --masks DATASET and/or --reports DATASET (with --tumors CSV)")
            raise typer.Exit(2)
        exit_if_output_overlaps(out, {"--masks": masks, "--reports": reports, "--tumors": tumors,
                                      "--organs": organs, "--test": test})
        organ_list = [o.strip() for o in target_organs.split(",") if o.strip()]
        with Progress(TextColumn("[bold]export-nnunet[/bold]"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("", total=None)
            try:
                summary = run_export(masks, reports, tumors, organs, out, test=test, target_organs=organ_list,
                                     progress=lambda done, total: progress.update(task, completed=done, total=total))
            except (ExportError, FileNotFoundError, ValueError) as exc:
                progress.stop()
                console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False, markup=False)
                raise typer.Exit(2) from None
        for case_id, reason in summary["skipped"].items():
            console.print(f"[yellow]skipped[/yellow] {case_id}: {reason}", soft_wrap=True, highlight=False)
        counts = summary["cases"]
        console.print(f"[green]written[/green] {out}: {counts['mask']} mask CTs, {counts['report']} report CTs "
                      f"({summary['usable_report_groups']} usable tumor groups), {summary['test_cases']} test CTs")
        typer.echo(f"export nnUNet_extTrainer={EXT_TRAINER_DIR}")
