"""`python -m rsuper ...`: the same command line as the `rsuper` script."""

from rsuper.cli import app

app(prog_name="rsuper")
