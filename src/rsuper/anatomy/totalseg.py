"""TotalSegmentator label ids (tasks ``total`` v2 and ``liver_segments``) and an optional runner.

The id tables are TotalSegmentator v2's published class maps (``totalsegmentator/map_to_binary.py``,
tasks ``total`` and ``liver_segments``). A multilabel file written by TotalSegmentator (``--ml``) also
carries its own id -> name table in a NIfTI header extension; ``label_names_from_header`` reads it, and
it wins over the tables when present. TotalSegmentator itself is an optional extra: it is only looked up
when ``run_totalsegmentator`` is called.

Example:
    >>> TOTAL_V2_IDS[7]
    'pancreas'
    >>> run_totalsegmentator("case/ct.nii.gz", "work/case_total.nii.gz", task="total", fast=True)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import nibabel as nib

from rsuper.atomic import atomic_path

INSTALL_HINT = "pip install TotalSegmentator"

_TOTAL_V2_NAMES = (
    "spleen kidney_right kidney_left gallbladder liver stomach pancreas adrenal_gland_right adrenal_gland_left "
    "lung_upper_lobe_left lung_lower_lobe_left lung_upper_lobe_right lung_middle_lobe_right lung_lower_lobe_right "
    "esophagus trachea thyroid_gland small_bowel duodenum colon urinary_bladder prostate kidney_cyst_left "
    "kidney_cyst_right sacrum vertebrae_S1 vertebrae_L5 vertebrae_L4 vertebrae_L3 vertebrae_L2 vertebrae_L1 "
    "vertebrae_T12 vertebrae_T11 vertebrae_T10 vertebrae_T9 vertebrae_T8 vertebrae_T7 vertebrae_T6 vertebrae_T5 "
    "vertebrae_T4 vertebrae_T3 vertebrae_T2 vertebrae_T1 vertebrae_C7 vertebrae_C6 vertebrae_C5 vertebrae_C4 "
    "vertebrae_C3 vertebrae_C2 vertebrae_C1 heart aorta pulmonary_vein brachiocephalic_trunk "
    "subclavian_artery_right subclavian_artery_left common_carotid_artery_right common_carotid_artery_left "
    "brachiocephalic_vein_left brachiocephalic_vein_right atrial_appendage_left superior_vena_cava "
    "inferior_vena_cava portal_vein_and_splenic_vein iliac_artery_left iliac_artery_right iliac_vena_left "
    "iliac_vena_right humerus_left humerus_right scapula_left scapula_right clavicula_left clavicula_right "
    "femur_left femur_right hip_left hip_right spinal_cord gluteus_maximus_left gluteus_maximus_right "
    "gluteus_medius_left gluteus_medius_right gluteus_minimus_left gluteus_minimus_right autochthon_left "
    "autochthon_right iliopsoas_left iliopsoas_right brain skull"
).split()
_RIBS = [f"rib_{side}_{i}" for side in ("left", "right") for i in range(1, 13)]

TOTAL_V2_IDS: dict[int, str] = {
    i + 1: name for i, name in enumerate(_TOTAL_V2_NAMES + _RIBS + ["sternum", "costal_cartilages"])
}
"""TotalSegmentator v2 task ``total``: label id -> TotalSegmentator class name (117 classes)."""

LIVER_SEGMENTS_IDS: dict[int, str] = {i: f"liver_segment_{i}" for i in range(1, 9)}
"""TotalSegmentator task ``liver_segments``: label id -> Couinaud segment class."""

TASK_IDS: dict[str, dict[int, str]] = {"total": TOTAL_V2_IDS, "liver_segments": LIVER_SEGMENTS_IDS}


class TotalSegmentatorNotFound(RuntimeError):
    """TotalSegmentator is not installed in this environment."""


class TotalSegmentatorFailed(RuntimeError):
    """TotalSegmentator ran but returned an error."""


def task_ids(task: str) -> dict[int, str]:
    """Id table of a TotalSegmentator task (``"total"`` or ``"liver_segments"``)."""
    try:
        return TASK_IDS[task]
    except KeyError:
        raise ValueError(f"unknown TotalSegmentator task {task!r}; known: {sorted(TASK_IDS)}") from None


def label_names_from_header(path: str | os.PathLike[str]) -> dict[int, str] | None:
    """Id -> name table stored by TotalSegmentator in a multilabel NIfTI's header extension, or None."""
    image = nib.load(str(path))
    for extension in image.header.extensions:
        content = extension.get_content()
        text = content.decode("utf-8", errors="replace") if isinstance(content, bytes) else str(content)
        if "<LabelTable>" not in text:
            continue
        try:
            root = ElementTree.fromstring(text.strip())
        except ElementTree.ParseError:
            continue
        names = {
            int(label.attrib["Key"]): (label.text or "").strip()
            for label in root.iter("Label")
            if label.attrib.get("Key", "").isdigit() and (label.text or "").strip()
        }
        if names:
            return names
    return None


def guess_task(path: str | os.PathLike[str], default: str = "total") -> str:
    """``"liver_segments"`` when the file name says so (e.g. ``liver_segments.nii.gz``), else ``default``."""
    return "liver_segments" if re.search(r"liver[_-]?seg", Path(path).name, re.IGNORECASE) else default


def find_executable() -> str:
    """Path of the ``TotalSegmentator`` command; raises ``TotalSegmentatorNotFound`` with the install command."""
    exe = shutil.which("TotalSegmentator")
    if exe is None:
        raise TotalSegmentatorNotFound(
            "TotalSegmentator is not installed (no `TotalSegmentator` command on PATH). Install it with "
            f"`{INSTALL_HINT}` (an optional extra of rsuper), or pass existing masks with --ml / --masks-dir."
        )
    return exe


def run_totalsegmentator(
    ct_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    task: str = "total",
    fast: bool = False,
    device: str | None = None,
) -> Path:
    """Runs TotalSegmentator on one CT and writes its multilabel map (``--ml``) to ``output_path``.

    Args:
        ct_path: input CT NIfTI (never modified).
        output_path: the multilabel ``.nii.gz`` to write; written to a temporary name, then renamed.
        task: ``"total"`` or ``"liver_segments"``.
        fast: TotalSegmentator's 3 mm model (``--fast``, only for ``total``), much quicker on CPU.
        device: ``"gpu"``, ``"cpu"`` or ``"mps"`` (TotalSegmentator's ``--device``); default: its own choice.
    """
    task_ids(task)
    exe = find_executable()
    output = Path(output_path)
    with atomic_path(output) as tmp:
        tmp.unlink()  # TotalSegmentator writes the file; its absence afterwards means it failed
        command = [exe, "-i", str(ct_path), "-o", str(tmp), "--ml", "-ta", task]
        if fast and task == "total":
            command.append("--fast")
        if device:
            command += ["--device", device]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not tmp.is_file():
            tail = (result.stderr or result.stdout).strip()[-2000:]
            raise TotalSegmentatorFailed(f"TotalSegmentator failed on {ct_path} (exit {result.returncode}): {tail}")
    return output
