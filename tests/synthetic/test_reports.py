"""Phantom reports: the stated lesions follow docs/method.md's `multiple` row and unknown-size conventions."""

from __future__ import annotations

import numpy as np

from rsuper.synthetic.reports import ReportTumor, write_report


def test_multiple_row_and_unknown_size_follow_method():
    tumors = [
        ReportTumor("liver", ["segment 7"], (21.0, 18.0, 17.0)),
        ReportTumor("liver", ["segment 2"], (9.0, 8.0, 8.0)),
        ReportTumor("liver", ["segment 5"], (12.0, 10.0, 9.0)),
    ]
    seen_multiple = seen_unknown = False
    for seed in range(60):
        text, stated = write_report(np.random.default_rng(seed), tumors, {"phase": "portal venous"})
        rows = [s.lesion for s in stated]
        multiple = [r for r in rows if r.multiple]
        if multiple:
            seen_multiple = True
            assert len(rows) == 2 and "largest" in multiple[0].evidence
            assert rows[0].size_mm is not None and abs(rows[0].size_mm[0] - 21.0) <= 0.5
            assert multiple[0].location == [] and multiple[0].size_mm is None
        else:
            assert len(rows) == 3
        seen_unknown |= any(r.size_mm is None and not r.multiple for r in rows)
        assert all(r.evidence in text for r in rows)
    assert seen_multiple and seen_unknown


def test_impression_site_keeps_whole_words():
    """'within the mid pancreatic body' once became 'Withmid pancreatic body' in the impression."""
    tumors = [ReportTumor("pancreas", ["body"], (20.0, 18.0, 16.0))]
    texts = [write_report(np.random.default_rng(seed), tumors, {"phase": "portal venous"})[0] for seed in range(200)]
    assert any("mid pancreatic body" in t.lower() for t in texts)
    assert not any("withmid" in t.lower() or "withpancreatic" in t.lower() for t in texts)
