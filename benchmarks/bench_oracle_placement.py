"""Diagnosis of the R-Super DSC gap (issue 28): the Ball Loss placed on the report CTs' TRUE tumors.

A controlled arm on a finished bench_gain seed. Everything is the seed's R-Super run (same stage 1, data, steps,
sampled batches, λ, Volume Loss) except the search field of the Ball Loss: instead of the model's probability p it
is ``truth + 1e-3 p`` (truth = the report CT's true lesion mask of the group's channel, from the seed's
``cache_truth``), so each reported tumor's ball is centred on a true tumor and its positives are that tumor's
voxels first (count and size still from the report). The truth reaches the loss as an extra batch key carried
through the same crop and augmentation as the labels; the segmentation loss never sees it.

Reading (pre-registered in the session's note): if this arm closes most of the R-Super -> all-masks gap, the
model's placement of the balls is what limits report supervision; if not, the loss itself (its weight, the
unknown rest of the sub-segment) is; ``--set`` changes that loss on top (e.g. its weight λ). Output:
``variant_<name>.csv`` in the seed folder, as bench_variant writes it; summarise with
``bench_variant.py SEEDS... --name <name> --summarise``.

Example (measured 2026-12-05 on the 2-core CPU box, three seeds side by side at 1 thread each):
    PYTHONPATH=src:benchmarks python benchmarks/bench_oracle_placement.py gain_out/demo/seed44
    PYTHONPATH=src:benchmarks python benchmarks/bench_oracle_placement.py gain_out/demo/seed44 \
        --name oracle-lambda1 --set loss.report_weight=1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from bench_gain import TRUTH_SUFFIX  # this folder is on sys.path when the script runs
# bench_variant: this folder is on sys.path when the script runs
from bench_variant import arm_parser, check_arm_name, evaluate_variant, loss_class_swapped, parse_options
from bench_variant import variant_config

from rsuper import labels
from rsuper.data.dataset import TrainingDataset
from rsuper.data.preprocess import load_cached_case
from rsuper.data.sampling import crop_padded
from rsuper.losses import ball as ball_module
from rsuper.losses.combine import ReportSupervisedLoss
from rsuper.train import trainer as trainer_module

NAME = "oracle-placement"
MODEL_WEIGHT = 1e-3  # the model's share of the search field: orders voxels of equal truth


class OracleDataset(TrainingDataset):
    """Report samples also carry ``oracle`` (C, X, Y, Z): the true lesion masks of the patch (zeros elsewhere)."""

    truth_cache: Path

    def _arrays(self, cached: Any, case: Any, choice: Any) -> tuple[np.ndarray, np.ndarray]:
        image, targets = super()._arrays(cached, case, choice)
        if case.supervision is not None:  # the truth rides in the lesion label channels through the augmentation
            truth = load_cached_case(self.truth_cache, case.case_id + TRUTH_SUFFIX, mmap=True)
            for ci, name in enumerate(self.class_names):
                if labels.is_lesion_class(name) and name in truth.masks:
                    targets[ci] = crop_padded(truth.masks[name], choice.start, choice.size, 0).astype(np.uint8)
        return image, targets

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        sample = super().__getitem__(key)
        oracle = torch.zeros_like(sample["label"])
        if sample["is_report"]:  # ... and leaves them here, so the labels stay what R-Super trains on
            lesion = [i for i, name in enumerate(self.class_names) if labels.is_lesion_class(name)]
            oracle[lesion] = sample["label"][lesion]
            sample["label"][lesion] = 0
        sample["oracle"] = oracle
        return sample


class OraclePlacementLoss(ReportSupervisedLoss):
    """R-Super's loss whose Ball Loss searches ``truth + 1e-3 p`` in the group's channel instead of p."""

    def forward(self, final_logits: torch.Tensor, aux_logits: torch.Tensor,
                batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        region = batch["region"]
        channel = region.flatten(2).amax(2).argmax(1)
        truth = batch["oracle"][torch.arange(region.shape[0], device=region.device), channel]
        original = ball_module.ball_pseudo_labels

        def placed_on_truth(prob: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            return original(truth.to(prob) + MODEL_WEIGHT * prob, *args, **kwargs)

        with mock.patch.object(ball_module, "ball_pseudo_labels", placed_on_truth):
            return super().forward(final_logits, aux_logits, batch)


def train_oracle(seed_dir: Path, name: str, options: dict[str, object], device: str) -> Path:
    """Trains the arm (R-Super's run file with ``options``) into ``runs/<name>`` (resumes); returns its final
    checkpoint."""
    config = variant_config(seed_dir, name, options, device)
    checkpoint = config.out / "final.pt"
    if checkpoint.is_file():
        return checkpoint
    build_data = trainer_module.build_training_data

    def oracle_data(*args: Any, **kwargs: Any) -> Any:
        data = build_data(*args, **kwargs)
        data.dataset.__class__ = OracleDataset
        data.dataset.truth_cache = seed_dir / "cache_truth"
        return data

    with mock.patch.object(trainer_module, "build_training_data", oracle_data), \
            loss_class_swapped(OraclePlacementLoss), \
            mock.patch.object(trainer_module, "TARGET_KEYS", (*trainer_module.TARGET_KEYS, "oracle")):
        trainer_module.train(config, show_progress=False)
    return checkpoint


def main() -> None:
    args = arm_parser(__doc__, NAME).parse_args()
    check_arm_name(args.name)
    if not (args.seed_dir / "cache_truth").is_dir():
        raise SystemExit(f"{args.seed_dir / 'cache_truth'} not found: run bench_gain on this seed first")
    checkpoint = train_oracle(args.seed_dir, args.name, parse_options(args.options), args.device)
    evaluate_variant(args.seed_dir, args.name, checkpoint, args.device,
                     " ".join(["Ball Loss placed on the true tumors", *args.options]))


if __name__ == "__main__":
    main()
