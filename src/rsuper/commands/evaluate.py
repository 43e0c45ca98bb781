"""`rsuper evaluate`: CT-level detection, DSC/NSD and lesion-level metrics; comparison of two models."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rsuper.paths import exit_if_output_overlaps

if TYPE_CHECKING:
    import pandas as pd

console = Console(stderr=True)


def _print_table(title: str, frame: pd.DataFrame, columns: list[str]) -> None:
    if not len(frame):
        return
    table = Table(title=title)
    cols = [c for c in columns if c in frame.columns]
    for c in cols:
        table.add_column(c, justify="left" if c in ("organ", "metric") else "right")
    for record in frame[cols].to_dict("records"):
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in record.values()))
    Console().print(table)


def _read_ids(path: Path | None) -> set[str] | None:
    if path is None:
        return None
    if not path.is_file():
        raise typer.BadParameter(f"--val-ids file not found: {path} (one case id per line)")
    ids = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    if not ids:
        raise typer.BadParameter(f"--val-ids file {path} lists no case ids")
    return ids


def register(app: typer.Typer) -> None:
    """Adds the `evaluate` command to the rsuper app."""

    @app.command("evaluate")
    def evaluate(
        pred: Path = typer.Option(
            None, "--pred", metavar="PRED",
            help="Prediction folder: OUT of `rsuper predict`, or of nnUNetv2_predict (label maps + dataset.json)."),
        out: Path = typer.Option(
            ..., "--out", "-o", metavar="OUT", help="Output folder for tables, figures and report.html."
        ),
        reports: Path = typer.Option(
            None, "--reports", metavar="CSV", help="tumors.csv or cases.csv (report facts) as truth."
        ),
        masks: Path = typer.Option(
            None, "--masks", metavar="DIR", help="True masks: DIR/<case>/segmentations/<lesion>.nii.gz."
        ),
        compare: tuple[Path, Path] | None = typer.Option(
            None, "--compare", metavar="A B", help="Two prediction folders A and B (instead of --pred)."
        ),
        names: tuple[str, str] | None = typer.Option(
            None, "--names", metavar="NAME_A NAME_B", show_default="the folder names", help="Display names of A and B."
        ),
        images: Path = typer.Option(
            None, "--images", metavar="DIR", help="CTs (DIR/<case>/ct.nii.gz) for comparison overlays."
        ),
        val_ids: Path = typer.Option(
            None, "--val-ids", metavar="FILE",
            help="Validation case ids, one per line: operating point = best F1 there (reported on the other CTs).",
        ),
        volume_threshold: float = typer.Option(
            None, "--volume-threshold", metavar="MM3", show_default="best F1 on --val-ids, else any tumor",
            help="Fixed CT-level volume threshold in mm^3.",
        ),
        nsd_tolerance: float = typer.Option(2.0, "--nsd-tolerance", min=0.0, metavar="MM", help="NSD tolerance in mm."),
        bootstrap: int = typer.Option(1000, "--bootstrap", min=1, metavar="N", help="Bootstrap resamples for 95% CIs."),
        seed: int = typer.Option(0, "--seed", metavar="SEED", help="Bootstrap seed."),
    ) -> None:
        """Sensitivity/specificity/F1/AUROC per organ vs reports (or masks), DSC and NSD, lesion matching.

        A CT is positive for an organ when its report lists a lesion there; the prediction is positive when
        the predicted tumor volume after a light opening is >= the volume threshold (fixed, best F1 on
        --val-ids, or any tumor). 95% bootstrap CIs over CTs. --compare A B evaluates two models and writes
        a side-by-side table, bar/ROC charts, overlays of the largest disagreements and one HTML report.
        Every figure has its CSV beside it. See docs/predict_evaluate.md.

        Example: rsuper evaluate --pred preds/rsuper --reports gold/tumors.csv --masks data/truth --out eval/rsuper

        Example: rsuper evaluate --compare preds/masks preds/rsuper --names masks-only R-Super --reports gold/tumors.csv --masks data/truth --images data/test --out eval/cmp
        """
        from rsuper.evaluate.compare import compare_predictions
        from rsuper.evaluate.result import EvaluationSettings
        from rsuper.evaluate.run import evaluate_predictions

        if reports is None and masks is None:
            console.print("[red]error:[/red] give --reports (tumors.csv/cases.csv) and/or --masks (true lesion masks)")
            raise typer.Exit(2)
        comparing = compare is not None
        if comparing == (pred is not None):
            console.print("[red]error:[/red] give either --pred DIR or --compare A B")
            raise typer.Exit(2)
        exit_if_output_overlaps(out, {"--pred": pred, "--compare": compare, "--reports": reports, "--masks": masks,
                                      "--images": images, "--val-ids": val_ids})
        settings = EvaluationSettings(volume_threshold_mm3=volume_threshold, val_ids=_read_ids(val_ids),
                                      nsd_tolerance_mm=nsd_tolerance, n_bootstrap=bootstrap, seed=seed)
        with Progress(TextColumn("[bold]evaluate[/bold]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("", total=None)

            def tick(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    if comparing:
                        table = compare_predictions(compare, out, reports, masks, names, images, settings, tick)
                    else:
                        result = evaluate_predictions(pred, out, reports, masks, settings, progress=tick)
            except (FileNotFoundError, ValueError) as exc:
                progress.stop()
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(2) from None
        for warning in caught:
            console.print(f"[yellow]warning:[/yellow] {warning.message}", soft_wrap=True, markup=True)
        if comparing:
            _print_table("A vs B", table, list(table.columns))
        else:
            _print_table("CT-level detection", result.detection,
                         ["organ", "n", "positives", "volume_threshold_mm3", "sensitivity", "specificity", "f1",
                          "auroc"])
            _print_table(f"Voxel overlap (NSD at {nsd_tolerance} mm)", result.overlap,
                         ["organ", "cases", "dsc_mean", "nsd_mean", "dsc_mean_tumor_cases"])
            _print_table("Lesion level", result.lesions, list(result.lesions.columns))
        console.print(f"[green]written[/green] {out}/report.html")
