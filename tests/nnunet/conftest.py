"""A tiny phantom set (4 mask CTs, 6 report CTs, 3 test CTs at 8 mm: 38 x 31 x 22 voxels) exported for nnU-Net."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rsuper.anatomy.organ_masks import process_case
from rsuper.data.cases import discover_cases
from rsuper.reports.pipeline import run_extraction
from rsuper.synthetic.phantoms import generate_dataset


@pytest.fixture(scope="session")
def phantom_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/data`` (phantoms), ``root/extract/tumors.csv`` (rules on the report text), ``root/organs``."""
    root = tmp_path_factory.mktemp("nnunet_phantoms")
    generate_dataset(root / "data", n_mask=4, n_report=6, n_test=3, spacing_mm=8.0, seed=0, tumor_contrast_hu=-90.0)
    table = pd.read_csv(root / "data" / "reports.csv")
    table[table["split"] == "reports"].to_csv(root / "reports_train.csv", index=False)
    run_extraction(root / "reports_train.csv", root / "extract", backend="rules")
    for case in discover_cases(root / "data" / "reports"):
        process_case(case, root / "organs")
    return root
