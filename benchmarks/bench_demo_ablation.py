"""Re-run the stage-2 arms of a finished `rsuper demo` with other training options; same data and stage 1.

The new folder links the base demo's data, extraction, organ masks and cache (hard links where possible, else
copies; the base is never modified) and copies its stage-1 run, so only stage 2, prediction and evaluation
run again. ``--set KEY=VALUE`` sets a TrainConfig field of both stage-2 arms (VALUE is JSON):
``ball_weight``, ``volume_weight``, ``ball_rank_weighted``, ``volume_tolerance``, ..., or one of the demo plan
fields that only act after stage 1 (``stage2_steps``, ``report_weight``, ``volume_threshold_mm3``).

``--reuse-masks-only`` also copies the base masks-only arm and its predictions and retrains R-Super alone
(half the time). It is exact only for options that the masks-only arm does not use: ``report_weight`` and
``ball_weight`` also scale the Ball Loss background term that mask samples get, so say so when you use it.

Options accumulate: the new plan is the base plan with ``--set`` on top, so forking a fork keeps the fork's
``stage2_options`` (the script prints what it inherits). For a default-plan control, fork the original demo folder.

``--set n_report=N`` forks with another number of report CTs: the phantoms, extraction, organ masks and cache
are made anew. The mask CTs are the same draws (case indices 0..n_mask-1), and stage 1 and masks-only never
sample a report CT, so both are reused exactly (masks-only with ``--reuse-masks-only``); the test CTs come
after the report CTs in the case numbering, so they are new draws and both arms are evaluated on them.

Example:
    python benchmarks/bench_demo_ablation.py demo_out /tmp/no_ball --set ball_weight=0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
from pathlib import Path

from rsuper.demo import DemoPlan, run_demo
from rsuper.errors import ConfigError

SHARED = ("data", "extract", "organs", "cache")
STAGE2_PLAN_FIELDS = ("stage2_steps", "report_weight", "volume_threshold_mm3", "stage2_lr_factor")
NEW_DATA_PLAN_FIELDS = ("n_report",)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def fork_demo(base: Path, out: Path, reuse_masks_only: bool, new_data: bool = False) -> None:
    """Creates ``out`` with the base demo's stage-1 run (and masks-only arm when asked) and, unless
    ``new_data``, its inputs and masks-only predictions."""
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new folder (a fork never overwrites results)")
    if not new_data:
        for name in SHARED:
            shutil.copytree(base / name, out / name, copy_function=_link_or_copy)
        shutil.copy2(base / "reports_train.csv", out / "reports_train.csv")
    shutil.copytree(base / "runs" / "stage1", out / "runs" / "stage1")
    if reuse_masks_only:
        shutil.copytree(base / "runs" / "masks-only", out / "runs" / "masks-only")
        if not new_data:
            shutil.copytree(base / "predictions" / "masks-only", out / "predictions" / "masks-only")


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set needs KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", type=Path, help="a finished `rsuper demo --out` folder")
    parser.add_argument("out", type=Path, help="new folder for the re-run")
    parser.add_argument("--set", dest="options", type=_option, action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--reuse-masks-only", action="store_true", help="retrain R-Super only (see above)")
    args = parser.parse_args()
    base_plan = DemoPlan.load(args.base / "demo_plan.json")
    if not (args.base / "runs" / "stage1" / "final.pt").is_file():
        parser.error(f"{args.base} has no finished stage 1; run `rsuper demo --out {args.base}` first")
    options = dict(args.options)
    plan_fields = {k: options.pop(k) for k in STAGE2_PLAN_FIELDS + NEW_DATA_PLAN_FIELDS if k in options}
    new_data = any(k in plan_fields for k in NEW_DATA_PLAN_FIELDS)
    try:  # a mistyped --set stops here, before the fork and not after stage 2's data steps
        plan = dataclasses.replace(base_plan, out=args.out, stage2_options={**base_plan.stage2_options, **options},
                                   parallel_stage2=not args.reuse_masks_only, **plan_fields)
        plan.check()
    except ConfigError as error:
        parser.error(str(error))
    fork_demo(args.base, args.out, args.reuse_masks_only, new_data)
    if base_plan.stage2_options:
        print(f"inherited from {args.base}: stage2_options {base_plan.stage2_options}")
    result = run_demo(plan)
    print(result.summary.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
