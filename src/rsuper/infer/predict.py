"""Whole-CT inference: sliding window at the checkpoint's spacing, sigmoid, organ gating, masks in the CT grid.

Pipeline per CT (docs/method.md §7):
  load -> canonical RAS -> resample to the checkpoint spacing (linear) -> ``normalize_ct`` ->
  MONAI ``sliding_window_inference`` (roi = checkpoint patch size, overlap 0.5, Gaussian weighting,
  final logits only) -> flip test-time augmentation, the mean of the sigmoid over the CT as is and
  mirrored (``tta="mirror"``: the left-right mirror, 2 passes; ``"flips"``: the 8 mirror combinations of
  the 3 axes; ``"auto"``, the default: "mirror" for a network trained on mirrored patches, else none);
  left-right flips swap left/right channels back and are left out of the side-defined channels such as
  pancreas parts -> sigmoid -> lesion channels multiplied by their organ mask (organ
  probability >= 0.5, union of ``labels.ORGAN_MASK_CLASSES[organ]``, e.g. kidney = left ∪ right; the
  organ's sub-segments when the organ itself is not an output) dilated by 3 mm -> per class: linear
  resampling of the probability straight onto the input CT grid (affine to affine, so orientation and
  spacing come back exactly) -> threshold 0.5. Classes the checkpoint records as never supervised
  (``supervised_voxels`` 0, e.g. sub-segments absent from every training mask) are written empty, listed
  in ``findings.json`` as ``untrained_classes`` and not used for gating.

Memory: probabilities are kept at the model grid as float16 (C, X, Y, Z); each class is resampled to
the input grid on its own (one float32 buffer at a time), written, then dropped. Only the sub-segment
masks needed to locate lesions are kept (bool) until the lesion channels are done.

Outputs (AbdomenAtlas layout), for each case:
  ``OUT/<case>/segmentations/<class>.nii.gz``   uint8 {0, 1}, the input CT's shape/affine/orientation;
  ``OUT/<case>/probabilities/<class>.nii.gz``   optional, uint8, probability = value / 255;
  ``OUT/<case>/findings.json``                  predicted report facts (``rsuper.infer.findings``);
                                                written last: its presence marks the case complete.

Example:
    >>> predictor = Predictor.from_checkpoint("runs/final.pt", device="cpu")
    >>> predict_case(predictor, "ct.nii.gz", "out/case1")
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from rsuper import __version__, labels
from rsuper.atomic import write_json_atomic
from rsuper.data.checks import require_hu
from rsuper.device import resolve_device
from rsuper.infer.findings import lesion_components, organ_summary, report_style_lesions
from rsuper.infer.sides import body_midline_x_mm, derived_side_classes, split_sides
from rsuper.infer.tta import check_tta_mode
from rsuper.io import CT_NORMALISATION, Volume, load_nifti, normalize_ct, resample_to_grid, resample_to_spacing, \
    save_nifti, to_canonical
from rsuper.losses.geometry import dilate_mm
from rsuper.models.checkpoint import load_checkpoint, model_from_checkpoint, untrained_classes_of

THRESHOLD = 0.5
GATING_DILATION_MM = 3.0
PROBABILITY_SCALE = 255
_NIFTI_SUFFIX = re.compile(r"\.nii(\.gz)?$")


@dataclass
class Predictor:
    """A network plus what is needed to run it on a CT (from a checkpoint payload, docs/method.md §11)."""

    model: torch.nn.Module
    class_names: list[str]
    spacing_mm: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    source: str = ""
    # Classes the checkpoint says were never supervised (no labelled voxel in training): written empty.
    untrained_classes: tuple[str, ...] = ()
    # The network saw left-right mirrored patches in training (its config: augmentation on, mirror_prob > 0).
    trained_mirrored: bool = False

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", use_ema: bool = True,
                        model: str | None = None) -> Predictor:
        """Loads ``path`` (an rsuper checkpoint) onto ``device`` ("cpu", "cuda", "cuda:1").

        The checkpoint's network is built only when it is a registered one; ``model`` (CLI ``--model``) names the
        network to build instead, e.g. your own ``package.module:factory`` (see docs/models.md).
        """
        dev = resolve_device(device)
        payload = load_checkpoint(path)
        norm = payload.get("normalisation")
        if norm is not None and norm.get("method") != CT_NORMALISATION["method"]:
            raise ValueError(f"checkpoint {path} uses CT normalisation {norm!r}; this rsuper applies "
                             f"{CT_NORMALISATION['formula']}. Retrain or convert the checkpoint.")
        if payload.get("orientation", "RAS") != "RAS":
            raise ValueError(f"checkpoint {path} was trained in orientation {payload['orientation']!r}; expected RAS")
        network = model_from_checkpoint(payload, use_ema=use_ema, map_location="cpu", model=model,
                                        source=str(path)).to(dev).eval()
        from rsuper.config import mirror_augmented

        mirrored = mirror_augmented(payload.get("config"))  # nested or old flat layout
        return cls(model=network, class_names=[labels.canonical_class_name(c) for c in payload["class_names"]],
                   spacing_mm=tuple(float(s) for s in payload["spacing_mm"]),  # type: ignore[arg-type]
                   patch_size=tuple(int(s) for s in payload["patch_size"]),  # type: ignore[arg-type]
                   device=dev, source=str(path), untrained_classes=untrained_classes_of(payload),
                   trained_mirrored=mirrored)


@dataclass
class PredictOptions:
    """Inference settings: window overlap (fraction), windows per forward pass, flip TTA, outputs.

    ``tta``: "none" (one pass), "mirror" (as is + left-right mirror, 2 passes), "flips" (the 8 mirror
    combinations of the 3 axes, 8 passes) or "auto" ("mirror" for a network trained with the left-right
    mirror, as rsuper trains by default, else "none"; see :func:`resolve_tta`). ``allow_non_hu``: predict
    a CT whose values are not Hounsfield units (``rsuper check``'s ``not_hu``) instead of refusing it.
    """

    overlap: float = 0.5
    sw_batch_size: int = 2
    tta: str = "auto"
    save_probabilities: bool = False
    gating_dilation_mm: float = GATING_DILATION_MM
    allow_non_hu: bool = False

    def __post_init__(self) -> None:
        check_tta_mode(self.tta)


def find_ct_inputs(path: str | Path) -> list[tuple[str, Path]]:
    """(case_id, CT path) pairs from a CT file, an AbdomenAtlas dataset (``<case>/ct.nii.gz``) or a folder
    of CT files (nnU-Net ``_0000`` channel suffixes are stripped from the case id). Sorted by case id."""
    path = Path(path)
    if path.is_file():
        return [(_case_id(path), path)]
    if not path.is_dir():
        raise FileNotFoundError(f"input {path} is neither a NIfTI file nor a folder")
    atlas = sorted(p for p in path.glob("*/ct.nii*") if _NIFTI_SUFFIX.search(p.name))
    files = atlas or sorted(p for p in path.iterdir() if p.is_file() and _NIFTI_SUFFIX.search(p.name))
    if not files:
        raise FileNotFoundError(f"no CT found in {path}: expected <case>/ct.nii.gz folders or *.nii.gz files")
    cases = [(_case_id(p), p) for p in files]
    ids = [c for c, _ in cases]
    duplicates = sorted({c for c in ids if ids.count(c) > 1})
    if duplicates:
        raise ValueError(f"several CTs in {path} map to the same case id: {duplicates}")
    return sorted(cases)


def _case_id(ct_path: Path) -> str:
    stem = _NIFTI_SUFFIX.sub("", ct_path.name)
    if stem == "ct":
        return ct_path.parent.name
    return re.sub(r"_0000$", "", stem)


def infer_logits_fn(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Window predictor for MONAI: the model's final logits only (drops the deep-supervision output)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return out[0] if isinstance(out, (tuple, list)) else out

    return run


def resolve_tta(tta: str, predictor: Predictor) -> str:
    """The TTA mode actually run: "auto" becomes "mirror" when ``predictor`` was trained on mirrored patches
    (a mirrored CT is then as familiar to it as the CT itself), else "none"; other modes are kept."""
    if tta == "auto":
        return "mirror" if predictor.trained_mirrored else "none"
    return tta


def _flip_sets(tta: str) -> Iterator[tuple[int, ...]]:
    """Tensor dims flipped by each pass of a ``TTA_MODES`` mode; dim 2 is left-right (the RAS x axis)."""
    if tta == "mirror":
        yield from ((), (2,))
    elif tta == "flips":
        for k in range(4):
            yield from itertools.combinations((2, 3, 4), k)
    else:
        yield ()


@torch.inference_mode()
def predict_probabilities(predictor: Predictor, image: np.ndarray, options: PredictOptions | None = None
                          ) -> np.ndarray:
    """Sigmoid probabilities (C, X, Y, Z) float16 of a normalised canonical image (X, Y, Z) at model spacing."""
    options = options or PredictOptions()
    dev = predictor.device
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    window = infer_logits_fn(predictor.model)
    total: torch.Tensor | None = None
    flips = list(_flip_sets(resolve_tta(options.tta, predictor)))
    # A flip of axis 2 (left-right in the RAS cache) swaps left/right channels back and gives nothing to
    # side-defined channels (pancreas parts, liver segments): they average over the other flips only.
    source, side_defined = labels.mirror_channel_map(predictor.class_names)
    counts = torch.full((len(source),), float(len(flips)), device=dev)
    counts[side_defined] = float(sum(2 not in dims for dims in flips))
    for dims in flips:
        xin = torch.flip(x, dims) if dims else x
        with torch.autocast(device_type=dev.type, enabled=dev.type == "cuda"):
            logits = sliding_window_inference(
                xin, roi_size=predictor.patch_size, sw_batch_size=options.sw_batch_size, predictor=window,
                overlap=options.overlap, mode="gaussian", sw_device=dev, device=dev, progress=False)
        prob = torch.sigmoid(logits.float())
        del logits
        if dims:
            prob = torch.flip(prob, dims)
        if 2 in dims:
            prob = prob[:, source]
            prob[:, side_defined] = 0.0
        total = prob if total is None else total.add_(prob)
        del prob
    assert total is not None
    probs = (total / counts.view(1, -1, 1, 1, 1))[0].to("cpu", torch.float16).numpy()
    if probs.shape[0] != len(predictor.class_names):
        raise ValueError(f"model outputs {probs.shape[0]} channels but the checkpoint lists "
                         f"{len(predictor.class_names)} class names")
    return probs


def gate_organ_mask(class_names: list[str], probs: np.ndarray, organ: str,
                    untrained: Collection[str] = ()) -> np.ndarray | None:
    """Predicted organ mask (bool) for gating lesions of ``organ``; None when the model has no such channel
    (untrained channels do not count)."""
    whole = organ.replace(" ", "_")  # a side-free channel of the whole organ ("kidney"), when the model has one
    members = [whole] if whole in class_names and whole not in untrained else []
    if not members:
        members = [c for c in labels.ORGAN_MASK_CLASSES.get(organ, ()) if c in class_names and c not in untrained]
    if not members:
        members = [c for c in labels.SUBSEGMENTS_OF_ORGAN.get(organ, {}).values()
                   if c in class_names and c not in untrained]
    if not members:
        return None
    mask = np.zeros(probs.shape[1:], dtype=bool)
    for name in members:
        mask |= probs[class_names.index(name)] >= THRESHOLD
    return mask


def gate_lesions(class_names: list[str], probs: np.ndarray, spacing_mm: tuple[float, float, float],
                 dilation_mm: float = GATING_DILATION_MM, untrained: Collection[str] = ()) -> dict[str, bool]:
    """Multiplies every lesion channel of ``probs`` (C, X, Y, Z, in place) by its dilated organ mask.

    Returns {lesion class: gated?}; a lesion channel whose organ is not predicted by the model (or only by
    ``untrained`` channels) is left ungated (False).
    """
    gated = {}
    for c, name in enumerate(class_names):
        organ = labels.ORGAN_OF_LESION_CLASS.get(name)
        if organ is None:
            continue
        organ_mask = gate_organ_mask(class_names, probs, organ, untrained)
        gated[name] = organ_mask is not None
        if organ_mask is not None:
            probs[c] *= dilate_mm(torch.from_numpy(organ_mask), dilation_mm, spacing_mm).numpy()
    return gated


def _write_order(class_names: list[str]) -> list[str]:
    """Non-lesion classes first (sub-segments are needed to locate lesions), then lesion channels."""
    return sorted(class_names, key=lambda c: labels.is_lesion_class(c))


def _needed_subsegments(class_names: list[str]) -> dict[str, str]:
    """{sub-segment class: organ} for organs whose lesion channel is an output."""
    needed = {}
    for name in class_names:
        organ = labels.ORGAN_OF_LESION_CLASS.get(name)
        for sub in labels.SUBSEGMENTS_OF_ORGAN.get(organ or "", {}).values():
            if sub in class_names:
                needed[sub] = organ  # type: ignore[assignment]
    return needed


def case_is_complete(case_dir: Path, save_probabilities: bool = False) -> bool:
    """True when ``findings.json`` exists and every file it lists is present."""
    findings = case_dir / "findings.json"
    if not findings.is_file():
        return False
    try:
        classes = json.loads(findings.read_text())["classes"]
    except (ValueError, KeyError):
        return False
    folders = ["segmentations"] + (["probabilities"] if save_probabilities else [])
    return all((case_dir / f / f"{c}.nii.gz").is_file() for f in folders for c in classes)


def predict_case(predictor: Predictor, ct_path: str | Path, case_dir: str | Path,
                 options: PredictOptions | None = None, case_id: str | None = None) -> dict[str, Any]:
    """Predicts one CT and writes its masks, optional probabilities and ``findings.json`` under ``case_dir``.

    Returns the findings dict. Masks have exactly the input CT's shape and affine. Raises ``ValueError`` for
    a CT with NaN/Inf voxels, and for one that is not in Hounsfield units unless ``options.allow_non_hu``.
    """
    options = options or PredictOptions()
    ct_path, case_dir = Path(ct_path), Path(case_dir)
    ct = load_nifti(ct_path)
    if not np.isfinite(ct.array).all():
        raise ValueError(f"{ct_path} contains NaN or infinite voxels; fix the image before predicting")
    require_hu(ct.array, ct_path, options.allow_non_hu)
    work = resample_to_spacing(to_canonical(ct), predictor.spacing_mm, order=1)  # float32 (float64 stays)
    probs = predict_probabilities(predictor, normalize_ct(work.array), options)
    work_affine = work.affine
    del work
    names = predictor.class_names
    untrained = [name for name in names if name in predictor.untrained_classes]
    for name in untrained:
        probs[names.index(name)] = 0.0
    gated = gate_lesions(names, probs, predictor.spacing_mm, options.gating_dilation_mm, untrained)
    needed = _needed_subsegments(names)
    derived = derived_side_classes([n for n in names if n not in untrained])
    midline_mm = body_midline_x_mm(ct.array, ct.affine) if derived else 0.0
    subsegments: dict[str, dict[str, np.ndarray]] = {}
    volumes: dict[str, float] = {}
    summaries = []
    voxel_mm3 = float(np.prod(ct.spacing_mm))
    for name in _write_order(names):
        channel = probs[names.index(name)]
        if channel.max() < THRESHOLD and not options.save_probabilities:
            prob = None
            mask = np.zeros(ct.shape, dtype=np.uint8)
        else:
            prob = resample_to_grid(Volume(channel.astype(np.float32), work_affine), ct.shape, ct.affine,
                                    order=1).array
            mask = (prob >= THRESHOLD).astype(np.uint8)
        save_nifti(Volume(mask, ct.affine, ct.header), case_dir / "segmentations" / f"{name}.nii.gz", dtype=np.uint8)
        if options.save_probabilities:
            save_nifti(Volume(np.rint(prob * PROBABILITY_SCALE).astype(np.uint8), ct.affine, ct.header),
                       case_dir / "probabilities" / f"{name}.nii.gz", dtype=np.uint8)
        volumes[name] = round(int(mask.sum()) * voxel_mm3, 3)
        if name in needed:
            subsegments.setdefault(needed[name], {})[name] = mask.astype(bool)
        if name in derived:  # "kidney" -> kidney_left, kidney_right by the body midline (rsuper.infer.sides)
            for side, side_mask in split_sides(mask, ct.affine, midline_mm, name).items():
                save_nifti(Volume(side_mask.astype(np.uint8), ct.affine, ct.header),
                           case_dir / "segmentations" / f"{side}.nii.gz", dtype=np.uint8)
                volumes[side] = round(int(side_mask.sum()) * voxel_mm3, 3)
                subsegments.setdefault(name.replace("_", " "), {})[side] = side_mask  # report organ
        organ = labels.ORGAN_OF_LESION_CLASS.get(name)
        if organ is not None:
            comps = lesion_components(mask, ct.spacing_mm, probability=prob, subsegments=subsegments.get(organ),
                                      organ=organ, affine=ct.affine)
            summary = organ_summary(organ, name, comps)
            summary["max_probability"] = round(float(channel.max()), 4)  # whole CT, gated, model grid
            summaries.append(summary)
        del prob, mask
    findings = {
        "case_id": case_id or _case_id(ct_path),
        "ct": str(ct_path),
        "checkpoint": predictor.source,
        "rsuper_version": __version__,
        "grid": {"shape": list(ct.shape), "spacing_mm": [round(s, 4) for s in ct.spacing_mm],
                 "orientation": ct.orientation},
        "model_spacing_mm": list(predictor.spacing_mm),
        "threshold": THRESHOLD,
        "tta": resolve_tta(options.tta, predictor),
        "gating": {"dilation_mm": options.gating_dilation_mm, "gated": gated},
        "probabilities_scale": PROBABILITY_SCALE if options.save_probabilities else None,
        "classes": names,
        "derived_classes": {name: list(sides) for name, sides in derived.items()},
        "untrained_classes": untrained,
        "volumes_mm3": volumes,
        "organs": {s["organ"]: s for s in summaries},
        "lesions": report_style_lesions(summaries),
        "no_lesion": all(s["count"] == 0 for s in summaries),
    }
    write_json_atomic(case_dir / "findings.json", findings)
    return findings


def predict_cases(predictor: Predictor, inputs: list[tuple[str, Path]], out_dir: str | Path,
                  options: PredictOptions | None = None, overwrite: bool = False,
                  on_case: Callable[[str, str], None] | None = None) -> dict[str, str]:
    """Predicts every (case_id, CT path); skips complete cases unless ``overwrite``.

    ``on_case(case_id, status)`` is called after each case (status "done", "skipped" or "failed: ...").
    Returns {case_id: status}. A failing case is reported and the others continue.
    """
    options = options or PredictOptions()
    out_dir = Path(out_dir)
    statuses = {}
    for case_id, ct_path in inputs:
        case_dir = out_dir / case_id
        if not overwrite and case_is_complete(case_dir, options.save_probabilities):
            status = "skipped"
        else:
            try:
                predict_case(predictor, ct_path, case_dir, options, case_id=case_id)
                status = "done"
            except (OSError, ValueError) as exc:
                status = f"failed: {exc}"
        statuses[case_id] = status
        if on_case is not None:
            on_case(case_id, status)
    return statuses
