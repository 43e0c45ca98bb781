"""Forward+backward time and peak memory of the networks on CPU, batch 1, one fresh process per run.

A run whose estimated peak (the same model's measured peak at a smaller size, scaled by the voxel
count) exceeds 80% of the machine's available memory is skipped and listed as such: the machine is
shared. ``--previous`` reuses rows (JSON lines printed by an earlier run) instead of re-measuring them.

Peak memory is the child process's peak resident set size (``ru_maxrss``, which sees every allocation
torch makes, unlike tracemalloc), reported in total and above the RSS measured after the model and the
input were built. Writes a markdown table (and the conditions) to ``--out``.

Example:
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_models.py --sizes 96 128 --out benchmarks/results_models.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from rsuper.atomic import write_text_atomic

NUM_CLASSES = 42


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(name: str, size: int, threads: int) -> dict:
    """Builds ``name``, times one forward+backward on a (1, 1, size, size, size) input; returns the numbers."""
    from rsuper.models.registry import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(name, 1, NUM_CLASSES).train()
    x = torch.randn(1, 1, size, size, size)
    base = _rss_mib()
    start = time.perf_counter()
    final, aux = model(x)
    forward_s = time.perf_counter() - start
    (final.float().mean() + aux.float().mean()).backward()
    total_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": name, "size": size, "params": sum(p.numel() for p in model.parameters()),
        "forward_s": forward_s, "fwd_bwd_s": total_s, "peak_rss_mib": peak, "peak_above_model_mib": peak - base,
    }


def _cpu_name() -> str:
    with open("/proc/cpuinfo") as fh:
        names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
    return names[0] if names else platform.machine()


def _available_mib() -> float:
    with open("/proc/meminfo") as fh:
        fields = dict(line.split(":", 1) for line in fh)
    return int(fields["MemAvailable"].split()[0]) / 1024


def _estimated_peak_mib(rows: list[dict], name: str, size: int) -> float | None:
    """Peak above model of the largest smaller run of ``name``, scaled by the voxel ratio."""
    done = [r for r in rows if r["model"] == name and r["size"] < size and "peak_above_model_mib" in r]
    if not done:
        return None
    ref = max(done, key=lambda r: r["size"])
    return ref["peak_above_model_mib"] * (size / ref["size"]) ** 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["medformer", "dynunet"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[96, 128])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results_models.md"))
    parser.add_argument("--skip", nargs="*", default=[], metavar="MODEL:SIZE",
                        help="runs not to measure (listed with their estimated peak), e.g. medformer:128")
    parser.add_argument("--previous", type=Path, help="JSON lines of rows measured earlier, reused as they are")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.threads)))
        return
    previous = [json.loads(line) for line in args.previous.read_text().splitlines()] if args.previous else []
    rows = []
    for size in args.sizes:
        for name in args.models:
            known = [r for r in previous if r["model"] == name and r["size"] == size]
            if known:
                rows.append(known[0])
                continue
            estimate, available = _estimated_peak_mib(rows, name, size), _available_mib()
            guess = "unknown" if estimate is None else f"{estimate / 1024:.1f} GiB"
            if f"{name}:{size}" in args.skip:
                rows.append({"model": name, "size": size, "skipped": f"not run (--skip); estimated peak {guess}"})
                print(json.dumps(rows[-1]), flush=True)
                continue
            if estimate is not None and estimate > 0.8 * available:
                rows.append({"model": name, "size": size, "skipped": f"estimated peak {guess} "
                             f"> 80% of the {available / 1024:.1f} GiB available on the shared machine"})
                print(json.dumps(rows[-1]), flush=True)
                continue
            load = os.getloadavg()[0]
            proc = subprocess.run(
                [sys.executable, __file__, "--one", name, str(size), "--threads", str(args.threads)],
                capture_output=True, text=True, check=True,
            )
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["load_before"] = load
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [
        "# Model benchmark: forward+backward, batch 1, CPU",
        "",
        f"Command: `OMP_NUM_THREADS={args.threads} .venv/bin/python benchmarks/bench_models.py "
        f"{' '.join(sys.argv[1:])}`",
        "",
        f"Conditions: {_cpu_name()}, {os.cpu_count()} logical CPUs shared with "
        f"other engineers' jobs (1-min load average before each run in the table), torch {torch.__version__} "
        f"with {args.threads} threads, float32, {NUM_CLASSES} output classes, train mode, one cold run per "
        "row in a fresh process (no warm-up: numbers include first-call allocation). Peak memory = peak RSS "
        "of that process; 'above model' subtracts the RSS after building the model and the input.",
        "",
        "| model | input | parameters | forward s | forward+backward s | peak RSS MiB | peak above model MiB | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['model']} | {r['size']}^3 | | skipped: {r['skipped']} | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['size']}^3 | {r['params']:,} | {r['forward_s']:.1f} | {r['fwd_bwd_s']:.1f} | "
            f"{r['peak_rss_mib']:,.0f} | {r['peak_above_model_mib']:,.0f} | {r['load_before']:.1f} |"
        )
    write_text_atomic(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
