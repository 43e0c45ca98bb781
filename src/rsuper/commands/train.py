"""`rsuper train` command(s)."""

import typer


def register(app: typer.Typer) -> None:
    """Adds the `train` command(s) to the rsuper app."""
