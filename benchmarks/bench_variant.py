"""One more stage-2 arm on a finished bench_gain seed: a paired test of a training option.

The variant arm is the seed's R-Super run file, or another arm's with ``--base`` (``runs/<arm>/config.yaml``: same
stage 1, data, steps, schedule, seed and so the same sampled batches) with the given options set; it trains into
``runs/<name>``, predicts the test CTs without TTA into ``predictions/none/<name>``, is evaluated as bench_gain
evaluates its arms (``eval/none/<name>.csv``) and compared per tumor organ with the seed's three arms. Every step
resumes.

Output: a table per organ (AUROC of the predicted volume, DSC on tumor CTs, F1 at the validation threshold,
per-side kidney numbers) with the variant minus R-Super, printed and written to ``variant_<name>.csv`` in the
seed folder.

``--summarise SEED_DIR ...`` reads finished ``variant_<name>.csv`` files of several seeds and prints, per organ
and metric, each seed's variant - R-Super (or minus the ``--base`` arm), its mean and SD over seeds, each arm's
mean, and the share of the R-Super -> all-masks gap the variant closes, (variant - R-Super) / (all-masks - R-Super)
of the means (blank for a gap under 1 point); a seed without the file is listed as missing, e.g. one where the
variant equals R-Super by construction.

Example (rank-weighted Ball Loss positives on a bench_gain demo seed; measured 2026-12-05 on the 2-core CPU box,
two variants side by side at 1 thread each: ~14 min of training and ~2 min of prediction per variant):
    PYTHONPATH=src:benchmarks python benchmarks/bench_variant.py gain_out/demo/seed43 --name rank-weighted \\
        --set loss.ball.rank_weighted=true
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pandas as pd
import yaml
from bench_gain import checkpoint_cases, paired_organs, run_folder  # this folder is on sys.path when the script runs

from rsuper.atomic import atomic_path
from rsuper.config import TrainConfig
from rsuper.demo import DemoPlan
from rsuper.evaluate import gain
from rsuper.train import trainer as trainer_module
from rsuper.train.trainer import train

METRICS = ("auroc_volume", "dsc_tumor", "f1", "sensitivity_left", "sensitivity_right", "healthy_call_left",
           "healthy_call_right")


def parse_options(pairs: list[str]) -> dict[str, object]:
    """``key=value`` strings -> options (values parsed as YAML: 0.5 -> float, null -> None)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value (e.g. loss.ball.rank_weighted=true), got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def variant_config(seed_dir: Path, name: str, options: dict[str, object], device: str,
                   base_arm: str = "R-Super") -> TrainConfig:
    """The run file of the seed's arm ``base_arm`` with ``options`` set, training into ``runs/<name>`` on ``device``."""
    base = seed_dir / "runs" / base_arm / "config.yaml"
    if not base.is_file():
        raise SystemExit(f"{base} not found: run bench_gain on this seed first")
    return TrainConfig.from_yaml(base).updated({**options, "out": seed_dir / "runs" / name, "device": device})


def compare(seed_dir: Path, name: str, variant_cases: pd.DataFrame) -> pd.DataFrame:
    """Per organ and metric: the seed's arms, the variant, and variant - R-Super (no TTA, test CTs)."""
    per_case = pd.read_csv(seed_dir / f"per_case_{run_folder('none')}.csv")
    per_case = pd.concat([per_case, variant_cases.assign(arm=name)], ignore_index=True)
    organs = tuple(per_case["organ"].drop_duplicates())
    sides = paired_organs(organs)
    arms = (*gain.ARMS, name)
    rows = []
    for organ in organs:
        cases = gain.OrganCases.from_frame(per_case, organ, arms=arms, sides=sides.get(organ, ()))
        thresholds = cases.thresholds()
        values = {arm: cases.metrics(arm, thresholds[arm]) for arm in arms}
        for metric in METRICS:
            if metric in values[name]:
                row = {"organ": organ, "metric": metric, **{arm: values[arm][metric] for arm in arms}}
                row["variant - R-Super"] = row[name] - row["R-Super"]
                rows.append(row)
    return pd.DataFrame(rows)


def summarise(seed_dirs: list[Path], name: str, against: str = "R-Super") -> pd.DataFrame:
    """Per organ and metric: variant - ``against`` (one of the seed's arms) of each seed (points) with the mean and SD
    over the seeds."""
    found = {d.name: pd.read_csv(d / f"variant_{name}.csv") for d in seed_dirs if (d / f"variant_{name}.csv").is_file()}
    missing = [d.name for d in seed_dirs if d.name not in found]
    if missing:
        print(f"no variant_{name}.csv in: {', '.join(missing)}")
    if not found:
        raise SystemExit("nothing to summarise")
    table = pd.concat([t.assign(seed=seed) for seed, t in found.items()])
    table["difference"] = table[name] - table[against]
    wide = table.pivot_table(index=["organ", "metric"], columns="seed", values="difference", sort=False)
    arms = table.groupby(["organ", "metric"], sort=False)[[*gain.ARMS, name]].mean()
    gap = arms["all-masks"] - arms["R-Super"]
    closure = (arms[name] - arms["R-Super"]) / gap.where(gap.abs() >= 0.01)
    return pd.concat([(100 * wide.assign(mean=wide.mean(axis=1), sd=wide.std(axis=1))).round(1),
                      (100 * arms.add_prefix("mean ")).round(1),
                      closure.round(2).rename("closure of R-Super -> all-masks")], axis=1)


@contextmanager
def loss_class_swapped(loss_class: type, **attributes: Any) -> Iterator[None]:
    """Inside: the trainer's loss (built as usual) is made an instance of ``loss_class`` (a subclass of it, no new
    state but ``attributes``), so an arm script changes the loss without an option in the core."""
    build_loss = trainer_module.build_loss

    def swapped(*args: Any, **kwargs: Any) -> Any:
        loss = build_loss(*args, **kwargs)
        loss.__class__ = loss_class
        for key, value in attributes.items():
            setattr(loss, key, value)
        return loss

    with mock.patch.object(trainer_module, "build_loss", swapped):
        yield


def check_arm_name(name: str) -> None:
    """Refuses an arm name that is one of the seed's own arms or not a plain folder name."""
    if name in gain.ARMS or "/" in name or name.startswith("."):
        raise SystemExit(f"--name must be a new folder name, not {name!r}")


def arm_parser(description: str, name: str) -> argparse.ArgumentParser:
    """The command line of a one-seed arm script built on this one: SEED_DIR, --name, --set, --device."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seed_dir", type=Path, help="a finished bench_gain seed folder (OUT/<family>/seed<N>)")
    parser.add_argument("--name", default=name, help="the arm's folder name")
    parser.add_argument("--set", dest="options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="TrainConfig options on top, e.g. loss.report_weight=1.0")
    parser.add_argument("--device", default="cpu")
    return parser


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seed_dir", type=Path, nargs="+", help="a finished bench_gain seed folder "
                        "(OUT/<family>/seed<N>); several with --summarise")
    parser.add_argument("--name", required=True, help="the variant arm's folder name, e.g. rank-weighted")
    parser.add_argument("--set", dest="options", nargs="+", metavar="KEY=VALUE",
                        help="TrainConfig options of the variant (dotted paths), e.g. loss.ball.rank_weighted=true")
    parser.add_argument("--base", default="R-Super", choices=gain.ARMS,
                        help="the arm whose run file the variant starts from, and that --summarise subtracts "
                             "(default R-Super)")
    parser.add_argument("--summarise", action="store_true", help="only summarise finished seeds (module docstring)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.summarise:
        print(f"{args.name} - {args.base}, test CTs, no TTA (points)")
        print(summarise(args.seed_dir, args.name, args.base).to_string())
        return
    check_arm_name(args.name)
    if len(args.seed_dir) != 1 or not args.options:
        raise SystemExit("training a variant needs one seed folder and --set KEY=VALUE ...")
    seed_dir = args.seed_dir[0]
    config = variant_config(seed_dir, args.name, parse_options(args.options), args.device, args.base)
    checkpoint = config.out / "final.pt"
    if not checkpoint.is_file():
        train(config, show_progress=False)
    evaluate_variant(seed_dir, args.name, checkpoint, args.device, " ".join(args.options))


def evaluate_variant(seed_dir: Path, name: str, checkpoint: Path, device: str, what: str) -> None:
    """Predicts the test CTs with the variant's ``checkpoint`` (no TTA), compares it with the seed's arms, writes
    ``variant_<name>.csv`` and prints the table (``what``: the variant in words)."""
    plan = DemoPlan.load(seed_dir / "demo_plan.json")
    plan.device = device
    table = compare(seed_dir, name, checkpoint_cases(plan, name, checkpoint))
    with atomic_path(seed_dir / f"variant_{name}.csv") as tmp:
        table.to_csv(tmp, index=False)
    print(f"{seed_dir}: {name} ({what}) vs the seed's arms, test CTs, no TTA (points)")
    shown = table.copy()
    numeric = shown.columns.drop(["organ", "metric"])
    shown[numeric] = (100 * shown[numeric]).round(1)
    print(shown.to_string(index=False))


if __name__ == "__main__":
    main()
