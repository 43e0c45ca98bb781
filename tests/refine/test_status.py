"""rsuper.refine.status: one organ's decision and the CT's status from its organs."""

from __future__ import annotations

from rsuper.refine.status import ACCEPTED, NEEDS_REVIEW, PARTLY_ACCEPTED, TumorCheck, combine, decide


def test_each_organ_is_decided_on_its_own_tumors_and_leftover():
    seen = decide([TumorCheck("pancreatic tail tumor 1 (20 mm)", 0.9, 1.0)], 0.1, "", [])
    missed = decide([TumorCheck("left kidney tumor 1 (15 mm)", 0.2, 1.0)], 0.0, "", [])
    extra = decide([], 0.8, "liver segment 7", [])
    assert (seen.status, missed.status, extra.status) == (ACCEPTED, NEEDS_REVIEW, NEEDS_REVIEW)
    assert missed.reasons == ["left kidney tumor 1 (15 mm): the model calls 20% of it tumor"]
    assert extra.reasons == ["the model calls tumor (p 0.80) in the liver segment 7 where the report places none"]

    ct = combine({"pancreatic_lesion": seen, "kidney_lesion": missed, "liver_lesion": extra})
    assert (ct.status, ct.accepted, ct.confidence) == (PARTLY_ACCEPTED, ("pancreatic_lesion",), 0.2)
    assert ct.reasons == missed.reasons + extra.reasons
    assert combine({"pancreatic_lesion": seen}).status == ACCEPTED
    assert combine({"kidney_lesion": missed, "liver_lesion": extra}).status == NEEDS_REVIEW
