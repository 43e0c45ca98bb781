"""nnU-Net predictions (``nnUNetv2_predict`` output) as an rsuper prediction folder, so one evaluator scores both.

``nnUNetv2_predict -o PRED`` writes ``PRED/<case>.nii.gz`` (one integer label map per CT, on the CT's grid) beside a
copy of the dataset's ``dataset.json``. :func:`convert_nnunet_predictions` splits each map into
``OUT/<case>/segmentations/<class>.nii.gz`` (uint8 {0, 1}), the layout of ``rsuper predict``, with the class names of
that ``dataset.json`` (``rsuper.data.cases.read_nnunet_labels``: background and ``ignore`` left out); an organ
whose parts are labels gets their union too (``pancreas`` = head | body | tail, ``liver`` = its segments), so the
evaluator's location agreement works. Findings are then recomputed from the masks (no probabilities: CT-level
AUROC falls back to the predicted volume).

Example:
    >>> convert_nnunet_predictions("nnunet_pred", "eval/predictions")
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from rsuper import labels
from rsuper.atomic import write_json_atomic
from rsuper.data.cases import read_nnunet_labels
from rsuper.io import load_nifti, save_nifti

UNIONS: dict[str, tuple[str, ...]] = {"pancreas": labels.PANCREAS_PARTS, "liver": labels.LIVER_SEGMENTS}
CONVERTED = "rsuper_from_nnunet.json"


def _file_ending(pred_dir: Path) -> str:
    try:
        return str(json.loads((pred_dir / "dataset.json").read_text())["file_ending"])
    except (OSError, ValueError, KeyError):
        return ".nii.gz"


def is_nnunet_prediction_dir(path: str | os.PathLike[str]) -> bool:
    """True for an ``nnUNetv2_predict`` output: ``dataset.json`` and label maps beside it, no ``<case>/segmentations``."""
    path = Path(path)
    if not (path / "dataset.json").is_file() or any(path.glob("*/segmentations")):
        return False
    ending = _file_ending(path)
    return any(p.name.endswith(ending) for p in path.iterdir() if p.is_file())


def convert_nnunet_predictions(pred_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Writes ``out_dir/<case>/segmentations/<class>.nii.gz`` for every label map of ``pred_dir``; returns out_dir.

    A case already converted from the same file (size and mtime in ``<case>/rsuper_from_nnunet.json``) is kept.
    Raises ``FileNotFoundError`` when ``pred_dir`` holds no label map.
    """
    pred_dir, out = Path(pred_dir), Path(out_dir)
    ending = _file_ending(pred_dir)
    ids = read_nnunet_labels(pred_dir / "dataset.json")
    maps = sorted(p for p in pred_dir.iterdir() if p.is_file() and p.name.endswith(ending))
    if not maps:
        raise FileNotFoundError(f"no <case>{ending} label maps in {pred_dir} (an nnUNetv2_predict output folder)")
    for path in maps:
        case_id = path.name[: -len(ending)]
        stamp = {"source": str(path.resolve()), "size": path.stat().st_size, "mtime": path.stat().st_mtime}
        done = out / case_id / CONVERTED
        if done.is_file() and json.loads(done.read_text()) == stamp:
            continue
        volume = load_nifti(path)
        array = np.asarray(volume.array)
        masks = {name: array == value for name, value in ids.items()}
        for organ, parts in UNIONS.items():
            if organ not in masks and all(p in masks for p in parts):
                masks[organ] = np.logical_or.reduce([masks[p] for p in parts])
        for name, mask in masks.items():
            save_nifti(volume.with_array(mask.astype(np.uint8)), out / case_id / "segmentations" / f"{name}.nii.gz",
                       np.uint8)
        write_json_atomic(done, stamp)
    return out


def resolve_prediction_dir(pred_dir: str | os.PathLike[str], convert_to: str | os.PathLike[str]) -> Path:
    """``pred_dir`` itself for rsuper's layout; for an nnU-Net output, its conversion into ``convert_to``."""
    if is_nnunet_prediction_dir(pred_dir):
        return convert_nnunet_predictions(pred_dir, convert_to)
    return Path(pred_dir)
