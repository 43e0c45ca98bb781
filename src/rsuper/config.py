"""Run configuration of `rsuper train`: nested pydantic models, read from YAML, stored in every checkpoint.

Every field has a default taken from docs/method.md §4-§6 (paper values) or, where the method leaves a value
open, a documented choice. Sizes are in mm and voxels as their names say; ``patch_size`` is in voxels at
the cache spacing, in the array's (x, y, z) axis order. The run-level fields (inputs, stage, classes, network,
runtime) sit at the top; the rest is grouped:

- ``data``: patches and batches (``patch_size``, ``batch_size``, ``workers``, ``report_fraction``,
  ``max_tumors``), ``crops`` (how crops are drawn) and ``augment`` (``enabled``, ``mirror_prob``);
- ``optim``: steps, learning-rate schedule, AdamW, gradient clipping, EMA and the output-bias initialisation;
- ``loss``: λ (``report_weight``) and the Volume and Ball Loss (``volume``, ``ball``).

Older rsuper versions wrote every field at the top level ("flat"). Such run files and checkpoints' stored
configs still load: :data:`FLAT_KEYS` maps each old key to its place (``lr`` -> ``optim.lr``), and the flat
names stay valid in a run file, in ``DemoPlan.stage2_options`` and as ``rsuper train`` flags. Options removed
after the demo measurements (:data:`REMOVED_OPTIONS`) are dropped at their "off" value and refused otherwise.

Example:
    >>> cfg = TrainConfig.from_yaml("run.yaml", overrides={"steps": 200})
    >>> cfg.optim.steps, cfg.loss.ball.margin
    (200, 0.2)
    >>> print(cfg.to_yaml())
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rsuper import labels
from rsuper.errors import ConfigError, show_value

CONFIG_ERROR = "invalid training configuration"  # heading of TrainConfig problems (rsuper.errors)

DEFAULT_TARGET_ORGANS: tuple[str, ...] = ("pancreas", "kidney", "liver")
# Organ channels predicted next to the lesion channels (organ supervision also gates lesions at inference).
# Every organ with a lesion channel has a side-free channel ("kidney", not kidney_left/kidney_right): beside
# mirror-swapped side channels a lesion channel takes one side's features and finds tumors on that side only
# (docs/method.md §4; prediction still writes kidney_left/kidney_right, split by the body midline).
DEFAULT_ORGAN_CHANNELS: tuple[str, ...] = (
    "liver",
    "pancreas",
    "pancreas_head",
    "pancreas_body",
    "pancreas_tail",
    "kidney",
    "spleen",
)


def default_class_names(target_organs: tuple[str, ...] | list[str] = DEFAULT_TARGET_ORGANS) -> list[str]:
    """Default output channels: organ channels + one lesion channel per target organ (docs/method.md §4).

    Example:
        >>> default_class_names(["pancreas"])[-1]
        'pancreatic_lesion'
    """
    return list(DEFAULT_ORGAN_CHANNELS) + [labels.lesion_class(o) for o in target_organs]


# ------------------------------------------------------------------------------------------ the layout
class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CropConfig(_Group):
    """How training crops are drawn (docs/method.md §4)."""

    mask_crop_probs: dict[str, float] = Field(
        {"tumor": 0.5, "organ": 0.3, "random": 0.2}, description="mask-case crop centre: tumor/organ/random"
    )
    report_margin_mm: float = Field(15.0, ge=0, description="dilation of the region kept inside the crop")
    report_random_crop_prob: float = Field(0.1, ge=0, le=1, description="report crops without a region")

    @field_validator("mask_crop_probs")
    @classmethod
    def _crop_probs(cls, value: dict[str, float]) -> dict[str, float]:
        allowed = {"tumor", "organ", "random"}
        if set(value) - allowed or any(p < 0 for p in value.values()) or sum(value.values()) <= 0:
            raise ValueError(f"mask_crop_probs needs non-negative weights for {sorted(allowed)}, got {value}")
        return value


class AugmentConfig(_Group):
    """Patch augmentation (docs/method.md §4, ``rsuper.data.augment``)."""

    enabled: bool = Field(True, description="MONAI spatial + intensity augmentation and the left-right mirror")
    mirror_prob: float = Field(0.5, ge=0, le=1, description="share of augmented patches mirrored left-right")


class DataConfig(_Group):
    """Training samples and batches (docs/method.md §4)."""

    patch_size: tuple[int, int, int] = Field((128, 128, 128), description="patch in voxels (x, y, z)")
    batch_size: int = Field(2, ge=1, description="samples per process; effective = batch_size x world size")
    workers: int = Field(2, ge=0, description="DataLoader workers per process")
    report_fraction: float = Field(0.5, ge=0, le=1, description="share of report samples per batch (stage 2)")
    max_tumors: int = Field(16, ge=1, description="T: tumors per group padded to T; larger groups are unusable")
    crops: CropConfig = Field(default_factory=CropConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


class OptimConfig(_Group):
    """Optimisation (docs/method.md §6): AdamW, warm-up + polynomial decay, clipping, EMA, bias initialisation."""

    steps: int = Field(1000, ge=1, description="optimiser steps of this stage")
    lr: float = Field(3e-4, gt=0, description="peak learning rate of stage 1 (per process batch; not scaled)")
    stage2_lr_factor: float = Field(0.1, gt=0, description="stage 2 uses lr x this factor")
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(50, ge=0, description="linear warm-up, then polynomial decay")
    poly_power: float = Field(0.9, gt=0)
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    ema_decay: float = Field(0.99, ge=0, lt=1)
    bias_init: bool = Field(True, description="output biases = log-odds of channel foreground fraction")


class VolumeConfig(_Group):
    """The Volume Loss (docs/method.md §5)."""

    tolerance: float = Field(0.1, ge=0, lt=1, description="tau of the Volume Loss (R-Super's code: 0.2)")
    weight: float = Field(1.0, ge=0, description="multiplier of the Volume Loss inside lambda (0 = ablate it)")


class BallConfig(_Group):
    """The Ball Loss (docs/method.md §5)."""

    margin: float = Field(0.2, ge=0, lt=1, description="m of the Ball Loss")
    volume_mode: Literal["report", "rsuper_code"] = Field(
        "report", description="Ball Loss positives from the reported volume, or R-Super code's largest-diameter ball"
    )
    rank_weighted: bool = Field(False, description="rank-weighted BCE on the Ball Loss positives")
    weight: float = Field(1.0, ge=0, description="multiplier of the Ball Loss inside lambda (0 = ablate it)")


class LossConfig(_Group):
    """The report losses of stage 2 (docs/method.md §5); the defaults are the paper's."""

    report_weight: float = Field(0.1, ge=0, description="lambda of the report losses in stage 2")
    volume: VolumeConfig = Field(default_factory=VolumeConfig)
    ball: BallConfig = Field(default_factory=BallConfig)


# Old flat key (rsuper before the nested layout; also the `rsuper train` flag names) -> its place now.
FLAT_KEYS: dict[str, str] = {
    "patch_size": "data.patch_size",
    "batch_size": "data.batch_size",
    "workers": "data.workers",
    "report_fraction": "data.report_fraction",
    "max_tumors": "data.max_tumors",
    "mask_crop_probs": "data.crops.mask_crop_probs",
    "report_margin_mm": "data.crops.report_margin_mm",
    "report_random_crop_prob": "data.crops.report_random_crop_prob",
    "augment": "data.augment.enabled",
    "mirror_prob": "data.augment.mirror_prob",
    "steps": "optim.steps",
    "lr": "optim.lr",
    "stage2_lr_factor": "optim.stage2_lr_factor",
    "weight_decay": "optim.weight_decay",
    "warmup_steps": "optim.warmup_steps",
    "poly_power": "optim.poly_power",
    "grad_clip": "optim.grad_clip",
    "ema_decay": "optim.ema_decay",
    "bias_init": "optim.bias_init",
    "report_weight": "loss.report_weight",
    "volume_tolerance": "loss.volume.tolerance",
    "volume_weight": "loss.volume.weight",
    "ball_margin": "loss.ball.margin",
    "ball_volume_mode": "loss.ball.volume_mode",
    "ball_rank_weighted": "loss.ball.rank_weighted",
    "ball_weight": "loss.ball.weight",
}

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
    "data.augment.organ_shift_prob": 0.0,  # the nested contrast-phase augmentation of session 19 (c1cd5c7)
    "data.augment.organ_shift_hu": "data.augment.organ_shift_prob",
}


def drop_removed_options(data: Mapping[str, Any], where: str = "the run file") -> dict[str, Any]:
    """``data`` without the removed options that are off; a removed option in use is a ``ValueError`` with one
    line per such option (see :data:`REMOVED_OPTIONS`)."""
    problems = []
    for key, off in REMOVED_OPTIONS.items():
        found, value = _removed_value(data, key)
        if not found or isinstance(off, str):  # a qualifier goes with its option
            continue
        if value != off:
            problems.append(f"{key} was removed: not adopted, see BENCHMARKS.md decisions; delete it from {where}, "
                            f"got {show_value(value)}")
    if problems:
        raise ValueError("\n".join(problems))
    out = {k: v for k, v in data.items() if k not in REMOVED_OPTIONS}
    for key in (k for k in REMOVED_OPTIONS if "." in k):
        out = _without_path(out, key.split("."))
    return out


def _removed_value(data: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """(found, value) of a removed option given flat (``key`` itself) or, for a dotted ``key``, nested."""
    if key in data:
        return True, data[key]
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _without_path(data: Mapping[str, Any], path: list[str]) -> dict[str, Any]:
    """A copy of ``data`` without the nested key ``path`` (only the mappings along the path are copied)."""
    out = dict(data)
    head, rest = path[0], path[1:]
    if not rest:
        out.pop(head, None)
    elif isinstance(out.get(head), Mapping):
        out[head] = _without_path(out[head], rest)
    return out


def nest(data: Mapping[str, Any], where: str = "the run file") -> dict[str, Any]:
    """The nested layout of ``data`` (flat, nested or mixed): removed options dropped or refused
    (:func:`drop_removed_options`), old flat keys (:data:`FLAT_KEYS`) and dotted paths (``optim.lr``) moved to
    their place; other keys untouched. A setting given twice (``lr`` and ``optim.lr``) is a ``ValueError``.
    """
    out = _plain(drop_removed_options(data, where))
    problems = []
    for key in [k for k in out if k in FLAT_KEYS or (isinstance(k, str) and "." in k)]:
        value = out.pop(key)
        try:
            _set_path(out, FLAT_KEYS.get(key, key).split("."), value, key, overwrite=False)
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise ValueError("\n".join(problems))
    return out


def set_option(data: dict[str, Any], key: str, value: Any) -> None:
    """Sets ``key`` (a field, an old flat key or a dotted path such as ``optim.lr``) in nested ``data``; a
    mapping given for a group (``loss: {ball: {weight: 0}}``) is merged into it."""
    _set_path(data, FLAT_KEYS.get(key, key).split("."), value, key, overwrite=True)


def _set_path(data: dict[str, Any], path: list[str], value: Any, key: str, overwrite: bool) -> None:
    node = data
    for depth, group in enumerate(path[:-1]):
        node = node.setdefault(group, {})
        if not isinstance(node, dict):
            raise ValueError(f"{key} belongs in {'.'.join(path)}, but {'.'.join(path[: depth + 1])} is not a mapping, "
                             f"got {show_value(node)}")
    if path[-1] in node and not overwrite:
        raise ValueError(f"{key} is given twice: as {key} and as {'.'.join(path)}; keep one")
    old = node.get(path[-1])
    node[path[-1]] = _merged(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with mappings and pydantic models (e.g. ``data=DataConfig(...)``) as new dicts."""
    def plain(value: Any) -> Any:
        if isinstance(value, BaseModel):
            value = value.model_dump()
        return {k: plain(v) for k, v in value.items()} if isinstance(value, Mapping) else value

    return plain(data)


def _flat_names(data: Mapping[str, Any]) -> dict[str, str]:
    """Dotted path -> the old flat key ``data`` used for it: problems then name the key the user wrote."""
    return {FLAT_KEYS[key]: key for key in data if key in FLAT_KEYS}


class TrainConfig(BaseModel):
    """Everything one training run needs (docs/method.md §4-§6). Unknown YAML keys are an error."""

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
    # Classes (docs/method.md §4).
    target_organs: list[str] = Field(list(DEFAULT_TARGET_ORGANS), description="organs whose report groups supervise")
    class_names: list[str] | None = Field(None, description="output channels; default: organ + lesion channels")
    # Network.
    model: str = Field("medformer", description="rsuper.models registry name")
    model_kwargs: dict[str, Any] = Field({}, description="extra keyword arguments of build_model")
    # Samples, optimisation, losses.
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    # Runtime.
    amp: Literal["none", "bf16", "fp16"] = Field("none", description="mixed precision (GPU only)")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    seed: int = Field(0)
    checkpoint_every: int = Field(100, ge=1, description="write last.pt every N steps")
    log_every: int = Field(10, ge=1, description="metrics.csv row every N steps")

    @model_validator(mode="before")
    @classmethod
    def _nested_layout(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and any(k in FLAT_KEYS or k in REMOVED_OPTIONS or "." in str(k) for k in data):
            return nest(data)
        return data

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, Path)) else value

    @field_validator("target_organs")
    @classmethod
    def _known_organs(cls, value: list[str]) -> list[str]:
        for organ in value:
            if organ not in labels.LESION_CLASS_OF_ORGAN:
                raise ValueError(
                    f"target_organs: organ {organ!r} has no lesion channel; "
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
        return self.optim.lr * (self.optim.stage2_lr_factor if self.stage == 2 else 1.0)

    @property
    def effective_report_weight(self) -> float:
        """lambda of this stage: 0 in stage 1 (masks only)."""
        return self.loss.report_weight if self.stage == 2 else 0.0

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
        """Reads a YAML run file (or none; nested or old flat layout) and applies ``overrides`` (field names, old
        flat keys such as ``lr`` or dotted paths such as ``optim.lr``; None values are ignored).

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
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        names = {**_flat_names(data), **_flat_names(given)}
        try:
            data = nest(data)
            for key, value in given.items():
                set_option(data, key, value)
        except ValueError as error:
            raise ConfigError(str(error).splitlines(), CONFIG_ERROR, path) from None
        return cls._validated(data, path, names)

    @classmethod
    def from_stored(cls, data: Mapping[str, Any], source: str | Path) -> TrainConfig:
        """The configuration stored in a checkpoint, nested or flat (``source`` names it in a
        :class:`ConfigError`)."""
        names = _flat_names(data)
        try:
            data = nest(data, where="the stored config")
        except ValueError as error:
            raise ConfigError(str(error).splitlines(), CONFIG_ERROR, source) from None
        return cls._validated(data, source, names)

    @classmethod
    def _validated(cls, data: Mapping[str, Any], source: str | Path | None, names: Mapping[str, str]) -> TrainConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError.from_validation(error, CONFIG_ERROR, source, names, fields=accepted_keys()) from None

    def updated(self, options: Mapping[str, Any]) -> TrainConfig:
        """A validated copy with ``options`` set (field names, old flat keys or dotted paths; :func:`set_option`)."""
        data = self.model_dump()
        for key, value in drop_removed_options(options).items():
            set_option(data, key, value)
        return TrainConfig.model_validate(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-able nested dict (paths as strings, ``class_names`` resolved); stored in checkpoints."""
        return {**self.model_dump(mode="json"), "class_names": self.classes}

    def to_yaml(self) -> str:
        """The effective configuration as YAML (nested layout)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _merged(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = _merged(out[key], value) if both else value
    return out


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            paths += _leaf_paths(kind, f"{prefix}{name}.")
        else:
            paths.append(prefix + name)
    return paths


def accepted_keys() -> list[str]:
    """Every name a run file may use: the top-level fields, the old flat keys and every dotted leaf path
    (``optim.lr``); unknown keys are matched against them for a "did you mean" hint."""
    return [*TrainConfig.model_fields, *FLAT_KEYS, *_leaf_paths(TrainConfig)]


def mirror_augmented(stored: Mapping[str, Any] | None) -> bool:
    """Whether a checkpoint's stored config (nested or old flat layout; None or another tool's config: no)
    trained on left-right mirrored patches: augmentation on and ``mirror_prob`` > 0 (``rsuper predict --tta auto``)."""
    stored = stored or {}
    data = stored.get("data")
    augment = data.get("augment") if isinstance(data, Mapping) else None
    if isinstance(augment, Mapping):
        enabled, prob = augment.get("enabled"), augment.get("mirror_prob")
    else:
        enabled, prob = stored.get("augment"), stored.get("mirror_prob")
    return bool(enabled) and float(prob or 0.0) > 0


def _yaml_problem(error: Exception) -> str:
    """``not valid YAML (line L, column C): <problem>`` from a PyYAML error (1-based positions)."""
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"not valid YAML{where}: {problem}"
