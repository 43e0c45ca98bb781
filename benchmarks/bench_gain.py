"""The gain benchmark (issue 28): masks-only, R-Super and all-masks (upper bound) at equal budgets, over seeds.

Per family and seed, in ``OUT/<family>/seed<N>/`` (every step resumes: a rerun reuses finished steps, so an
interrupted run is restarted with the same command):
  1. data: family ``demo`` = ``generate_dataset`` with the DemoPlan's settings (the demo's own generation step);
     family ``realct`` = ``rsuper.synthetic.realct.generate_realct_dataset`` (same layout; a clear error when
     this rsuper lacks it). Report facts extracted from the report TEXT by the rules backend, organ
     sub-segments derived from the organ masks, one cache (all as ``rsuper demo`` does);
  2. training, all from ONE shared stage 1 (the few mask CTs, ``stage1_steps``), then three stage-2 runs of
     ``stage2_steps`` each with the same schedule and learning rate:
       ``masks-only``  the few mask CTs (stage 2 without report samples; the demo's masks-only arm);
       ``R-Super``     few masks + the report CTs with their extracted report facts, half of each batch from
                       report CTs (the demo's R-Super arm);
       ``all-masks``   the upper bound: the few mask CTs plus the report CTs with their TRUE lesion masks (from
                       ``truth/``) used as masks, no report samples. It also starts from the shared stage 1 (which
                       saw the few masks only) and trains stage 2 on all masks, so its budget (steps, batch,
                       schedule) is exactly the other arms'; only its supervision differs. The report CTs enter its
                       cache under the ids ``<case>_truth`` (CT, organ masks, derived sub-segments and the true
                       lesion masks), beside the demo cache, whose report cases it never samples;
  3. prediction of the test CTs with each arm: the headline WITHOUT test-time augmentation, and with the
     left-right mirror TTA beside it when asked (``--tta mirror``);
  4. per tumor organ (pancreas, kidney, liver) and arm (rsuper.evaluate: per-case table, AUROC, confusion
     metrics; the statistics are ``rsuper.evaluate.gain``, whose docstring defines every number):
       auroc_volume / auroc_max_probability  CT-level AUROC on all test CTs (score = predicted tumor volume in the
                                             organ after a 1 mm opening / the gated maximum lesion probability);
       dsc_tumor                             mean DSC over the test CTs with a true tumor in the organ;
       sensitivity / specificity / f1        CT-level call = predicted volume >= a threshold chosen per arm and
                                             organ to maximise F1 on the validation half of the test CTs (fixed
                                             rule: sorted case ids, every other one), reported on the other half;
       f1_fixed                              F1 at the demo's fixed 300 mm³ on all test CTs (the demo's headline);
       kidney per side (test half)           sensitivity left / right, healthy-kidney call rate left / right;
                                             side lock = they differ by > 25 points;
     CT truth = the test reports (gold/tumors.csv, as ``rsuper demo`` evaluates), DSC truth = the test masks;
  5. gap closure per organ and metric = (R-Super - masks-only) / (all-masks - masks-only), "n/a" when the
     headroom all-masks - masks-only is below 2 points (``--min-gap``);
  6. over seeds: mean, SD, paired differences (gain = R-Super - masks-only, headroom = all-masks - masks-only),
     bootstrap 95 % intervals over seeds x cases (paired: every arm gets the same drawn cases).

Outputs: ``OUT/gain.json`` (everything), ``OUT/gain.md`` (markdown tables for BENCHMARKS.md with the command,
date, commit and machine), per seed ``OUT/<family>/seed<N>/metrics_<tta>.csv`` (one row per organ and metric:
each arm, gain, headroom, gap closure, chosen thresholds, side-lock flags) and ``per_case_<tta>.csv`` (every
test CT, organ and arm), ``timings.json``.

Commands (run from the repository root; numbers in points = 100 x the fraction):
  smoke test (numbers meaningless at that size: 3 mask, 8 report, 6 test CTs, 12 + 8 steps, 32³ patches;
  measured 7 min on the 2-core CPU box under a load of 5-8 from other jobs, about 3 min alone):
    PYTHONPATH=src:benchmarks python benchmarks/bench_gain.py --family demo --seeds 1 --quick --out /tmp/gain_quick \\
        --device cpu
  the real run, default demo plan (8 mask, 60 report, 60 test CTs at 4 mm, stage 1 of 1200 steps, then three arms of
  1200 steps), headline without TTA and the mirror TTA beside it. Measured on the CPU box (2 cores, 2026-12-05):
    about 33 min per seed alone (demo), 66-75 min per seed with two seeds side by side at 1 thread each (demo and
    realct: training ~61 min, prediction of 3 arms x 60 CTs plain + mirrored ~11 min); a seed resumes where it
    stopped, so the seeds of a family can be spread over several sessions:
      OMP_NUM_THREADS=2 python benchmarks/bench_gain.py --family demo --seeds 31 32 33 --tta mirror \\
          --out gain_demo --device cpu
    one GPU (H100/H200), about 5-6 min per seed (the demo's two arms take 3.7 min), under 20 min for 3 seeds:
      python benchmarks/bench_gain.py --family demo --seeds 31 32 33 --tta mirror --out gain_demo --device cuda
    the second phantom family, when rsuper.synthetic.realct exists: the same with ``--family realct`` (or
    ``--family demo realct`` for both, in OUT/demo and OUT/realct).
  A smaller budget for a first look: ``--steps1 600 --steps2 600``. An interrupted run: the same command again
  (a seed's plan must not change: another --steps or --quick in the same OUT is refused). ``--summarise-only``
  re-reads finished seeds and rewrites gain.json / gain.md.
  Set PYTHONPATH=src:benchmarks when rsuper is not installed (this script imports ``bench_demo``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import inspect
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from bench_demo import markdown  # this folder is on sys.path when the script runs
from rsuper import labels
from rsuper.atomic import atomic_path, write_json_atomic, write_text_atomic
from rsuper.config import TrainConfig
from rsuper.data.preprocess import prepare_dataset
# The demo's own steps, so that the masks-only and R-Super arms are exactly the demo's arms.
from rsuper.demo import DemoPlan, _generate, _organs, _report_only_csv, _train_in_parallel, _train_once, \
    check_same_plan
from rsuper.evaluate import gain
from rsuper.evaluate.collect import load_report_truth, load_truth_mask, on_grid, opened_volume_mm3
from rsuper.evaluate.overlap import DEFAULT_NSD_TOLERANCE_MM
from rsuper.evaluate.run import per_case_table
from rsuper.infer.predict import PredictOptions, Predictor, find_ct_inputs, predict_cases
from rsuper.refine.run import RefineOptions, predict_for_refine, refine_cases
from rsuper.reports.pipeline import run_extraction
from rsuper.reports.tables import read_tumors_csv

FAMILIES = ("demo", "realct")
TTA_CHOICES = ("none", "mirror")
REPORT_FRACTION = 0.5  # the demo's R-Super arm: half of each stage-2 batch from report CTs
TRUTH_SUFFIX = "_truth"  # report CTs with their true lesion masks, in the all-masks arm's extra cache
HEADLINE = ("auroc_volume", "auroc_max_probability", "dsc_tumor", "sensitivity", "specificity", "f1", "f1_fixed")
Log = Callable[[str], None]


# ------------------------------------------------------------------------------------------------ data
def realct_generator() -> Callable:
    """``rsuper.synthetic.realct.generate_realct_dataset``, or a SystemExit saying it is missing."""
    try:
        from rsuper.synthetic.realct import generate_realct_dataset  # type: ignore[import-not-found]
    except ImportError as error:
        raise SystemExit(f"--family realct needs rsuper.synthetic.realct.generate_realct_dataset, which this rsuper "
                         f"does not have ({error}). Use --family demo, or update rsuper.") from None
    return generate_realct_dataset


def generator_kwargs(family: str, generate: Callable, plan: DemoPlan) -> dict:
    """The DemoPlan's generator settings that ``generate`` takes (by name). The realct family keeps its own
    organ-relative tumor contrast range (docs/phantoms.md): the demo's single -90 HU is not passed to it."""
    wanted = dict(n_mask=plan.n_mask, n_report=plan.n_report, n_test=plan.n_test, spacing_mm=plan.spacing_mm,
                  seed=plan.seed, tumor_contrast_hu=plan.tumor_contrast_hu, noise_sd_hu=plan.noise_sd_hu,
                  mask_healthy_fraction=plan.mask_healthy_fraction, phase_weights=plan.phase_weights,
                  mask_phase_weights=plan.mask_phase_weights, mask_cover_locations=plan.mask_cover_locations)
    if family == "realct":
        wanted.pop("tumor_contrast_hu")
    accepted = inspect.signature(generate).parameters
    return {k: v for k, v in wanted.items() if k in accepted}


def generate_data(family: str, plan: DemoPlan, log: Log) -> Path:
    """OUT/seed<N>/data of the family (reused when complete)."""
    if family == "demo":
        return _generate(plan, log)
    data = plan.out / "data"
    done = plan.out / "data_done.json"
    if done.is_file():
        log(f"data: reusing {data}")
        return data
    generate = realct_generator()
    kwargs = generator_kwargs("realct", generate, plan)
    log(f"data: generate_realct_dataset({data}, {kwargs})")
    generate(data, **kwargs)
    write_json_atomic(done, {"generator": "rsuper.synthetic.realct.generate_realct_dataset",
                             "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}})
    return data


def truth_dataset(data: Path, organs: Path, out: Path) -> Path:
    """``out/<case>_truth/``: each report CT (linked) with its organ masks, derived sub-segments and TRUE lesion
    masks (``truth/<case>/segmentations/*_lesion*``), so that the all-masks arm trains on it as mask CTs."""
    for case_dir in sorted(p for p in (data / "reports").iterdir() if (p / "ct.nii.gz").is_file()):
        case_id = case_dir.name
        target = out / f"{case_id}{TRUTH_SUFFIX}"
        seg = target / "segmentations"
        seg.mkdir(parents=True, exist_ok=True)
        lesions = sorted((data / "truth" / case_id / "segmentations").glob("*_lesion.nii*"))
        if not lesions:
            raise FileNotFoundError(f"no true lesion masks in {data / 'truth' / case_id / 'segmentations'}")
        sources = [*lesions, *sorted((case_dir / "segmentations").glob("*.nii*")),
                   *sorted((organs / case_id / "segmentations").glob("*.nii*"))]
        for source in sources:  # first source of a class wins: truth lesions, the CT's own masks, derived ones
            link = seg / source.name
            if not link.exists():
                link.symlink_to(source.resolve())
        ct = target / "ct.nii.gz"
        if not ct.exists():
            ct.symlink_to((case_dir / "ct.nii.gz").resolve())
    return out


def prepare(plan: DemoPlan, data: Path, organs: Path, log: Log) -> None:
    """The demo's cache (mask CTs + report CTs with derived sub-segments) and the all-masks arm's extra cache."""
    log(f"prepare: caches at {plan.spacing_mm} mm")
    jobs = (("masks", data / "masks", plan.out / "cache", ()), ("reports", data / "reports", plan.out / "cache",
                                                                (organs,)),
            ("truth", truth_dataset(data, organs, plan.out / "truth_masks"), plan.out / "cache_truth", ()))
    for name, folder, cache, masks_dirs in jobs:
        result = prepare_dataset(folder, cache, plan.spacing_mm, masks_dirs=masks_dirs)
        if result.failed:
            raise RuntimeError(f"prepare {name} failed for {sorted(result.failed)}: {result.failed}")


# -------------------------------------------------------------------------------------------- training
def with_caches(config: TrainConfig, caches: list[Path]) -> TrainConfig:
    """``config`` training on ``caches`` (the one place that names the TrainConfig field)."""
    config = config.model_copy()
    config.cache = caches  # validated (validate_assignment)
    return config


def arm_configs(plan: DemoPlan, stage1: Path) -> dict[str, TrainConfig]:
    """The three stage-2 runs from the shared stage 1, each ``plan.stage2_steps`` steps, same schedule."""
    steps = plan.stage2_steps
    return {
        "masks-only": plan.train_config("masks-only", 2, steps, stage1, 0.0),
        "R-Super": plan.train_config("R-Super", 2, steps, stage1, REPORT_FRACTION),
        "all-masks": with_caches(plan.train_config("all-masks", 2, steps, stage1, 0.0),
                                 [plan.out / "cache", plan.out / "cache_truth"]),
    }


def train_arms(plan: DemoPlan, parallel: bool, log: Log) -> dict[str, Path]:
    stage1 = _train_once(plan.train_config("stage1", 1, plan.stage1_steps, None, 0.0), log)
    configs = arm_configs(plan, stage1)
    todo = {name: c for name, c in configs.items() if not (c.out / "final.pt").is_file()}
    done = {name: c.out / "final.pt" for name, c in configs.items() if name not in todo}
    for name in done:
        log(f"train: reusing {done[name]}")
    if todo and parallel and len(todo) > 1:
        done.update(_train_in_parallel(todo, log))
    else:
        done.update({name: _train_once(config, log) for name, config in todo.items()})
    return {name: done[name] for name in gain.ARMS}


def refine_report_cts(seed_dir: Path, checkpoint: Path, out: Path, options: RefineOptions, device: str = "cpu",
                      tta: str = "auto") -> Path:
    """``rsuper refine --checkpoint CHECKPOINT`` of a finished seed's report CTs into ``out`` (predictions with
    ``tta`` in ``out/predictions``; finished cases are kept); returns ``out``."""
    tumors = seed_dir / "extract" / "tumors.csv"
    predict_for_refine(checkpoint, seed_dir / "data" / "reports", sorted(read_tumors_csv(tumors)),
                       out / "predictions", device=device, tta=tta)
    refine_cases(out / "predictions", tumors, out, [seed_dir / "data" / "reports", seed_dir / "organs"], options)
    return out


def run_folder(tta: str, split: str = "test") -> str:
    """Folder name of one TTA mode's predictions and evaluations of a split: ``<tta>``, or ``<tta>_<split>``."""
    return tta if split == "test" else f"{tta}_{split}"


def predict_arms(plan: DemoPlan, data: Path, checkpoints: dict[str, Path], tta: str, log: Log,
                 split: str = "test") -> dict[str, Path]:
    """Each checkpoint's predictions of the ``split`` CTs (``test``, or ``reports``: the report CTs the arms trained
    on) in ``OUT/predictions/<run_folder>/<name>``."""
    inputs = find_ct_inputs(data / split)
    dirs = {}
    for name, checkpoint in checkpoints.items():
        pred = plan.out / "predictions" / run_folder(tta, split) / name
        log(f"predict: {name} (TTA {tta}) on {len(inputs)} {split} CTs -> {pred}")
        predictor = Predictor.from_checkpoint(checkpoint, device=plan.device)
        statuses = predict_cases(predictor, inputs, pred, PredictOptions(tta=tta, save_probabilities=False))
        failed = {k: v for k, v in statuses.items() if v.startswith("failed")}
        if failed:
            raise RuntimeError(f"prediction failed for {failed}")
        dirs[name] = pred
    return dirs


# ------------------------------------------------------------------------------------------ evaluation
def side_columns(pred_dir: Path, masks_dir: Path, case_id: str, organ: str) -> dict:
    """Per side of a paired organ: a true tumor there?, predicted tumor volume there (mm³, opened). A side's area
    is its true organ mask dilated by 2 voxels (as benchmarks/bench_mirror.py); the prediction is scored on the
    truth's grid."""
    lesion = labels.lesion_class(organ)
    truth = load_truth_mask(masks_dir, case_id, lesion)
    pred = load_truth_mask(pred_dir, case_id, lesion)  # a boolean mask reader for any <case>/segmentations
    row = {}
    for side in labels.ORGAN_MASK_CLASSES[organ]:
        organ_mask = load_truth_mask(masks_dir, case_id, side)
        if truth is None or pred is None or organ_mask is None:
            row[f"truth_{side}"], row[f"pred_volume_{side}_mm3"] = False, float("nan")
            continue
        area = ndimage.binary_dilation(organ_mask.array, iterations=2)
        row[f"truth_{side}"] = bool((truth.array & area).any())
        row[f"pred_volume_{side}_mm3"] = opened_volume_mm3(on_grid(pred, truth).array & area, truth.spacing_mm)
    return row


def paired_organs(organs: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return {o: labels.ORGAN_MASK_CLASSES[o] for o in organs if len(labels.ORGAN_MASK_CLASSES.get(o, ())) == 2}


def evaluate_arm(pred_dir: Path, data: Path, organs: tuple[str, ...], out_csv: Path,
                 split: str = "test") -> pd.DataFrame:
    """Per (case, organ) rows of one arm's predictions (rsuper.evaluate.run.per_case_table) with ``truth`` (CT
    has a tumor: the report, else the mask), ``tumor_mask`` and the per-side columns; cached in ``out_csv``.
    ``split`` ``reports``: the report CTs, lesion masks from ``data/truth`` (no organ masks there: no side columns)."""
    if out_csv.is_file():
        return pd.read_csv(out_csv)
    reports = data / "gold" / "tumors.csv"
    truth = load_report_truth(reports) if reports.is_file() else None
    masks = data / ("test" if split == "test" else "truth")
    table = per_case_table(pred_dir, truth, masks, DEFAULT_NSD_TOLERANCE_MM)
    table = table[table["organ"].isin(organs)].reset_index(drop=True)
    has_report = "report_count" in table and table["report_count"].notna().all()
    table["truth"] = (table["report_count"] > 0) if has_report else (table["mask_volume_mm3"] > 0)
    table["truth_source"] = "reports" if has_report else "masks"
    table["tumor_mask"] = table["mask_volume_mm3"] > 0
    sides = paired_organs(organs)
    extra = [side_columns(pred_dir, masks, case_id, organ) if organ in sides else {}
             for case_id, organ in zip(table["case_id"], table["organ"])]
    table = pd.concat([table, pd.DataFrame(extra, index=table.index)], axis=1)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return table


def checkpoint_cases(plan: DemoPlan, name: str, checkpoint: Path, split: str = "test") -> pd.DataFrame:
    """The per-case rows (as ``evaluate_arm``) of any checkpoint on the seed's ``split`` CTs without TTA, predicted
    once into ``predictions/<run_folder>/<name>`` and cached in ``eval/<run_folder>/<name>.csv``."""
    folder = run_folder("none", split)
    cached = plan.out / "eval" / folder / f"{name}.csv"
    pred = plan.out / "predictions" / folder / name
    if not cached.is_file():
        pred = predict_arms(plan, plan.out / "data", {name: checkpoint}, "none", print, split=split)[name]
    return evaluate_arm(pred, plan.out / "data", tuple(plan.target_organs), cached, split=split)


def organ_cases(per_case: pd.DataFrame, organs: tuple[str, ...]) -> dict[str, gain.OrganCases]:
    sides = paired_organs(organs)
    return {organ: gain.OrganCases.from_frame(per_case, organ, sides=sides.get(organ, ())) for organ in organs}


# -------------------------------------------------------------------------------------------- one seed
def seed_plan(args: argparse.Namespace, family: str, seed: int) -> DemoPlan:
    plan = DemoPlan.default(args.out / family / f"seed{seed}", quick=args.quick, seed=seed, device=args.device)
    changes: dict = {"predict_tta": "none", "parallel_stage2": not args.sequential}
    if args.quick:
        changes["n_test"] = 6
    if args.steps1 is not None:
        changes["stage1_steps"] = args.steps1
    if args.steps2 is not None:
        changes["stage2_steps"] = args.steps2
    return dataclasses.replace(plan, **changes)


def check_family(plan: DemoPlan, family: str) -> None:
    path = plan.out / "bench_gain.json"
    if path.is_file():
        before = json.loads(path.read_text())["family"]
        if before != family:
            raise SystemExit(f"{plan.out} holds family {before!r}, not {family!r}; use another --out")
    write_json_atomic(path, {"family": family, "plan": "demo_plan.json"})


class Timer:
    """Seconds per step of this invocation, merged into ``timings.json`` (a reused step takes ~0 s)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.times = json.loads(path.read_text()) if path.is_file() else {}

    def __call__(self, step: str, start: float) -> None:
        self.times[step] = round(time.perf_counter() - start, 1)
        write_json_atomic(self.path, self.times)


def run_seed(args: argparse.Namespace, family: str, seed: int, log: Log) -> None:
    plan = seed_plan(args, family, seed)
    plan.check()
    plan.out.mkdir(parents=True, exist_ok=True)
    try:
        check_same_plan(plan)  # a changed plan would silently reuse finished steps
    except ValueError as error:
        raise SystemExit(str(error)) from None
    check_family(plan, family)
    write_json_atomic(plan.out / "demo_plan.json", {k: (str(v) if isinstance(v, Path) else v)
                                                    for k, v in dataclasses.asdict(plan).items()})
    timer = Timer(plan.out / "timings.json")
    t = time.perf_counter()
    data = generate_data(family, plan, log)
    log("extract: rules backend on the report text")
    run_extraction(_report_only_csv(data, plan.out), plan.out / "extract", backend="rules")
    organs = _organs(data, plan.out, log)
    prepare(plan, data, organs, log)
    timer("data_extract_organs_prepare_s", t)
    t = time.perf_counter()
    checkpoints = train_arms(plan, not args.sequential, log)
    timer("train_s", t)
    for tta in args.tta:
        t = time.perf_counter()
        dirs = predict_arms(plan, data, checkpoints, tta, log)
        timer(f"predict_{tta}_s", t)
        t = time.perf_counter()
        log(f"evaluate: three arms (TTA {tta})")
        tables = [evaluate_arm(d, data, plan.target_organs, plan.out / "eval" / tta / f"{arm}.csv").assign(arm=arm)
                  for arm, d in dirs.items()]
        per_case = pd.concat(tables, ignore_index=True)
        with atomic_path(plan.out / f"per_case_{tta}.csv") as tmp:
            per_case.to_csv(tmp, index=False)
        metrics = pd.concat([gain.seed_table(c, plan.volume_threshold_mm3, args.min_gap)
                             for c in organ_cases(per_case, plan.target_organs).values()], ignore_index=True)
        with atomic_path(plan.out / f"metrics_{tta}.csv") as tmp:
            metrics.assign(seed=seed, family=family, tta=tta).to_csv(tmp, index=False)
        timer(f"evaluate_{tta}_s", t)


# ------------------------------------------------------------------------------------------- summary
def pts(value: float, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def arm_cell(row: pd.Series, col: str, signed: bool = False, ci: bool = False) -> str:
    """``mean ± SD`` (SD with several seeds) in points, ``[low, high]`` after it when ``ci``; "–" if undefined."""
    text = pts(row[f"{col}_mean"], signed)
    if text == "–":
        return text
    if row["seeds"] > 1 and np.isfinite(row[f"{col}_sd"]):
        text += f" ± {100 * row[f'{col}_sd']:.1f}"
    low, high = row.get(f"{col}_ci_low", np.nan), row.get(f"{col}_ci_high", np.nan)
    if ci and np.isfinite(low) and np.isfinite(high):
        text += f" [{pts(low, signed)}, {pts(high, signed)}]"
    return text


def closure_cell(row: pd.Series) -> str:
    """The gap closure of the means with its interval and, when the n/a guard dropped replicates, their share."""
    value = row.get("gap_closure", np.nan)
    if not np.isfinite(value):
        return "n/a"
    low, high = row.get("gap_closure_ci_low", np.nan), row.get("gap_closure_ci_high", np.nan)
    text = f"{value:.2f}" + (f" [{low:.2f}, {high:.2f}]" if np.isfinite(low) and np.isfinite(high) else "")
    defined = row.get("gap_closure_defined", 1.0)
    if np.isfinite(defined) and defined < 1.0:
        text += f" ({100 * defined:.0f} % of replicates)"
    return text


def headline_table(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, row in summary[summary["metric"].isin(HEADLINE)].iterrows():
        rows.append({"organ": row["organ"], "metric": row["metric"],
                     **{arm: arm_cell(row, arm) for arm in gain.ARMS},
                     "gain R−M [95% CI]": arm_cell(row, "gain", signed=True, ci=True),
                     "headroom A−M [95% CI]": arm_cell(row, "headroom", signed=True, ci=True),
                     "gap closure [95% CI]": closure_cell(row)})
    return pd.DataFrame(rows)


def side_table(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for organ, group in summary.groupby("organ", sort=False):
        metrics = group.set_index("metric")
        if "side_lock" not in metrics.index:
            continue
        for arm in gain.ARMS:
            row = {"organ": organ, "arm": arm}
            for name in gain.SIDE_METRICS:
                row[name.replace("_", " ")] = arm_cell(metrics.loc[name], arm, ci=True)
            lock = metrics.loc["side_lock"]
            row["side lock (means)"] = "yes" if lock[f"{arm}_mean"] else "no"
            row["seeds flagged"] = f"{int(lock[f'{arm}_seeds_flagged'])}/{int(lock['seeds'])}"
            rows.append(row)
    return pd.DataFrame(rows)


def per_seed_table(per_seed: pd.DataFrame) -> pd.DataFrame:
    rows = []
    keep = per_seed[per_seed["metric"].isin(HEADLINE + ("threshold_mm3",))]
    for _, row in keep.iterrows():
        is_threshold = row["metric"] == "threshold_mm3"
        fmt = (lambda v: f"{v:.0f}") if is_threshold else pts
        rows.append({"seed": int(row["seed"]), "organ": row["organ"], "metric": row["metric"],
                     **{arm: fmt(row[arm]) for arm in gain.ARMS},
                     "gain": "" if is_threshold else pts(row["gain"], True),
                     "gap closure": "" if is_threshold else (f"{row['gap_closure']:.2f}"
                                                             if np.isfinite(row["gap_closure"]) else "n/a")})
    return pd.DataFrame(rows)


def git_commit() -> str:
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" (uncommitted changes)" if dirty else "")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    text = f"{platform.machine()}, {os.cpu_count()} logical CPUs ({cpu}), torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def summarise(args: argparse.Namespace, started: str, wall_s: float) -> dict:
    """Reads every finished seed's per-case tables, aggregates, writes gain.json and gain.md."""
    command = "python benchmarks/bench_gain.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report: dict = {"command": command, "date": started, "commit": git_commit(), "machine": machine(),
                    "wall_s": round(wall_s, 1), "n_bootstrap": args.n_bootstrap, "min_gap": args.min_gap,
                    "families": {}}
    lines = [f"# Gain benchmark: masks-only vs R-Super vs all-masks ({', '.join(args.family)}; seeds "
             f"{' '.join(map(str, args.seeds))}{'; quick' if args.quick else ''})", "",
             f"- command: `{command}`", f"- date: {started}; commit {report['commit']}; "
             + ("summary of finished seeds" if args.summarise_only else f"wall time {wall_s:.0f} s"),
             f"- machine: {report['machine']}; device {args.device}",
             "- numbers in points (100 x fraction): mean ± SD over seeds; intervals: 95 % bootstrap over seeds x "
             f"cases ({args.n_bootstrap} paired replicates); gain = R-Super − masks-only, headroom = all-masks − "
             "masks-only, gap closure = gain / headroom (n/a when the headroom is below "
             f"{100 * args.min_gap:.0f} points)",
             "- AUROC (score: predicted tumor volume / gated max probability) and DSC (tumor CTs) on all test CTs; "
             "sensitivity / specificity / F1 on the test half at the volume threshold chosen per arm for the best F1 "
             "on the validation half (sorted case ids, every other one); f1_fixed: 300 mm³ on all test CTs", ""]
    for family in args.family:
        report["families"][family] = {}
        plans = {seed: seed_plan(args, family, seed) for seed in args.seeds}
        first = plans[args.seeds[0]]
        lines += [f"## Family `{family}`", "",
                  f"Plan: {first.n_mask} mask, {first.n_report} report, {first.n_test} test CTs at {first.spacing_mm} "
                  f"mm, `{first.model}`, patch {first.patch_size}, batch {first.batch_size}; stage 1 "
                  f"{first.stage1_steps} steps (shared), then each arm {first.stage2_steps} steps.", ""]
        timings = {seed: json.loads((p.out / "timings.json").read_text()) if (p.out / "timings.json").is_file()
                   else {} for seed, p in plans.items()}
        for tta in args.tta:
            cases: dict[str, list[gain.OrganCases]] = {}
            per_seed = []
            for seed, plan in plans.items():
                per_case = pd.read_csv(plan.out / f"per_case_{tta}.csv")
                for organ, organ_case in organ_cases(per_case, plan.target_organs).items():
                    cases.setdefault(organ, []).append(organ_case)
                per_seed.append(pd.read_csv(plan.out / f"metrics_{tta}.csv"))
            summary = pd.concat([gain.aggregate(c, args.n_bootstrap, 0, level=0.95,
                                                fixed_threshold=first.volume_threshold_mm3, min_gap=args.min_gap)
                                 for c in cases.values()], ignore_index=True)
            seeds_frame = pd.concat(per_seed, ignore_index=True)
            report["families"][family][tta] = {
                "summary": json.loads(summary.to_json(orient="records")),
                "per_seed": json.loads(seeds_frame.to_json(orient="records"))}
            title = "headline, no TTA" if tta == "none" else f"{tta} TTA"
            lines += [f"### {family}: {title}", "", markdown(headline_table(summary)), ""]
            sides = side_table(summary)
            if len(sides):
                lines += [f"Per side ({title}; test half, at the chosen threshold; side lock = left and right differ "
                          f"by > {100 * gain.SIDE_LOCK_GAP:.0f} points):", "", markdown(sides), ""]
            lines += [f"<details><summary>Per seed ({title})</summary>", "", markdown(per_seed_table(seeds_frame)), "",
                      "</details>", ""]
        report["families"][family]["timings_s"] = timings
        rows = [{"seed": seed, **t} for seed, t in timings.items()]
        lines += ["Seconds per step and seed (the step's latest run; a step reused from an earlier run takes ~0 s):",
                  "",
                  markdown(pd.DataFrame(rows).fillna("")), ""]
    write_json_atomic(args.out / "gain.json", report)
    write_text_atomic(args.out / "gain.md", "\n".join(lines))
    print("\n".join(lines))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", nargs="+", choices=FAMILIES, default=["demo"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[31, 32, 33])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (the GPU when there is one)")
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes: 3 mask, 8 report, 6 test CTs, 12 + 8 "
                                                              "steps, 32³ patches")
    parser.add_argument("--tta", choices=TTA_CHOICES, default="none",
                        help="none: the headline only (no test-time augmentation); mirror: also predict with the "
                             "left-right mirror TTA and report it beside the headline")
    parser.add_argument("--steps1", type=int, help="stage-1 steps (default: the DemoPlan's)")
    parser.add_argument("--steps2", type=int, help="stage-2 steps of every arm (default: the DemoPlan's)")
    parser.add_argument("--n-bootstrap", type=int, help="bootstrap replicates (default 1000; 200 with --quick)")
    parser.add_argument("--min-gap", type=float, default=gain.MIN_GAP,
                        help="smallest headroom (fraction) for a gap closure; below it 'n/a' (default 0.02)")
    parser.add_argument("--sequential", action="store_true",
                        help="train the three stage-2 arms one after another (default: side by side, one process "
                             "and one thread each, as the demo)")
    parser.add_argument("--summarise-only", action="store_true", help="re-read finished seeds, train nothing")
    args = parser.parse_args()
    args.tta = ["none"] + (["mirror"] if args.tta == "mirror" else [])  # the headline is always without TTA
    if args.n_bootstrap is None:
        args.n_bootstrap = 200 if args.quick else 1000
    if "realct" in args.family and not args.summarise_only:
        realct_generator()  # fail now, not after the demo family's seeds
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    start = time.perf_counter()
    if not args.summarise_only:
        for family in args.family:
            for seed in args.seeds:
                print(f"== {family} seed {seed} ==", flush=True)
                run_seed(args, family, seed, lambda message: print(f"  {message}", flush=True))
    summarise(args, started, time.perf_counter() - start)


if __name__ == "__main__":
    main()
