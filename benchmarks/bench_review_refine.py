"""Do the reports check the model? Review queue and refined masks measured on the demo's phantoms (issue 29).

Per seed: runs `rsuper demo` (``--quick`` or the default plan; or reuses the demo folders given with
``--demo-out``), whose step 8 already reviews R-Super's test predictions and refines the report CTs; or, with
``--gain-out``, reviews and refines with the R-Super arm of finished benchmarks/bench_gain.py seed folders (its
headline predictions, without TTA; refine also without TTA); then reads those outputs against the phantoms' true
masks:

- per tumor organ, over report CTs with a true tumor of that organ: lesion DSC of the refined masks (accepted +
  needs review) versus the raw thresholded predictions of the same model on the same CTs; and of the
  refined masks of accepted CTs versus the rest;
- per refined tumor: does its ball centre lie on a true tumor, for the confident tumors (refine's agreement
  >= 0.5) versus the rest (accepted CTs with tumors are too rare to compare at CT level);
- on the test set: AUROC of (1 - agreement) for "the model is wrong at CT level against the true masks"
  (some organ's call, opened volume >= the demo's 300 mm³, differs from "true mask non-empty").

Optional ``--self-train``: one self-training round. The report cache is prepared again with the accepted
refined masks (``prepare --masks-dir refine/accepted``, so those report CTs become mask cases), and stage 2 is
trained from the same stage-1 checkpoint with the same steps, batch, learning rate and seed as R-Super
("R-Super+refined"); both are evaluated on the same test set. ``--self-train tumors``: the same with only the
accepted CTs whose accepted masks hold a tumor (in ``OUT/selftrain_tumors``), so that tumor-free CTs do not dilute
the mask half of the batches.

PRE-REGISTRATION (written before any run of this script; decision rules fixed here):
1. Refined beats raw for an organ when, over the seeds, the mean of the per-seed mean DSC (tumor CTs) of the
   refined masks exceeds the raw one's AND the refined mean is higher in at least 2 of the 3 seeds.
2. "Accepted is more accurate than the rest" for an organ when the mean over seeds of the accepted CTs' mean
   DSC exceeds the rest's in every seed that has both kinds of CT; seeds lacking one kind are reported as n/a.
3. The queue bar is met when the AUROC pooled over the seeds' test CTs is >= 0.8 (per-seed AUROCs reported).
4. Self-training is called helpful only if, averaged over the 3 organs and the seeds, test lesion DSC
   (mean over all test CTs) rises by >= 2 points AND CT-level F1 falls by no more than 2 points; otherwise it
   is reported as not helping (quick budgets: expected inconclusive).
5. (Added in session 23 after the pooled numbers of demo seeds 41-45 were seen, so not a pre-registration:)
   confident refined tumors are more accurate than the rest for an organ when their share of ball centres on a
   true tumor exceeds the rest's in every seed that has both kinds.
6. (Session 25, written before refine accepted organs one by one and before any run of it:) rule 2 read per organ:
   refine now accepts each organ on its own, and "accepted" in the table = that organ's masks were accepted
   (accepted CT, or an accepted organ of a partly accepted CT); same test as rule 2.

Example:
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_review_refine.py --quick --seeds 0 1 2 --root bench_rr
    python benchmarks/bench_review_refine.py --demo-out demo_s0 demo_s1 demo_s2
    python benchmarks/bench_review_refine.py --gain-out gain_demo/demo/seed41 gain_demo/demo/seed42 gain_demo/demo/seed43
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from rsuper.demo import MODEL_NAMES, DemoPlan, review_and_refine, run_demo
from rsuper.evaluate.detection import auroc
from rsuper.review.truth import queue_truth, refined_summary, refined_truth, refined_tumor_summary, \
    refined_tumor_truth


def measure(demo: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(refined-vs-raw per organ, per-CT queue truth, confident-vs-rest refined tumors per organ) of one finished
    demo folder."""
    data = demo / "data"
    refined = refined_truth(demo / "refine", demo / "refine" / "predictions", data / "truth")
    tumors = refined_tumor_truth(demo / "refine", demo / "refine" / "predictions", data / "truth")
    organs = pd.read_csv(demo / "review" / "test" / "review_organs.csv")
    return refined_summary(refined), queue_truth(organs, data / "test"), refined_tumor_summary(tumors)


def review_gain_seed(seed_dir: Path, device: str) -> DemoPlan:
    """Review and refine with the R-Super arm of a finished bench_gain seed (no TTA); resumes a finished one."""
    plan = DemoPlan.load(seed_dir / "demo_plan.json")
    if not (seed_dir / "refine" / "refine.csv").is_file():
        review_and_refine(seed_dir, seed_dir / "data", seed_dir / "runs" / MODEL_NAMES[1] / "final.pt",
                          seed_dir / "predictions" / "none" / MODEL_NAMES[1], device=device, tta="none",
                          volume_threshold_mm3=plan.volume_threshold_mm3, log=print)
    return plan


def accepted_with_tumors(accepted: Path, out: Path) -> Path:
    """``out``: a copy of the masks folder ``accepted`` with only the cases whose masks hold a tumor voxel."""
    from rsuper.data.cases import find_mask_files
    from rsuper.io import load_nifti

    out.mkdir(parents=True, exist_ok=True)
    for case in sorted(p for p in accepted.iterdir() if p.is_dir()) if accepted.is_dir() else []:
        files = find_mask_files(case / "segmentations").values()
        if any(load_nifti(f).array.any() for f in files) and not (out / case.name).is_dir():
            shutil.copytree(case, out / case.name)
    return out


def self_train(plan: DemoPlan, baseline: Path, tta: str, select: str = "all", seed_offset: int = 0,
               log=print) -> pd.DataFrame:
    """One round on accepted refined masks (``select``: all, or only CTs with a tumor) versus none (same budget);
    per-organ test F1 and DSC of both. ``baseline``: R-Super's test predictions made with ``tta``, as the new
    model's are. ``seed_offset`` > 0: a replicate whose training seed is R-Super's + the offset."""
    from rsuper.data.preprocess import prepare_dataset
    from rsuper.demo import _train_once
    from rsuper.evaluate.result import EvaluationSettings
    from rsuper.evaluate.run import evaluate_predictions
    from rsuper.infer.predict import PredictOptions, Predictor, find_ct_inputs, predict_cases

    out, data = plan.out, plan.out / "data"
    root = out / ("selftrain" if select == "all" else "selftrain_tumors")
    accepted = out / "refine" / "accepted"
    if select == "tumors":
        accepted = accepted_with_tumors(accepted, root / "accepted")
    cache = root / "cache"
    for split, masks in (("masks", ()), ("reports", (out / "organs", accepted))):
        result = prepare_dataset(data / split, cache, plan.spacing_mm, masks_dirs=masks)
        if result.failed:
            raise RuntimeError(f"prepare failed: {result.failed}")
    config = plan.train_config("R-Super+refined", 2, plan.stage2_steps, out / "runs" / "stage1" / "final.pt", 0.5)
    suffix = f"_seed{plan.seed + seed_offset}" if seed_offset else ""
    config = config.model_copy(update={"cache": [cache], "out": root / f"run{suffix}",
                                       "seed": plan.seed + seed_offset})
    final = _train_once(config, log, show_progress=False)
    pred = root / f"predictions{suffix}"
    predict_cases(Predictor.from_checkpoint(final, device=plan.device), find_ct_inputs(data / "test"), pred,
                  PredictOptions(tta=tta))
    settings = EvaluationSettings(volume_threshold_mm3=plan.volume_threshold_mm3, n_bootstrap=10, seed=plan.seed)
    rows = []
    for name, folder in ((MODEL_NAMES[1], baseline), ("R-Super+refined", pred)):
        result = evaluate_predictions(folder, None, reports=data / "gold" / "tumors.csv", masks=data / "test",
                                      settings=settings)
        det = result.detection.set_index("organ")["f1"]
        dsc = result.overlap.set_index("organ")["dsc_mean"]
        rows += [{"arm": name, "organ": o, "f1": det.get(o, np.nan), "dsc": dsc.get(o, np.nan)} for o in dsc.index]
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="`rsuper demo --quick` budgets (no quality claim)")
    parser.add_argument("--root", type=Path, default=Path("bench_review_refine"))
    parser.add_argument("--demo-out", type=Path, nargs="+", help="finished demo folders to reuse instead")
    parser.add_argument("--gain-out", type=Path, nargs="+", help="finished bench_gain seed folders (R-Super arm)")
    parser.add_argument("--self-train", nargs="?", const="all", choices=["all", "tumors"],
                        help="also the pre-registered self-training round on all accepted CTs, or only those with "
                             "a tumor")
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="self-training replicate: train with R-Super's seed + this (its own run folder)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    demos = args.demo_out or args.gain_out or []
    plans = [review_gain_seed(seed_dir, args.device) for seed_dir in args.gain_out or []]
    if not demos:
        for seed in args.seeds:
            plan = DemoPlan.default(args.root / f"seed{seed}", quick=args.quick, seed=seed, device=args.device)
            plan.parallel_stage2 = False
            run_demo(plan, log=lambda m: print(f"[seed {seed}] {m}", flush=True))
            plans.append(plan)
            demos.append(plan.out)
    refined, queues, confident, selftrain = [], [], [], []
    for i, demo in enumerate(demos):
        summary, per_ct, tumors = measure(demo)
        refined.append(summary.assign(seed=demo.name))
        queues.append(per_ct.assign(seed=demo.name))
        confident.append(tumors.assign(seed=demo.name))
        if args.self_train:
            plan = plans[i] if plans else DemoPlan.load(demo / "demo_plan.json")
            baseline, tta = ((demo / "predictions" / "none" / MODEL_NAMES[1], "none") if args.gain_out
                             else (demo / "predictions" / MODEL_NAMES[1], plan.predict_tta))
            selftrain.append(self_train(plan, baseline, tta, args.self_train, args.seed_offset).assign(seed=demo.name))
    refined_all = pd.concat(refined, ignore_index=True)
    pd.set_option("display.width", 200)
    print("\nRefined vs raw lesion DSC on report CTs with a true tumor (per seed):")
    print(refined_all.round(3).to_string(index=False))
    agg = refined_all.groupby("lesion_class")[["dsc_raw", "dsc_refined", "dsc_refined_accepted", "dsc_refined_rest"]]
    print("\nMean over seeds:")
    print(agg.mean().round(3).to_string())
    print("SD over seeds:")
    print(agg.std().round(3).to_string())
    confident_all = pd.concat(confident, ignore_index=True)
    print("\nRefined tumors whose ball centre lies on a true tumor: confident (agreement >= 0.5) vs the rest:")
    print(confident_all.round(3).to_string(index=False))
    columns = ["on_tumor_confident", "on_tumor_rest", "auroc_agreement"]
    print(confident_all.groupby("lesion_class")[columns].agg(["mean", "std"]).round(3).to_string())
    queue_all = pd.concat(queues, ignore_index=True)
    per_seed = {str(s): (auroc(g["model_wrong"].to_numpy(bool), 1 - g["agreement"].to_numpy(float))
                         if 0 < g["model_wrong"].sum() < len(g) else float("nan")) for s, g in queue_all.groupby("seed")}
    wrong = queue_all["model_wrong"].to_numpy(bool)
    pooled = auroc(wrong, 1 - queue_all["agreement"].to_numpy(float)) if 0 < wrong.sum() < len(wrong) else float("nan")
    print(f"\nReview queue AUROC for 'model wrong': pooled {pooled:.3f} over {len(queue_all)} test CTs "
          f"({int(wrong.sum())} wrong); per seed {json.dumps({k: round(v, 3) for k, v in per_seed.items()})}")
    if selftrain:
        table = pd.concat(selftrain, ignore_index=True)
        print("\nSelf-training round (test set):")
        print(table.groupby(["arm", "organ"])[["f1", "dsc"]].agg(["mean", "std"]).round(3).to_string())
        means = table.groupby("arm")[["f1", "dsc"]].mean()
        gain = 100 * (means.loc["R-Super+refined"] - means.loc[MODEL_NAMES[1]])
        helpful = gain["dsc"] >= 2 and gain["f1"] >= -2
        print(f"gain in points: DSC {gain['dsc']:+.1f}, F1 {gain['f1']:+.1f} -> "
              f"{'helpful' if helpful else 'not helping'} (pre-registered rule 4)")


if __name__ == "__main__":
    main()
