"""Sub-segments derived geometrically from organ masks: pancreas head/body/tail and kidney sides.

Every function takes a boolean mask in any array orientation plus its 4x4 NIfTI affine (voxel -> RAS+
world mm). Sides come from world coordinates only (world x grows toward the patient's RIGHT), never from
array order, so an LPS-written volume gives the same anatomy as its RAS twin.

Pancreas (docs/method.md §3): the centre line is built from the organ itself. Geodesic distances inside the
mask (gaps between detached pieces bridged by their shortest straight link) give a coordinate that runs
from one end of the gland to the other; the centroids of its level sets, smoothed, form the centre line.
Every voxel takes the arc-length fraction of its nearest centre-line point; the end with the larger
world x (patient right) is the head. Head = fraction < 1/3, body = 1/3..2/3, tail >= 2/3 of the
centre-line length: the head (with neck and uncinate process) reaches to the left border of the
superior mesenteric / portal vein, about a third of the gland's length, and the rest is halved into body
and tail (the usual radiological convention). Because the head is the thickest part this gives volume
fractions near 45 / 30 / 25 %.

Example:
    >>> parts = split_pancreas(pancreas_mask, affine)
    >>> sorted(parts)
    ['pancreas_body', 'pancreas_head', 'pancreas_tail']
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

PANCREAS_BOUNDARIES: tuple[float, float] = (1.0 / 3.0, 2.0 / 3.0)
"""Centre-line fractions (from the head end) of the head/body and body/tail borders."""

_NEIGHBOUR_OFFSETS = np.array(
    [(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1) if (i, j, k) > (0, 0, 0)]
)


@dataclass(frozen=True)
class Centerline:
    """A polyline through an organ, ordered from the head (patient-right) end.

    Attributes:
        points_mm: (K, 3) RAS world coordinates in mm.
        length_mm: total arc length in mm.
        fraction: (N,) arc-length fraction in [0, 1] of the nearest centre-line point, per mask voxel
            (in ``np.argwhere(mask)`` order).
    """

    points_mm: np.ndarray
    length_mm: float
    fraction: np.ndarray


def voxel_to_world(indices: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Maps (N, 3) voxel indices to (N, 3) RAS world coordinates in mm."""
    affine = np.asarray(affine, dtype=np.float64)
    return np.asarray(indices, dtype=np.float64) @ affine[:3, :3].T + affine[:3, 3]


def _check_mask(mask: np.ndarray, affine: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"{name} mask must be 3D (X, Y, Z), got shape {mask.shape}")
    if np.asarray(affine).shape != (4, 4):
        raise ValueError(f"affine of {name} must be 4x4, got shape {np.asarray(affine).shape}")
    if not mask.any():
        raise ValueError(f"{name} mask is empty: nothing to split")
    return mask.astype(bool)


def _voxel_graph(mask: np.ndarray, affine: np.ndarray) -> tuple[sparse.csr_matrix, np.ndarray]:
    """26-neighbour graph of the mask voxels with edge weights in mm; detached pieces are bridged."""
    index = -np.ones(mask.shape, dtype=np.int64)
    coords = np.argwhere(mask)
    index[tuple(coords.T)] = np.arange(len(coords))
    padded = np.pad(index, 1, constant_values=-1)
    rows, cols, weights = [], [], []
    shape = np.array(mask.shape)
    for offset in _NEIGHBOUR_OFFSETS:
        lo = 1 + offset
        shifted = padded[lo[0] : lo[0] + shape[0], lo[1] : lo[1] + shape[1], lo[2] : lo[2] + shape[2]]
        both = (index >= 0) & (shifted >= 0)
        rows.append(index[both])
        cols.append(shifted[both])
        weights.append(np.full(int(both.sum()), np.linalg.norm(affine[:3, :3] @ offset)))
    world = voxel_to_world(coords, affine)
    labels = cc3d.connected_components(mask, connectivity=26)[tuple(coords.T)]
    rows_b, cols_b, weights_b = _bridges(labels, world)
    rows = np.concatenate(rows + rows_b)
    cols = np.concatenate(cols + cols_b)
    weights = np.concatenate(weights + weights_b)
    graph = sparse.coo_matrix((weights, (rows, cols)), shape=(len(coords), len(coords))).tocsr()
    return graph, world


def _bridges(labels: np.ndarray, world: np.ndarray) -> tuple[list, list, list]:
    """Shortest straight links (minimum spanning tree) joining detached pieces of one organ."""
    pieces = np.unique(labels)
    if len(pieces) < 2:
        return [], [], []
    members = [np.flatnonzero(labels == p) for p in pieces]
    trees = [cKDTree(world[m]) for m in members]
    n = len(pieces)
    gap = np.zeros((n, n))
    pair: dict[tuple[int, int], tuple[int, int]] = {}
    for a in range(n):
        for b in range(a + 1, n):
            dist, nearest = trees[a].query(world[members[b]])
            j = int(np.argmin(dist))
            gap[a, b] = dist[j] + 1e-6
            pair[(a, b)] = (int(members[a][nearest[j]]), int(members[b][j]))
    tree = csgraph.minimum_spanning_tree(gap).tocoo()
    rows, cols, weights = [], [], []
    for a, b, w in zip(tree.row, tree.col, tree.data):
        i, j = pair[(min(a, b), max(a, b))]
        rows.append(np.array([i]))
        cols.append(np.array([j]))
        weights.append(np.array([w]))
    return rows, cols, weights


def pancreas_centerline(mask: np.ndarray, affine: np.ndarray, n_bins: int | None = None) -> Centerline:
    """Centre line of an elongated organ, ordered from its patient-right end.

    Args:
        mask: (X, Y, Z) boolean organ mask, any orientation.
        affine: 4x4 voxel -> RAS world (mm) matrix of ``mask``.
        n_bins: number of level sets used for the centroids (default: about one per 4 mm of length).
    """
    mask = _check_mask(mask, affine, "organ")
    affine = np.asarray(affine, dtype=np.float64)
    graph, world = _voxel_graph(mask, affine)
    if len(world) < 4:
        fraction = np.zeros(len(world))
        return Centerline(points_mm=world.mean(0, keepdims=True), length_mm=0.0, fraction=fraction)
    start = int(np.argmax(world[:, 0]))
    end_a = int(np.argmax(csgraph.dijkstra(graph, directed=False, indices=start)))
    from_a = csgraph.dijkstra(graph, directed=False, indices=end_a)
    end_b = int(np.argmax(from_a))
    from_b = csgraph.dijkstra(graph, directed=False, indices=end_b)
    coordinate = from_a / np.maximum(from_a + from_b, 1e-9)
    span_mm = float(from_a[end_b])
    bins = n_bins or int(np.clip(round(span_mm / 4.0), 6, 60))
    which = np.minimum((coordinate * bins).astype(int), bins - 1)
    centroids = np.array([world[which == b].mean(0) for b in range(bins) if np.any(which == b)])
    smooth = ndimage.gaussian_filter1d(centroids, sigma=1.0, axis=0, mode="nearest")
    smooth[0], smooth[-1] = centroids[0], centroids[-1]
    if smooth[0, 0] < smooth[-1, 0]:
        smooth = smooth[::-1]
    dense = _resample_polyline(smooth, step_mm=0.25)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    length = float(arc[-1])
    _, nearest = cKDTree(dense).query(world)
    fraction = arc[nearest] / max(length, 1e-9)
    return Centerline(points_mm=smooth, length_mm=length, fraction=fraction)


def _resample_polyline(points: np.ndarray, step_mm: float) -> np.ndarray:
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    if arc[-1] <= 0:
        return points[:1]
    samples = np.linspace(0.0, arc[-1], max(2, int(np.ceil(arc[-1] / step_mm)) + 1))
    return np.stack([np.interp(samples, arc, points[:, d]) for d in range(3)], axis=1)


def split_pancreas(
    pancreas: np.ndarray,
    affine: np.ndarray,
    boundaries: tuple[float, float] = PANCREAS_BOUNDARIES,
) -> dict[str, np.ndarray]:
    """Splits a pancreas mask into ``pancreas_head``/``pancreas_body``/``pancreas_tail`` along its centre line.

    Args:
        pancreas: (X, Y, Z) mask (bool or {0,1}), any orientation.
        affine: 4x4 voxel -> RAS world (mm) matrix.
        boundaries: centre-line fractions of the head/body and body/tail borders, measured from the
            patient-right (head) end; ``0 < b0 < b1 < 1``.

    Returns:
        Three boolean (X, Y, Z) masks that partition ``pancreas`` exactly. Within every connected piece
        of the input each part is one connected component (26-connectivity); a connected pancreas
        therefore gives exactly one component per part.
    """
    b0, b1 = boundaries
    if not 0.0 < b0 < b1 < 1.0:
        raise ValueError(f"pancreas boundaries must satisfy 0 < head/body < body/tail < 1, got {boundaries}")
    full = _check_mask(pancreas, affine, "pancreas")
    box, box_affine = crop_box(full, affine)
    mask = full[box]
    line = pancreas_centerline(mask, box_affine)
    coords = np.argwhere(mask)
    labels = np.zeros(mask.shape, dtype=np.uint8)
    labels[tuple(coords.T)] = 1 + (line.fraction >= b0).astype(np.uint8) + (line.fraction >= b1)
    labels = make_parts_contiguous(labels, mask, box_affine)
    names = ("pancreas_head", "pancreas_body", "pancreas_tail")
    parts = {}
    for i, name in enumerate(names):
        parts[name] = np.zeros(full.shape, dtype=bool)
        parts[name][box] = labels == i + 1
    return parts


def crop_box(mask: np.ndarray, affine: np.ndarray, margin_vox: int = 1) -> tuple[tuple[slice, ...], np.ndarray]:
    """Bounding box of ``mask`` (plus a margin) as slices, and the affine of the cropped array."""
    coords = np.argwhere(mask)
    lo = np.maximum(coords.min(0) - margin_vox, 0)
    hi = np.minimum(coords.max(0) + 1 + margin_vox, mask.shape)
    shift = np.eye(4)
    shift[:3, 3] = lo
    return tuple(slice(a, b) for a, b in zip(lo, hi)), np.asarray(affine, dtype=np.float64) @ shift


def make_parts_contiguous(labels: np.ndarray, organ: np.ndarray, affine: np.ndarray, max_rounds: int = 10) -> np.ndarray:
    """Keeps, per part and per connected piece of the organ, the largest component; strays join the nearest part.

    Args:
        labels: (X, Y, Z) integer part labels (0 = outside), non-zero exactly on ``organ``.
        organ: (X, Y, Z) boolean organ mask.
        affine: voxel -> world matrix (its column norms give the spacing used for "nearest").
    """
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    pieces = cc3d.connected_components(organ, connectivity=26)
    labels = labels.copy()
    for _ in range(max_rounds):
        stray = np.zeros(organ.shape, dtype=bool)
        for part in np.unique(labels[labels > 0]):
            comps = cc3d.connected_components(labels == part, connectivity=26)
            for piece in np.unique(pieces[labels == part]):
                inside = (pieces == piece) & (labels == part)
                ids, counts = np.unique(comps[inside], return_counts=True)
                if len(ids) > 1:
                    stray |= inside & (comps != ids[np.argmax(counts)])
        if not stray.any():
            return labels
        kept = (labels > 0) & ~stray
        for piece in np.unique(pieces[stray]):
            in_piece = pieces == piece
            source = kept & in_piece
            _, nearest = ndimage.distance_transform_edt(~source, sampling=spacing, return_indices=True)
            targets = stray & in_piece
            labels[targets] = labels[tuple(idx[targets] for idx in nearest)]
    warnings.warn("pancreas parts did not become contiguous within 10 rounds; some strays remain", stacklevel=2)
    return labels


def split_kidneys(
    kidney: np.ndarray,
    affine: np.ndarray,
    midline_x_mm: float | None = None,
    min_piece_fraction: float = 0.2,
) -> dict[str, np.ndarray]:
    """Splits a combined kidney mask into ``kidney_left``/``kidney_right`` by patient side.

    Args:
        kidney: (X, Y, Z) mask of both kidneys (bool or {0,1}), any orientation.
        affine: 4x4 voxel -> RAS world (mm) matrix; world x grows toward the patient's right.
        midline_x_mm: world x (mm) of the body's midline, e.g. ``body_midline_x_mm(ct, affine)``; needed when
            the mask is one piece (horseshoe kidney, one kidney only).
        min_piece_fraction: a connected piece at least this fraction of the mask counts as a kidney.

    Two large pieces are ordered by the world x of their centroids (the larger x is the right kidney);
    smaller pieces join the nearer kidney. A single large piece is cut at the midline.
    """
    mask = _check_mask(kidney, affine, "kidney")
    affine = np.asarray(affine, dtype=np.float64)
    coords = np.argwhere(mask)
    world_x = voxel_to_world(coords, affine)[:, 0]
    pieces = cc3d.connected_components(mask, connectivity=26)[tuple(coords.T)]
    ids, counts = np.unique(pieces, return_counts=True)
    big = ids[counts >= min_piece_fraction * len(coords)]
    right = np.zeros(len(coords), dtype=bool)
    if len(big) >= 2:
        top2 = big[np.argsort([-counts[ids == b][0] for b in big])[:2]]
        centres = [world_x[pieces == b].mean() for b in top2]
        right_id, left_id = (top2[0], top2[1]) if centres[0] > centres[1] else (top2[1], top2[0])
        world = voxel_to_world(coords, affine)
        d_right, _ = cKDTree(world[pieces == right_id]).query(world)
        d_left, _ = cKDTree(world[pieces == left_id]).query(world)
        right = d_right < d_left
    else:
        if midline_x_mm is None:
            raise ValueError(
                "the kidney mask is a single piece (one kidney or a horseshoe kidney): its side needs the body "
                "midline; pass midline_x_mm (e.g. body_midline_x_mm(ct_hu, affine))"
            )
        right = world_x > midline_x_mm
    out = {"kidney_left": np.zeros(mask.shape, dtype=bool), "kidney_right": np.zeros(mask.shape, dtype=bool)}
    out["kidney_right"][tuple(coords[right].T)] = True
    out["kidney_left"][tuple(coords[~right].T)] = True
    return out


def body_midline_x_mm(ct_hu: np.ndarray, affine: np.ndarray, threshold_hu: float = -500.0) -> float:
    """World x (mm) of the body's left-right midline: centroid of the largest above-threshold component."""
    body = cc3d.largest_k(np.asarray(ct_hu) > threshold_hu, k=1, connectivity=6) > 0
    if not body.any():
        raise ValueError(f"no voxel above {threshold_hu} HU: cannot find the body midline")
    centre = np.array(ndimage.center_of_mass(body))
    return float(voxel_to_world(centre[None], affine)[0, 0])


def check_kidney_sides(left: np.ndarray, right: np.ndarray, affine: np.ndarray, source: str = "") -> str | None:
    """Returns a warning text when ``kidney_left`` lies on the patient's right of ``kidney_right``, else None.

    Both masks are in the grid of ``affine``; an empty mask is not checked. Sides are never swapped
    silently: the caller decides (``rsuper organs`` warns and records it).
    """
    if not np.any(left) or not np.any(right):
        return None
    x_left = voxel_to_world(np.argwhere(left).mean(0)[None], affine)[0, 0]
    x_right = voxel_to_world(np.argwhere(right).mean(0)[None], affine)[0, 0]
    if x_left > x_right:
        where = f" in {source}" if source else ""
        return (
            f"kidney_left{where} lies on the patient's RIGHT of kidney_right (world x {x_left:.1f} > {x_right:.1f} mm "
            "in RAS): the labels or the affine look flipped; check the file's orientation before training"
        )
    return None
