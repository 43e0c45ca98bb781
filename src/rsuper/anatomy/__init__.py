"""rsuper.anatomy: organ masks in, sub-segments out (the shared class-name table is ``rsuper.labels``)."""
