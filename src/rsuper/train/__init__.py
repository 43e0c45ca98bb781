"""rsuper.train."""
