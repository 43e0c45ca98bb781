"""Tiny prepared caches (the cache format of docs/data.md) and findings for the dataset and trainer tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsuper.config import TrainConfig
from rsuper.io import CT_NORMALISATION
from rsuper.reports.schema import CaseFindings, Lesion

SHAPE = (40, 40, 40)
SPACING_MM = (2.0, 2.0, 2.0)


def _box(lo: tuple[int, int, int], hi: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return mask


def _ball(center: tuple[int, int, int], radius_vox: float) -> np.ndarray:
    grid = np.indices(SHAPE).astype(np.float32)
    dist2 = sum((grid[i] - center[i]) ** 2 for i in range(3))
    return (dist2 <= radius_vox**2).astype(np.uint8)


def organ_masks() -> dict[str, np.ndarray]:
    """Box organs: liver, pancreas split in head/body/tail along x, two kidneys, spleen."""
    masks = {
        "liver": _box((2, 4, 20), (16, 20, 36)),
        "pancreas_head": _box((4, 22, 14), (12, 28, 20)),
        "pancreas_body": _box((12, 22, 14), (20, 28, 20)),
        "pancreas_tail": _box((20, 22, 14), (28, 28, 20)),
        "kidney_right": _box((4, 30, 4), (10, 38, 14)),
        "kidney_left": _box((30, 30, 4), (36, 38, 14)),
        "spleen": _box((28, 4, 22), (36, 12, 32)),
    }
    masks["pancreas"] = masks["pancreas_head"] | masks["pancreas_body"] | masks["pancreas_tail"]
    return masks


def write_case(cache: Path, case_id: str, masks: dict[str, np.ndarray], seed: int) -> None:
    """Writes ct.npy, masks/<class>.npy and meta.json of one case."""
    rng = np.random.default_rng(seed)
    ct = rng.normal(-0.2, 0.05, SHAPE).astype(np.float32)
    for name, mask in masks.items():
        ct[mask > 0] += 0.3 if name.endswith("_lesion") else 0.15
    folder = cache / case_id
    (folder / "masks").mkdir(parents=True)
    np.save(folder / "ct.npy", ct)
    for name, mask in masks.items():
        np.save(folder / "masks" / f"{name}.npy", mask.astype(np.uint8))
    affine = np.diag([*SPACING_MM, 1.0]).tolist()
    meta = {
        "case_id": case_id, "shape": list(SHAPE), "affine": affine, "orientation": "RAS",
        "spacing_mm": list(SPACING_MM), "classes": sorted(masks),
    }
    (folder / "meta.json").write_text(json.dumps(meta))


def _write_manifest(cache: Path, cases: dict[str, list[str]]) -> None:
    manifest = {
        "spacing_mm": list(SPACING_MM),
        "orientation": "RAS",
        "normalisation": CT_NORMALISATION,
        "cases": {c: {"dir": c, "classes": classes, "shape": list(SHAPE)} for c, classes in cases.items()},
    }
    (cache / "manifest.json").write_text(json.dumps(manifest))


def make_cache(cache: Path, n_mask: int = 2, report_cache: Path | None = None) -> dict[str, CaseFindings]:
    """Mask cases m0.. (a liver and a pancreatic tumor) and four report cases; returns the findings.

    Report cases (in ``report_cache`` when given, else in ``cache``): r_multi (pancreatic tumor spanning
    body/tail + a left kidney tumor + a liver tumor of unknown size and location), r_healthy (no lesion),
    r_many (12 tumors in the pancreatic head), r_unsized (a pancreatic tumor with no size in the tail).
    """
    report_cache = report_cache or cache
    cases: dict[str, list[str]] = {}
    for i in range(n_mask):
        masks = organ_masks()
        masks["liver_lesion"] = _ball((8 + i, 12, 28), 3)
        masks["pancreatic_lesion"] = _ball((16, 25, 17), 2)
        masks["kidney_lesion"] = np.zeros(SHAPE, np.uint8)
        write_case(cache, f"m{i}", masks, seed=i)
        cases[f"m{i}"] = sorted(masks)
    report_cases: dict[str, list[str]] = cases if report_cache == cache else {}
    for i, case_id in enumerate(["r_multi", "r_healthy", "r_many", "r_unsized"]):
        masks = organ_masks()
        write_case(report_cache, case_id, masks, seed=100 + i)
        report_cases[case_id] = sorted(masks)
    _write_manifest(cache, cases)
    if report_cache != cache:
        _write_manifest(report_cache, report_cases)
    many = [Lesion(organ="pancreas", location=["head"], size_mm=[4 + 0.1 * k]) for k in range(12)]
    return {
        "r_multi": CaseFindings(
            case_id="r_multi",
            lesions=[
                Lesion(organ="pancreas", location=["body", "tail"], size_mm=[11, 10], attenuation="hypo"),
                Lesion(organ="kidney", location=["left"], size_mm=[8]),
                Lesion(organ="liver", location=[], size_mm=None),
            ],
        ),
        "r_healthy": CaseFindings(case_id="r_healthy", lesions=[]),
        "r_many": CaseFindings(case_id="r_many", lesions=many),
        "r_unsized": CaseFindings(
            case_id="r_unsized", lesions=[Lesion(organ="pancreas", location=["tail"], size_mm=None)]
        ),
    }


class TinyNet(torch.nn.Module):
    """A (final, aux) network small enough for CPU tests: two 3^3 convs, a 1/2-resolution aux head."""

    size_divisor = 2

    def __init__(self, in_channels: int, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv3d(in_channels, width, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv3d(width, width, 3, padding=1), torch.nn.ReLU(),
        )
        self.final = torch.nn.Conv3d(width, num_classes, 1)
        self.aux = torch.nn.Conv3d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        aux = self.aux(torch.nn.functional.avg_pool3d(features, 2))
        return self.final(features), torch.nn.functional.interpolate(aux, size=x.shape[2:], mode="trilinear")


def make_tiny_net(in_channels: int, num_classes: int, **kwargs: int) -> TinyNet:
    """Factory for ``build_model("train_helpers:make_tiny_net", ...)``."""
    return TinyNet(in_channels, num_classes, **kwargs)


def tiny_run_config(root: Path, out: str, **kw: Any) -> TrainConfig:
    """A tiny CPU run on ``root/cache`` with ``make_tiny_net``; ``kw``: settings on top (field names, old flat keys
    such as ``steps``)."""
    base = dict(
        cache=root / "cache", out=root / out, model="train_helpers:make_tiny_net", log_every=5, checkpoint_every=10,
        data={"patch_size": (32, 32, 32), "workers": 0, "augment": {"enabled": False}},
        optim={"warmup_steps": 2, "lr": 1e-2, "steps": 30},
    )
    return TrainConfig.from_yaml(None, {**base, **kw})


def metrics_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
