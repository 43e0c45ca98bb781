"""Healthy-organ calls and sensitivity per contrast phase of any checkpoints on a bench_gain seed's test CTs.

A model trained on few mask CTs of one phase may read the organ's absolute intensity (the phase) instead of a
lesion's contrast to its organ, and call every healthy organ of another phase. This predicts each checkpoint on
the 60 test CTs of a finished ``benchmarks/bench_gain.py`` seed folder WITHOUT test-time augmentation (into
``SEED/predictions/none/<name>``, evaluated as bench_gain does, cached; ``--split reports``: the 60 report CTs
the stage-2 arms trained on, truth from their true masks and reports, into ``none_reports``), takes each CT's
phase from the TECHNIQUE line of its report (``bench_demo_phases.phase_of``) and writes per (name, organ, phase):
healthy CTs and the share called (predicted tumor volume after the 1 mm opening >= the seed plan's threshold), tumor
CTs and the share found; and per (name, organ) the CT-level AUROC of the predicted volume. The bench_gain arms
already evaluated there (``per_case_none.csv``) can be added by name.

Example:
    python benchmarks/bench_phase_calls.py gain_demo/demo/seed41 --checkpoint stage1=gain_demo/demo/seed41/runs/stage1/final.pt \\
        --checkpoint C=sideC/demo41/run_x/final.pt --arm masks-only --arm R-Super --out phases_seed41.csv
    do the arms fit their own training negatives (the report CTs)?
    python benchmarks/bench_phase_calls.py gain_demo/demo/seed41 --split reports --arm masks-only --arm R-Super \\
        --arm all-masks --out fit_seed41.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from bench_demo_phases import phases  # this folder is on sys.path when the script runs
from bench_gain import checkpoint_cases

from rsuper.demo import DemoPlan
from rsuper.evaluate.detection import auroc


def phase_table(table: pd.DataFrame, threshold_mm3: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per name/organ/phase call rates, per name/organ AUROC) of per-case rows with ``name`` and ``phase``."""
    table = table.assign(called=table["pred_volume_mm3"] >= threshold_mm3, truth=table["truth"].astype(bool))
    rows = []
    for (name, organ, phase), g in table.groupby(["name", "organ", "phase"], sort=True):
        healthy, tumor = g[~g["truth"]], g[g["truth"]]
        rows.append({"name": name, "organ": organ, "phase": phase, "healthy CTs": len(healthy),
                     "healthy called": round(float(healthy["called"].mean()), 3) if len(healthy) else float("nan"),
                     "tumor CTs": len(tumor),
                     "tumor found": round(float(tumor["called"].mean()), 3) if len(tumor) else float("nan")})
    aurocs = [{"name": name, "organ": organ,
               "auroc_volume": round(auroc(g["truth"].to_numpy(bool), g["pred_volume_mm3"].to_numpy(float)), 3)}
              for (name, organ), g in table.groupby(["name", "organ"], sort=True)]
    return pd.DataFrame(rows), pd.DataFrame(aurocs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seed_dir", type=Path, help="a finished bench_gain seed folder (OUT/<family>/seed<N>)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=CKPT")
    parser.add_argument("--arm", action="append", default=[], help="a bench_gain arm already evaluated there")
    parser.add_argument("--split", choices=("test", "reports"), default="test",
                        help="test CTs, or the 60 report CTs the stage-2 arms trained on (do they fit their own "
                             "negatives?); --arm NAME then means SEED/runs/NAME/final.pt")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the phase rows (and AUROCs beside, _auroc.csv)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    plan = DemoPlan.load(args.seed_dir / "demo_plan.json")
    plan.device = "cpu"
    checkpoints = [item.split("=", 1) for item in args.checkpoint]
    if args.split != "test":
        checkpoints += [(arm, str(args.seed_dir / "runs" / arm / "final.pt")) for arm in args.arm]
    tables = [checkpoint_cases(plan, name, Path(ckpt), args.split).assign(name=name) for name, ckpt in checkpoints]
    if args.arm and args.split == "test":
        gain_rows = pd.read_csv(args.seed_dir / "per_case_none.csv")
        tables += [gain_rows[gain_rows["arm"] == arm].assign(name=arm) for arm in args.arm]
    table = pd.concat(tables, ignore_index=True)
    table["phase"] = table["case_id"].map(phases(args.seed_dir, args.split))
    rates, aurocs = phase_table(table, plan.volume_threshold_mm3)
    pd.set_option("display.width", 200)
    print(rates.to_string(index=False))
    print(aurocs.to_string(index=False))
    if args.out:
        rates.assign(seed_dir=str(args.seed_dir)).to_csv(args.out, index=False)
        aurocs.assign(seed_dir=str(args.seed_dir)).to_csv(args.out.with_name(args.out.stem + "_auroc.csv"),
                                                          index=False)


if __name__ == "__main__":
    main()
