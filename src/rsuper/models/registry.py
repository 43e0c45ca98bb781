"""Model registry: every network returns ``(final_logits, aux_logits)`` and has ``size_divisor``.

Built-in names: ``medformer`` (R-Super's paper configuration), ``medformer_small`` (CPU-sized),
``dynunet`` (MONAI DynUNet, nnU-Net-like), ``dynunet_small``. Any other network can be plugged in:

* register a factory in your own code (it must run before ``build_model``, e.g. in an imported module)::

      @register_model("mynet", size_divisor=16)
      def make_mynet(in_channels, num_classes, **kwargs):
          return MyNet(in_channels, num_classes, **kwargs)   # forward(x) -> (final, aux)

* or name it by import path, ``"my_package.nets:make_mynet"``: ``build_model`` imports it, so a
  checkpoint that records this name rebuilds the network in any process where the package is installed.

The factory's module must return a tuple ``(final, aux)`` of (B, num_classes, X, Y, Z) logits at input
size in train and eval mode, and define ``size_divisor`` (or pass it to ``register_model``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from rsuper.errors import ConfigError
from rsuper.models.dynunet import DYNUNET_FILTERS, DYNUNET_SMALL_FILTERS, DeepSupervisedDynUNet
from rsuper.models.medformer import PAPER_CONFIG, SMALL_CONFIG, MedFormer

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """A registered factory ``factory(in_channels, num_classes, **kwargs) -> nn.Module``."""

    factory: ModelFactory
    description: str
    size_divisor: int | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, size_divisor: int | None = None, description: str = ""
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``factory`` under ``name`` (raises ``ValueError`` if the name is taken)."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        doc = (factory.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(factory, description or (doc[0] if doc else name), size_divisor)
        return factory

    return decorator


def available_models() -> dict[str, str]:
    """Registered model names -> one-line descriptions."""
    return {name: entry.description for name, entry in _REGISTRY.items()}


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


@register_model("medformer", description="MedFormer 3D, R-Super paper configuration (37.9M parameters at 42 classes)")
def _medformer(in_channels: int, num_classes: int, **kwargs: object) -> nn.Module:
    return MedFormer(in_channels, num_classes, **{**PAPER_CONFIG, **kwargs})


@register_model("medformer_small", description="MedFormer 3D, widths /4 and 1 attention block per stage (CPU)")
def _medformer_small(in_channels: int, num_classes: int, **kwargs: object) -> nn.Module:
    return MedFormer(in_channels, num_classes, **{**SMALL_CONFIG, **kwargs})


@register_model("dynunet", description="MONAI DynUNet, nnU-Net-like (6 levels, widths 32..320), deep supervision")
def _dynunet(in_channels: int, num_classes: int, **kwargs: object) -> nn.Module:
    return DeepSupervisedDynUNet(in_channels, num_classes, **{"filters": DYNUNET_FILTERS, **kwargs})


@register_model("dynunet_small", description="MONAI DynUNet, 5 levels, widths 8..128, deep supervision (CPU)")
def _dynunet_small(in_channels: int, num_classes: int, **kwargs: object) -> nn.Module:
    return DeepSupervisedDynUNet(in_channels, num_classes, **{"filters": DYNUNET_SMALL_FILTERS, **kwargs})
