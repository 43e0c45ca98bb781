"""Known answers of the report-constrained growth (rsuper.refine.grow): counts, sizes in mm, sub-segment."""

from __future__ import annotations

import numpy as np
import pytest
from review_helpers import SPACING_MM, TAIL_TUMORS, ball, organ_masks, tail_probability

from rsuper.infer.findings import lesion_components
from rsuper.refine.grow import grow_tumors, region_with_margin
from rsuper.reports.schema import volume_from_diameters


def _grow(prob, region, diameters, spacing=SPACING_MM, taken=None):
    return grow_tumors(prob, region, diameters, [volume_from_diameters([d]) for d in diameters], spacing, taken)


def test_two_tail_tumors_of_20_and_10_mm_give_two_components_of_those_sizes_in_the_tail():
    tail = organ_masks()["pancreas_tail"]
    tumors = _grow(tail_probability(), tail, [10.0, 20.0])  # any order in: largest volume first out
    assert [t.diameter_mm for t in tumors] == [20.0, 10.0]
    union = tumors[0].mask | tumors[1].mask
    assert not (tumors[0].mask & tumors[1].mask).any()
    assert union[~tail].sum() == 0
    comps = lesion_components(union, SPACING_MM)
    assert len(comps) == 2
    for comp, (centre, diameter), tumor in zip(comps, TAIL_TUMORS, tumors):
        assert comp["largest_diameter_mm"] == pytest.approx(diameter, abs=2.6)  # one voxel + the extent convention
        assert comp["volume_mm3"] == pytest.approx(volume_from_diameters([diameter]), rel=0.1)
        assert tumor.centre_vox == centre  # the model's most tumor-like ball
        assert tumor.fill >= 0.9


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 1.0, 3.0), (0.7, 1.4, 2.5)])
def test_anisotropic_spacing_keeps_sizes_in_mm(spacing):
    extent_mm = 60.0
    shape = tuple(int(round(extent_mm / s)) for s in spacing)
    centre = tuple(n // 2 for n in shape)
    region = np.ones(shape, bool)
    prob = np.zeros(shape, np.float32)
    prob[ball(centre, 24.0, spacing, shape)] = 0.8
    (tumor,) = _grow(prob, region, [24.0], spacing)
    voxel_mm3 = float(np.prod(spacing))
    assert tumor.voxels * voxel_mm3 == pytest.approx(volume_from_diameters([24.0]), rel=0.12)
    (comp,) = lesion_components(tumor.mask, spacing)
    assert comp["largest_diameter_mm"] == pytest.approx(24.0, abs=max(spacing) + 0.5)
    assert tumor.centre_vox == centre


def test_flat_probability_puts_the_ball_inside_the_region_not_in_a_corner():
    tail = organ_masks()["pancreas_tail"]
    (tumor,) = _grow(np.zeros(tail.shape, np.float32), tail, [12.0])
    assert tumor.fill == 1.0 and tumor.mask[~tail].sum() == 0


def test_taken_voxels_are_never_reused_and_margin_dilates_in_mm():
    tail = organ_masks()["pancreas_tail"]
    first = _grow(tail_probability(), tail, [20.0])[0]
    again = _grow(tail_probability(), tail, [20.0], taken=first.mask)[0]
    assert not (first.mask & again.mask).any()
    wider = region_with_margin(tail, SPACING_MM, 3.0)
    assert wider[29, 20, 10] and wider[27, 20, 10] and not wider[26, 20, 10]  # 3 mm along x (1 mm voxels)
    assert wider[40, 20, 1] and not wider[40, 20, 0]  # 2.5 mm voxels along z: one voxel within 3 mm
