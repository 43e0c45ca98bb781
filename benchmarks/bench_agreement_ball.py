"""Issue 28 experiment: a Ball Loss that counts more where the model agrees with its balls.

Session 23 showed (BENCHMARKS.md "Why reports add little DSC") that R-Super's DSC gap to all-masks comes from the
Ball Loss's positives counting little at the paper's λ 0.1, and that raising λ to 1 buys DSC but loses CT-level
AUROC through misplaced balls. This arm weights each report sample's Ball Loss by how much the model itself calls
its balls tumor:

    Ball term of report sample b = (1 + (K - 1) a_b) * Ball_b,   a_b = |P_b ∩ {p >= 0.5}| / |P_b|

(P_b = the sample's Ball-Loss positives of this step, p = the model's probability; a_b is a constant, recomputed
every step). A sample whose balls the model agrees with trains at λ K (K = 10: λ 1 at the paper's 0.1); one it
does not see stays at λ. Everything else is the seed's R-Super run (same stage 1, data, steps, batches, Volume
Loss). ``--trust contrast`` subtracts the share of the rest of the reported sub-segment (outside the Ball Loss's
zone) the model calls tumor, clipped at 0, so that a channel calling its whole sub-segment earns no trust. The mean
a of each batch with report samples is written to ``runs/<name>/agreement_trace.csv``.

Output: ``variant_<name>.csv`` in the seed folder, as bench_variant writes it; summarise with
``bench_variant.py SEEDS... --name agreement-ball --summarise``. Not a core option: it enters the recipe only if
it wins its pre-registered rule on both phantom families.

Example (2026-12-05, 2-core CPU box, six seeds side by side at 1 thread each):
    PYTHONPATH=src:benchmarks python benchmarks/bench_agreement_ball.py gain_out/demo/seed44
    PYTHONPATH=src:benchmarks python benchmarks/bench_agreement_ball.py gain_out/demo/seed44 --trust contrast \
        --name contrast-ball
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import pandas as pd
import torch
# bench_variant: this folder is on sys.path when the script runs
from bench_variant import arm_parser, check_arm_name, evaluate_variant, loss_class_swapped, parse_options
from bench_variant import variant_config

from rsuper.atomic import atomic_path
from rsuper.losses import ball as ball_module
from rsuper.losses.ball import BallPseudoLabels
from rsuper.losses.combine import ReportSupervisedLoss
from rsuper.losses.region import ReportRegion, report_region, select_channel
from rsuper.losses.segmentation import known_mask
from rsuper.train import trainer as trainer_module

NAME = "agreement-ball"
TRUSTED_GAIN = 10.0  # K: the Ball Loss weight of a sample whose balls the model fully calls tumor, relative to λ
CALL_THRESHOLD = 0.5


class AgreementBallLoss(ReportSupervisedLoss):
    """R-Super's loss plus ``λ 0.5 wb (K - 1) Σ_b a_b Ball_b / B`` over the batch's report samples."""

    trace: list[float]

    def forward(self, final_logits: torch.Tensor, aux_logits: torch.Tensor,
                batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = super().forward(final_logits, aux_logits, batch)
        if self.report_weight <= 0:
            return losses
        region = report_region(batch["region"], self.spacing_mm, unknown=batch["unknown"])
        known = known_mask(batch["unknown"], self.spacing_mm)
        prob = torch.sigmoid(select_channel(final_logits.float(), region.channel)).detach()
        reported = select_channel(batch["region"], region.channel) > 0.5  # the reported sub-segment, undilated
        extra, agreements = final_logits.float().sum() * 0.0, []
        for b in torch.nonzero(region.has_region).flatten().tolist():
            one = slice(b, b + 1)
            captured: list[BallPseudoLabels] = []
            original = ball_module.ball_pseudo_labels

            def capture(*args: Any, **kwargs: Any) -> BallPseudoLabels:
                captured.append(original(*args, **kwargs))
                return captured[-1]

            with mock.patch.object(ball_module, "ball_pseudo_labels", capture):
                sample_loss = ball_module.ball_loss_in_region(
                    final_logits[one], ReportRegion(region.has_region[one], region.channel[one], region.dilated[one]),
                    known[one], batch["tumor_diameters_mm"][one], batch["tumor_volumes_mm3"][one], self.spacing_mm,
                    margin=self.ball.margin, volume_mode=self.ball.volume_mode,
                    rank_weighted=self.ball.rank_weighted, border_dilation_mm=self.ball.border_dilation_mm,
                )
            if not bool(captured[0].positive.any()):
                continue
            agreement = self.trust(prob[b], captured[0], reported[b])
            agreements.append(agreement)
            extra = extra + agreement * sample_loss
        if agreements:
            self.trace.append(sum(agreements) / len(agreements))
        scale = self.report_weight * 0.5 * self.ball.weight * (TRUSTED_GAIN - 1.0) / final_logits.shape[0]
        losses["total"] = losses["total"] + scale * extra
        return losses

    @staticmethod
    def trust(prob: torch.Tensor, labels: BallPseudoLabels, reported: torch.Tensor) -> float:
        """a_b: the share of the sample's Ball positives the model calls tumor (prob, reported: (X, Y, Z))."""
        return float((prob[labels.positive[0]] >= CALL_THRESHOLD).float().mean())


class ContrastBallLoss(AgreementBallLoss):
    """The same, with a_b = max(0, share of the positives called - share of the rest of the reported sub-segment
    called, outside the Ball Loss's zone): a model that calls its whole sub-segment tumor earns no trust."""

    @staticmethod
    def trust(prob: torch.Tensor, labels: BallPseudoLabels, reported: torch.Tensor) -> float:
        called = prob >= CALL_THRESHOLD
        background = reported & ~labels.background_zone[0]
        rest = float(called[background].float().mean()) if bool(background.any()) else 0.0
        return max(0.0, float(called[labels.positive[0]].float().mean()) - rest)


TRUST = {"agreement": AgreementBallLoss, "contrast": ContrastBallLoss}


def train_agreement(seed_dir: Path, name: str, options: dict[str, object], device: str,
                    loss_class: type[AgreementBallLoss] = AgreementBallLoss) -> Path:
    """Trains the arm (R-Super's run file with ``options``) into ``runs/<name>`` (resumes); returns its final
    checkpoint."""
    config = variant_config(seed_dir, name, options, device)
    checkpoint = config.out / "final.pt"
    if checkpoint.is_file():
        return checkpoint
    trace: list[float] = []
    with loss_class_swapped(loss_class, trace=trace):
        trainer_module.train(config, show_progress=False)
    with atomic_path(config.out / "agreement_trace.csv") as tmp:
        pd.DataFrame({"report_batch": range(1, len(trace) + 1), "agreement": trace}).to_csv(tmp, index=False)
    return checkpoint


def main() -> None:
    parser = arm_parser(__doc__, NAME)
    parser.add_argument("--trust", choices=sorted(TRUST), default="agreement",
                        help="a_b: agreement = share of the positives called; contrast = that minus the share of the "
                             "rest of the reported sub-segment called (clipped at 0)")
    args = parser.parse_args()
    check_arm_name(args.name)
    checkpoint = train_agreement(args.seed_dir, args.name, parse_options(args.options), args.device,
                                 TRUST[args.trust])
    evaluate_variant(args.seed_dir, args.name, checkpoint, args.device,
                     " ".join([f"Ball Loss x (1 + {TRUSTED_GAIN - 1:g} agreement)", *args.options]))


if __name__ == "__main__":
    main()
