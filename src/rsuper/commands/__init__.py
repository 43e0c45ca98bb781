"""CLI commands, one module per step. Each module has ``register(app)`` adding its typer commands."""
