"""rsuper.data."""
