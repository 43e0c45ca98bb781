"""rsuper.anatomy: organ masks in, sub-segments out (labels: the shared class-name table)."""
