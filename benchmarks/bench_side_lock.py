"""Controlled side-lock experiment: do the kidney-lesion channel's calls depend on the side?

Phantoms whose kidney tumors are equally likely left and right, one masks-only training run (stage 1 of the
demo's recipe, or that recipe with ``--set field=value`` overrides), then per kidney side on a held-out test set
without TTA: sensitivity (tumor kidneys called) and the false-positive rate (tumor-free kidneys called). A side-free
channel has the same rates on both sides.

``--family demo``: the demo's own mask CTs of that seed (``rsuper demo --seed N`` trains stage 1 on exactly these 8
cases, so its stage 1 is re-made bit for bit), test CTs drawn anew. ``--family balanced``: ``--n-mask`` mask CTs,
30 % healthy, portal-venous only.

Example:
    python benchmarks/bench_side_lock.py --out /tmp/sidelock --seed 1 --steps 1200 --set data.augment.mirror_prob=0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from bench_mirror import side_calls  # this folder is on sys.path when the script runs
from rsuper.synthetic.phantoms import generate_dataset
from rsuper.config import TrainConfig
from rsuper.data.preprocess import prepare_dataset
from rsuper.demo import DemoPlan
from rsuper.infer.predict import Predictor, find_ct_inputs
from rsuper.train.trainer import train


def head_alignment(predictor: Predictor, lesion: str = "kidney_lesion") -> dict[str, float]:
    """Cosine between the lesion channel's weights and each organ channel's in the output head (the first 1x1x1
    convolution with one output per class): a side-locked lesion channel leans on one side's organ features."""
    names = list(predictor.class_names)
    heads = [m for m in predictor.model.modules() if isinstance(m, torch.nn.Conv3d)
             and m.out_channels == len(names) and m.kernel_size == (1, 1, 1)]
    weights = heads[0].weight.detach().flatten(1)
    cos = torch.nn.functional.cosine_similarity(weights[names.index(lesion)][None], weights, dim=1)
    return {f"cos_{name}": round(float(c), 3) for name, c in zip(names, cos) if name.startswith("kidney") and name != lesion}


def side_rates(rows: pd.DataFrame) -> dict[str, float]:
    """Per side: sensitivity and healthy-organ call rate (as is, no TTA), and their left-right gaps."""
    out: dict[str, float] = {}
    for side, group in rows.groupby("side"):
        tumor, free = group[group["tumor"]], group[~group["tumor"]]
        out[f"sens_{side}"] = float(tumor["as is"].mean()) if len(tumor) else float("nan")
        out[f"fp_{side}"] = float(free["as is"].mean()) if len(free) else float("nan")
    sides = sorted(rows["side"].unique())
    out["sens_gap"] = abs(out[f"sens_{sides[0]}"] - out[f"sens_{sides[1]}"])
    out["fp_gap"] = abs(out[f"fp_{sides[0]}"] - out[f"fp_{sides[1]}"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--family", choices=("demo", "balanced"), default="demo")
    parser.add_argument("--n-mask", type=int, default=24)
    parser.add_argument("--n-test", type=int, default=24)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="TrainConfig override, a field's dotted path and a YAML value (e.g. class_names=[...]), repeatable")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = args.out / "data"
    plan = DemoPlan(out=args.out, seed=args.seed, device="cpu")
    if not (data / "phantoms.json").is_file():
        if args.family == "demo":
            generate_dataset(data, n_mask=plan.n_mask, n_report=0, n_test=args.n_test, spacing_mm=plan.spacing_mm,
                             seed=args.seed, tumor_contrast_hu=plan.tumor_contrast_hu, noise_sd_hu=plan.noise_sd_hu,
                             mask_healthy_fraction=plan.mask_healthy_fraction, phase_weights=(1.0, 0.0, 0.0),
                             mask_phase_weights=plan.mask_phase_weights,
                             mask_cover_locations=plan.mask_cover_locations)
        else:
            generate_dataset(data, n_mask=args.n_mask, n_report=0, n_test=args.n_test, spacing_mm=4.0,
                             seed=args.seed, tumor_contrast_hu=-60.0, noise_sd_hu=(5.0, 15.0),
                             mask_healthy_fraction=0.3, healthy_fraction=0.4, phase_weights=(1.0, 0.0, 0.0))
        prepare_dataset(data / "masks", args.out / "cache", plan.spacing_mm)
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    name = "run_" + ("_".join(f"{k}-{v}" for k, v in overrides.items()) or "default").replace("/", "")[:80]
    data_dict = plan.train_config(name, 1, args.steps, None, 0.0).model_dump()
    for path, value in {**overrides, "out": args.out / name}.items():
        *parents, leaf = path.split(".")
        node = data_dict
        for key in parents:
            node = node[key]
        node[leaf] = value
    config = TrainConfig.model_validate(data_dict)
    t0 = time.time()
    final = config.out / "final.pt"
    if not final.is_file():
        train(config, show_progress=False)
    predictor = Predictor.from_checkpoint(final, device="cpu")
    rows = []
    for case_id, ct_path in find_ct_inputs(data / "test"):
        rows += [{"case": case_id, **row} for row in side_calls(predictor, ct_path, "kidney", 300.0)]
    table = pd.DataFrame(rows)
    table.to_csv(config.out / "side_calls.csv", index=False)
    result = {"seed": args.seed, "overrides": overrides, "steps": args.steps, **side_rates(table),
              **head_alignment(predictor),
              "n_tumor": {s: int(g["tumor"].sum()) for s, g in table.groupby("side")},
              "wall_s": round(time.time() - t0)}
    (config.out / "side_lock.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
