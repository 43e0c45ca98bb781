"""`rsuper predict` command(s)."""

import typer


def register(app: typer.Typer) -> None:
    """Adds the `predict` command(s) to the rsuper app."""
