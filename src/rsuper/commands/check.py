"""`rsuper check` command(s)."""

import typer


def register(app: typer.Typer) -> None:
    """Adds the `check` command(s) to the rsuper app."""
