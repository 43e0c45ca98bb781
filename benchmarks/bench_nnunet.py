"""nnU-Net masks-only versus nnUNetTrainerRSuper at equal budgets on the demo's phantoms (issue 30).

Per seed: the demo's phantoms (``DemoPlan.default``: 8 mask, 60 report, 60 test CTs at 4 mm, same difficulty),
rules extraction of the report text, ``rsuper organs``, ``rsuper export-nnunet``, ``nnUNetv2_plan_and_preprocess``;
stage 1 = ``nnUNetTrainerRSuperMasksOnly`` (``--epochs1``); stage 2 from stage 1 with the same budget
(``--epochs2``) for both arms: ``nnUNetTrainerRSuperMasksOnly`` ("nnU-Net masks-only") and ``nnUNetTrainerRSuper``
("nnU-Net R-Super", λ = 0.1); both predict the test CTs (``nnUNetv2_predict``, nnU-Net's TTA unless ``--no-tta``)
and are compared by the demo's evaluation (``compare_predictions``: gold tumors.csv + test masks, volume threshold
300 mm³). Writes the per-seed headline and the mean / min..max over seeds as markdown to ``--out``.
nnU-Net's commands come from ``--nnunet-bin`` (the Makefile's ``.venv-nnunet/bin``).

Example (a tiny CPU budget):
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_nnunet.py --root /tmp/bench_nnunet --seeds 0 1 2 \\
        --epochs1 4 --epochs2 4 --iters 25 --nnunet-bin .venv-nnunet/bin --out benchmarks/results_nnunet.md
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import pandas as pd

from rsuper.anatomy.organ_masks import case_is_done, process_case
from rsuper.data.cases import discover_cases
from rsuper.demo import HEADLINE_METRICS, DemoPlan
from rsuper.evaluate.compare import compare_predictions
from rsuper.evaluate.result import EvaluationSettings
from rsuper.nnunet import EXT_TRAINER_DIR
from rsuper.nnunet.export import export_nnunet
from rsuper.reports.pipeline import run_extraction
from rsuper.synthetic.phantoms import generate_dataset

ARMS = {"nnU-Net masks-only": "nnUNetTrainerRSuperMasksOnly", "nnU-Net R-Super": "nnUNetTrainerRSuper"}


def prepare_seed(root: Path, seed: int) -> tuple[Path, Path]:
    """Phantoms, extraction, organs and the nnU-Net export of one seed (reused when present)."""
    plan = DemoPlan.default(root, seed=seed)
    data = root / "data"
    if not (data / "phantoms.json").is_file():
        generate_dataset(data, n_mask=plan.n_mask, n_report=plan.n_report, n_test=plan.n_test,
                         spacing_mm=plan.spacing_mm, seed=seed, tumor_contrast_hu=plan.tumor_contrast_hu,
                         noise_sd_hu=plan.noise_sd_hu, mask_healthy_fraction=plan.mask_healthy_fraction,
                         phase_weights=plan.phase_weights, mask_phase_weights=plan.mask_phase_weights,
                         mask_cover_locations=plan.mask_cover_locations)
    table = pd.read_csv(data / "reports.csv")
    reports_csv = root / "reports_train.csv"
    table[table["split"] == "reports"].to_csv(reports_csv, index=False)
    run_extraction(reports_csv, root / "extract", backend="rules")
    for case in discover_cases(data / "reports"):
        if not case_is_done(root / "organs", case.case_id):
            process_case(case, root / "organs")
    raw = root / "nnUNet_raw" / f"Dataset{600 + seed:03d}_Phantoms{seed}"
    if not (raw / "dataset.json").is_file():
        export_nnunet(data / "masks", data / "reports", root / "extract" / "tumors.csv", [root / "organs"], raw,
                      test=data / "test")
    return data, raw


def nnunet(bin_dir: Path, args: list[str], env: dict[str, str], log: Path) -> None:
    with open(log, "a") as handle:
        subprocess.run([str(bin_dir / args[0]), *args[1:]], env=env, stdout=handle, stderr=subprocess.STDOUT,
                       check=True)


def run_seed(root: Path, seed: int, args: argparse.Namespace) -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    data, raw = prepare_seed(root, seed)
    dataset = raw.name.split("_")[0].removeprefix("Dataset")
    base = {**os.environ, "nnUNet_raw": str(raw.parent), "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
            "nnUNet_extTrainer": str(EXT_TRAINER_DIR), "nnUNet_compile": "f", "nnUNet_n_proc_DA": "1",
            "RSUPER_NNUNET_ITERS": str(args.iters), "RSUPER_NNUNET_VAL_ITERS": str(args.val_iters),
            "RSUPER_NNUNET_FINAL_VALIDATION": "0"}
    log = root / "nnunet.log"
    if not (root / "nnUNet_preprocessed" / raw.name / "nnUNetPlans.json").is_file():
        nnunet(args.nnunet_bin, ["nnUNetv2_plan_and_preprocess", "-d", dataset, "-c", "3d_fullres", "-npfp", "1",
                                 "-np", "1"], base, log)
    folder = f"{raw.name}/nnUNetTrainerRSuperMasksOnly__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth"
    stage1 = root / "results_stage1" / folder
    if not stage1.is_file():
        nnunet(args.nnunet_bin, ["nnUNetv2_train", dataset, "3d_fullres", "0", "-tr", "nnUNetTrainerRSuperMasksOnly",
                                 "-device", args.device],
               {**base, "nnUNet_results": str(root / "results_stage1"), "RSUPER_NNUNET_EPOCHS": str(args.epochs1)}, log)
    preds = {}
    for name, trainer in ARMS.items():
        results = root / f"results_{trainer}"
        env = {**base, "nnUNet_results": str(results), "RSUPER_NNUNET_EPOCHS": str(args.epochs2)}
        final = results / raw.name / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0" / "checkpoint_final.pth"
        if not final.is_file():
            nnunet(args.nnunet_bin, ["nnUNetv2_train", dataset, "3d_fullres", "0", "-tr", trainer, "-device",
                                     args.device, "-pretrained_weights", str(stage1)], env, log)
        pred = root / "predictions" / trainer
        if not pred.is_dir() or len(list(pred.glob("*.nii.gz"))) < len(list((raw / "imagesTs").iterdir())):
            nnunet(args.nnunet_bin, ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", dataset,
                                     "-c", "3d_fullres", "-f", "0", "-tr", trainer, "-device", args.device,
                                     "-npp", "1", "-nps", "1", *(["--disable_tta"] if args.no_tta else [])], env, log)
        preds[name] = pred
    plan = DemoPlan.default(root, seed=seed)
    settings = EvaluationSettings(volume_threshold_mm3=plan.volume_threshold_mm3, n_bootstrap=plan.n_bootstrap,
                                  seed=seed)
    names = tuple(ARMS)
    table = compare_predictions((preds[names[0]], preds[names[1]]), root / "compare", reports=data / "gold" / "tumors.csv",
                                masks=data / "test", names=names, settings=settings)  # type: ignore[arg-type]
    table = table[table["metric"].isin(HEADLINE_METRICS)].copy()
    table["gain (points)"] = 100.0 * table["delta"]
    table["seed"] = seed
    return table, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs1", type=int, default=4)
    parser.add_argument("--epochs2", type=int, default=4)
    parser.add_argument("--iters", type=int, default=25, help="training iterations per epoch (both arms)")
    parser.add_argument("--val-iters", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-tta", action="store_true")
    parser.add_argument("--nnunet-bin", type=Path, default=Path(".venv-nnunet/bin"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    tables, seconds = [], {}
    for seed in args.seeds:
        table, seconds[seed] = run_seed(args.root / f"seed{seed}", seed, args)
        tables.append(table)
    all_seeds = pd.concat(tables, ignore_index=True)
    value_cols = [*ARMS, "gain (points)"]
    summary = all_seeds.groupby(["organ", "metric"])[value_cols].agg(["mean", "min", "max"]).round(3)
    lines = [f"# nnU-Net masks-only vs nnUNetTrainerRSuper ({len(args.seeds)} seeds)", "",
             f"Budget per arm: stage 1 {args.epochs1} epochs + stage 2 {args.epochs2} epochs x {args.iters} iterations "
             f"on {args.device}; wall time per seed (s): {seconds}", "", "```", summary.to_string(), "```", "",
             "```", all_seeds.round(3).to_string(index=False), "```"]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
