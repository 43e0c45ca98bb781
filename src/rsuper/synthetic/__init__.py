"""rsuper.synthetic: generated datasets (phantom families) with masks, reports and gold tables."""
