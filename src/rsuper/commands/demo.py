"""`rsuper demo` command(s)."""

import typer


def register(app: typer.Typer) -> None:
    """Adds the `demo` command(s) to the rsuper app."""
