"""Run configuration of `rsuper train`: one pydantic model, read from YAML, stored in every checkpoint.

Every field has a default taken from METHOD.md §4-§6 (paper values) or, where the method leaves a value
open, a documented choice. Sizes are in mm and voxels as their names say; ``patch_size`` is in voxels at
the cache spacing, in the array's (x, y, z) axis order.

Example:
    >>> cfg = TrainConfig.from_yaml("run.yaml", overrides={"steps": 200})
    >>> print(cfg.to_yaml())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from rsuper.anatomy import labels
from rsuper.errors import ConfigError, show_value

CONFIG_ERROR = "invalid training configuration"  # heading of TrainConfig problems (rsuper.errors)

DEFAULT_TARGET_ORGANS: tuple[str, ...] = ("pancreas", "kidney", "liver")
# Organ channels predicted next to the lesion channels (organ supervision also gates lesions at inference).
DEFAULT_ORGAN_CHANNELS: tuple[str, ...] = (
    "liver",
    "pancreas",
    "pancreas_head",
    "pancreas_body",
    "pancreas_tail",
    "kidney_left",
    "kidney_right",
    "spleen",
)


# Options tried on the demo and not adopted (BENCHMARKS.md, decisions), removed from the code: option -> its "off"
# value, or the removed option it only qualified (e.g. absence_volume_mm3 sized the Absence Loss of absence_weight).
# Old run files and checkpoints' stored configs hold them; at "off" (or qualifying an option at "off") they are
# dropped silently, at any other value the configuration is refused.
REMOVED_OPTIONS: dict[str, Any] = {
    "absence_weight": 0.0,
    "absence_volume_mm3": "absence_weight",
    "absence_min_prob": "absence_weight",
    "ball_attenuation_weight": 0.0,
    "organ_shift_hu": 0.0,
    "organ_shift_prob": "organ_shift_hu",
    "lesion_organ_bce": 0.0,
    "lesion_organ_bce_organs": "lesion_organ_bce",
    "lesion_pooled_dice": False,
    "ball_min_confidence": 0.0,
    "ball_region_background": True,
}


def drop_removed_options(data: dict[str, Any], where: str = "the run file") -> dict[str, Any]:
    """``data`` without the removed options that are off; a removed option in use is a ``ValueError`` with one
    line per such option (see :data:`REMOVED_OPTIONS`)."""
    problems = []
    for key, off in REMOVED_OPTIONS.items():
        if key not in data or isinstance(off, str):  # a qualifier goes with its option
            continue
        if data[key] != off:
            problems.append(f"{key} was removed: not adopted, see BENCHMARKS.md decisions; delete it from {where}, "
                            f"got {show_value(data[key])}")
    if problems:
        raise ValueError("\n".join(problems))
    return {k: v for k, v in data.items() if k not in REMOVED_OPTIONS}


def default_class_names(target_organs: tuple[str, ...] | list[str] = DEFAULT_TARGET_ORGANS) -> list[str]:
    """Default output channels: organ channels + one lesion channel per target organ (METHOD.md §4).

    Example:
        >>> default_class_names(["pancreas"])[-1]
        'pancreatic_lesion'
    """
    return list(DEFAULT_ORGAN_CHANNELS) + [labels.lesion_class(o) for o in target_organs]


class TrainConfig(BaseModel):
    """Everything one training run needs (METHOD.md §4-§6). Unknown YAML keys are an error."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Inputs / outputs.
    cache: list[Path] = Field([], description="prepared cache folder(s) (`rsuper prepare --out`), e.g. masks + reports")
    tumors: Path | None = Field(None, description="per-tumor findings CSV (`rsuper extract`) for report cases")
    out: Path = Field(Path("runs/train"), description="run folder: checkpoints, metrics.csv, config.yaml")
    # Stage and initialisation.
    stage: Literal[1, 2] = Field(1, description="1 = masks only; 2 = masks + reports from a stage-1 checkpoint")
    init: Path | None = Field(None, description="stage-1 checkpoint to start stage 2 from (required for stage 2)")
    init_use_ema: bool = Field(True, description="start stage 2 from the EMA weights of --init")
    resume: bool = Field(False, description="continue exactly from OUT/last.pt")
    # Classes and supervision (METHOD.md §4).
    target_organs: list[str] = Field(list(DEFAULT_TARGET_ORGANS), description="organs whose report groups supervise")
    class_names: list[str] | None = Field(None, description="output channels; default: organ + lesion channels")
    max_tumors: int = Field(16, ge=1, description="T: tumors per group padded to T; larger groups are unusable")
    report_margin_mm: float = Field(15.0, ge=0, description="dilation of the region kept inside the crop")
    report_random_crop_prob: float = Field(0.1, ge=0, le=1, description="report crops without a region")
    report_fraction: float = Field(0.5, ge=0, le=1, description="share of report samples per batch (stage 2)")
    mask_crop_probs: dict[str, float] = Field(
        {"tumor": 0.5, "organ": 0.3, "random": 0.2}, description="mask-case crop centre: tumor/organ/random"
    )
    # Model and patches.
    model: str = Field("medformer", description="rsuper.models registry name")
    model_kwargs: dict[str, Any] = Field({}, description="extra keyword arguments of build_model")
    patch_size: tuple[int, int, int] = Field((128, 128, 128), description="patch in voxels (x, y, z)")
    batch_size: int = Field(2, ge=1, description="samples per process; effective = batch_size x world size")
    workers: int = Field(2, ge=0, description="DataLoader workers per process")
    augment: bool = Field(True, description="MONAI spatial + intensity augmentation and the left-right mirror")
    mirror_prob: float = Field(0.5, ge=0, le=1, description="share of augmented patches mirrored left-right")
    # Optimisation (METHOD.md §6).
    steps: int = Field(1000, ge=1, description="optimiser steps of this stage")
    lr: float = Field(3e-4, gt=0, description="peak learning rate of stage 1 (per process batch; not scaled)")
    stage2_lr_factor: float = Field(0.1, gt=0, description="stage 2 uses lr x this factor")
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(50, ge=0, description="linear warm-up, then polynomial decay")
    poly_power: float = Field(0.9, gt=0)
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    ema_decay: float = Field(0.99, ge=0, lt=1)
    report_weight: float = Field(0.1, ge=0, description="lambda of the report losses in stage 2")
    # Report losses (METHOD.md §5); the defaults are the paper's.
    volume_tolerance: float = Field(0.1, ge=0, lt=1, description="tau of the Volume Loss (R-Super's code: 0.2)")
    ball_margin: float = Field(0.2, ge=0, lt=1, description="m of the Ball Loss")
    ball_volume_mode: Literal["report", "rsuper_code"] = Field(
        "report", description="Ball Loss positives from the reported volume, or R-Super code's largest-diameter ball"
    )
    ball_rank_weighted: bool = Field(False, description="rank-weighted BCE on the Ball Loss positives")
    ball_weight: float = Field(1.0, ge=0, description="multiplier of the Ball Loss inside lambda (0 = ablate it)")
    volume_weight: float = Field(1.0, ge=0, description="multiplier of the Volume Loss inside lambda (0 = ablate it)")
    bias_init: bool = Field(True, description="output biases = log-odds of channel foreground fraction")
    amp: Literal["none", "bf16", "fp16"] = Field("none", description="mixed precision (GPU only)")
    # Runtime.
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    seed: int = Field(0)
    checkpoint_every: int = Field(100, ge=1, description="write last.pt every N steps")
    log_every: int = Field(10, ge=1, description="metrics.csv row every N steps")

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, Path)) else value

    @model_validator(mode="before")
    @classmethod
    def _drop_removed_options(cls, data: Any) -> Any:
        return drop_removed_options(data) if isinstance(data, dict) else data

    @field_validator("target_organs")
    @classmethod
    def _known_organs(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        for organ in value or ():
            if organ not in labels.LESION_CLASS_OF_ORGAN:
                raise ValueError(
                    f"{info.field_name}: organ {organ!r} has no lesion channel; "
                    f"use one of {sorted(labels.LESION_CLASS_OF_ORGAN)}"
                )
        return value

    @field_validator("class_names")
    @classmethod
    def _canonical_classes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        names = [labels.canonical_class_name(n) for n in value]
        if len(set(names)) != len(names):
            raise ValueError(f"class_names has duplicates: {names}")
        return names

    @field_validator("mask_crop_probs")
    @classmethod
    def _crop_probs(cls, value: dict[str, float]) -> dict[str, float]:
        allowed = {"tumor", "organ", "random"}
        if set(value) - allowed or any(p < 0 for p in value.values()) or sum(value.values()) <= 0:
            raise ValueError(f"mask_crop_probs needs non-negative weights for {sorted(allowed)}, got {value}")
        return value

    @model_validator(mode="after")
    def _stage_two_needs_init(self) -> TrainConfig:
        if self.stage == 2 and self.init is None and not self.resume:
            raise ValueError("stage 2 starts from a stage-1 checkpoint: set `init` (--init PATH/final.pt)")
        return self

    @property
    def classes(self) -> list[str]:
        """Output channel names in channel order."""
        return list(self.class_names) if self.class_names else default_class_names(self.target_organs)

    @property
    def effective_lr(self) -> float:
        """Peak learning rate of this stage (stage 2: lr x stage2_lr_factor)."""
        return self.lr * (self.stage2_lr_factor if self.stage == 2 else 1.0)

    @property
    def effective_report_weight(self) -> float:
        """lambda of this stage: 0 in stage 1 (masks only)."""
        return self.report_weight if self.stage == 2 else 0.0

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Reads a YAML run file (or none) and applies ``overrides`` (None values are ignored).

        Invalid YAML or field values raise :class:`rsuper.errors.ConfigError`, one readable line per problem.
        """
        data: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"config file {path} not found")
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as error:
                raise ConfigError(_yaml_problem(error), CONFIG_ERROR, path) from None
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"expected a YAML mapping of TrainConfig fields, got {type(loaded).__name__}",
                                  CONFIG_ERROR, path)
            data = dict(loaded or {})
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError.from_validation(error, CONFIG_ERROR, path, fields=cls.model_fields) from None

    @classmethod
    def from_stored(cls, data: dict[str, Any], source: str | Path) -> TrainConfig:
        """The configuration stored in a checkpoint (``source`` names it in a :class:`ConfigError`)."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError.from_validation(error, CONFIG_ERROR, source, fields=cls.model_fields) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-able dict (paths as strings, ``class_names`` resolved); stored in checkpoints."""
        return {**self.model_dump(mode="json"), "class_names": self.classes}

    def to_yaml(self) -> str:
        """The effective configuration as YAML."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _yaml_problem(error: Exception) -> str:
    """``not valid YAML (line L, column C): <problem>`` from a PyYAML error (1-based positions)."""
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"not valid YAML{where}: {problem}"
