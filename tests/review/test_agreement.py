"""The agreement formula of rsuper.review.agreement on known answers."""

from __future__ import annotations

import pytest

from rsuper.review.agreement import case_agreement, organ_agreement


def _a(report_count=1, multiple=False, report_mm=30.0, report_loc=("tail",), positive=True, count=1, model_mm=30.0,
       model_loc=("tail",), p=0.9):
    return organ_agreement(report_count, multiple, report_mm, list(report_loc) if report_loc else None, positive,
                           count, model_mm, list(model_loc), p)


def test_presence_disagreements_score_below_one_half():
    missed = _a(positive=False, count=0, model_mm=0.0, model_loc=(), p=0.38)
    assert missed["agreement"] == pytest.approx(0.19) and missed["kind"] == "missed" and missed["disputed"]
    unreported = _a(report_count=0, report_mm=None, report_loc=None, p=0.8)
    assert unreported["agreement"] == pytest.approx(0.1) and unreported["kind"] == "unreported"


def test_agreeing_presence_scores_at_least_one_half():
    assert _a()["agreement"] == 1.0 and not _a()["disputed"]
    none = _a(report_count=0, report_mm=None, report_loc=None, positive=False, count=0, model_mm=0.0, model_loc=(),
              p=0.2)
    assert none["agreement"] == pytest.approx(0.9) and not none["disputed"]


def test_fact_terms():
    count_off = _a(report_count=2)
    assert count_off["count_term"] == 0.5 and count_off["agreement"] == pytest.approx(0.5 + 0.5 * 2.5 / 3, abs=1e-4)
    assert count_off["disputed"]
    assert _a(report_count=2, multiple=True, count=3)["count_term"] == 1.0  # "multiple": a lower bound
    size = _a(model_mm=45.0)
    assert size["size_relative_error"] == 0.5 and size["size_term"] == 0.5 and size["disputed"]
    assert not _a(model_mm=36.0)["disputed"]  # 20 % off: within the tolerance
    wrong_place = _a(model_loc=("head",))
    assert wrong_place["location_term"] == 0.0 and wrong_place["disputed"]
    unknown = _a(report_mm=None, report_loc=None)
    assert unknown["size_term"] is None and unknown["location_term"] is None and unknown["agreement"] == 1.0


def test_the_worst_organ_decides_the_ct():
    assert case_agreement([0.9, 0.2, 1.0]) == 0.2
