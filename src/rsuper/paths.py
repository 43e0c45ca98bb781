"""Outputs never land in inputs: the one check every command runs before it writes.

An output (folder or file) may not be an input, lie inside an input folder, or contain an input: writing
there could replace input files (``rsuper predict DATA DATA`` would overwrite the true masks). Paths are
compared after resolving symlinks (``Path.resolve``), so a link to the dataset is the dataset.

Example:
    >>> check_output_apart("preds", {"INPUT": "data/test", "--checkpoint": "runs/final.pt"}, output_label="OUT")
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

PathLike = str | os.PathLike[str]
Inputs = Mapping[str, PathLike | Iterable[PathLike] | None]


class OutputOverlapsInputError(ValueError):
    """An output path that is, lies inside, or contains an input path."""


def _paths(value: PathLike | Iterable[PathLike] | None) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value if v is not None]


def _shown(path: Path, resolved: Path) -> str:
    """``path``, plus what it resolves to when that is not just its absolute form (a symlink on the way)."""
    return str(path) if resolved == Path(os.path.abspath(path)) else f"{path} (= {resolved})"


def check_output_apart(output: PathLike, inputs: Inputs, output_label: str = "--out") -> None:
    """Raises ``OutputOverlapsInputError`` (one line naming both paths) when ``output`` is an input, lies
    inside an input folder, or contains an input.

    Args:
        output: the folder (or file) a command writes.
        inputs: label (the option or argument name, e.g. ``"--masks"``) -> a path, several paths, or None.
        output_label: how the output is named in the message (e.g. ``"OUT"``, ``"--json"``).
    """
    out = Path(output)
    out_real = out.resolve()
    for label, value in inputs.items():
        for path in _paths(value):
            real = path.resolve()
            if out_real == real:
                relation = "is the input"
            elif out_real.is_relative_to(real):
                relation = "lies inside the input"
            elif real.is_relative_to(out_real):
                relation = "contains the input"
            else:
                continue
            raise OutputOverlapsInputError(
                f"{output_label} {_shown(out, out_real)} {relation} {label} {_shown(path, real)}: rsuper never "
                f"writes into its inputs; give another {output_label} outside them"
            )


def exit_if_output_overlaps(output: PathLike | None, inputs: Inputs, output_label: str = "--out") -> None:
    """CLI form of ``check_output_apart``: prints ``error: <reason>`` on one line (stderr) and exits with code 2."""
    if output is None:
        return
    try:
        check_output_apart(output, inputs, output_label)
    except OutputOverlapsInputError as exc:
        import typer

        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
