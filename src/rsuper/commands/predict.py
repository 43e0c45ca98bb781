"""`rsuper predict`: masks, probabilities and predicted report facts for CTs, in each CT's own grid."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rsuper.infer.tta import TTA_MODES
from rsuper.paths import exit_if_output_overlaps

console = Console(stderr=True)
TTAMode = Enum("TTAMode", {mode: mode for mode in TTA_MODES}, type=str)  # --tta choices, shown by --help


def register(app: typer.Typer) -> None:
    """Adds the `predict` command to the rsuper app."""

    @app.command("predict")
    def predict(
        input_path: Path = typer.Argument(
            ..., metavar="INPUT", help="A CT (.nii/.nii.gz), a folder of CTs, or a dataset INPUT/<case>/ct.nii.gz."
        ),
        out: Path = typer.Argument(
            ..., metavar="OUT", help="Output root: OUT/<case>/segmentations/<class>.nii.gz + findings.json."
        ),
        checkpoint: Path = typer.Option(
            ..., "--checkpoint", "-c", metavar="CKPT", help="rsuper checkpoint (final.pt / last.pt)."
        ),
        device: str = typer.Option("cpu", "--device", metavar="DEVICE", help="cpu, cuda or cuda:N."),
        tta: TTAMode = typer.Option(
            TTAMode.auto, "--tta", metavar="|".join(TTA_MODES),
            help="Flip test-time augmentation: mirror = as is + left-right mirror (2x time), flips = the 8 "
                 "mirrorings of the 3 axes (8x time), auto = mirror when the checkpoint was trained with the "
                 "left-right mirror (rsuper's default).",
        ),
        sw_batch_size: int = typer.Option(2, "--sw-batch-size", min=1, metavar="N", help="Windows per forward pass."),
        overlap: float = typer.Option(
            0.5, "--overlap", min=0.0, max=0.95, metavar="FRACTION", help="Sliding-window overlap fraction."
        ),
        save_probabilities: bool = typer.Option(
            False, "--save-probabilities", help="Also write OUT/<case>/probabilities/<class>.nii.gz (uint8, p = v/255)."),
        no_ema: bool = typer.Option(False, "--no-ema", help="Use the raw weights instead of the EMA weights."),
        model: str = typer.Option(
            None, "--model", metavar="NETWORK",
            help="Network to build instead of the checkpoint's; needed for your own network "
                 "(package.module:factory, imported because you name it here; a checkpoint alone never imports code).",
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Redo finished cases (default: resume)."),
        allow_non_hu: bool = typer.Option(
            False, "--allow-non-hu",
            help="Predict CTs whose values are not Hounsfield units (`rsuper check`: not_hu) as they are; by "
                 "default such a CT fails, since the model expects HU."),
    ) -> None:
        """Sliding-window inference with organ gating; masks written in each input CT's own grid.

        Per CT: canonical RAS, resampled to the checkpoint spacing, normalised as in training, MONAI
        sliding window (checkpoint patch size, Gaussian weighting), sigmoid, lesion channels gated by the
        predicted organ dilated by 3 mm, threshold 0.5, back onto the CT grid (same shape, affine and
        orientation). OUT/<case>/findings.json lists the predicted lesions (count, volume mm^3, three
        diameters mm, sub-segment). Finished cases are skipped on a rerun. A CT that is not in Hounsfield
        units fails unless --allow-non-hu. See docs/predict_evaluate.md.

        Example: rsuper predict --checkpoint runs/stage2/final.pt data/test preds/rsuper --device cuda --tta flips
        """
        from rsuper.infer.predict import PredictOptions, Predictor, find_ct_inputs, predict_cases

        exit_if_output_overlaps(out, {"INPUT": input_path, "--checkpoint": checkpoint}, "OUT")
        try:
            inputs = find_ct_inputs(input_path)
            if not checkpoint.is_file():
                raise FileNotFoundError(f"checkpoint not found: {checkpoint} (give the .pt written by rsuper train)")
            predictor = Predictor.from_checkpoint(checkpoint, device=device, use_ema=not no_ema, model=model)
        except (FileNotFoundError, ValueError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        options = PredictOptions(overlap=overlap, sw_batch_size=sw_batch_size, tta=tta.value,
                                 save_probabilities=save_probabilities, allow_non_hu=allow_non_hu)
        console.print(f"{len(inputs)} CT(s); model spacing {predictor.spacing_mm} mm, patch {predictor.patch_size}, "
                      f"{len(predictor.class_names)} classes, device {predictor.device}")
        failed = []
        with Progress(TextColumn("[bold]predict[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("", total=len(inputs))

            def on_case(case_id: str, status: str) -> None:
                progress.update(task, advance=1, description=f"{case_id}: {status.split(':')[0]}")
                if status.startswith("failed"):
                    failed.append((case_id, status))

            statuses = predict_cases(predictor, inputs, out, options, overwrite=overwrite, on_case=on_case)
        done = sum(s == "done" for s in statuses.values())
        skipped = sum(s == "skipped" for s in statuses.values())
        console.print(f"[green]{done} predicted[/green], {skipped} already done, {len(failed)} failed -> {out}")
        for case_id, status in failed:
            console.print(f"[red]{case_id}[/red] {status}")
        if failed:
            raise typer.Exit(1)
