"""`rsuper phantoms` command(s)."""

import typer


def register(app: typer.Typer) -> None:
    """Adds the `phantoms` command(s) to the rsuper app."""
