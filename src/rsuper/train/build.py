"""What a training stage is built from (docs/method.md §4-§5): its cases and dataset, and its loss.

The trainer (``rsuper.train.trainer``) keeps the loop, the step and the checkpoints; these are the two
translations of a :class:`~rsuper.config.TrainConfig` into the objects it trains with.

Example:
    >>> data = build_training_data(config, config.classes, spacing_mm=(2.0, 2.0, 2.0))
    >>> print(data.summary())
    8 mask cases, 60 report cases, 0 unused
    >>> loss_fn = build_loss(config, config.classes, spacing_mm=(2.0, 2.0, 2.0))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rsuper import labels
from rsuper.config import TrainConfig
from rsuper.data.augment import PatchAugmentation
from rsuper.data.dataset import TrainingCase, TrainingDataset, collect_training_cases
from rsuper.data.sampling import CropOptions
from rsuper.errors import ConfigError
from rsuper.losses.combine import BallLossOptions, ReportSupervisedLoss, VolumeLossOptions


@dataclass(frozen=True)
class TrainingData:
    """The dataset of a stage and how its cases were split (``skipped``: one line per unused case)."""

    dataset: TrainingDataset
    mask_cases: tuple[TrainingCase, ...]
    report_cases: tuple[TrainingCase, ...]
    skipped: tuple[str, ...]
    stage: int

    @property
    def n_mask(self) -> int:
        return len(self.mask_cases)

    @property
    def n_report(self) -> int:
        return len(self.report_cases)

    def summary(self) -> str:
        """One line for the log: cases of each kind and the unused ones."""
        if self.stage == 1:
            unused = f"{len(self.skipped)} case(s) without lesion masks unused (stage 1 trains on masks only)"
        else:
            unused = f"{len(self.skipped)} unused" + (f" (e.g. {self.skipped[0]})" if self.skipped else "")
        return f"{self.n_mask} mask cases, {self.n_report} report cases, {unused}"


def build_training_data(config: TrainConfig, class_names: Sequence[str], spacing_mm: Sequence[float]) -> TrainingData:
    """The mask and report cases of ``config.cache`` (stage 2: with the findings of ``config.tumors``) and the
    :class:`TrainingDataset` of ``config.data``.

    Raises :class:`ConfigError` for stage 2 without ``tumors``, ``ValueError`` when stage 2 finds no report case.
    """
    findings = None
    if config.stage == 2:
        if config.tumors is None:
            raise ConfigError("stage 2 trains on reports: pass --tumors tumors.csv (from `rsuper extract`)")
        from rsuper.reports.tables import read_tumors_csv

        findings = read_tumors_csv(config.tumors)
    data = config.data
    mask_cases, report_cases, skipped = collect_training_cases(
        config.cache, findings, class_names, config.target_organs, data.max_tumors
    )
    if config.stage == 2 and not report_cases:
        raise ValueError(
            f"stage 2: no report case in {config.cache} matches {config.tumors} "
            "(cases need findings and no lesion masks); check the case ids"
        )
    augment = data.augment
    dataset = TrainingDataset(
        mask_cases, report_cases, class_names=class_names, patch_size=data.patch_size, spacing_mm=spacing_mm,
        target_organs=config.target_organs, max_tumors=data.max_tumors,
        crops=CropOptions(**data.crops.model_dump()),
        augmentation=PatchAugmentation(class_names, mirror_prob=augment.mirror_prob) if augment.enabled else None,
    )
    return TrainingData(dataset, tuple(mask_cases), tuple(report_cases), tuple(skipped), config.stage)


def build_loss(config: TrainConfig, class_names: Sequence[str], spacing_mm: Sequence[float]) -> ReportSupervisedLoss:
    """The loss of ``config.loss`` for this stage (λ = 0 in stage 1).

    Every lesion channel gets the Ball Loss background BCE also in samples without a region (docs/method.md §5):
    healthy report CTs and mask CTs then push false-positive lesions down as strongly as tumor CTs push up.
    """
    loss = config.loss
    return ReportSupervisedLoss(
        spacing_mm=tuple(spacing_mm),
        report_weight=config.effective_report_weight,
        ball=BallLossOptions(**loss.ball.model_dump()),
        volume=VolumeLossOptions(**loss.volume.model_dump()),
        lesion_channels=[i for i, name in enumerate(class_names) if labels.is_lesion_class(name)],
    )
