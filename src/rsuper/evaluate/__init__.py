"""rsuper.evaluate."""
