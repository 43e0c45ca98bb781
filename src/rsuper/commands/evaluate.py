"""`rsuper evaluate` command(s)."""

import typer


def register(app: typer.Typer) -> None:
    """Adds the `evaluate` command(s) to the rsuper app."""
