"""Controlled side-lock experiment: train stage 1 of the demo's recipe, then probe its kidney-lesion channel per side.

One masks-only training run on a seed's 8 mask CTs (stage 1 of the demo's recipe, or that recipe with
``--set field=value`` overrides), then the paired side probe of ``bench_side_probe.py`` (``--probe-n`` patients,
each rendered healthy, with a left-kidney tumor and with the same tumor in the right kidney; no TTA). A side-free
channel has the same sensitivity and healthy-kidney call rate on both sides. The probe runs again on the mirrored
CTs (situs inversus): ``image_side_lock`` says whether the preference follows the image side (it flips to the other
anatomical side) rather than the anatomy.

``--family demo``: the demo's own mask CTs of that seed (``rsuper demo --seed N`` trains stage 1 on exactly these
8 cases, so its stage 1 is re-made bit for bit). ``--family realct``: the same composition from the second family
(``rsuper.synthetic.realct``). The probe renders patients of the same family.

Example:
    python benchmarks/bench_side_lock.py --out /tmp/sidelock --seed 31 --family realct
    python benchmarks/bench_side_lock.py --out /tmp/sidelock --seed 31 --set data.augment.mirror_prob=0
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from bench_gain import generator_kwargs, realct_generator  # this folder is on sys.path when the script runs
from bench_side_probe import probe, summarise
from rsuper.config import TrainConfig
from rsuper.data.preprocess import prepare_dataset
from rsuper.demo import DemoPlan
from rsuper.infer.predict import Predictor
from rsuper.synthetic.phantoms import generate_dataset
from rsuper.train.trainer import train


def generate_masks(family: str, plan: DemoPlan, data: Path) -> None:
    """The seed's mask CTs of ``family`` with the demo plan's composition (no report or test CTs)."""
    generate = generate_dataset if family == "demo" else realct_generator()
    generate(data, **generator_kwargs(family, generate, replace(plan, n_report=0, n_test=0)))


def run_config(plan: DemoPlan, out: Path, steps: int, overrides: dict) -> TrainConfig:
    """Stage 1 of the demo's recipe with ``overrides`` (dotted paths) applied."""
    name = "run_" + ("_".join(f"{k}-{v}" for k, v in overrides.items()) or "default").replace("/", "")[:80]
    data_dict = plan.train_config(name, 1, steps, None, 0.0).model_dump()
    for path, value in {**overrides, "out": out / name}.items():
        *parents, leaf = path.split(".")
        node = data_dict
        for key in parents:
            node = node[key]
        node[leaf] = value
    return TrainConfig.model_validate(data_dict)


def image_side_lock(as_is: dict, mirrored: dict, bar: float = 0.25) -> bool:
    """True when the sensitivity gap flips sign with the CT mirrored, beyond ``bar`` both ways: the channel answers
    for an image side, not for the anatomy (a preference that follows anatomy keeps its sign)."""
    return bool(as_is["sens_gap"] * mirrored["sens_gap"] < 0 and min(abs(as_is["sens_gap"]), abs(mirrored["sens_gap"])) > bar)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--family", choices=("demo", "realct"), default="demo")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--probe-n", type=int, default=20, help="probe patients (x 3 renderings)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="TrainConfig override, a field's dotted path and a YAML value (e.g. class_names=[...]), repeatable")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = args.out / "data"
    plan = DemoPlan(out=args.out, seed=args.seed, device="cpu")
    if not (data / "phantoms.json").is_file():
        generate_masks(args.family, plan, data)
        prepare_dataset(data / "masks", args.out / "cache", plan.spacing_mm)
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    config = run_config(plan, args.out, args.steps, overrides)
    t0 = time.time()
    final = config.out / "final.pt"
    if not final.is_file():
        train(config, show_progress=False)
    train_s = time.time() - t0
    predictor = Predictor.from_checkpoint(final, device="cpu")
    rows = probe(predictor, args.family, args.probe_n)
    rows.to_csv(config.out / "side_probe.csv", index=False)
    flipped = probe(predictor, args.family, args.probe_n, mirrored=True)
    flipped.to_csv(config.out / "side_probe_mirrored.csv", index=False)
    result = {"family": args.family, "seed": args.seed, "overrides": overrides, "steps": args.steps,
              **summarise(rows), "mirrored": summarise(flipped),
              "image_side_lock": image_side_lock(summarise(rows), summarise(flipped)),
              "train_s": round(train_s), "wall_s": round(time.time() - t0)}
    (config.out / "side_lock.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
