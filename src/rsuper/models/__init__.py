"""rsuper.models."""
