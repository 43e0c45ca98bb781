"""rsuper.losses."""
