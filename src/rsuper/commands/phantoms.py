"""`rsuper phantoms` command: write a synthetic CT dataset with masks, reports and gold tables."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()


def register(app: typer.Typer) -> None:
    """Adds the `phantoms` command to the rsuper app."""

    @app.command("phantoms")
    def phantoms(
        out: Path = typer.Argument(
            ..., metavar="OUT", help="Output folder: new, empty, or a previous phantom dataset (replaced)."
        ),
        n_mask: int = typer.Option(8, "--n-mask", min=0, metavar="N", help="Cases with voxel tumor masks (masks/)."),
        n_report: int = typer.Option(40, "--n-report", min=0, metavar="N", help="Cases with reports only (reports/)."),
        n_test: int = typer.Option(
            12, "--n-test", min=0, metavar="N", help="Test cases with masks and reports (test/)."
        ),
        spacing: float = typer.Option(2.5, "--spacing", min=0.5, metavar="MM", help="Isotropic voxel spacing in mm."),
        seed: int = typer.Option(
            0, "--seed", metavar="SEED", help="Random seed; the dataset is deterministic per seed."
        ),
        contrast: float = typer.Option(
            -40.0, "--contrast", metavar="HU", help="Mean tumor minus organ HU (negative = hypodense)."
        ),
        noise: tuple[float, float] = typer.Option(
            (10.0, 25.0), "--noise", metavar="MIN MAX", help="Range of the noise SD in HU."
        ),
        healthy_fraction: float = typer.Option(
            0.45, "--healthy-fraction", min=0.0, max=1.0, metavar="FRACTION", help="Share of tumor-free cases."
        ),
        mask_healthy_fraction: float = typer.Option(
            None, "--mask-healthy-fraction", min=0.0, max=1.0, metavar="FRACTION", show_default="--healthy-fraction",
            help="Share of tumor-free cases in masks/ only (annotated sets are tumor-enriched).",
        ),
        mask_cover_locations: bool = typer.Option(
            False, "--mask-cover-locations",
            help="The first tumor of each mask case visits organs and their sub-segments in turn (liver segment 7, "
            "pancreas head, kidney left, liver segment 8, ...), so a few mask cases show every location.",
        ),
        lps_fraction: float = typer.Option(
            0.0, "--lps-fraction", min=0.0, max=1.0, metavar="FRACTION",
            help="Share of cases written in LPS orientation.",
        ),
        workers: int = typer.Option(1, "--workers", min=1, metavar="N", help="Parallel worker processes."),
    ) -> None:
        """Generate synthetic abdominal CT phantoms: organs, sub-segments, tumors, free-text reports, gold tables.

        Writes OUT/masks, OUT/reports (no lesion files), OUT/test, OUT/truth, OUT/reports.csv and
        OUT/gold/{tumors,cases,tumors_truth}.csv. See docs/phantoms.md.

        Example: rsuper phantoms phantoms/ --n-mask 8 --n-report 40 --n-test 12 --spacing 2.5 --workers 2
        """
        from rsuper.synthetic.phantoms import generate_dataset

        total = n_mask + n_report + n_test
        columns = (TextColumn("[bold]phantoms"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.description}"))
        try:
            with Progress(*columns, console=console) as bar:
                task = bar.add_task("", total=total)
                summary = generate_dataset(
                    out, n_mask=n_mask, n_report=n_report, n_test=n_test, spacing_mm=spacing, seed=seed,
                    tumor_contrast_hu=contrast, noise_sd_hu=noise, healthy_fraction=healthy_fraction,
                    mask_healthy_fraction=mask_healthy_fraction, mask_cover_locations=mask_cover_locations,
                    lps_fraction=lps_fraction, workers=workers,
                    progress=lambda cid: bar.update(task, advance=1, description=cid),
                )
        except (ValueError, OSError) as exc:
            console.print(f"[red]error:[/red] could not write phantoms to {out}: {exc}")
            raise typer.Exit(1) from exc
        table = Table(title=f"Phantoms in {out}")
        for col in ("masks", "reports", "test", "healthy", "tumors", "pancreas/kidney/liver", "seconds"):
            table.add_column(col, justify="right")
        by = summary["tumors_by_organ"]
        table.add_row(
            *(str(summary["cases"][s]) for s in ("masks", "reports", "test")), str(summary["healthy_cases"]),
            str(summary["tumors"]), f"{by['pancreas']}/{by['kidney']}/{by['liver']}", f"{summary['seconds']:.1f}",
        )
        console.print(table)
        console.print(f"Reports: {out / 'reports.csv'}   gold tables: {out / 'gold'}")
