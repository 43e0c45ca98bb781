"""Where a demo's CT-level errors are: true and false positives and false-positive volume per CT phase.

The demo's mask CTs are all portal-venous while its report and test CTs mix portal-venous, arterial and
non-contrast CTs ("two sites"), so a model's false positives may sit in the phases the masks never showed.
This reads a finished ``rsuper demo`` folder: the phase of each test CT from the TECHNIQUE line of its
report (``data/reports.csv``) and both models' per-case results (``compare/<model>/per_case.csv``), and
prints one row per (model, organ, phase): CTs, tumor-positive CTs, true and false positives (predicted
tumor volume after the opening >= the demo's volume threshold), and the median predicted tumor volume
(mm³) of the false-positive CTs.

Example:
    python benchmarks/bench_demo_phases.py demo_out/seed3 demo_out/seed4 --out phases.md
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd
from bench_demo import markdown  # this folder is on sys.path when the script runs

PHASE_PATTERNS = (("arterial", r"arterial phase"), ("non-contrast", r"without intravenous contrast|non-contrast"),
                  ("portal venous", r"portal venous phase"))


def phase_of(report: str) -> str:
    """The CT phase that a phantom report's TECHNIQUE line names ("unknown" when none matches)."""
    technique = next((line for line in report.splitlines() if line.startswith("TECHNIQUE")), report)
    for phase, pattern in PHASE_PATTERNS:
        if re.search(pattern, technique, flags=re.IGNORECASE):
            return phase
    return "unknown"


def phases(demo: Path, split: str = "test") -> pd.Series:
    """Phase of every CT of one split (``test``, ``reports``, ``masks``) of a demo folder, indexed by case id."""
    reports = pd.read_csv(demo / "data" / "reports.csv")
    rows = reports[reports["split"] == split]
    return pd.Series([phase_of(text) for text in rows["Report"]], index=rows["BDMAP ID"], name="phase")


def by_phase(demo: Path) -> pd.DataFrame:
    """One row per (model, organ, phase) of a finished demo folder (see the module docstring)."""
    plan = json.loads((demo / "demo_plan.json").read_text())
    threshold = float(plan["volume_threshold_mm3"])
    phase = phases(demo)
    rows = []
    for per_case_csv in sorted((demo / "compare").glob("*/per_case.csv")):
        table = pd.read_csv(per_case_csv)
        table = table[table["report_count"].notna()].assign(phase=lambda t: t["case_id"].map(phase))
        table["truth"] = table["report_count"] > 0
        table["called"] = table["pred_volume_mm3"] >= threshold
        for (organ, ct_phase), group in table.groupby(["organ", "phase"], sort=True):
            false_pos = group[group["called"] & ~group["truth"]]
            rows.append({
                "demo": demo.name, "model": per_case_csv.parent.name, "organ": organ, "phase": ct_phase,
                "CTs": len(group), "positive CTs": int(group["truth"].sum()),
                "TP": int((group["called"] & group["truth"]).sum()), "FP": len(false_pos),
                "FP median volume (mm³)": round(float(false_pos["pred_volume_mm3"].median()), 0)
                if len(false_pos) else 0.0,
            })
    if not rows:
        raise FileNotFoundError(f"{demo}/compare/*/per_case.csv not found: is the demo finished?")
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demos", type=Path, nargs="+", help="finished `rsuper demo --out` folders")
    parser.add_argument("--organ", action="append", help="only these organs (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the table as markdown here")
    args = parser.parse_args()
    table = pd.concat([by_phase(demo) for demo in args.demos], ignore_index=True)
    if args.organ:
        table = table[table["organ"].isin(args.organ)]
    text = markdown(table)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
