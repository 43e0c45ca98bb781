"""`rsuper extract` command(s)."""

import typer


def register(app: typer.Typer) -> None:
    """Adds the `extract` command(s) to the rsuper app."""
