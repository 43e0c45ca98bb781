"""`rsuper review`: where the reports and the model disagree, ranked for a radiologist."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from rsuper.paths import exit_if_output_overlaps

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Adds the `review` command to the rsuper app."""

    @app.command("review")
    def review(
        pred: Path = typer.Option(..., "--pred", metavar="PRED",
                                  help="Prediction folder (OUT of `rsuper predict`, or any AbdomenAtlas-layout masks)."),
        reports: Path = typer.Option(..., "--reports", metavar="CSV", help="tumors.csv or cases.csv of the same CTs."),
        out: Path = typer.Option(..., "--out", "-o", metavar="OUT", help="Output folder (queue, tables, review.html)."),
        images: Path = typer.Option(
            None, "--images", metavar="DIR", help="CTs (DIR/<case>/ct.nii.gz) for the overlay pictures."),
        volume_threshold: float = typer.Option(
            0.0, "--volume-threshold", min=0.0, metavar="MM3",
            help="The model calls a lesion when its opened lesion volume is > 0 and >= this (mm^3), as in "
                 "`rsuper evaluate`."),
        top: int = typer.Option(20, "--top", min=0, metavar="N", help="CTs of the queue shown with pictures."),
    ) -> None:
        """Rank CTs by how much the model's prediction disagrees with the report, most disagreeing first.

        Per CT and organ: lesion present or not, count, largest diameter (mm, relative error) and sub-segment,
        predicted (findings.json) versus reported. Agreement of an organ in [0, 1]: below 0.5 when report
        and model disagree on presence (0.5 x the model's probability for the report's side), else 0.5 + 0.5 x
        the mean of the count, size and location terms (both "lesion") or of 1 - max probability (both
        "none"); a CT's agreement is its worst organ's. Writes review_queue.csv (with the reason in words),
        review_organs.csv and review.html (an overlay per disputed finding with the report sentence).
        See docs/review_refine.md.

        Example: rsuper review --pred preds/rsuper --reports gold/tumors.csv --images data/test --out review/test
        """
        from rsuper.review.run import review_predictions

        exit_if_output_overlaps(out, {"--pred": pred, "--reports": reports, "--images": images})
        for label, path, is_dir in (("--pred", pred, True), ("--reports", reports, False), ("--images", images, True)):
            if path is not None and not (path.is_dir() if is_dir else path.is_file()):
                console.print(f"[red]error:[/red] {label} {path} not found", soft_wrap=True, highlight=False)
                raise typer.Exit(2)
        try:
            queue, organs = review_predictions(pred, reports, out, images, volume_threshold, top)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
        disputed = int((queue["agreement"] < 0.5).sum())
        console.print(f"{len(queue)} CT(s), {disputed} with a presence disagreement (agreement < 0.5); "
                      f"[green]written[/green] {out}/review_queue.csv and {out}/review.html")
        for record in queue.head(5).to_dict("records"):
            console.print(f"  #{record['rank']} {record['case_id']} {record['agreement']:.3f}  {record['reason']}",
                          soft_wrap=True, highlight=False, markup=False)
