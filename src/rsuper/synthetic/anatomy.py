"""Synthetic abdominal CT anatomy: body, organs with true sub-segments, and hypodense tumors.

All geometry is in millimetres in canonical RAS (array axis 0 -> patient Right, 1 -> Anterior,
2 -> Superior); the origin is the centre of the field of view. Arrays have shape (X, Y, Z).

True sub-segments (documented partitions, see docs/phantoms.md):
- pancreas: a curved tube around a smooth 3D centre line from the head (patient right, beside a
  duodenal C-loop) to the tail (patient left, at the splenic hilum). Every pancreas voxel takes the
  arc-length fraction ``t`` of its nearest centre-line point: head ``t < 0.3``, body ``0.3 <= t < 0.7``,
  tail ``t >= 0.7`` (fractions configurable per case).
- liver (Couinaud 1-8): segment 1 (caudate) is an ellipsoid in front of / left of the inferior vena
  cava (IVC). The rest is cut by three vertical planes through the IVC axis at azimuths
  ``theta_R < theta_M < theta_L`` (degrees from patient right toward anterior, hepatic-vein planes)
  and one transverse portal plane ``z = z_portal``: right posterior sector (theta < theta_R) = 7 above /
  6 below; right anterior (theta_R..theta_M) = 8 / 5; medial left (theta_M..theta_L) = 4; left lateral
  (theta >= theta_L) = 2 (posterior-superior) / 3 (anterior-inferior) of an oblique plane through the
  raised left lobe.
- kidneys: kidney_left / kidney_right are separate organs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from rsuper.labels import lesion_class

ORGANS: tuple[str, ...] = ("liver", "spleen", "kidney_left", "kidney_right", "pancreas")
PANCREAS_TOKENS: tuple[str, ...] = ("head", "body", "tail")
LIVER_TOKENS: tuple[str, ...] = tuple(f"segment {i}" for i in range(1, 9))
KIDNEY_TOKENS: tuple[str, ...] = ("left", "right")
TUMOR_ORGANS: tuple[str, ...] = ("pancreas", "kidney", "liver")


@dataclass(frozen=True)
class AnatomySettings:
    """Image-level knobs of one phantom. Sizes in mm, intensities in HU."""

    fov_mm: tuple[float, float, float] = (300.0, 250.0, 180.0)
    spacing_mm: tuple[float, float, float] = (2.5, 2.5, 2.5)
    noise_sd_hu: tuple[float, float] = (10.0, 25.0)
    tumor_contrast_hu: float = -40.0
    tumor_contrast_spread_hu: float = 10.0
    tumor_edge_mm: float = 1.5
    tumor_heterogeneity_hu: float = 8.0
    pancreas_split: tuple[float, float] = (0.3, 0.7)
    phase_weights: tuple[float, float, float] = (0.7, 0.15, 0.15)  # portal venous, arterial, non-contrast

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (X, Y, Z) covering the field of view."""
        x, y, z = (max(8, int(round(f / s))) for f, s in zip(self.fov_mm, self.spacing_mm))
        return x, y, z

    @property
    def affine(self) -> np.ndarray:
        """RAS affine (4x4): voxel (i, j, k) -> mm, with the FOV centred on the origin."""
        aff = np.diag([*self.spacing_mm, 1.0])
        aff[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(self.shape, self.spacing_mm)]
        return aff


@dataclass
class TumorPlan:
    """A tumor to place: organ (report name), wanted sub-segment token, 3 diameters (mm, largest first)."""

    organ: str
    token: str
    diameters_mm: tuple[float, float, float]


@dataclass
class PlacedTumor:
    """A placed tumor: its mask and where it truly lies."""

    plan: TumorPlan
    mask: np.ndarray  # bool (X, Y, Z)
    centre_vox: tuple[float, float, float]
    centre_mm: tuple[float, float, float]
    location_fractions: dict[str, float]  # token -> fraction of tumor voxels
    contrast_hu: float
    axial_position: float  # 0 = inferior end of the organ, 1 = superior end (kidney poles)

    @property
    def tokens(self) -> list[str]:
        """Sub-segment tokens holding at least 10 % of the tumor, in anatomical order."""
        order = {t: i for i, t in enumerate(PANCREAS_TOKENS + LIVER_TOKENS + KIDNEY_TOKENS)}
        kept = [t for t, f in self.location_fractions.items() if f >= 0.10]
        return sorted(kept, key=order.__getitem__)


@dataclass
class Phantom:
    """One generated patient: CT in HU (int16), masks (uint8) and truths."""

    ct_hu: np.ndarray
    affine: np.ndarray
    organs: dict[str, np.ndarray]
    subsegments: dict[str, np.ndarray]
    lesions: dict[str, np.ndarray]
    tumors: list[PlacedTumor]
    findings: dict[str, object] = field(default_factory=dict)  # incidental, report-worthy facts


class _Grid:
    """Coordinates (mm) of every voxel centre, plus a smooth random deformation."""

    def __init__(self, settings: AnatomySettings, rng: np.random.Generator) -> None:
        self.shape = settings.shape
        self.spacing = np.asarray(settings.spacing_mm, dtype=np.float32)
        self.affine = settings.affine
        axes = [
            (np.arange(n, dtype=np.float32) * s + o).astype(np.float32)
            for n, s, o in zip(self.shape, self.spacing, self.affine[:3, 3])
        ]
        self.axes = axes
        x, y, z = np.meshgrid(*axes, indexing="ij")
        warp = [_smooth_field(rng, self.shape, cells=4, amplitude=5.0) for _ in range(3)]
        self.x, self.y, self.z = x + warp[0], y + warp[1], z + warp[2]

    def ellipsoid(self, centre, semi, rotation: np.ndarray | None = None, reach: float = 1.0) -> np.ndarray:
        """Normalised ellipsoid radius (float32 (X, Y, Z)); exact where it is <= `reach`, else >= reach."""
        centre, semi = [float(c) for c in centre], [float(s) for s in semi]  # keep float32 arithmetic
        reach_mm = max(semi) * reach + 12.0
        lo = np.floor(self.to_voxel(np.asarray(centre) - reach_mm)).astype(int).clip(0, np.array(self.shape))
        hi = np.ceil(self.to_voxel(np.asarray(centre) + reach_mm)).astype(int).clip(0, np.array(self.shape))
        box = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
        d = [self.x[box] - centre[0], self.y[box] - centre[1], self.z[box] - centre[2]]
        if rotation is not None:
            r = rotation.T  # world -> local
            d = [r[i, 0] * d[0] + r[i, 1] * d[1] + r[i, 2] * d[2] for i in range(3)]
        out = np.full(self.shape, 2.0 * reach + 1.0, dtype=np.float32)
        out[box] = np.sqrt((d[0] / semi[0]) ** 2 + (d[1] / semi[1]) ** 2 + (d[2] / semi[2]) ** 2)
        return out

    def to_voxel(self, point_mm) -> np.ndarray:
        """Unwarped mm -> voxel index (float)."""
        return (np.asarray(point_mm) - self.affine[:3, 3]) / self.spacing


def _smooth_field(rng: np.random.Generator, shape, cells: int, amplitude: float) -> np.ndarray:
    """Smooth random field (float32 `shape`, sd ~ `amplitude`) with about `cells` bumps per axis.

    Separable Gaussian-basis upsampling of a coarse random grid (much faster than ndimage.zoom).
    """
    coarse = rng.standard_normal((cells + 1,) * 3).astype(np.float32)
    bases = []
    for n in shape:
        pos = np.linspace(0.0, cells, n, dtype=np.float32)[:, None]
        w = np.exp(-0.5 * (pos - np.arange(cells + 1, dtype=np.float32)[None, :]) ** 2 / 0.6**2)
        bases.append(w / w.sum(1, keepdims=True))
    out = np.einsum("ia,jb,kc,abc->ijk", *bases, coarse, optimize=True)
    return (out * (amplitude / max(float(out.std()), 1e-6))).astype(np.float32)


def _rot(rng: np.random.Generator, max_deg: tuple[float, float, float], base_deg=(0.0, 0.0, 0.0)) -> np.ndarray:
    angles = [b + rng.uniform(-m, m) for b, m in zip(base_deg, max_deg)]
    return Rotation.from_euler("xyz", angles, degrees=True).as_matrix().astype(np.float32)


def _jitter(rng: np.random.Generator, point, sd: float) -> np.ndarray:
    return np.asarray(point, dtype=np.float32) + rng.normal(0.0, sd, 3).astype(np.float32)


def _pancreas_centreline(rng: np.random.Generator) -> np.ndarray:
    """(N, 3) mm points from the head (uncinate, patient right) to the tail (splenic hilum)."""
    control = np.array(
        [[38, 2, -26], [32, 10, -12], [10, 24, -3], [-22, 18, 4], [-48, 2, 12], [-70, -16, 20]],
        dtype=np.float64,
    )
    control = control + rng.normal(0.0, 3.0, control.shape)
    chord = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(control, axis=0), axis=1))]
    spline = CubicSpline(chord, control, bc_type="natural")
    pts = spline(np.linspace(0.0, chord[-1], 400))
    return pts.astype(np.float32)


def _tube(g: "_Grid", line: np.ndarray, radius_mm: np.ndarray) -> np.ndarray:
    """Normalised distance to a tube (float32 (X, Y, Z)): distance to the nearest of the (N, 3)
    centre-line samples divided by that sample's radius; <= 1 inside, inf far away."""
    bound = float(radius_mm.max()) + 1.0
    lo = np.floor(g.to_voxel(line.min(0) - bound - 15.0)).astype(int).clip(0, np.array(g.shape))
    hi = np.ceil(g.to_voxel(line.max(0) + bound + 15.0)).astype(int).clip(0, np.array(g.shape))
    box = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
    pts = np.stack([g.x[box].ravel(), g.y[box].ravel(), g.z[box].ravel()], axis=1)
    step = max(1, len(line) // 12)
    gap = float(np.linalg.norm(np.diff(line, axis=0), axis=1).max()) * step
    near = np.zeros(len(pts), dtype=bool)
    for c in line[::step]:
        diff = pts - c
        near |= np.einsum("ij,ij->i", diff, diff) <= (bound + gap) ** 2
    dist = np.full(len(pts), np.inf, dtype=np.float32)
    d, i = cKDTree(line).query(pts[near], distance_upper_bound=bound)
    inside = np.isfinite(d)
    sel = np.flatnonzero(near)[inside]
    dist[sel] = d[inside] / radius_mm[i[inside]]
    out = np.full(g.shape, np.inf, dtype=np.float32)
    out[box] = dist.reshape(g.x[box].shape)
    return out


class _CentreLine:
    """Arc-length position along the pancreas centre line, used for the true head/body/tail split."""

    def __init__(self, grid: "_Grid", line: np.ndarray, frac: np.ndarray) -> None:
        self.grid, self.tree, self.frac = grid, cKDTree(line), frac

    def partition(self, mask: np.ndarray, split: tuple[float, float]) -> np.ndarray:
        """int8 (X, Y, Z): 1 head, 2 body, 3 tail for the voxels of `mask`, 0 elsewhere."""
        g = self.grid
        pts = np.stack([g.x[mask], g.y[mask], g.z[mask]], axis=1)
        out = np.zeros(mask.shape, dtype=np.int8)
        if len(pts):
            t = self.frac[self.tree.query(pts)[1]]
            out[mask] = 1 + (t >= split[0]).astype(np.int8) + (t >= split[1]).astype(np.int8)
        return out


def _arc_fraction(points: np.ndarray) -> np.ndarray:
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.r_[0.0, np.cumsum(seg)]
    return (s / s[-1]).astype(np.float32)


def generate_anatomy(rng: np.random.Generator, settings: AnatomySettings, plans: list[TumorPlan]) -> Phantom:
    """Builds one phantom with the planned tumors; returns HU image, masks and truths."""
    g = _Grid(settings, rng)
    shape = g.shape
    img = np.full(shape, -1000.0, dtype=np.float32)
    findings: dict[str, object] = {}

    # Body: skin-fat ellipse, muscle wall, abdominal cavity.
    a, b = rng.uniform(132, 146), rng.uniform(98, 112)
    fat, muscle = rng.uniform(8, 24), rng.uniform(7, 12)
    zscale = 1.0 + 0.04 * (g.z / 90.0)
    r_body = np.sqrt((g.x / (a * zscale)) ** 2 + (g.y / (b * zscale)) ** 2)
    body = r_body <= 1.0
    r_wall = np.sqrt((g.x / (a * zscale - fat)) ** 2 + (g.y / (b * zscale - fat)) ** 2)
    r_cav = np.sqrt((g.x / (a * zscale - fat - muscle)) ** 2 + (g.y / (b * zscale - fat - muscle)) ** 2)
    cavity = r_cav <= 1.0
    img[body] = -105.0 + rng.uniform(-10, 10)
    img[(r_wall <= 1.0) & ~cavity] = 50.0
    img[cavity] = -90.0 + 8.0 * _smooth_field(rng, shape, 6, 1.0)[cavity]

    # Hard structures: spine, paraspinal muscles, aorta, IVC (they carve organs).
    weights = np.asarray(settings.phase_weights, dtype=float)
    phase = rng.choice(["portal venous", "arterial", "non-contrast"], p=weights / weights.sum())
    findings["phase"] = str(phase)
    enh = {"portal venous": 1.0, "arterial": 0.75, "non-contrast": 0.0}[str(phase)]
    spine_c = np.array([0.0, -b + fat + muscle + 22.0], dtype=np.float32)
    r_vert = np.hypot(g.x - spine_c[0], g.y - spine_c[1])
    vert = r_vert <= 17.0
    post = (((g.x / 22.0) ** 2 + ((g.y - spine_c[1] + 30.0) / 9.0) ** 2) <= 1.0) & body
    canal = np.hypot(g.x - spine_c[0], g.y - (spine_c[1] - 22.0)) <= 7.0
    paraspinal = (((np.abs(g.x) - 32.0) / 20.0) ** 2 + ((g.y - spine_c[1] + 22.0) / 15.0) ** 2 <= 1.0) & body
    aorta = np.hypot(g.x + 12.0, g.y - (spine_c[1] + 27.0)) <= rng.uniform(9, 12)
    ivc_c = np.array([18.0 + rng.uniform(-3, 3), spine_c[1] + 30.0], dtype=np.float32)
    ivc = np.hypot(g.x - ivc_c[0], g.y - ivc_c[1]) <= rng.uniform(9, 12)
    img[paraspinal] = 50.0
    img[vert | post] = 320.0
    img[vert & (r_vert > 14.0)] = 650.0
    img[canal] = 15.0
    img[aorta] = 45.0 + 170.0 * enh * (1.3 if phase == "arterial" else 1.0)
    img[ivc] = 40.0 + 110.0 * enh * (0.5 if phase == "arterial" else 1.0)
    hard = vert | post | canal | paraspinal | aorta | ivc
    free = cavity & ~hard

    # Organs (later ones take shared voxels from earlier ones).
    labels = np.zeros(shape, dtype=np.uint8)
    liver_c = _jitter(rng, (32.0, -2.0, 24.0), 4.0)
    la, lb, lh = rng.uniform(90, 102), rng.uniform(74, 86), rng.uniform(60, 70)
    liver_rot = _rot(rng, (4, 4, 10))
    d = [g.x - liver_c[0], g.y - liver_c[1], g.z - liver_c[2]]
    lx = sum(liver_rot.T[0, i] * d[i] for i in range(3)) / la
    lz = sum(liver_rot.T[2, i] * d[i] for i in range(3))
    right = 1.0 / (1.0 + np.exp(-(lx + 0.15) / 0.18))
    taper = 0.42 + 0.58 * right  # the left lobe is thinner and sits higher (above the pancreas)
    lift = (1.0 - right) * 0.45 * lh
    liver_rho = g.ellipsoid(liver_c, (la, lb, lh), liver_rot)
    liver_rho = np.sqrt(np.maximum(liver_rho**2 - (lz / lh) ** 2 + ((lz - lift) / (lh * taper)) ** 2, 0.0))
    spleen_rho = g.ellipsoid(
        _jitter(rng, (-84.0, -30.0, 30.0), 4.0),
        (rng.uniform(23, 28), rng.uniform(44, 54), rng.uniform(48, 58)),
        _rot(rng, (8, 8, 10), (0, 0, -35)),
    )
    ks = rng.uniform(0.9, 1.1)
    kidney_axes = (27.0 * ks, 24.0 * ks, 52.0 * ks)
    kid_l_c = _jitter(rng, (-70.0, spine_c[1] + 28.0, -6.0), 3.0)
    kid_r_c = _jitter(rng, (70.0, spine_c[1] + 26.0, -18.0), 3.0)
    kid_l_rot = _rot(rng, (5, 5, 8), (0, 12, 25))
    kid_r_rot = _rot(rng, (5, 5, 8), (0, -12, -25))
    kid_l_rho = g.ellipsoid(kid_l_c, kidney_axes, kid_l_rot)
    kid_r_rho = g.ellipsoid(kid_r_c, kidney_axes, kid_r_rot)

    line = _pancreas_centreline(rng)
    frac = _arc_fraction(line)
    rs = rng.uniform(0.95, 1.15)
    radius_at = np.interp(frac, [0.0, 0.25, 0.45, 0.75, 1.0], [16.0, 15.0, 11.5, 10.0, 8.0]).astype(np.float32) * rs
    pan_dist = _tube(g, line, radius_at)
    pancreas_axis = _CentreLine(g, line, frac)

    for label, rho in enumerate((liver_rho, spleen_rho, kid_l_rho, kid_r_rho, pan_dist), start=1):
        labels[(rho <= 1.0) & free] = label

    # Gallbladder (fluid, under the liver) and incidental findings that the report may mention.
    findings["cholecystectomy"] = bool(rng.random() < 0.08)
    findings["gallstones"] = bool(not findings["cholecystectomy"] and rng.random() < 0.12)
    findings["fatty_liver"] = bool(rng.random() < 0.10)
    findings["kidney_stone"] = str(rng.choice(["left", "right"])) if rng.random() < 0.10 else ""
    gb_c = _jitter(rng, (liver_c[0] + 5.0, liver_c[1] + 45.0, liver_c[2] - 40.0), 3.0)
    gb = (g.ellipsoid(gb_c, (15.0, 15.0, 32.0), _rot(rng, (10, 10, 10), (-30, 0, 0))) <= 1.0) & free
    if findings["cholecystectomy"]:
        gb[:] = False
    labels[gb & (labels == 1)] = 0

    # Background: stomach, duodenal C-loop, bowel loops, mesenteric vessels (never inside organs).
    bg = free & (labels == 0) & ~gb
    stomach_c = _jitter(rng, (-40.0, 42.0, 40.0), 4.0)
    stomach = (g.ellipsoid(stomach_c, (40.0, 28.0, 34.0), _rot(rng, (10, 10, 20))) <= 1.0) & bg
    img[stomach] = 15.0 + 25.0 * enh
    img[stomach & (g.y > 42.0 + rng.uniform(5, 20))] = -950.0
    c_loop = [[12, 14, 30], [24, 4, 8], [20, -4, -14], [0, -6, -22], [-24, 2, -16]]  # C-loop around the head
    duo_pts = line[0] + np.array(c_loop, dtype=np.float32)
    duo_line = CubicSpline(np.arange(5), duo_pts)(np.linspace(0, 4, 120)).astype(np.float32)
    duo = (_tube(g, duo_line, np.full(len(duo_line), 9.0, dtype=np.float32)) <= 1.0) & bg
    img[duo] = 30.0 + 20.0 * enh
    img[duo & (_smooth_field(rng, shape, 10, 1.0) > 1.0)] = -900.0
    for _ in range(int(rng.integers(4, 9))):
        c = np.array([rng.uniform(-90, 90), rng.uniform(0, 80), rng.uniform(-85, -20)])
        loop = (g.ellipsoid(c, rng.uniform(12, 26, 3), _rot(rng, (30, 30, 90))) <= 1.0) & bg & ~duo
        img[loop] = rng.choice([25.0 + 20.0 * enh, -880.0], p=[0.75, 0.25])
    for cx in (0.0, -8.0):
        img[(np.hypot(g.x - cx, g.y - (line[100, 1] - 16.0)) <= 5.0) & bg & (g.z < line[100, 2])] = 40.0 + 120.0 * enh
    img[gb] = rng.uniform(0, 20)
    if findings["gallstones"]:
        stones = (g.ellipsoid(gb_c - np.array([0.0, 0.0, 18.0]), (6.0, 6.0, 6.0)) <= 1.0) & gb
        img[stones] = 500.0

    # Organ parenchyma.
    liver_hu = 55.0 + 45.0 * enh + rng.uniform(-8, 8) - (40.0 if findings["fatty_liver"] else 0.0)
    organ_hu = {
        1: liver_hu,
        2: 45.0 + 70.0 * enh + rng.uniform(-8, 8),
        3: 35.0 + 125.0 * enh + rng.uniform(-10, 10),
        4: 35.0 + 125.0 * enh + rng.uniform(-10, 10),
        5: 40.0 + 50.0 * enh + rng.uniform(-8, 8),
    }
    texture = 6.0 * _smooth_field(rng, shape, 12, 1.0)
    for label, hu in organ_hu.items():
        m = labels == label
        img[m] = hu + texture[m]
    if phase == "arterial":
        for label, rho in ((3, kid_l_rho), (4, kid_r_rho)):
            img[(labels == label) & (rho < 0.68)] -= 55.0
    if findings["kidney_stone"]:
        stone_c = kid_l_c if findings["kidney_stone"] == "left" else kid_r_c
        img[(g.ellipsoid(stone_c, (2.0, 2.0, 2.0)) <= 1.0) | (g.ellipsoid(stone_c, (1.0, 1.0, 1.0)) <= 2.0)] = 700.0

    # True sub-segment partitions (defined over space, applied to organ masks).
    liver_part, vein_angles = _couinaud_partition(g, rng, ivc_c, liver_c, lh)
    _paint_hepatic_veins(g, img, labels == 1, ivc_c, float(liver_c[2] + 0.3 * lh), vein_angles, liver_hu, enh)
    split = settings.pancreas_split
    tumors = _place_tumors(rng, g, settings, plans, labels, img, organ_hu, liver_part, pancreas_axis, split, free)
    pancreas_part = pancreas_axis.partition(labels == 5, split)

    # Partial volume, shading, noise.
    img = ndimage.gaussian_filter(img, sigma=rng.uniform(0.5, 0.8))
    img += 6.0 * _smooth_field(rng, shape, 3, 1.0)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.6)
    noise *= rng.uniform(*settings.noise_sd_hu) / float(noise.std())
    img += noise
    img[~body] = -1000.0 + 8.0 * rng.standard_normal(int((~body).sum())).astype(np.float32)
    ct = np.clip(np.round(img), -1024, 3071).astype(np.int16)

    organs = {name: (labels == i + 1).astype(np.uint8) for i, name in enumerate(ORGANS)}
    subsegments = {
        f"pancreas_{t}": (organs["pancreas"].astype(bool) & (pancreas_part == i + 1)).astype(np.uint8)
        for i, t in enumerate(PANCREAS_TOKENS)
    }
    for k in range(1, 9):
        subsegments[f"liver_segment_{k}"] = (organs["liver"].astype(bool) & (liver_part == k)).astype(np.uint8)
    lesions = {lesion_class(o): np.zeros(shape, np.uint8) for o in TUMOR_ORGANS}
    for t in tumors:
        lesions[lesion_class(t.plan.organ)][t.mask] = 1
    findings["liver_hu"] = float(liver_hu)
    return Phantom(ct, g.affine, organs, subsegments, lesions, tumors, findings)


def _paint_hepatic_veins(g: _Grid, img, liver, ivc_c, z0: float, angles, liver_hu: float, enh: float) -> None:
    """Right, middle and left hepatic veins: tubes from the IVC along the segment planes (inside the liver).

    Brighter than parenchyma after contrast, darker without: vessel-like confounders for tumors.
    """
    hu = liver_hu + (35.0 * enh - 25.0 * (1.0 - enh))
    s = np.linspace(0.0, 90.0, 72, dtype=np.float32)[:, None]
    for theta in angles:
        direction = np.array([np.cos(np.radians(theta)), np.sin(np.radians(theta)), 0.15], dtype=np.float32)
        line = np.array([ivc_c[0], ivc_c[1], z0], dtype=np.float32) + s * direction
        img[(_tube(g, line, np.linspace(6.0, 3.0, len(line), dtype=np.float32)) <= 1.0) & liver] = hu


def _couinaud_partition(g: _Grid, rng, ivc_c, liver_c, liver_h) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Segment number 1..8 for every voxel (int8 (X, Y, Z)) and the three vein-plane azimuths (degrees)."""
    theta = np.degrees(np.arctan2(g.y - ivc_c[1], g.x - ivc_c[0]))
    theta = np.where(theta <= -90.0, theta + 360.0, theta)
    t_r, t_m, t_l = 28.0 + rng.uniform(-5, 5), 78.0 + rng.uniform(-5, 5), 112.0 + rng.uniform(-5, 5)
    z_portal = liver_c[2] - 0.1 * liver_h + rng.uniform(-4, 4) + 0.08 * (g.x - liver_c[0])
    sup = g.z >= z_portal
    part = np.where(theta < t_r, np.where(sup, 7, 6), 0)
    part = np.where((theta >= t_r) & (theta < t_m), np.where(sup, 8, 5), part)
    part = np.where((theta >= t_m) & (theta < t_l), 4, part)
    # Left lateral: 2 (posterior-superior) / 3 (anterior-inferior) split by an oblique plane through the
    # raised left lobe.
    upper_left = (g.z - (liver_c[2] + 0.4 * liver_h)) - 0.6 * (g.y - liver_c[1]) >= 0.0
    part = np.where(theta >= t_l, np.where(upper_left, 2, 3), part)
    caudate_c = (ivc_c[0] - 16.0, ivc_c[1] + 14.0, liver_c[2] - 0.05 * liver_h)
    part[g.ellipsoid(caudate_c, (17.0, 13.0, 28.0)) <= 1.0] = 1
    return part.astype(np.int8), (t_r, t_m, t_l)




def _token_region(organ: str, token: str, labels, liver_part, pancreas_part) -> np.ndarray:
    if organ == "liver":
        return (labels == 1) & (liver_part == int(token.split()[1]))
    if organ == "pancreas":
        return (labels == 5) & (pancreas_part == PANCREAS_TOKENS.index(token) + 1)
    return labels == (3 if token == "left" else 4)


def _fractions(organ: str, mask: np.ndarray, labels, liver_part, pancreas_part) -> dict[str, float]:
    n = max(int(mask.sum()), 1)
    if organ == "liver":
        vals = liver_part[mask]
        return {f"segment {k}": float((vals == k).sum()) / n for k in range(1, 9) if (vals == k).any()}
    if organ == "pancreas":
        vals = pancreas_part[mask]
        return {t: float((vals == i + 1).sum()) / n for i, t in enumerate(PANCREAS_TOKENS) if (vals == i + 1).any()}
    vals = labels[mask]
    return {t: float((vals == lab).sum()) / n for t, lab in (("left", 3), ("right", 4)) if (vals == lab).any()}


def _place_tumors(
    rng, g: _Grid, settings: AnatomySettings, plans, labels, img, organ_hu, liver_part, pancreas_axis, split, free
):
    """Places each planned tumor deep inside its sub-segment; tumors join their organ's mask."""
    placed: list[PlacedTumor] = []
    het = _smooth_field(rng, g.shape, 16, 1.0)
    occupied = np.zeros(g.shape, dtype=bool)
    spacing = tuple(float(s) for s in g.spacing)
    shell = max(1, int(round(3.0 / min(spacing))))  # a free 3 mm shell keeps instances separate components
    for plan in plans:
        pancreas_part = pancreas_axis.partition(labels == 5, split) if plan.organ == "pancreas" else None
        region = _token_region(plan.organ, plan.token, labels, liver_part, pancreas_part)
        where = np.argwhere(region)
        if len(where) == 0:
            continue
        box = tuple(slice(max(lo - 2, 0), hi + 3) for lo, hi in zip(where.min(0), where.max(0)))
        # Depth inside the wanted sub-segment, so the tumor lies mostly in it (it may spill over).
        depth = ndimage.distance_transform_edt(region[box] & ~occupied[box], sampling=spacing)
        target = min(plan.diameters_mm[0] / 2.0, 0.85 * float(depth.max()))
        candidates = np.argwhere(depth >= max(target, 1e-3))
        if len(candidates) == 0:
            continue
        cv = candidates[rng.integers(len(candidates))] + np.array([b.start for b in box])
        centre = np.array([g.x[tuple(cv)], g.y[tuple(cv)], g.z[tuple(cv)]], dtype=np.float32)
        semi = np.asarray(plan.diameters_mm, dtype=np.float32) / 2.0
        rho = g.ellipsoid(centre, semi, _rot(rng, (180, 180, 180)), reach=1.6)
        near = np.argwhere(rho <= 1.6)
        tbox = tuple(slice(max(lo - shell, 0), hi + shell + 1) for lo, hi in zip(near.min(0), near.max(0)))
        rho_b = rho[tbox]
        mask_b = (rho_b <= 1.0) & free[tbox] & ~occupied[tbox]
        if not mask_b.any():
            continue
        mask = np.zeros(g.shape, dtype=bool)
        mask[tbox] = mask_b
        # Tumors displace whatever they grow into: they become part of their organ.
        labels[mask] = labels[tuple(cv)]
        occupied[tbox] |= ndimage.binary_dilation(mask_b, iterations=shell)
        contrast = min(-5.0, settings.tumor_contrast_hu + rng.uniform(-1, 1) * settings.tumor_contrast_spread_hu)
        edge = rho_b <= 1.6
        r_mm = (1.0 - rho_b[edge]) * float(semi.min())
        profile = 1.0 / (1.0 + np.exp(-r_mm / max(settings.tumor_edge_mm / 2.0, 1e-3)))
        tumor_hu = organ_hu[int(labels[tuple(cv)])] + contrast + settings.tumor_heterogeneity_hu * het[tbox][edge]
        img_b = img[tbox]
        img_b[edge] = img_b[edge] * (1.0 - profile) + tumor_hu * profile
        z_range = where[:, 2].min(), where[:, 2].max()
        placed.append(
            PlacedTumor(
                plan=plan,
                mask=mask,
                centre_vox=tuple(float(v) for v in cv),
                centre_mm=tuple(float(v) for v in (g.affine[:3, :3] @ cv + g.affine[:3, 3])),
                location_fractions={},
                contrast_hu=float(contrast),
                axial_position=float((cv[2] - z_range[0]) / max(z_range[1] - z_range[0], 1)),
            )
        )
    pancreas_part = pancreas_axis.partition(labels == 5, split)
    for t in placed:  # fractions after all tumors have joined the organs
        t.location_fractions = _fractions(t.plan.organ, t.mask, labels, liver_part, pancreas_part)
    return placed
