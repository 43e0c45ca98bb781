"""Training metrics: ``metrics.csv`` (one row per logged step) and TensorBoard when it is installed.

Rows are appended as training goes; on resume rows after the resumed step are dropped first (the file
is rewritten atomically), so the log matches the checkpoint.

Example:
    >>> log = MetricsLog(out / "metrics.csv", resume_step=0)
    >>> log.write(10, {"total": 0.8, "lr": 3e-4})
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

from rsuper.atomic import write_text_atomic

COLUMNS = (
    "step", "lr", "total", "seg_final", "seg_aux", "ball", "volume", "grad_norm", "samples_per_s", "elapsed_s"
)


class MetricsLog:
    """CSV log with fixed ``COLUMNS`` (+ TensorBoard scalars under ``out/tensorboard`` if available)."""

    def __init__(self, path: str | Path, resume_step: int = 0, tensorboard: bool = True) -> None:
        self.path = Path(path)
        if resume_step > 0 and self.path.is_file():
            with self.path.open(newline="", encoding="utf-8") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= resume_step]
            lines = [",".join(COLUMNS)] + [",".join(r.get(c, "") for c in COLUMNS) for r in rows]
            write_text_atomic(self.path, "\n".join(lines) + "\n")
        else:
            write_text_atomic(self.path, ",".join(COLUMNS) + "\n")
        self._tb = None
        if tensorboard and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.path.parent / "tensorboard"), purge_step=resume_step + 1)

    def write(self, step: int, values: dict[str, float]) -> None:
        """Appends one row (missing columns empty)."""
        row = {"step": step, **values}
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow([_fmt(row.get(c)) for c in COLUMNS])
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _fmt(value: float | int | None) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.6g}"
