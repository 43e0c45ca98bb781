"""Data constants the command line needs at start-up (option defaults), importable without numpy."""

AFFINE_TOLERANCE_MM = 1e-3  # largest CT/mask affine difference, in mm, still called the same grid
