"""`rsuper demo`: the whole method end to end on generated phantoms, masks-only versus R-Super.

Steps (each resumes: a rerun skips what is complete):
  1. phantoms: few mask cases, many report cases, a test set with masks and reports;
  2. extract: tumor facts from the report TEXT with the rules backend (not from the gold table);
  3. organs: pancreas head/body/tail and kidney sides derived from the organ masks (not from the truth);
  4. prepare: one cache at the training spacing;
  5. train: stage 1 (masks only), then from it, with the same number of steps and the same schedule,
     "masks-only" (stage 2 without report samples) and "R-Super" (stage 2 with report samples, λ = 0.1);
  6. predict the test set with both; 7. evaluate both against the test masks and reports and compare;
  8. review the test set's R-Super predictions against their reports and refine the report CTs' masks with
     R-Super (docs/review_refine.md), both compared with the phantoms' true masks in the same HTML report.

Example:
    >>> result = run_demo(DemoPlan.default(Path("demo_out"), quick=True))
    >>> result.summary  # per organ: F1 and DSC of both models
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from pydantic import ValidationError

from rsuper.anatomy.organ_masks import case_is_done, process_case
from rsuper.atomic import atomic_path, write_json_atomic
from rsuper.config import FLAT_KEYS, TrainConfig, accepted_keys, drop_removed_options, set_option
from rsuper.data.cases import discover_cases
from rsuper.data.preprocess import prepare_dataset
from rsuper.errors import ConfigError, validation_problems
from rsuper.evaluate.compare import compare_predictions
from rsuper.evaluate.result import EvaluationSettings
from rsuper.infer.predict import PredictOptions, Predictor, check_tta_mode, find_ct_inputs, predict_cases
from rsuper.reports.pipeline import run_extraction
from rsuper.reports.tables import read_csv_text
from rsuper.synthetic.phantoms import generate_dataset
from rsuper.train.trainer import train

MODEL_NAMES = ("masks-only", "R-Super")
PLAN_ERROR = "invalid demo plan"  # heading of DemoPlan problems (rsuper.errors)


@dataclass
class DemoPlan:
    """Sizes and budgets of one demo run (spacing in mm, patch in voxels, steps per training stage)."""

    out: Path
    seed: int = 0
    n_mask: int = 8
    n_report: int = 60
    n_test: int = 60
    spacing_mm: float = 4.0
    tumor_contrast_hu: float = -90.0
    noise_sd_hu: tuple[float, float] = (5.0, 15.0)
    # "Two sites", as in R-Super's public demo (PanTS masks, Merlin reports and tests): the few mask CTs
    # are tumor-enriched and all portal-venous; report and test CTs mix portal, arterial and non-contrast.
    mask_healthy_fraction: float = 0.0
    mask_phase_weights: tuple[float, float, float] = (1.0, 0.0, 0.0)
    phase_weights: tuple[float, float, float] = (0.4, 0.3, 0.3)
    # The mask CTs' first tumors visit the organs and their sub-segments in turn (liver segments 7, 8, 4, pancreas
    # head, body, tail, both kidneys), as a large annotated set shows every location (BENCHMARKS.md, session 7).
    mask_cover_locations: bool = True
    model: str = "dynunet_small"
    patch_size: tuple[int, int, int] = (48, 48, 48)
    batch_size: int = 2
    # 1200 rather than 800 (adopted with the covering mask CTs, session 7): the Ball Loss starts from stage 1's
    # prediction, which must already see every organ's tumors (BENCHMARKS.md: a stage 1 blind to the report CTs'
    # liver tumors let R-Super's liver channel collapse).
    stage1_steps: int = 1200
    # 1200 rather than 400: with 400 the report losses had not converged (BENCHMARKS.md, demo section).
    stage2_steps: int = 1200
    lr: float = 3e-3
    # Short CPU budget: stage 2 keeps the stage-1 learning rate (docs/method.md: x0.1 for long runs) in both arms.
    stage2_lr_factor: float = 1.0
    report_weight: float = 0.1
    tumor_crop_prob: float = 0.8
    target_organs: tuple[str, ...] = ("pancreas", "kidney", "liver")
    volume_threshold_mm3: float = 300.0
    # Test-time augmentation of both arms' predictions (rsuper.infer.tta.TTA_MODES). "mirror": the mean of the
    # CT as is and mirrored left-right; it lifted R-Super's F1 by 7.7 and DSC by 10.3 points (organ means, seeds
    # 14-20, pre-registered) by removing calls a lesion channel makes on one side only (BENCHMARKS.md, session 16).
    predict_tta: str = "mirror"
    n_bootstrap: int = 200
    parallel_stage2: bool = True
    # Where training and prediction run ("auto": the GPU when there is one). Changes speed, not the plan.
    device: str = "auto"
    # Extra TrainConfig settings of both stage-2 arms (field names, old flat keys or dotted paths), e.g.
    # {"ball_weight": 0.0} or {"loss.ball.weight": 0.0} (benchmarks/bench_demo_ablation.py).
    stage2_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_tta_mode(self.predict_tta, "predict_tta")  # here, not after the training

    @classmethod
    def default(cls, out: Path, quick: bool = False, seed: int = 0, device: str = "auto") -> DemoPlan:
        """The default plan (16-22 min on 2 CPU cores, BENCHMARKS.md) or the quick smoke-test plan (about 3 min)."""
        if quick:
            return cls(out=out, seed=seed, n_mask=3, n_report=8, n_test=4, stage1_steps=12, stage2_steps=8,
                       patch_size=(32, 32, 32), n_bootstrap=50, device=device)
        return cls(out=out, seed=seed, device=device)

    @classmethod
    def load(cls, path: Path) -> DemoPlan:
        """The plan a demo wrote to ``OUT/demo_plan.json`` (lists back to tuples, ``out`` to a Path).

        Raises :class:`ConfigError` (one line per problem, see :meth:`check`) for a plan this rsuper cannot run.
        """
        try:
            raw = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise ConfigError(f"not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}",
                              PLAN_ERROR, path) from None
        try:  # a plan of an older rsuper may hold options removed since (at "off": dropped, else refused)
            raw = drop_removed_options(raw, where="the plan")
        except ValueError as error:
            raise ConfigError(str(error).splitlines(), PLAN_ERROR, path) from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown demo plan fields {unknown}; was it written by another rsuper version?",
                              PLAN_ERROR, path)
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        try:
            plan = cls(**{**values, "out": Path(raw["out"])})
            plan.check()
        except ConfigError as error:
            raise ConfigError(error.problems, PLAN_ERROR, path) from None
        return plan

    def check(self) -> None:
        """Raises :class:`ConfigError` listing every problem of the plan (its training runs' TrainConfig fields,
        ``stage2_options`` included), so that a bad plan stops before the first step, not after the training."""
        problems: list[str] = []
        plan_names = {path: name for name, path in PLAN_TO_CONFIG.items()}
        options = {FLAT_KEYS.get(key, key): f"stage2_options.{key}" for key in self.stage2_options}
        runs = ((1, self.stage1_steps, None, {**plan_names, "optim.steps": "stage1_steps"}),
                (2, self.stage2_steps, self.out / "stage1.pt", {**plan_names, "optim.steps": "stage2_steps", **options}))
        for stage, steps, init, names in runs:
            try:
                TrainConfig.model_validate(self._config_data("check", stage, steps, init, 0.5))
            except ValidationError as error:
                found = validation_problems(error, names, accepted_keys())
                problems += [p for p in found if p not in problems]
            except ValueError as error:  # a removed option in stage2_options
                problems += [p for p in str(error).splitlines() if p not in problems]
        if problems:
            raise ConfigError(problems, PLAN_ERROR)

    def train_config(self, name: str, stage: int, steps: int, init: Path | None, report_fraction: float) -> TrainConfig:
        """The (nested) TrainConfig of one demo training run (stage 2: with ``stage2_options`` on top)."""
        return TrainConfig.model_validate(self._config_data(name, stage, steps, init, report_fraction))

    def _config_data(self, name: str, stage: int, steps: int, init: Path | None,
                     report_fraction: float) -> dict[str, Any]:
        other = (1 - self.tumor_crop_prob) / 2
        data: dict[str, Any] = {
            "cache": self.out / "cache", "tumors": self.out / "extract" / "tumors.csv", "out": self.out / "runs" / name,
            "stage": stage, "init": init, "target_organs": list(self.target_organs), "model": self.model,
            "data": {"patch_size": self.patch_size, "batch_size": self.batch_size, "workers": 0,
                     "report_fraction": report_fraction,
                     "crops": {"mask_crop_probs": {"tumor": self.tumor_crop_prob, "organ": other, "random": other}}},
            "optim": {"steps": steps, "lr": self.lr, "stage2_lr_factor": self.stage2_lr_factor,
                      "warmup_steps": max(1, steps // 20)},
            "loss": {"report_weight": self.report_weight},
            "seed": self.seed, "device": self.device,
            "checkpoint_every": max(10, steps // 4), "log_every": max(1, min(10, steps // 10)),
        }
        if stage == 2:
            for key, value in drop_removed_options(self.stage2_options, where="stage2_options").items():
                set_option(data, key, value)
        return data


# Plan field -> the TrainConfig field it sets in every training run (problems name the plan field).
PLAN_TO_CONFIG = {
    "target_organs": "target_organs", "model": "model", "patch_size": "data.patch_size",
    "batch_size": "data.batch_size", "tumor_crop_prob": "data.crops.mask_crop_probs", "lr": "optim.lr",
    "stage2_lr_factor": "optim.stage2_lr_factor", "report_weight": "loss.report_weight", "seed": "seed",
    "device": "device",
}


@dataclass
class DemoResult:
    """Where the demo wrote its outputs and the headline numbers."""

    out: Path
    comparison: pd.DataFrame
    summary: pd.DataFrame
    html: Path


Log = Callable[[str], None]


def _generate(plan: DemoPlan, log: Log) -> Path:
    data = plan.out / "data"
    if (data / "phantoms.json").is_file():
        log(f"phantoms: reusing {data}")
        return data
    log(f"phantoms: {plan.n_mask} mask, {plan.n_report} report and {plan.n_test} test cases at {plan.spacing_mm} mm")
    generate_dataset(data, n_mask=plan.n_mask, n_report=plan.n_report, n_test=plan.n_test,
                     spacing_mm=plan.spacing_mm, seed=plan.seed, tumor_contrast_hu=plan.tumor_contrast_hu,
                     noise_sd_hu=plan.noise_sd_hu, mask_healthy_fraction=plan.mask_healthy_fraction,
                     phase_weights=plan.phase_weights, mask_phase_weights=plan.mask_phase_weights,
                     mask_cover_locations=plan.mask_cover_locations)
    return data


def _report_only_csv(data: Path, out: Path) -> Path:
    """reports.csv restricted to the report split (the test reports are for evaluation only)."""
    table = read_csv_text(data / "reports.csv").frame
    path = out / "reports_train.csv"
    if not path.is_file():
        with atomic_path(path) as tmp:
            table[table["split"] == "reports"].to_csv(tmp, index=False)
    return path


def _organs(data: Path, out: Path, log: Log) -> Path:
    organs = out / "organs"
    cases = discover_cases(data / "reports")
    todo = [c for c in cases if not case_is_done(organs, c.case_id)]
    log(f"organs: deriving sub-segments for {len(todo)} report case(s) ({len(cases) - len(todo)} done)")
    for case in todo:
        process_case(case, organs)
    return organs


def _train_all(plan: DemoPlan, log: Log) -> dict[str, Path]:
    runs = plan.out / "runs"
    stage1 = _train_once(plan.train_config("stage1", 1, plan.stage1_steps, None, 0.0), log)  # masks only
    configs = {name: plan.train_config(name, 2, plan.stage2_steps, stage1, fraction)
               for name, fraction in zip(MODEL_NAMES, (0.0, 0.5))}
    if plan.parallel_stage2:
        checkpoints = _train_in_parallel(configs, log)
    else:
        checkpoints = {name: _train_once(config, log) for name, config in configs.items()}
    write_json_atomic(runs / "demo_runs.json", {k: str(v) for k, v in checkpoints.items()})
    return checkpoints


def _train_once(config: TrainConfig, log: Log, show_progress: bool = True) -> Path:
    final = config.out / "final.pt"
    if final.is_file():
        log(f"train: reusing {final}")
        return final
    resume = (config.out / "last.pt").is_file()
    steps = config.optim.steps
    log(f"train: {config.out.name} (stage {config.stage}, {steps} steps{', resuming' if resume else ''})")
    on_step = None if show_progress else _StepPrinter(config.out.name, steps)
    return train(config.model_copy(update={"resume": resume}), show_progress=show_progress, on_step=on_step)


class _StepPrinter:
    """Prints one line every 10 % of a run (progress of runs trained side by side in subprocesses)."""

    def __init__(self, name: str, steps: int) -> None:
        self.name, self.steps, self.every = name, steps, max(1, steps // 10)

    def __call__(self, step: int, losses: dict[str, float]) -> None:
        if step % self.every == 0 or step == self.steps:
            terms = " ".join(f"{k}={v:.3f}" for k, v in losses.items())
            print(f"  {self.name}: step {step}/{self.steps} {terms}", flush=True)


def exit_with_parent(parent_pid: int, interval_s: float = 2.0) -> threading.Thread:
    """Starts a daemon thread that ends this process once ``parent_pid`` is no longer its parent.

    A worker of a killed demo (``kill PID`` reaches the parent only, unlike Ctrl+C) would otherwise train on.
    """
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os._exit(1)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def _train_in_subprocess(config: TrainConfig, parent_pid: int) -> Path:
    exit_with_parent(parent_pid)
    torch.set_num_threads(1)
    return _train_once(config, print, show_progress=False)


def _train_in_parallel(configs: dict[str, TrainConfig], log: Log) -> dict[str, Path]:
    """Trains the stage-2 arms side by side, one process and one thread each (2 cores: ~1.6x faster)."""
    log(f"train: {' and '.join(configs)} side by side (stage 2, one process each)")
    with ProcessPoolExecutor(max_workers=len(configs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(_train_in_subprocess, config, os.getpid()) for name, config in configs.items()}
        return {name: future.result() for name, future in futures.items()}


def _predict(plan: DemoPlan, data: Path, checkpoints: dict[str, Path], log: Log) -> dict[str, Path]:
    inputs = find_ct_inputs(data / "test")
    dirs = {}
    for name, checkpoint in checkpoints.items():
        pred = plan.out / "predictions" / name
        log(f"predict: {name} on {len(inputs)} test CTs -> {pred}")
        predictor = Predictor.from_checkpoint(checkpoint, device=plan.device)
        predict_cases(predictor, inputs, pred, PredictOptions(tta=plan.predict_tta, save_probabilities=False))
        dirs[name] = pred
    return dirs


EXECUTION_ONLY_FIELDS = ("out", "parallel_stage2", "device")


def check_same_plan(plan: DemoPlan) -> None:
    """A demo resumes only with the plan that started it: its finished steps would silently be reused."""
    path = plan.out / "demo_plan.json"
    if not path.is_file():
        return
    before = DemoPlan.load(path)
    written = set(json.loads(path.read_text()))  # a field it lacks came after that run: its value is unknown
    changed = [f.name for f in fields(DemoPlan) if f.name not in EXECUTION_ONLY_FIELDS
               and (f.name not in written or getattr(before, f.name) != getattr(plan, f.name))]
    if changed:
        was = {name: repr(getattr(before, name)) if name in written else "(not recorded)" for name in changed}
        detail = ", ".join(f"{name}: {was[name]} -> {getattr(plan, name)!r}" for name in changed)
        raise ValueError(f"{plan.out} holds a demo run with another plan ({detail}); its finished steps would be "
                         "reused. Use a new --out (or delete the folder to start over).")


def run_demo(plan: DemoPlan, log: Log = print) -> DemoResult:
    """Runs every step of the demo (resuming finished ones) and returns the comparison."""
    plan.check()
    plan.out.mkdir(parents=True, exist_ok=True)
    check_same_plan(plan)
    write_json_atomic(plan.out / "demo_plan.json", {k: (str(v) if isinstance(v, Path) else v)
                                                    for k, v in asdict(plan).items()})
    data = _generate(plan, log)
    log("extract: rules backend on the report text")
    run_extraction(_report_only_csv(data, plan.out), plan.out / "extract", backend="rules")
    organs = _organs(data, plan.out, log)
    log(f"prepare: cache at {plan.spacing_mm} mm")
    for split, masks_dirs in (("masks", ()), ("reports", (organs,))):
        result = prepare_dataset(data / split, plan.out / "cache", plan.spacing_mm, masks_dirs=masks_dirs)
        if result.failed:
            raise RuntimeError(f"prepare failed for {sorted(result.failed)}: {result.failed}")
    checkpoints = _train_all(plan, log)
    pred_dirs = _predict(plan, data, checkpoints, log)
    log("evaluate: both models against the test masks and reports")
    compare_dir = plan.out / "compare"
    settings = EvaluationSettings(volume_threshold_mm3=plan.volume_threshold_mm3, n_bootstrap=plan.n_bootstrap,
                                  seed=plan.seed)
    comparison = compare_predictions((pred_dirs[MODEL_NAMES[0]], pred_dirs[MODEL_NAMES[1]]), compare_dir,
                                     reports=data / "gold" / "tumors.csv", masks=data / "test",
                                     names=MODEL_NAMES, images=data / "test", settings=settings)
    _review_and_refine(plan, data, checkpoints[MODEL_NAMES[1]], pred_dirs[MODEL_NAMES[1]], compare_dir / "report.html",
                       log)
    summary = headline(comparison)
    write_json_atomic(plan.out / "summary.json", json.loads(summary.to_json(orient="records")))
    return DemoResult(out=plan.out, comparison=comparison, summary=summary, html=compare_dir / "report.html")


@dataclass
class ReviewRefineResult:
    """Step 8's tables: the test set's review queue and per-organ rows, the refine statuses, refined vs true."""

    queue: pd.DataFrame
    organs: pd.DataFrame
    table: pd.DataFrame
    refined: pd.DataFrame


def review_and_refine(out: Path, data: Path, checkpoint: Path, test_pred: Path, *, device: str, tta: str,
                      volume_threshold_mm3: float, log: Log) -> ReviewRefineResult:
    """Reviews ``test_pred`` against the test reports (``out/review/test``) and refines the report CTs with
    ``checkpoint`` (``out/refine``: probabilities in ``predictions``, masks in ``accepted``/``needs_review``);
    ``data`` is a demo dataset (``gold/``, ``test/``, ``reports/``, ``truth/``), ``out`` holds ``extract/`` and
    ``organs/``. Also used by benchmarks/bench_review_refine.py on bench_gain's seeds."""
    from rsuper.refine.run import predict_for_refine, refine_cases
    from rsuper.review.run import review_predictions
    from rsuper.review.truth import refined_truth

    log("review: the test predictions against the test reports")
    queue, organs = review_predictions(test_pred, data / "gold" / "tumors.csv", out / "review" / "test",
                                       images=data / "test", volume_threshold_mm3=volume_threshold_mm3, top=10)
    refine_dir, refine_pred = out / "refine", out / "refine" / "predictions"
    report_ids = [case.case_id for case in discover_cases(data / "reports")]
    log(f"refine: {len(report_ids)} report CTs -> {refine_dir}")
    predict_for_refine(checkpoint, data / "reports", report_ids, refine_pred, device=device, tta=tta)
    table = refine_cases(refine_pred, out / "extract" / "tumors.csv", refine_dir, [data / "reports", out / "organs"])
    return ReviewRefineResult(queue, organs, table, refined_truth(refine_dir, refine_pred, data / "truth"))


def _review_and_refine(plan: DemoPlan, data: Path, checkpoint: Path, test_pred: Path, html_path: Path,
                       log: Log) -> None:
    """Step 8: review queue of the test set and refined report-CT masks, both against the true masks, appended to
    the comparison report."""
    from rsuper.atomic import write_text_atomic
    from rsuper.refine.status import STATUS_FOLDERS
    from rsuper.review.html import demo_section, refined_overlay
    from rsuper.review.truth import queue_auroc, queue_truth, refined_summary

    result = review_and_refine(plan.out, data, checkpoint, test_pred, device=plan.device, tta=plan.predict_tta,
                               volume_threshold_mm3=plan.volume_threshold_mm3, log=log)
    refined, refine_dir = result.refined, plan.out / "refine"
    per_ct = queue_truth(result.organs, data / "test")
    summary = refined_summary(refined)
    statuses = result.table["status"].value_counts().rename_axis("status").reset_index(name="CTs")
    pictures = []
    tumor_rows = refined[refined["true_volume_mm3"] > 0] if len(refined) else refined
    for row in tumor_rows.head(4).to_dict("records"):
        path = refined_overlay(row["case_id"], row["lesion_class"], {"raw (p >= 0.5)": refine_dir / "predictions",
                               "refined": refine_dir / STATUS_FOLDERS[row["status"]]},
                               data / "truth", data / "reports",
                               refine_dir / "overlays" / f"{row['case_id']}_{row['lesion_class']}.png")
        if path is not None:
            pictures.append(path)
    section = demo_section(result.queue, per_ct, queue_auroc(per_ct), refined, summary, statuses, pictures,
                           plan.out / "review" / "test" / "review.html")
    page = html_path.read_text()
    write_text_atomic(html_path, page.replace("</body>", section + "</body>", 1))


HEADLINE_METRICS = ("sensitivity", "specificity", "f1", "dsc_mean")


def headline(comparison: pd.DataFrame) -> pd.DataFrame:
    """Rows (organ, metric) of the headline metrics: both models' values and R-Super's gain in points.

    ``comparison`` is ``compare_predictions``' table (organ, metric, <model A>, <model B>, delta).
    """
    table = comparison[comparison["metric"].isin(HEADLINE_METRICS)].copy()
    table["gain (points)"] = 100.0 * table["delta"]
    return table[["organ", "metric", *MODEL_NAMES, "gain (points)"]].reset_index(drop=True)
