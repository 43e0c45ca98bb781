"""`rsuper organs` command(s)."""

import typer


def register(app: typer.Typer) -> None:
    """Adds the `organs` command(s) to the rsuper app."""
