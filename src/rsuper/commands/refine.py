"""`rsuper refine`: lesion masks that agree with each report CT's report, with a confidence and a status."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rsuper.paths import exit_if_output_overlaps

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Adds the `refine` command to the rsuper app."""

    @app.command("refine")
    def refine(
        dataset: Path = typer.Argument(
            ..., metavar="DATASET", help="Report CTs: DATASET/<case>/ct.nii.gz (+ segmentations/ organ masks)."),
        out: Path = typer.Argument(
            ..., metavar="OUT", help="Output: OUT/accepted|needs_review/<case>/segmentations/<lesion>.nii.gz, "
                                     "OUT/refine.csv."),
        reports: Path = typer.Option(..., "--reports", metavar="CSV", help="tumors.csv (per tumor) of these CTs."),
        checkpoint: Path = typer.Option(
            None, "--checkpoint", "-c", metavar="CKPT",
            help="Predict DATASET's report CTs with this checkpoint first (into OUT/predictions, probabilities kept)."),
        pred: Path = typer.Option(
            None, "--pred", metavar="PRED",
            help="Instead of --checkpoint: saved predictions PRED/<case>/probabilities/<lesion>.nii.gz "
                 "(`rsuper predict --save-probabilities`)."),
        masks_dir: list[Path] = typer.Option(
            [], "--masks-dir", metavar="DIR",
            help="Extra organ/sub-segment masks DIR/<case>/segmentations/ (e.g. `rsuper organs` output); repeatable. "
                 "Looked up after DATASET's own masks, before the model's predicted ones."),
        region_margin: float = typer.Option(
            3.0, "--region-margin", min=0.0, metavar="MM", help="Tumors may reach this far (mm) past their sub-segment."),
        accept: float = typer.Option(
            0.5, "--accept", min=0.0, max=1.0, metavar="FRACTION",
            help="An organ is accepted when its confidence (min over its tumors of the share the model calls "
                 "tumor, and 1 - the model's highest probability outside them in its channel) is at least this."),
        min_fill: float = typer.Option(
            0.8, "--min-fill", min=0.0, max=1.0, metavar="FRACTION",
            help="An organ is accepted only when each of its tumors reached this share of its reported volume."),
        strict_location: bool = typer.Option(
            False, "--strict-location",
            help="A stated location without its mask makes the CT not refinable (default: grown in the whole "
                 "organ, needs review)."),
        intensity_where_blind: bool = typer.Option(
            False, "--intensity-where-blind",
            help="Where the model is blind on an organ (max p < 0.5 in the region of >= 80% of its report groups; "
                 "OUT/refine_channels.csv), grow that organ's hypoattenuating reported tumors from the CT's darkest "
                 "voxels instead: status 'from intensity', masks in OUT/from_intensity."),
        device: str = typer.Option("cpu", "--device", metavar="DEVICE", help="cpu, cuda or cuda:N (with --checkpoint)."),
    ) -> None:
        """Turn the model's probabilities into masks consistent with each report: count, size, sub-segment.

        Per report CT and organ: every reported tumor is grown, largest first, from the model's most
        tumor-like ball of the reported diameter inside its reported sub-segment to the reported volume (the
        Ball Loss construction, margin 0); an organ the report calls tumor-free gets an empty mask. Each CT
        gets a confidence and a status (accepted, partly accepted, needs review, not refinable; each organ is
        accepted on its own) with the reasons. Masks are written in each CT's grid; OUT/accepted (accepted
        CTs, and the accepted organs of partly accepted ones) is a masks folder for `rsuper prepare
        --masks-dir`, which turns those report CTs into mask cases for a self-training round. See
        docs/review_refine.md.

        Example: rsuper refine --checkpoint runs/stage2/final.pt --reports extract/tumors.csv --masks-dir organs data/reports refined

        Example: rsuper refine --pred preds/reports --reports extract/tumors.csv --masks-dir organs data/reports refined
        """
        from rsuper.refine.run import RefineOptions, predict_for_refine, refine_cases
        from rsuper.refine.status import StatusRules

        if (checkpoint is None) == (pred is None):
            console.print("[red]error:[/red] give either --checkpoint CKPT or --pred PRED")
            raise typer.Exit(2)
        exit_if_output_overlaps(out, {"DATASET": dataset, "--reports": reports, "--checkpoint": checkpoint,
                                      "--pred": pred, "--masks-dir": masks_dir}, "OUT")
        for label, path, is_dir in [("DATASET", dataset, True), ("--reports", reports, False),
                                    ("--checkpoint", checkpoint, False), ("--pred", pred, True)] + [
                ("--masks-dir", d, True) for d in masks_dir]:
            if path is not None and not (path.is_dir() if is_dir else path.is_file()):
                console.print(f"[red]error:[/red] {label} {path} not found", soft_wrap=True, highlight=False)
                raise typer.Exit(2)
        options = RefineOptions(region_margin_mm=region_margin, strict_location=strict_location,
                                rules=StatusRules(accept_confidence=accept, min_fill=min_fill),
                                intensity_where_blind=intensity_where_blind)
        try:
            from rsuper.reports.tables import read_tumors_csv

            case_ids = sorted(read_tumors_csv(reports))
            with Progress(TextColumn("[bold]{task.fields[step]}[/bold] {task.description}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
                if checkpoint is not None:
                    pred = out / "predictions"
                    task = progress.add_task("", total=None, step="predict")
                    predict_for_refine(checkpoint, dataset, case_ids, pred, device=device,
                                       on_case=lambda c, s: progress.update(task, advance=1, description=c))
                task = progress.add_task("", total=None, step="refine")
                table = refine_cases(pred, reports, out, [dataset, *masks_dir], options,
                                     on_case=lambda c, s: progress.update(task, advance=1, description=f"{c}: {s}"))
        except (FileNotFoundError, ValueError, KeyError) as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
        counts = table["status"].value_counts().to_dict()
        console.print(", ".join(f"{n} {status}" for status, n in counts.items()) +
                      f" -> [green]{out}/refine.csv[/green]; masks in {out}/accepted, {out}/needs_review"
                      + (f" and {out}/from_intensity" if intensity_where_blind else ""), soft_wrap=True)
