"""rsuper checkpoints: a plain dict (loadable with ``weights_only=True``) holding weights and everything
``rsuper predict`` needs (model name/kwargs, class list, spacing, patch size, orientation, normalisation).

Example:
    >>> payload = make_payload("medformer_small", 1, class_names, spacing_mm=(2, 2, 2),
    ...                        patch_size=(64, 64, 64), state_dict=model.state_dict())
    >>> save_checkpoint("runs/final.pt", payload)
    >>> model = model_from_checkpoint(load_checkpoint("runs/final.pt"))
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsuper import __version__
from rsuper.atomic import atomic_path
from rsuper.io import CT_NORMALISATION
from rsuper.labels import ClassNameError, canonical_class_name
from rsuper.models.registry import (
    ModelSpecError,
    build_model,
    check_model_kwargs,
    check_model_name_syntax,
    is_plain_value,
    model_for_file,
)

FORMAT = "rsuper-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "model", "class_names", "spacing_mm", "patch_size", "state_dict")
_MAX_LISTED = 12


class CheckpointError(ValueError):
    """A checkpoint file or payload that cannot be used (the message names the file/keys and the fix)."""


def make_payload(
    model_name: str,
    in_channels: int,
    class_names: Sequence[str],
    spacing_mm: Sequence[float],
    patch_size: Sequence[int],
    state_dict: Mapping[str, torch.Tensor],
    model_kwargs: Mapping[str, Any] | None = None,
    ema_state_dict: Mapping[str, torch.Tensor] | None = None,
    training: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    supervised_voxels: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Assembles a contract-8 payload (tensors are detached and moved to CPU).

    ``supervised_voxels`` (optional): per class, the labelled (known) voxels the network was trained on; a class
    with 0 was never supervised and the predictor leaves it empty.
    """

    def cpu(sd: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
        return None if sd is None else {k: v.detach().cpu() for k, v in sd.items()}

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rsuper_version": __version__,
        "model": {
            "name": model_name,
            "in_channels": int(in_channels),
            "num_classes": len(class_names),
            "kwargs": dict(model_kwargs or {}),
        },
        "class_names": list(class_names),
        "spacing_mm": [float(s) for s in spacing_mm],
        "patch_size": [int(s) for s in patch_size],
        "orientation": "RAS",
        "normalisation": dict(CT_NORMALISATION),
        "state_dict": cpu(state_dict),
        "ema_state_dict": cpu(ema_state_dict),
        "training": dict(training) if training is not None else None,
        "config": dict(config) if config is not None else None,
        "supervised_voxels": None if supervised_voxels is None else {k: int(v) for k, v in supervised_voxels.items()},
    }


def untrained_classes_of(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """Classes a payload records as never supervised (0 labelled voxels); () when it has no record."""
    counts = payload.get("supervised_voxels") or {}
    return tuple(canonical_class_name(c) for c, n in counts.items() if n == 0)


def validate_payload(payload: Any, source: str = "payload") -> None:
    """Raises :class:`CheckpointError` unless ``payload`` is a usable contract-8 dict."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        kind = f"a dict with keys {sorted(payload)[:8]}" if isinstance(payload, dict) else type(payload).__name__
        hint = (
            " It looks like an R-Super checkpoint: convert it with `rsuper convert-checkpoint`."
            if isinstance(payload, dict) and "model_state_dict" in payload
            else ""
        )
        raise CheckpointError(f"{source} is not an rsuper checkpoint (got {kind}).{hint}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has format_version {payload.get('format_version')!r}; this rsuper {__version__} reads "
            f"version {FORMAT_VERSION}. Use the rsuper version that wrote it (rsuper_version="
            f"{payload.get('rsuper_version')!r}) or re-convert it."
        )
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{source} lacks the required entries {missing}")
    try:
        _check_model_spec(payload["model"])
        _check_class_names(payload)
    except (ModelSpecError, ClassNameError) as err:
        raise CheckpointError(f"{source}: {err}") from None
    if len(payload["class_names"]) != payload["model"]["num_classes"]:
        raise CheckpointError(
            f"{source}: {len(payload['class_names'])} class names but model.num_classes={payload['model']['num_classes']}"
        )


def _positive_int(value: object) -> bool:
    return type(value) is int and value >= 1


def _check_model_spec(model: object) -> None:
    """The checkpoint's model spec is plain data of the expected types; nothing is imported or built here."""
    if not isinstance(model, dict) or "name" not in model or "num_classes" not in model:
        raise ModelSpecError("'model' must be a dict with 'name', 'in_channels', 'num_classes', 'kwargs'")
    check_model_name_syntax(model["name"])
    try:
        _check_model_arguments(model)
    except ModelSpecError as err:  # name the network the checkpoint claims, whatever else is wrong
        raise ModelSpecError(f"model {model['name']!r:.80}: {err}") from None


def _check_model_arguments(model: dict[str, Any]) -> None:
    for key in ("in_channels", "num_classes"):
        value = model.get(key, 1)
        if not _positive_int(value):
            raise ModelSpecError(f"model.{key} must be a positive integer, got {value!r:.80} ({type(value).__name__})")
    kwargs = model.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ModelSpecError(f"model.kwargs must be a dict of constructor arguments, got {type(kwargs).__name__}")
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ModelSpecError(f"model.kwargs has a key that is not an argument name: {key!r:.80}")
        if not is_plain_value(value):
            raise ModelSpecError(
                f"model.kwargs.{key} must be a number, string, bool or a flat list of them, "
                f"got {value!r:.80} ({type(value).__name__})"
            )


def _check_class_names(payload: dict[str, Any]) -> None:
    """Class names (and supervised-voxel keys) become file names in `rsuper predict`: plain names only."""
    names = payload["class_names"]
    if not isinstance(names, (list, tuple)):
        raise ClassNameError(f"class_names must be a list of names, got {type(names).__name__}")
    for name in names:
        canonical_class_name(name)
    counts = payload.get("supervised_voxels")
    if counts is not None:
        if not isinstance(counts, dict):
            raise ClassNameError(f"supervised_voxels must be a dict of class -> voxels, got {type(counts).__name__}")
        for name in counts:
            canonical_class_name(name)


_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.Size)


def _check_plain(value: Any, where: str) -> None:
    """Raises if ``value`` holds anything ``torch.load(weights_only=True)`` would refuse (Path, numpy, ...)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise CheckpointError(f"checkpoint entry {where} has a non-str/int key {key!r} ({type(key).__name__})")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise CheckpointError(
            f"checkpoint entry {where} is a {type(value).__module__}.{type(value).__name__} ({value!r:.60}); "
            "store plain data only (str/int/float/bool/None, lists, dicts, tensors), e.g. "
            "pydantic model_dump(mode='json') or str(path), so it loads with weights_only=True"
        )


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Validates ``payload`` (docs/method.md §11, plain data only) and writes it atomically; returns the path."""
    validate_payload(payload, "payload to save")
    _check_plain(payload, "payload")
    target = Path(path)
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    return target


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads an rsuper checkpoint with ``weights_only=True`` and validates it (plain data of the expected types:
    model name, ``in_channels``, ``num_classes``, plain ``kwargs``, plain class names). Nothing from the file is
    imported, called or built here; :func:`model_from_checkpoint` builds registered networks only."""
    src = Path(path)
    if not src.is_file():
        raise CheckpointError(f"checkpoint {src} is not a file")
    kind = torch_file_kind(src)
    if kind != "torch":
        raise CheckpointError(not_a_checkpoint_message(src, kind))
    try:
        payload = torch.load(src, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not is_weights_only_refusal(err):
            raise CheckpointError(f"cannot read checkpoint {src} (damaged torch file?): {first_line(err)}") from err
        raise CheckpointError(
            f"{src} holds pickled Python objects, not an rsuper checkpoint (refused with weights_only=True). "
            "An R-Super checkpoint must first be converted: `rsuper convert-checkpoint`."
        ) from err
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError/KeyError/EOFError... on bad files
        raise CheckpointError(
            f"cannot read checkpoint {src} (truncated or not a torch file?): {first_line(err)}"
        ) from err
    validate_payload(payload, str(src))
    return payload


# A legacy (pre-zip) torch.save file starts with a pickled magic number: protocol opcode, LONG1 of 10 bytes.
_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def torch_file_kind(path: str | os.PathLike[str]) -> str:
    """What ``path`` holds, from its bytes (nothing is unpickled): ``"torch"`` (a ``torch.save`` file, zip or
    legacy), ``"truncated"`` (the start of a zip archive without its end), ``"zip"`` (a zip archive that
    ``torch.save`` did not write) or ``"other"`` (text, random bytes, any other format)."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head[:1] == b"\x80" and head[2:4] == b"\x8a\x0a" and head[4:14] == _LEGACY_MAGIC:
        return "torch"
    if not head.startswith(b"PK\x03\x04"):
        return "other"
    if not zipfile.is_zipfile(path):
        return "truncated"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "truncated"
    return "torch" if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names) else "zip"


def not_a_checkpoint_message(path: Path, kind: str) -> str:
    """One line for a file that :func:`torch_file_kind` did not recognise as a torch checkpoint."""
    if kind == "truncated":
        return f"cannot read checkpoint {path}: the zip archive is truncated or damaged (copy the file again)"
    what = "a zip archive without torch data" if kind == "zip" else "neither a torch zip archive nor a legacy torch file"
    return f"{path} is not a PyTorch checkpoint ({what}); give the .pt/.pth file written by torch.save"


def is_weights_only_refusal(err: BaseException) -> bool:
    """True when ``torch.load(weights_only=True)`` refused a readable file because it holds objects."""
    return isinstance(err, pickle.UnpicklingError) and "weights only load failed" in str(err).lower()


def first_line(err: BaseException) -> str:
    """``TypeName: first line of the message`` for error reports."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state_dict") -> None:
    """Loads ``state_dict`` into ``model`` requiring identical keys and shapes; errors name every mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_listed(shapes)}")
    if problems:
        raise CheckpointError(
            f"{source} does not match {type(model).__name__}: " + "; ".join(problems)
            + ". Check the model name/kwargs and the number of classes."
        )
    model.load_state_dict(dict(state_dict), strict=True)


def model_from_checkpoint(
    payload: dict[str, Any], use_ema: bool = True, map_location: str | torch.device = "cpu",
    model: str | None = None, source: str = "checkpoint",
) -> nn.Module:
    """Builds the payload's network and loads its EMA weights (when present and ``use_ema``) strictly.

    Only a registered network is built from the payload's model name; an import path recorded in a checkpoint
    is never imported. ``model`` is the caller's explicit choice (CLI ``--model``): that network is built
    instead, and it may be an import path ``package.module:factory``. Constructor arguments (``model.kwargs``)
    must be arguments the network declares, of their types. ``source`` names the file in error messages.
    """
    validate_payload(payload, source)
    spec = payload["model"]
    try:
        name = model_for_file(spec["name"], model)
        kwargs = check_model_kwargs(name, spec.get("kwargs", {}))
    except ValueError as err:  # ModelSpecError, or an import path the caller named that cannot be imported
        raise CheckpointError(f"{source}: {err}") from None
    try:
        network = build_model(name, spec.get("in_channels", 1), spec["num_classes"], **kwargs)
    except (TypeError, ValueError) as err:  # the network refused the (validated) arguments
        raise CheckpointError(f"{source}: cannot build model {name!r} with {kwargs}: {first_line(err)}") from err
    ema = payload.get("ema_state_dict")
    state_dict, which = (ema, "ema_state_dict") if use_ema and ema is not None else (payload["state_dict"], "state_dict")
    load_state_dict_strict(network, state_dict, f"{source} {which}")
    return network.to(map_location)
