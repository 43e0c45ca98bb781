"""Sub-segment derivation: pancreas head/body/tail along the centre line, kidney sides from world x."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest

from rsuper.anatomy import subsegments as ss

PARTS = ("pancreas_head", "pancreas_body", "pancreas_tail")
RAS_2MM = np.diag([2.0, 2.0, 2.0, 1.0])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def lps_twin(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels written LPS: axes 0 and 1 reversed, affine adjusted so world positions are unchanged."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = array.shape[0] - 1
    flip[1, 3] = array.shape[1] - 1
    return array[::-1, ::-1, :].copy(), affine @ flip


def curved_tube(shape=(48, 32, 24), radius_vox=3.5) -> np.ndarray:
    """A tube along a U-shaped arc: thick end at high x (patient right in RAS), thin end at low x."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    t = np.linspace(0, 1, 200)
    curve = np.stack([40 - 32 * t, 10 + 12 * np.sin(np.pi * t), 8 + 8 * t], axis=1)
    mask = np.zeros(shape, dtype=bool)
    for point, r in zip(curve, radius_vox * (1.4 - 0.6 * t)):
        mask |= np.linalg.norm(grid - point, axis=-1) <= r
    return mask


def test_pancreas_parts_partition_the_organ_with_one_component_each_and_head_on_patient_right():
    tube = curved_tube()
    parts = ss.split_pancreas(tube, RAS_2MM)
    stack = np.stack([parts[p] for p in PARTS])
    assert (stack.sum(0) == tube).all()
    for name in PARTS:
        assert cc3d.connected_components(parts[name], connectivity=26, return_N=True)[1] == 1, name
    x = {p: ss.voxel_to_world(np.argwhere(parts[p]).mean(0)[None], RAS_2MM)[0, 0] for p in PARTS}
    assert x["pancreas_head"] > x["pancreas_body"] > x["pancreas_tail"]


def test_pancreas_split_follows_world_sides_not_array_order():
    tube = curved_tube()
    ras = ss.split_pancreas(tube, RAS_2MM)
    flipped, lps_affine = lps_twin(tube, RAS_2MM)
    lps = ss.split_pancreas(flipped, lps_affine)
    for name in PARTS:
        back, _ = lps_twin(lps[name], lps_affine)
        assert dice(back, ras[name]) > 0.99, name
    # In the LPS array the head lies at LOW axis-0 indices (patient right = low index there).
    assert np.argwhere(lps["pancreas_head"])[:, 0].mean() < np.argwhere(lps["pancreas_tail"])[:, 0].mean()


def test_detached_pieces_keep_each_part_contiguous_within_each_piece():
    tube = curved_tube()
    tube[20:23] = False  # cut the gland in two
    pieces = cc3d.connected_components(tube, connectivity=26)
    assert pieces.max() == 2
    parts = ss.split_pancreas(tube, RAS_2MM)
    assert (np.stack([parts[p] for p in PARTS]).sum(0) == tube).all()
    for name in PARTS:
        for piece in (1, 2):
            inside = parts[name] & (pieces == piece)
            if inside.any():
                assert cc3d.connected_components(inside, connectivity=26, return_N=True)[1] == 1


def test_pancreas_boundaries_move_the_parts_and_bad_values_fail():
    tube = curved_tube()
    small_head = ss.split_pancreas(tube, RAS_2MM, boundaries=(0.2, 0.6))["pancreas_head"].sum()
    big_head = ss.split_pancreas(tube, RAS_2MM, boundaries=(0.5, 0.8))["pancreas_head"].sum()
    assert small_head < big_head
    with pytest.raises(ValueError, match="boundaries"):
        ss.split_pancreas(tube, RAS_2MM, boundaries=(0.7, 0.3))


def test_empty_mask_is_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        ss.split_pancreas(np.zeros((8, 8, 8), bool), RAS_2MM)


def two_kidneys(shape=(40, 24, 20)) -> tuple[np.ndarray, np.ndarray]:
    """(right, left) kidney blobs in a RAS array: right kidney at high axis-0 indices."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    right = np.linalg.norm((grid - (30, 12, 10)) / (4, 3, 6), axis=-1) <= 1
    left = np.linalg.norm((grid - (9, 12, 11)) / (4, 3, 6), axis=-1) <= 1
    return right, left


@pytest.mark.parametrize("orientation", ["RAS", "LPS"])
def test_kidney_sides_come_from_world_x(orientation):
    right, left = two_kidneys()
    both, affine = right | left, RAS_2MM
    if orientation == "LPS":
        both, affine = lps_twin(both, affine)
        right, _ = lps_twin(right, RAS_2MM)
        left, _ = lps_twin(left, RAS_2MM)
    sides = ss.split_kidneys(both, affine)
    assert dice(sides["kidney_right"], right) == 1.0
    assert dice(sides["kidney_left"], left) == 1.0


def test_single_piece_kidney_needs_the_midline():
    right, _ = two_kidneys()
    with pytest.raises(ValueError, match="midline"):
        ss.split_kidneys(right, RAS_2MM)
    sides = ss.split_kidneys(right, RAS_2MM, midline_x_mm=40.0)  # midline at x index 20
    assert sides["kidney_right"].sum() == right.sum() and not sides["kidney_left"].any()


def test_swapped_kidney_labels_are_reported():
    right, left = two_kidneys()
    assert ss.check_kidney_sides(left, right, RAS_2MM) is None
    message = ss.check_kidney_sides(right, left, RAS_2MM, "case1/kidney_left.nii.gz")
    assert message and "flipped" in message and "case1/kidney_left.nii.gz" in message


def test_body_midline_from_ct():
    ct = np.full((40, 20, 10), -1000, dtype=np.int16)
    ct[10:30] = 40  # body spans x indices 10..29 -> centre 19.5
    assert ss.body_midline_x_mm(ct, RAS_2MM) == pytest.approx(39.0)


def test_phantom_subsegments_match_the_truth():
    from rsuper.synthetic import anatomy
    scores, kidney_scores = [], []
    for seed in (0, 1):
        phantom = anatomy.generate_anatomy(
            np.random.default_rng(seed), anatomy.AnatomySettings(spacing_mm=(3.0, 3.0, 3.0)), []
        )
        parts = ss.split_pancreas(phantom.organs["pancreas"] > 0, phantom.affine)
        scores += [dice(parts[p], phantom.subsegments[p] > 0) for p in PARTS]
        right, left = phantom.organs["kidney_right"] > 0, phantom.organs["kidney_left"] > 0
        sides = ss.split_kidneys(right | left, phantom.affine)
        kidney_scores += [dice(sides["kidney_right"], right), dice(sides["kidney_left"], left)]
    assert np.mean(scores) >= 0.8 and min(scores) >= 0.7, scores
    assert min(kidney_scores) >= 0.99, kidney_scores
