"""Throughput of `rsuper extract`: rules reports/s on one core; LLM backend 16 concurrent vs 1 at a time.

The LLM side runs against the local fake OpenAI-compatible server (rsuper.synthetic.fake_llm) answering
each request after 200 ms, so it measures the client's concurrency, not a model.

Run: OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/bench_extract.py
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rsuper.reports.llm import LLMExtractor, LLMOptions
from rsuper.reports.rules import extract_rules
from rsuper.reports.scoring import score
from rsuper.reports.tables import read_tumors_csv
from rsuper.synthetic.fake_llm import FakeLLMServer

DATA = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "reports"


def bench_rules(texts: list[str], repeats: int = 5) -> tuple[float, float]:
    """Rules backend (reports per wall-clock second, reports per CPU second), best of ``repeats`` passes.

    On a shared machine the CPU-second rate is the single-core rate; the wall rate includes waiting.
    """
    best_wall = best_cpu = 0.0
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for i, text in enumerate(texts):
            extract_rules(str(i), text)
        best_wall = max(best_wall, len(texts) / (time.perf_counter() - wall))
        best_cpu = max(best_cpu, len(texts) / (time.process_time() - cpu))
    return best_wall, best_cpu


def phantom_texts(n: int = 200) -> list[str]:
    """Full-length synthetic reports (history, technique, comparison, findings, impression)."""
    from rsuper.synthetic.reports import ReportTumor, write_report

    texts = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        tumors = [ReportTumor("liver", ["segment 7"], (21.0, 15.0, 10.0), 0.5)] if seed % 2 else []
        texts.append(write_report(rng, tumors, {"gallstones": seed % 3 == 0})[0])
    return texts


def _serve(delay_s: float, connection, stop) -> None:
    with FakeLLMServer(delay_s=delay_s) as server:
        connection.send(server.base_url)
        stop.wait()


def bench_llm(texts: list[str], concurrency: int, delay_s: float = 0.2) -> float:
    """Reports per second of the LLM backend against a fake server answering after ``delay_s``.

    The server runs in its own process, like a real inference server, so it does not share the
    client's interpreter lock.
    """
    parent, child = multiprocessing.Pipe()
    stop = multiprocessing.Event()
    process = multiprocessing.Process(target=_serve, args=(delay_s, child, stop), daemon=True)
    process.start()
    try:
        options = LLMOptions(base_url=parent.recv(), model="fake", concurrency=concurrency)
        extractor = LLMExtractor(options)
        start = time.perf_counter()
        results = asyncio.run(extractor.extract_many([(str(i), t) for i, t in enumerate(texts)], lambda _: None))
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        process.join(5)
    assert not any(r.error for r in results), [r.error for r in results if r.error][:3]
    return len(texts) / elapsed


def main() -> None:
    reports = pd.read_csv(DATA / "reports.csv", dtype=str, keep_default_na=False)
    texts = reports["Report"].tolist()
    gold = read_tumors_csv(DATA / "gold" / "tumors.csv")
    pred = {r["BDMAP ID"]: extract_rules(r["BDMAP ID"], r["Report"]) for r in reports.to_dict("records")}
    result = score(gold, pred)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
          f"python {platform.python_version()}")
    print(f"labelled set: {len(texts)} reports, mean {sum(map(len, texts)) / len(texts):.0f} characters")
    for organ in ("liver", "pancreas", "kidney"):
        s = result.organs[organ]
        print(f"rules {organ}: presence F1 {s.presence_f1:.3f} (sens {s.sensitivity:.3f}, spec {s.specificity:.3f})")
    o = result.overall
    print(f"rules all organs: count acc {o.count_accuracy:.3f}, largest diameter within 2 mm "
          f"{o.diameter_accuracy:.3f}, location acc {o.location_accuracy:.3f}")
    for name, corpus in (("labelled set", texts * 4), ("phantom reports", phantom_texts())):
        wall, cpu = bench_rules(corpus)
        mean = sum(map(len, corpus)) / len(corpus)
        print(f"rules backend on {name} ({mean:.0f} chars/report): {cpu:.0f} reports per CPU-second, "
              f"{wall:.0f} reports per wall-second (one process, best of 5)")
    llm_texts = [f"{t} [case {i}]" for i, t in enumerate((texts * 2)[:192])]
    one = bench_llm(llm_texts[:16], concurrency=1)
    many = bench_llm(llm_texts, concurrency=16)
    print(f"llm backend, fake server 200 ms/answer: concurrency 1 {one:.2f} reports/s, "
          f"concurrency 16 {many:.2f} reports/s, speed-up {many / one:.1f}x")


if __name__ == "__main__":
    main()
