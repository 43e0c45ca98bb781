"""`rsuper prepare` command(s)."""

import typer


def register(app: typer.Typer) -> None:
    """Adds the `prepare` command(s) to the rsuper app."""
