"""Model registry: every network returns ``(final_logits, aux_logits)`` and has ``size_divisor``.

Built-in names: ``medformer`` (R-Super's paper configuration), ``medformer_small`` (CPU-sized),
``dynunet`` (MONAI DynUNet, nnU-Net-like), ``dynunet_small``. Any other network can be plugged in:

* register a factory in your own code (it must run before ``build_model``, e.g. in an imported module)::

      @register_model("mynet", size_divisor=16)
      def make_mynet(in_channels, num_classes, **kwargs):
          return MyNet(in_channels, num_classes, **kwargs)   # forward(x) -> (final, aux)

* or name it by import path, ``"my_package.nets:make_mynet"``: ``build_model`` imports it. That is the
  caller's own choice (your code, ``--model`` / ``model:`` in the run file you wrote). A name read from a
  file (a checkpoint) is never imported: :func:`model_for_file` accepts only registered names there unless
  the user names the network, and :func:`check_model_kwargs` validates constructor arguments read from a file.

The factory's module must return a tuple ``(final, aux)`` of (B, num_classes, X, Y, Z) logits at input
size in train and eval mode, and define ``size_divisor`` (or pass it to ``register_model``).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from rsuper.errors import ConfigError
from rsuper.models.dynunet import DYNUNET_FILTERS, DYNUNET_SMALL_FILTERS, DeepSupervisedDynUNet
from rsuper.models.medformer import PAPER_CONFIG, SMALL_CONFIG, MedFormer

ModelFactory = Callable[..., nn.Module]
# Type of a constructor argument that a file may set: int, float, bool, str, (int,) / (float,) for a list of
# them, or None for "any plain value" (a number, string, bool or None, or a flat list of them).
KwargType = type | tuple[type] | None
IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_SCALARS = (bool, int, float, str, type(None))


class ModelSpecError(ValueError):
    """A model name or constructor argument read from a file that rsuper will not use (one-line message)."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered factory ``factory(in_channels, num_classes, **kwargs) -> nn.Module``.

    ``kwargs``: the constructor arguments a model spec read from a file may set, with their types
    (:data:`KwargType`); None derives them from the factory's signature (see :func:`kwarg_types_of`).
    """

    factory: ModelFactory
    description: str
    size_divisor: int | None = None
    kwargs: Mapping[str, KwargType] | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, size_divisor: int | None = None, description: str = "",
    kwargs: Mapping[str, KwargType] | None = None,
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``factory`` under ``name`` (raises ``ValueError`` if the name is taken).

    ``kwargs`` lists the constructor arguments a checkpoint (or a resumed run) may pass, with their types,
    e.g. ``{"width": int, "widths": (int,), "residual": bool}``; by default they come from the factory's
    signature (named parameters after the first two; their defaults give the types). A factory that only
    takes ``**kwargs`` accepts any plain value (numbers, strings, bools, flat lists of them) from a file.
    """

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        doc = (factory.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(factory, description or (doc[0] if doc else name), size_divisor,
                                     dict(kwargs) if kwargs is not None else None)
        return factory

    return decorator


def available_models() -> dict[str, str]:
    """Registered model names -> one-line descriptions."""
    return {name: entry.description for name, entry in _REGISTRY.items()}


def is_registered(name: object) -> bool:
    """True when ``name`` is a registered network name (never imports anything)."""
    return isinstance(name, str) and name in _REGISTRY


def _resolve(name: str) -> ModelEntry:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"cannot import model factory {name!r}: {err}") from err
        return ModelEntry(factory, name)
    raise ConfigError(
        f"unknown model {name!r}; registered: {sorted(_REGISTRY)} "
        "(or give an import path 'package.module:factory')"
    )


def build_model(name: str, in_channels: int, num_classes: int, **kwargs: object) -> nn.Module:
    """Builds a registered (or ``module:factory``) network; its forward returns ``(final, aux)``.

    ``name`` is imported when it is an import path: pass only names you chose yourself. For a model spec
    read from a file use :func:`model_for_file` and :func:`check_model_kwargs` first (as
    ``rsuper.models.checkpoint.model_from_checkpoint`` does).

    Example:
        >>> net = build_model("medformer_small", in_channels=1, num_classes=8)
        >>> final, aux = net(torch.zeros(1, 1, 64, 64, 64))   # both (1, 8, 64, 64, 64)
    """
    entry = _resolve(name)
    model = entry.factory(in_channels, num_classes, **kwargs)
    if entry.size_divisor is not None:
        model.size_divisor = entry.size_divisor
    if not isinstance(getattr(model, "size_divisor", None), int):
        raise ValueError(
            f"model {name!r} has no integer `size_divisor`; set it on the module or pass it to register_model"
        )
    return model


# ------------------------------------------------------------------------------ model specs read from files
def model_for_file(name: object, chosen: str | None = None) -> str:
    """The network to build for a model ``name`` read from a file (a checkpoint, a stored run config).

    ``chosen`` is the user's explicit choice (``--model``, ``model:`` in the run file they wrote, the
    ``model=`` argument in Python); when given it is used, and may be an import path. Otherwise ``name``
    must be a registered network: a file alone never makes rsuper import code. Raises
    :class:`ModelSpecError` saying how to name an own network. Never imports anything.
    """
    if chosen is not None:
        return chosen
    if is_registered(name):
        return name  # type: ignore[return-value]
    return _refuse_unregistered(name)


def _refuse_unregistered(name: object) -> Any:
    hint = (
        f"If it is your own network, name it yourself: `--model {name}` (rsuper predict, rsuper train --resume) "
        f"or `model: {name}` in your run file, or model_from_checkpoint(..., model={name!r}); see docs/models.md"
        if isinstance(name, str) and IMPORT_PATH.fullmatch(name)
        else "If it is your own network, give its import path yourself: `--model package.module:factory`"
    )
    raise ModelSpecError(
        f"model {name!r} is not a registered network (registered: {', '.join(sorted(_REGISTRY))}); "
        f"rsuper never imports code named in a file. {hint}"
    )


def check_model_name_syntax(name: object, where: str = "model.name") -> str:
    """``name`` if it is a registered name, a plain identifier (a network registered in another process) or an
    import path ``package.module:factory``; never imports. Only :func:`model_for_file` decides what is built."""
    if is_registered(name) or (isinstance(name, str) and (name.isidentifier() or IMPORT_PATH.fullmatch(name))):
        return name  # type: ignore[return-value]
    raise ModelSpecError(
        f"{where} must be a network name (registered: {', '.join(sorted(_REGISTRY))}) or an import path "
        f"'package.module:factory', got {name!r:.80}"
    )


def is_plain_value(value: object) -> bool:
    """A number, string, bool or None, or a flat list/tuple of them (what a file may pass to a constructor)."""
    if isinstance(value, (list, tuple)):
        return all(type(v) in _SCALARS for v in value)
    return type(value) in _SCALARS


def kwarg_types_of(factory: Callable[..., Any]) -> dict[str, KwargType] | None:
    """Constructor arguments of ``factory`` after ``(in_channels, num_classes)`` and their types, from the
    defaults (int, float, bool, str, a tuple of ints ...; None = any plain value); ``None`` when the factory
    takes ``**kwargs`` (any name is accepted)."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)][2:]
    types: dict[str, KwargType] = {}
    for p in named:
        default = p.default
        if isinstance(default, (list, tuple)) and default and len({type(v) for v in default}) == 1 \
                and type(default[0]) in (int, float):
            types[p.name] = (type(default[0]),)
        elif type(default) in (bool, int, float, str):
            types[p.name] = type(default)
        else:
            types[p.name] = None
    return types


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _check_value(value: object, kind: KwargType, where: str) -> None:
    if kind is None:
        ok, want = is_plain_value(value), "a number, string, bool or a flat list of them"
    elif isinstance(kind, tuple):
        item = kind[0]
        ok = isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
        want = f"a list of {'integers' if item is int else 'numbers'}"
    else:
        ok, want = _matches(value, kind), _TYPE_WORDS.get(kind, kind.__name__)
    if not ok:
        raise ModelSpecError(f"{where} must be {want}, got {value!r:.80} ({type(value).__name__})")


def _matches(value: object, kind: type) -> bool:
    if kind is float:
        return type(value) in (int, float)
    return type(value) is kind


def check_model_kwargs(name: str, kwargs: object, where: str = "model.kwargs") -> dict[str, Any]:
    """Validates constructor arguments read from a file for network ``name`` (a registered name or an import
    path the user chose, which is imported to read its signature); returns them as a dict.

    Keys must be arguments the network declares (see :func:`register_model`), values of their types;
    nothing but plain data is ever accepted. Raises :class:`ModelSpecError` naming ``where``.
    """
    if not isinstance(kwargs, Mapping):
        raise ModelSpecError(f"{where} must be a dict of constructor arguments, got {type(kwargs).__name__}")
    entry = _resolve(name)
    types = entry.kwargs if entry.kwargs is not None else kwarg_types_of(entry.factory)
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ModelSpecError(f"{where} has a key that is not an argument name: {key!r:.80}")
        if types is not None and key not in types:
            raise ModelSpecError(
                f"{where}: unknown constructor argument {key!r} for model {name!r}; "
                f"it accepts: {', '.join(sorted(types)) or 'none'}"
            )
        _check_value(value, None if types is None else types[key], f"{where}.{key}")
        out[key] = value
    return out


_MEDFORMER_KWARGS = kwarg_types_of(MedFormer)
_DYNUNET_KWARGS = kwarg_types_of(DeepSupervisedDynUNet)


@register_model("medformer", kwargs=_MEDFORMER_KWARGS, description="MedFormer 3D, R-Super paper configuration (37.9M parameters at 42 classes)")
def _medformer(in_channels: int, num_classes: int, **kwargs: object) -> nn.Module:
    return MedFormer(in_channels, num_classes, **{**PAPER_CONFIG, **kwargs})


@register_model("medformer_small", kwargs=_MEDFORMER_KWARGS, description="MedFormer 3D, widths /4 and 1 attention block per stage (CPU)")
def _medformer_small(in_channels: int, num_classes: int, **kwargs: object) -> nn.Module:
    return MedFormer(in_channels, num_classes, **{**SMALL_CONFIG, **kwargs})


@register_model("dynunet", kwargs=_DYNUNET_KWARGS, description="MONAI DynUNet, nnU-Net-like (6 levels, widths 32..320), deep supervision")
def _dynunet(in_channels: int, num_classes: int, **kwargs: object) -> nn.Module:
    return DeepSupervisedDynUNet(in_channels, num_classes, **{"filters": DYNUNET_FILTERS, **kwargs})


@register_model("dynunet_small", kwargs=_DYNUNET_KWARGS, description="MONAI DynUNet, 5 levels, widths 8..128, deep supervision (CPU)")
def _dynunet_small(in_channels: int, num_classes: int, **kwargs: object) -> nn.Module:
    return DeepSupervisedDynUNet(in_channels, num_classes, **{"filters": DYNUNET_SMALL_FILTERS, **kwargs})
