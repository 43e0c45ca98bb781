"""rsuper.reports."""
