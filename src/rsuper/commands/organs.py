"""`rsuper organs`: organ masks in the canonical layout plus derived sub-segments."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rsuper.paths import exit_if_output_overlaps

if TYPE_CHECKING:
    from rsuper.data.cases import Case

console = Console(stderr=True)
NIFTI = (".nii.gz", ".nii")


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(NIFTI) and not p.name.startswith("."))


def label_maps_for_case(case_id: str, ml: list[Path], n_cases: int) -> list[Path]:
    """Label maps of one case: ``FILE`` (named ``<case>.nii[.gz]``, or any name for a 1-case dataset), or
    ``DIR/<case>.nii[.gz]`` and every NIfTI in ``DIR/<case>/``."""
    found: list[Path] = []
    for path in ml:
        if path.is_file():
            stem = path.name.split(".nii")[0]
            if stem == case_id or n_cases == 1:
                found.append(path)
        elif path.is_dir():
            found += [path / f"{case_id}{s}" for s in NIFTI if (path / f"{case_id}{s}").is_file()]
            if (path / case_id).is_dir():
                found += _nifti_files(path / case_id)
        else:
            raise typer.BadParameter(f"--ml {path} does not exist (give a label-map file or a folder of them)")
    return found


def _run_totalsegmentator(case: Case, out: Path, liver_segments: bool, fast: bool, device: str | None) -> list[Path]:
    """Runs (or reuses) TotalSegmentator's multilabel outputs for one case under OUT/<case>/totalsegmentator/."""
    from rsuper.anatomy import totalseg

    tasks = ["total"] + (["liver_segments"] if liver_segments else [])
    outputs = []
    for task in tasks:
        target = out / case.case_id / "totalsegmentator" / f"{task}.nii.gz"
        if not target.is_file():
            totalseg.run_totalsegmentator(case.ct_path, target, task=task, fast=fast, device=device)
        outputs.append(target)
    return outputs


def register(app: typer.Typer) -> None:
    """Adds the `organs` command to the rsuper app."""

    @app.command("organs")
    def organs(
        dataset: Path = typer.Argument(
            ..., metavar="DATASET", help="Dataset folder: DATASET/<case>/ct.nii.gz (+ segmentations/) or nnU-Net raw."
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", metavar="OUT", help="Output root: OUT/<case>/segmentations/<class>.nii.gz."
        ),
        ml: list[Path] = typer.Option(
            [], "--ml", metavar="PATH",
            help="Multilabel map(s): a file (<case>.nii.gz) or a folder with <case>.nii.gz or <case>/*.nii.gz; "
                 "repeatable.",
        ),
        ml_task: str = typer.Option(
            None, "--ml-task", metavar="total|liver_segments",
            help="Id table for label maps without TotalSegmentator's header.",
        ),
        masks_dir: list[Path] = typer.Option(
            [], "--masks-dir", metavar="DIR",
            help="Extra per-class mask folder: DIR/<case>/*.nii.gz or DIR/<case>/segmentations/; repeatable.",
        ),
        run_totalsegmentator: bool = typer.Option(
            False, "--run-totalsegmentator", help="Run TotalSegmentator for cases without pancreas/kidney/liver masks."
        ),
        liver_segments: bool = typer.Option(
            False, "--liver-segments", help="With --run-totalsegmentator: also run its liver_segments task."
        ),
        fast: bool = typer.Option(False, "--fast", help="TotalSegmentator's fast 3 mm model (CPU friendly)."),
        device: str = typer.Option(None, "--device", metavar="gpu|cpu|mps", help="TotalSegmentator device."),
        head_body: float = typer.Option(
            1 / 3, metavar="FRACTION", show_default="1/3",
            help="Pancreas head/body border, fraction of the centre line.",
        ),
        body_tail: float = typer.Option(
            2 / 3, metavar="FRACTION", show_default="2/3",
            help="Pancreas body/tail border, fraction of the centre line.",
        ),
        all_classes: bool = typer.Option(False, "--all-classes", help="Write every class found, not only organs."),
        preview: bool = typer.Option(False, "--preview", help="Write OUT/<case>/preview.png overlays."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Redo cases already done (default: resume)."),
    ) -> None:
        """Organ masks in the canonical layout, with derived pancreas head/body/tail and kidney sides.

        Reads the dataset's own masks, TotalSegmentator outputs (per-class folders or --ml maps) and
        nnU-Net label maps, checks them against each CT's grid and writes OUT/<case>/segmentations/ in
        the CT's own grid, plus OUT/<case>/organs.json (sources, volumes, warnings). Inputs are never
        modified; finished cases are skipped on a rerun. Liver segments come only from TotalSegmentator's
        liver_segments task (otherwise liver locations stay unknown). See docs/organs.md.

        Example: rsuper organs data/merlin --out work/organs --ml ts_outputs/ --preview
        """
        from rsuper.anatomy import organ_masks, totalseg
        from rsuper.data.cases import DatasetLayoutError, discover_cases
        from rsuper.io import NiftiReadError

        exit_if_output_overlaps(out, {"DATASET": dataset, "--ml": ml, "--masks-dir": masks_dir})
        try:
            cases = discover_cases(dataset)
        except DatasetLayoutError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        boundaries = (head_body, body_tail)
        if not 0 < head_body < body_tail < 1:
            raise typer.BadParameter(f"need 0 < --head-body < --body-tail < 1, got {boundaries}")
        if run_totalsegmentator:
            try:
                totalseg.find_executable()
            except totalseg.TotalSegmentatorNotFound as exc:
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(3) from None
        classes = None if all_classes else organ_masks.DEFAULT_CLASSES
        done, skipped, failed, n_warnings = 0, 0, [], 0
        with Progress(
            TextColumn("[bold]organs[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console,
        ) as progress:
            task = progress.add_task("", total=len(cases))
            for case in cases:
                progress.update(task, description=case.case_id)
                if not overwrite and organ_masks.case_is_done(out, case.case_id):
                    skipped += 1
                    progress.advance(task)
                    continue
                try:
                    maps = label_maps_for_case(case.case_id, ml, len(cases))
                    has_organs = {"pancreas", "liver", "kidney_left", "kidney_right"} & set(case.mask_paths)
                    if run_totalsegmentator and not maps and not has_organs:
                        maps = _run_totalsegmentator(case, out, liver_segments, fast, device)
                    summary = organ_masks.process_case(
                        case, out, ml_paths=maps, masks_dirs=masks_dir, ml_task=ml_task,
                        classes=classes, boundaries=boundaries, preview=preview,
                    )
                except (NiftiReadError, organ_masks.GridMismatchError, DatasetLayoutError, ValueError,
                        totalseg.TotalSegmentatorFailed) as exc:
                    failed.append(case.case_id)
                    progress.console.print(f"[red]{case.case_id}: {exc}[/red]")
                else:
                    done += 1
                    for warning in summary["warnings"]:
                        n_warnings += 1
                        progress.console.print(f"[yellow]warning[/yellow] {case.case_id}: {warning}")
                progress.advance(task)
        console.print(
            f"organs: {done} case(s) written, {skipped} already done, {len(failed)} failed, "
            f"{n_warnings} warning(s) -> {out}"
        )
        if failed:
            console.print(f"[red]failed cases:[/red] {', '.join(failed)} (fix the files named above and rerun)")
            raise typer.Exit(1)
