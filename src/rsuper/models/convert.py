"""Reading R-Super (MedFormer) checkpoints and converting them to rsuper checkpoints.

R-Super saves ``{"model_state_dict", "ema_model_state_dict", "optimizer_state_dict", "epoch"}``. In
distributed runs ``model_state_dict`` is a whole pickled module, which only ``torch.load(weights_only=
False)`` can read: that executes code from the file, so it is done only with ``trust_checkpoint=True``
(CLI ``--trust-checkpoint``). Classes of the original code base are not needed: unknown classes are
replaced by inert stand-ins and the parameters are collected from the module tree.

Example:
    >>> payload = convert_rsuper_checkpoint("rsuper_medformer.pth", "medformer.pt", load_class_list("classes.txt"))
"""

from __future__ import annotations

import os
import pickle
import types
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rsuper.labels import ClassNameError, canonical_class_name
from rsuper.models.checkpoint import (
    CheckpointError,
    first_line,
    is_weights_only_refusal,
    load_state_dict_strict,
    make_payload,
    not_a_checkpoint_message,
    save_checkpoint,
    torch_file_kind,
)
from rsuper.models.registry import build_model

PREFIXES = ("module.", "_orig_mod.")
# Defaults for R-Super's published MedFormer (docs/method.md §6: 1 mm isotropic, 128^3 patches).
RSUPER_SPACING_MM = (1.0, 1.0, 1.0)
RSUPER_PATCH_SIZE = (128, 128, 128)


def load_class_list(spec: str | os.PathLike[str]) -> list[str]:
    """Class names in channel order from a text file with one name per line (blank lines and ``#`` comments
    ignored). Names are canonicalised and must be plain (``labels.canonical_class_name``); the error names
    the file and the offending value. rsuper does not ship R-Super's class lists: write the network's output
    channel names, in channel order, into the file."""
    path = Path(spec)
    if not path.is_file():
        raise CheckpointError(
            f"class list {path} is not a file; give a text file with one class name per line, in the network's "
            "output channel order (rsuper does not ship R-Super's class lists)"
        )
    raw = path.read_text(encoding="utf-8")
    try:
        names = [
            canonical_class_name(line.split("#")[0], source=path)
            for line in raw.splitlines() if line.split("#")[0].strip()
        ]
    except ClassNameError as err:
        raise CheckpointError(str(err)) from None
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if not names or duplicates:
        raise CheckpointError(f"class list {path}: empty or duplicated names {duplicates}")
    return names


class _StandIn:
    """Inert replacement for a class that cannot be imported; keeps the pickled attributes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        del args, kwargs

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):  # (dict state, slots state)
            state = {k: v for part in state if isinstance(part, dict) for k, v in part.items()}
        if isinstance(state, dict):
            self.__dict__.update(state)


class _StandInUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_StandIn,), {"__module__": f"standin.{module}"})


_STANDIN_PICKLE = types.SimpleNamespace(Unpickler=_StandInUnpickler, load=pickle.load, __name__="standin_pickle")


def _module_tensors(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """Collects parameters and persistent buffers of a (possibly stand-in) module tree, state_dict order."""
    attrs = getattr(obj, "__dict__", {})
    skip = attrs.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, tensor in (attrs.get(group) or {}).items():
            if tensor is not None and name not in skip:
                out[prefix + name] = tensor.detach()
    for name, child in (attrs.get("_modules") or {}).items():
        if child is not None:
            _module_tensors(child, f"{prefix}{name}.", out)


def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Removes leading ``module.`` / ``_orig_mod.`` (DDP, torch.compile) from every key, in order."""
    out = {}
    for key, value in state_dict.items():
        new = key
        while new.startswith(PREFIXES):
            new = new.split(".", 1)[1]
        out[new] = value
    return out


def _load_raw(path: Path, trust_checkpoint: bool) -> Any:
    if not path.is_file():
        raise CheckpointError(f"R-Super checkpoint {path} is not a file")
    kind = torch_file_kind(path)
    if kind != "torch":  # random bytes, text, other archives: no advice to unpickle them
        raise CheckpointError(not_a_checkpoint_message(path, kind))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not is_weights_only_refusal(err):
            raise CheckpointError(f"cannot read {path} (damaged torch file?): {first_line(err)}") from err
        if not trust_checkpoint:
            raise CheckpointError(
                f"{path} contains pickled Python objects (R-Super's distributed training stores the whole "
                "model object). Reading it executes code from the file. If you trust where it came from, "
                "rerun with --trust-checkpoint (trust_checkpoint=True)."
            ) from err
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError/KeyError/EOFError... on bad files
        raise CheckpointError(f"cannot read {path} (truncated or not a torch file?): {first_line(err)}") from err
    warnings.warn(
        f"loading {path} with weights_only=False (--trust-checkpoint): pickled objects in it are executed",
        stacklevel=3,
    )
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_STANDIN_PICKLE)
    except Exception as err:  # noqa: BLE001 - arbitrary pickle content: report whatever failed
        raise CheckpointError(f"cannot unpickle {path}: {first_line(err)}") from err


def _as_state_dict(entry: Any, path: Path, key: str) -> dict[str, torch.Tensor]:
    if isinstance(entry, Mapping):
        bad = [k for k, v in entry.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise CheckpointError(f"{path}['{key}'] has non-tensor entries {bad[:5]}")
        return dict(entry)
    tensors: dict[str, torch.Tensor] = {}
    _module_tensors(entry, "", tensors)
    if not tensors:
        raise CheckpointError(f"{path}['{key}'] is a {type(entry).__name__} holding no parameters")
    return tensors


def read_rsuper_state_dict(
    path: str | os.PathLike[str], use_ema: bool = True, trust_checkpoint: bool = False
) -> tuple[dict[str, torch.Tensor], str]:
    """Returns (state_dict without prefixes, which) with which = "ema_model_state_dict" or "model_state_dict".

    Falls back to the model weights (with a warning) when EMA weights are asked for but absent. A file
    that is itself a plain state dict is accepted as the model weights.
    """
    src = Path(path)
    raw = _load_raw(src, trust_checkpoint)
    if isinstance(raw, Mapping) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        return strip_prefixes(raw), "state_dict"
    if not isinstance(raw, Mapping) or not ({"model_state_dict", "ema_model_state_dict"} & set(raw)):
        found = sorted(raw)[:8] if isinstance(raw, Mapping) else type(raw).__name__
        raise CheckpointError(f"{src} is not an R-Super checkpoint: no 'model_state_dict' (found {found})")
    which = "ema_model_state_dict" if use_ema else "model_state_dict"
    if raw.get(which) is None:
        other = "model_state_dict" if use_ema else "ema_model_state_dict"
        if raw.get(other) is None:
            raise CheckpointError(f"{src} has neither '{which}' nor '{other}'")
        warnings.warn(f"{src} has no '{which}'; using '{other}'", stacklevel=2)
        which = other
    return strip_prefixes(_as_state_dict(raw[which], src, which)), which


def convert_rsuper_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    class_names: Sequence[str],
    use_ema: bool = True,
    spacing_mm: Sequence[float] = RSUPER_SPACING_MM,
    patch_size: Sequence[int] = RSUPER_PATCH_SIZE,
    trust_checkpoint: bool = False,
    model_name: str = "medformer",
) -> dict[str, Any]:
    """Converts an R-Super MedFormer checkpoint to an rsuper checkpoint at ``dst``; returns the payload.

    The weights are loaded strictly into ``build_model(model_name, 1, len(class_names))``, so any key or
    shape difference (e.g. a class list of the wrong length) raises a :class:`CheckpointError`.
    """
    if len(spacing_mm) != 3 or any(float(s) <= 0 for s in spacing_mm):
        raise CheckpointError(f"spacing_mm must be 3 positive numbers (mm), got {list(spacing_mm)}")
    state_dict, which = read_rsuper_state_dict(src, use_ema=use_ema, trust_checkpoint=trust_checkpoint)
    head = state_dict.get("outc.weight")
    if head is not None and head.shape[0] != len(class_names):
        raise CheckpointError(
            f"{src} has {head.shape[0]} output channels (outc.weight {tuple(head.shape)}) but the class list has "
            f"{len(class_names)} names; pass the matching --classes"
        )
    model = build_model(model_name, 1, len(class_names))
    load_state_dict_strict(model, state_dict, f"{src} [{which}]")
    payload = make_payload(
        model_name,
        1,
        class_names,
        spacing_mm,
        patch_size,
        model.state_dict(),
        config={
            "converted_from": str(src),
            "source_format": "R-Super",
            "weights": which,
            "normalisation_note": (
                "R-Super's own intensity normalisation and array orientation were not verified against "
                "rsuper's (RAS, clip [-991, 500] HU then linear to [-1, 1]); see docs/models.md"
            ),
        },
    )
    save_checkpoint(dst, payload)
    return payload
