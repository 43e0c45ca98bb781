"""rsuper.infer."""
