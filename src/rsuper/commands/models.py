"""`rsuper models` command(s)."""

import typer


def register(app: typer.Typer) -> None:
    """Adds the `models` command(s) to the rsuper app."""
