"""The demo's quality bar over several seeds: masks-only versus R-Super (issue 9).

Runs ``rsuper demo --out ROOT/seed<N> --seed N`` for each seed (a finished seed is reused: the demo
resumes) and writes the per-seed headline table plus the mean and spread (min..max) of each metric and
of R-Super's gain, in points, as markdown to ``--out``.

Example:
    OMP_NUM_THREADS=2 python benchmarks/bench_demo.py --root /tmp/demo_seeds --seeds 0 1 2 --out benchmarks/results_demo.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def read_seed(root: Path, seed: int) -> pd.DataFrame:
    """The headline table of a finished demo in ``root/seed<N>``, with a ``seed`` column."""
    table = pd.DataFrame(json.loads((root / f"seed{seed}" / "summary.json").read_text()))
    table["seed"] = seed
    return table


def run_seed(root: Path, seed: int, extra: list[str]) -> tuple[pd.DataFrame, float]:
    """Runs (or resumes) one demo; returns its headline table and the wall time in s."""
    out = root / f"seed{seed}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rsuper", "demo", "--out", str(out), "--seed", str(seed), *extra],
                   check=True)
    return read_seed(root, seed), time.perf_counter() - start


def aggregate(tables: pd.DataFrame) -> pd.DataFrame:
    """Mean and min..max over seeds of both models and of the gain (points), per organ and metric."""
    rows = []
    for (organ, metric), group in tables.groupby(["organ", "metric"], sort=True):
        row = {"organ": organ, "metric": metric}
        for column in ("masks-only", "R-Super", "gain (points)"):
            values = group[column]
            row[column] = f"{values.mean():.2f} ({values.min():.2f}..{values.max():.2f})"
        row["seeds with gain > 0"] = f"{int((group['gain (points)'] > 0).sum())}/{len(group)}"
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown needs the optional tabulate package)."""
    head = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="folder holding one demo output per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results_demo.md"))
    parser.add_argument("--quick", action="store_true", help="smoke-test the script with `rsuper demo --quick`")
    parser.add_argument("--summarise-only", action="store_true",
                        help="read ROOT/seed<N>/summary.json of finished runs (e.g. bench_demo_ablation.py outputs)")
    args = parser.parse_args()
    extra = ["--quick"] if args.quick else []
    tables, times = [], []
    for seed in args.seeds:
        if args.summarise_only:
            table, seconds = read_seed(args.root, seed), float("nan")
        else:
            table, seconds = run_seed(args.root, seed, extra)
        tables.append(table)
        times.append(seconds)
    every = pd.concat(tables, ignore_index=True)
    lines = [
        f"# rsuper demo over seeds {args.seeds}{' (quick)' if args.quick else ''}",
        "",
        f"Wall time per seed (s, includes reused steps): {', '.join(f'{t:.0f}' for t in times)}",
        "",
        "## Mean (min..max) over seeds",
        "",
        markdown(aggregate(every)),
        "",
        "## Per seed",
        "",
        markdown(every.round(3)),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
