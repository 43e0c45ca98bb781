"""Test-time augmentation modes of `rsuper predict` (names only, importable without torch for the CLI).

``none``: one pass; ``mirror``: as is + left-right mirror (2 passes); ``flips``: the 8 mirror combinations of
the 3 axes (8 passes); ``auto``: ``mirror`` for a network trained with the left-right mirror, else ``none``
(``rsuper.infer.predict.resolve_tta``).
"""

from __future__ import annotations

from rsuper.errors import ConfigError

TTA_MODES = ("auto", "none", "mirror", "flips")


def check_tta_mode(mode: str, field_name: str = "tta") -> None:
    """Raises ``ConfigError`` (a ``ValueError``) naming ``field_name`` unless ``mode`` is one of ``TTA_MODES``."""
    if mode not in TTA_MODES:
        raise ConfigError(f"{field_name} must be one of {', '.join(TTA_MODES)}, got {mode!r}")
