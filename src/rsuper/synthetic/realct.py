"""Second phantom family, "realct": one real abdominal CT deformed per patient, with inserted tumors.

The demo family (``rsuper.synthetic.phantoms``) builds every organ from geometric primitives. This family starts
from a real CT and its TotalSegmentator organ labels (``../shared/data/totalseg_example``, 122 x 101 x 30
voxels of 3 mm, non-contrast) and makes each "patient" as follows (docs/phantoms.md, "Second family: realct"):

1. incidental findings painted on the source (cholecystectomy, gallstones, fatty liver, kidney stone);
2. a contrast phase: per-structure HU shifts (``PHASE_SHIFT_HU``) added to the non-contrast source;
3. one coordinate map from the output grid to the source (random affine: scale, rotation, translation;
   a smooth elastic displacement; a slight mass effect around each tumor), sampled with scipy
   ``map_coordinates``: the CT linearly, the labels (organs and their true sub-segments) by nearest neighbour;
4. 0-3 hypodense tumors placed in the deformed organs, 20-70 HU below the local organ mean;
5. slight blur and added noise;
6. the demo family's report writer (``rsuper.synthetic.reports``) and gold tables.

It writes exactly the demo family's layout and files (docs/phantoms.md), with ``"family": "realct"`` in
``phantoms.json``; case *i* draws from ``SeedSequence([seed, i])``, whatever the number of workers.

Example:
    >>> summary = generate_realct_dataset("realct", n_mask=4, n_report=20, n_test=6, seed=0)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from rsuper.labels import canonical_class_name, lesion_class
from rsuper.anatomy.organ_masks import align_to_grid, read_label_map
from rsuper.anatomy.subsegments import split_pancreas
from rsuper.atomic import write_json_atomic
from rsuper.synthetic.anatomy import TUMOR_ORGANS, Phantom, PlacedTumor, TumorPlan
from rsuper.synthetic.reports import PANCREAS_SITES, ReportTumor, write_report
from rsuper.synthetic.phantoms import (
    PhantomSettings, case_id, dataset_counts, make_cases, plan_tumors, prepare_out_dir, truth_row, write_case,
    write_tables,
)
from rsuper.io import load_nifti, to_canonical
from rsuper.reports.schema import CaseFindings

FAMILY = "realct"
SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
DEFAULT_CT = SHARED_DATA / "totalseg_example" / "example_ct_sm.nii.gz"
DEFAULT_SEG = SHARED_DATA / "totalseg_example" / "example_seg.nii.gz"

DEFAULT_DIAMETERS_MM: dict[str, tuple[float, float]] = {
    "pancreas": (12.0, 30.0),
    "kidney": (12.0, 42.0),
    "liver": (12.0, 42.0),
}
PHASES: tuple[str, ...] = ("portal venous", "arterial", "non-contrast")
# HU added to the non-contrast source (liver 45, spleen 33, kidneys 11-15, pancreas -8 mean with partial volume,
# aorta 42 HU there), per phase and structure, times one per-case factor (bolus timing, 1 +/- phase_jitter)
# plus +/- 5 HU per structure. Kidney cortex = kidney voxels within 6 mm of the kidney surface.
PHASE_SHIFT_HU: dict[str, dict[str, float]] = {
    "portal venous": {
        "liver": 55.0, "spleen": 75.0, "pancreas": 50.0, "kidney cortex": 130.0, "kidney medulla": 120.0,
        "aorta": 130.0, "inferior vena cava": 110.0, "portal/splenic vein": 150.0, "adrenal glands": 40.0,
        "muscle": 10.0,
    },
    "arterial": {
        "liver": 15.0, "spleen": 65.0, "pancreas": 80.0, "kidney cortex": 160.0, "kidney medulla": 35.0,
        "aorta": 260.0, "inferior vena cava": 25.0, "portal/splenic vein": 60.0, "adrenal glands": 45.0,
        "muscle": 5.0,
    },
    "non-contrast": {},
}
ARTERIAL_SPLEEN_PATTERN_HU = 20.0  # SD of the smooth arciform (moire) pattern of the arterial spleen
FATTY_LIVER_HU = -40.0

# Internal label codes of the source map (uint8). Liver voxels carry their Couinaud segment, pancreas voxels
# their part, so one nearest-neighbour sampling deforms organs and true sub-segments together.
SPLEEN, KIDNEY_RIGHT, KIDNEY_LEFT, GALLBLADDER = 1, 2, 3, 4
_STRUCTURES: dict[int, tuple[str, ...]] = {
    SPLEEN: ("spleen",),
    KIDNEY_RIGHT: ("kidney_right",),
    KIDNEY_LEFT: ("kidney_left",),
    GALLBLADDER: ("gallbladder",),
    5: ("stomach",),
    6: ("aorta",),
    7: ("postcava",),
    8: ("portal_vein_and_splenic_vein",),
    9: ("adrenal_gland_left", "adrenal_gland_right"),
    10: ("autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right"),
    11: ("small_bowel", "duodenum", "colon"),
}
OTHER = 12  # any other labelled structure (bones, lungs, cord, ...)
_SHIFT_CODES = {"spleen": (SPLEEN,), "aorta": (6,), "inferior vena cava": (7,), "portal/splenic vein": (8,),
                "adrenal glands": (9,), "muscle": (10,)}
PANCREAS_CODES: dict[str, int] = {"head": 20, "body": 21, "tail": 22}
LIVER_CODES: dict[str, int] = {f"segment {k}": 30 + k for k in range(1, 9)}
KIDNEY_CODES: dict[str, int] = {"left": KIDNEY_LEFT, "right": KIDNEY_RIGHT}
_REQUIRED = ("liver", "pancreas", "kidney_left", "kidney_right", "spleen", "postcava")


@dataclass(frozen=True)
class RealCTSettings:
    """Knobs of the realct family (sizes in mm, intensities in HU). See ``generate_realct_dataset``."""

    ct_path: str
    seg_path: str
    spacing_mm: tuple[float, float, float] = (3.0, 3.0, 3.0)
    fov_mm: tuple[float, float, float] | None = None  # None: the source's field of view
    noise_sd_hu: tuple[float, float] = (2.0, 8.0)
    blur_sigma_vox: tuple[float, float] = (0.3, 0.6)
    tumor_contrast_hu: tuple[float, float] = (-70.0, -20.0)
    tumor_diameter_mm: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_DIAMETERS_MM))
    tumor_edge_mm: float = 1.5
    tumor_heterogeneity_hu: float = 6.0
    tumor_irregularity: float = 0.12
    min_inside_fraction: float = 0.6
    mass_effect: tuple[float, float] = (0.10, 0.25)
    organ_weights: dict[str, float] = field(default_factory=lambda: {"pancreas": 0.4, "kidney": 0.3, "liver": 0.3})
    healthy_fraction: float = 0.45
    mask_healthy_fraction: float | None = None
    mask_cover_locations: bool = False
    max_tumors: int = 3
    phase_weights: tuple[float, float, float] = (0.7, 0.15, 0.15)
    mask_phase_weights: tuple[float, float, float] | None = None
    phase_jitter: float = 0.15
    elastic_sd_mm: tuple[float, float] = (2.0, 5.0)
    elastic_sigma_mm: float = 30.0
    scale_range: float = 0.10
    rotation_deg: tuple[float, float, float] = (3.0, 3.0, 8.0)
    translation_mm: tuple[float, float, float] = (10.0, 10.0, 6.0)
    lps_fraction: float = 0.0

    def composition(self) -> PhantomSettings:
        """The demo family's composition settings, so ``plan_tumors`` draws tumors the same way."""
        return PhantomSettings(
            tumor_diameter_mm=dict(self.tumor_diameter_mm), organ_weights=dict(self.organ_weights),
            healthy_fraction=self.healthy_fraction, mask_healthy_fraction=self.mask_healthy_fraction,
            mask_cover_locations=self.mask_cover_locations, max_tumors=self.max_tumors,
        )


# ---- the source CT --------------------------------------------------------------------------------------------
@dataclass
class Source:
    """The real CT (float32 HU, canonical RAS), its labels as internal codes and the liver partition landmarks."""

    ct: np.ndarray
    codes: np.ndarray  # uint8; liver voxels hold 0 here (their segment code is drawn per case)
    affine: np.ndarray
    cortex: np.ndarray  # bool: kidney cortex (for the arterial phase)
    liver_vox: np.ndarray  # (N, 3) voxel indices of the liver
    liver_mm: np.ndarray  # (N, 3) their world coordinates
    liver_theta: np.ndarray  # (N,) azimuth (deg, from patient right toward anterior) around the IVC axis
    liver_ivc_y: np.ndarray  # (N,) world y of the IVC axis at each voxel's height
    ivc_fit: tuple[np.ndarray, np.ndarray]  # IVC axis x(z), y(z): polynomial coefficients (np.polyval)
    planes_deg: tuple[float, float, float]  # right, middle, left hepatic-vein plane azimuths
    z_portal_mm: float
    gallbladder: np.ndarray  # bool
    kidney_centre: dict[str, np.ndarray]  # side -> voxel index inside that kidney nearest its centroid

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.ct.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def missing_source_error(path: Path) -> FileNotFoundError:
    """The one-line error raised when the real example CT or its label map is absent."""
    return FileNotFoundError(
        f"{path} not found: the realct phantom family needs the real example CT and its TotalSegmentator labels "
        f"(../shared/data/totalseg_example beside the repository); pass ct_path= and seg_path="
    )


@lru_cache(maxsize=2)
def load_source(ct_path: str, seg_path: str) -> Source:
    """Reads the real CT and its TotalSegmentator label map (ids from the file's header table, else the
    ``total`` table), both in canonical RAS, and derives the landmarks of the true sub-segments."""
    for path in (Path(ct_path), Path(seg_path)):
        if not path.is_file():
            raise missing_source_error(path)
    ct0 = load_nifti(ct_path)
    seg_volume, id_to_name, _ = read_label_map(seg_path)
    seg = to_canonical(ct0.with_array(align_to_grid(seg_volume, ct0, seg_path).astype(np.int32)))
    ct = to_canonical(ct0)
    affine = ct.affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    name_of = {i: canonical_class_name(n, seg_path) for i, n in id_to_name.items()}
    masks: dict[str, np.ndarray] = {}
    for i in np.unique(seg.array):
        if i and int(i) in name_of:
            masks[name_of[int(i)]] = seg.array == i
    missing = [n for n in _REQUIRED if n not in masks or not masks[n].any()]
    if missing:
        raise ValueError(f"{seg_path} lacks {missing}: the realct family needs them on the CT")

    codes = np.zeros(ct.shape, dtype=np.uint8)
    codes[seg.array > 0] = OTHER
    for code, names in _STRUCTURES.items():
        for name in names:
            if name in masks:
                codes[masks[name]] = code
    parts = split_pancreas(masks["pancreas"], affine)
    for token, code in PANCREAS_CODES.items():
        codes[parts[f"pancreas_{token}"]] = code
    codes[masks["liver"]] = 0

    def world(idx: np.ndarray) -> np.ndarray:
        return idx @ affine[:3, :3].T + affine[:3, 3]

    # IVC axis: a straight line through the IVC's centroid per axial slice.
    ivc = world(np.argwhere(masks["postcava"]))
    zs = np.unique(ivc[:, 2])
    centres = np.array([ivc[ivc[:, 2] == z, :2].mean(0) for z in zs])
    deg = 1 if len(zs) > 1 else 0
    fit = (np.polyfit(zs, centres[:, 0], deg), np.polyfit(zs, centres[:, 1], deg))
    liver_vox = np.argwhere(masks["liver"])
    liver_mm = world(liver_vox)
    ivc_x, ivc_y = np.polyval(fit[0], liver_mm[:, 2]), np.polyval(fit[1], liver_mm[:, 2])
    theta = np.degrees(np.arctan2(liver_mm[:, 1] - ivc_y, liver_mm[:, 0] - ivc_x))
    theta = np.where(theta <= -90.0, theta + 360.0, theta)
    # Middle hepatic vein plane (Cantlie line): through the IVC and the gallbladder fossa.
    gallbladder = masks.get("gallbladder", np.zeros(ct.shape, dtype=bool))
    if gallbladder.any():
        gb = world(np.argwhere(gallbladder)).mean(0)
        t_m = float(np.degrees(np.arctan2(gb[1] - np.polyval(fit[1], gb[2]), gb[0] - np.polyval(fit[0], gb[2]))))
    else:  # the right lobe holds about 62 % of the liver
        t_m = float(np.quantile(theta, 0.62))
    t_r = float(np.median(theta[theta < t_m]))  # right hepatic vein: halves the right lobe (anterior / posterior)
    left = np.sort(theta[theta >= t_m])
    t_l = float(left[int(0.45 * (len(left) - 1))])  # left hepatic vein / umbilical fissure: segment 4 = 45 %
    portal = masks.get("portal_vein_and_splenic_vein", np.zeros(ct.shape, dtype=bool))
    hilum = portal & ndimage.binary_dilation(masks["liver"], iterations=2)
    if hilum.any():  # transverse portal plane at the height of the portal vein at the liver hilum
        z_portal = float(np.median(world(np.argwhere(hilum))[:, 2]))
    else:
        z_portal = float(np.quantile(liver_mm[:, 2], 0.45))

    cortex = np.zeros(ct.shape, dtype=bool)
    kidney_centre = {}
    for side, name in (("left", "kidney_left"), ("right", "kidney_right")):
        kid = masks[name]
        cortex |= kid & (ndimage.distance_transform_edt(kid, sampling=spacing) <= 6.0)
        idx = np.argwhere(kid)
        kidney_centre[side] = idx[np.argmin(((idx - idx.mean(0)) ** 2).sum(1))]
    return Source(
        ct=ct.array.astype(np.float32), codes=codes, affine=affine, cortex=cortex, liver_vox=liver_vox,
        liver_mm=liver_mm, liver_theta=theta, liver_ivc_y=ivc_y, ivc_fit=fit, planes_deg=(t_r, t_m, t_l),
        z_portal_mm=z_portal, gallbladder=gallbladder & (codes == GALLBLADDER), kidney_centre=kidney_centre,
    )


def liver_segments(src: Source, rng: np.random.Generator) -> np.ndarray:
    """Couinaud segment (1..8) of every source liver voxel (``src.liver_vox`` order), planes jittered per case.

    Three vertical planes through the IVC axis (right, middle and left hepatic veins; the middle one through the
    gallbladder fossa) and the transverse portal plane: right posterior 7 above / 6 below, right anterior 8 / 5,
    medial left 4, left lateral 2 (superior-posterior) / 3 (inferior-anterior); the caudate lobe (1) is an
    ellipsoid (20 x 15 x 30 mm semi-axes) in front of and left of the IVC, 8 mm above the portal plane.
    """
    t_r, t_m, t_l = (t + rng.uniform(-4.0, 4.0) for t in src.planes_deg)
    z_p = src.z_portal_mm + rng.uniform(-4.0, 4.0)
    th, y, z = src.liver_theta, src.liver_mm[:, 1], src.liver_mm[:, 2]
    sup = z >= z_p
    upper_left = (z - z_p) - 0.15 * (y - src.liver_ivc_y) >= 0.0
    seg = np.where(th < t_r, np.where(sup, 7, 6),
                   np.where(th < t_m, np.where(sup, 8, 5), np.where(th < t_l, 4, np.where(upper_left, 2, 3))))
    z_c = z_p + 8.0
    centre = np.array([np.polyval(src.ivc_fit[0], z_c) - 16.0, np.polyval(src.ivc_fit[1], z_c) + 14.0, z_c])
    caudate = ((((src.liver_mm - centre) / np.array([20.0, 15.0, 30.0])) ** 2).sum(1)) <= 1.0
    return np.where(caudate, 1, seg).astype(np.uint8)


# ---- one case -------------------------------------------------------------------------------------------------
def output_grid(src: Source, settings: RealCTSettings) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and RAS affine of the fixed output grid (field of view centred on the world origin)."""
    spacing = np.asarray(settings.spacing_mm, dtype=float)
    fov = np.asarray(settings.fov_mm if settings.fov_mm is not None else np.array(src.shape) * src.spacing)
    shape = tuple(max(8, int(round(f / s))) for f, s in zip(fov, spacing))
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(shape, spacing)]
    return shape, affine  # type: ignore[return-value]


def _incidental(src: Source, rng: np.random.Generator, phase: str) -> dict:
    findings: dict[str, object] = {"phase": phase}
    findings["cholecystectomy"] = bool(src.gallbladder.any() and rng.random() < 0.08)
    findings["gallstones"] = bool(src.gallbladder.any() and not findings["cholecystectomy"] and rng.random() < 0.12)
    findings["fatty_liver"] = bool(rng.random() < 0.10)
    findings["kidney_stone"] = str(rng.choice(["left", "right"])) if rng.random() < 0.10 else ""
    return findings


def source_image(
    src: Source, rng: np.random.Generator, phase_rng: np.random.Generator, findings: dict, phase_jitter: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    """The source CT of one case (phase shifts and incidental findings painted) and its label codes.

    The phase's draws come from ``phase_rng`` alone, so a case's anatomy does not depend on its phase."""
    img = src.ct.copy()
    codes = src.codes.copy()
    codes[tuple(src.liver_vox.T)] = [LIVER_CODES[f"segment {s}"] for s in liver_segments(src, rng)]
    if findings["cholecystectomy"]:  # the gallbladder bed becomes fat
        img[src.gallbladder] = -90.0 + 10.0 * rng.standard_normal(int(src.gallbladder.sum())).astype(np.float32)
        codes[src.gallbladder] = 0
    kidney = (codes == KIDNEY_LEFT) | (codes == KIDNEY_RIGHT)
    targets = {
        "liver": codes >= LIVER_CODES["segment 1"], "pancreas": (codes >= 20) & (codes <= 22),
        "kidney cortex": kidney & src.cortex, "kidney medulla": kidney & ~src.cortex,
        **{name: np.isin(codes, c) for name, c in _SHIFT_CODES.items()},
    }
    factor = phase_rng.uniform(1.0 - phase_jitter, 1.0 + phase_jitter)
    shift = np.zeros(src.shape, dtype=np.float32)
    for name, hu in PHASE_SHIFT_HU[findings["phase"]].items():
        shift[targets[name]] = hu * factor + phase_rng.uniform(-5.0, 5.0)
    if findings["phase"] == "arterial":
        pattern = ndimage.gaussian_filter(phase_rng.standard_normal(src.shape).astype(np.float32), 1.5)
        pattern *= ARTERIAL_SPLEEN_PATTERN_HU / max(float(pattern.std()), 1e-6)
        shift[targets["spleen"]] += pattern[targets["spleen"]]
    if findings["fatty_liver"]:
        shift[targets["liver"]] += FATTY_LIVER_HU
    # Soft borders, and less shift where a voxel is partly fat or air (partial volume).
    weight = np.clip((img + 100.0) / 130.0, 0.0, 1.0)
    img += ndimage.gaussian_filter(shift, 0.6) * weight
    if findings["gallstones"]:
        gb = np.argwhere(src.gallbladder)
        dependent = gb[gb[:, 1] <= np.quantile(gb[:, 1], 0.3)]  # supine: posterior part of the gallbladder
        for _ in range(int(rng.integers(1, 4))):
            c = dependent[rng.integers(len(dependent))]
            img[tuple(c)] = rng.uniform(300.0, 800.0)
    if findings["kidney_stone"]:
        c = src.kidney_centre[str(findings["kidney_stone"])]
        img[tuple(c)] = 700.0
    return img, codes


def coordinate_map(
    src: Source, shape: tuple[int, int, int], affine: np.ndarray, rng: np.random.Generator, settings: RealCTSettings
) -> tuple[np.ndarray, dict]:
    """Source voxel coordinates (float32 (3, X, Y, Z)) of every output voxel, and the drawn transform.

    Output world point p (mm, origin at the centre of the output field of view) -> p + u(p) (smooth elastic
    displacement: Gaussian-filtered white noise, SD ``elastic_sd_mm``, correlation ``elastic_sigma_mm``) ->
    source world ``c + R^T S^-1 (p + u - t)`` (c the source centre, S per-axis scale, R rotation, t translation).
    """
    scale = rng.uniform(1.0 - settings.scale_range, 1.0 + settings.scale_range, 3)
    angles = rng.uniform(-1.0, 1.0, 3) * np.asarray(settings.rotation_deg)
    rot = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    trans = rng.uniform(-1.0, 1.0, 3) * np.asarray(settings.translation_mm)
    amp = rng.uniform(*settings.elastic_sd_mm)
    spacing = np.diag(affine)[:3]
    sigma = [settings.elastic_sigma_mm / s for s in spacing]
    disp = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, truncate=3.0)
                     for _ in range(3)])
    disp *= amp / max(float(disp.std()), 1e-6)
    grid = np.indices(shape, dtype=np.float32)
    points = grid * spacing[:, None, None, None].astype(np.float32) + affine[:3, 3, None, None, None].astype(np.float32)
    points += disp
    centre = src.affine[:3, :3] @ ((np.array(src.shape) - 1) / 2.0) + src.affine[:3, 3]
    inv_src = np.linalg.inv(src.affine)
    linear = inv_src[:3, :3] @ rot.T @ np.diag(1.0 / scale)
    offset = inv_src[:3, :3] @ (centre - rot.T @ np.diag(1.0 / scale) @ trans) + inv_src[:3, 3]
    coords = np.einsum("ij,j...->i...", linear.astype(np.float32), points)
    coords += offset.astype(np.float32)[:, None, None, None]
    info = {"scale": [round(float(s), 4) for s in scale], "rotation_deg": [round(float(a), 2) for a in angles],
            "translation_mm": [round(float(t), 2) for t in trans], "elastic_sd_mm": round(float(amp), 2)}
    return coords.astype(np.float32), info


def sample(volume: np.ndarray, coords: np.ndarray, order: int) -> np.ndarray:
    """``volume`` at ``coords`` (scipy map_coordinates; beyond the source, the nearest edge voxel)."""
    return ndimage.map_coordinates(volume, coords, order=order, mode="nearest")


@dataclass
class _Tumor:
    plan: TumorPlan
    centre: np.ndarray  # voxel index (3,)
    rotation: np.ndarray  # (3, 3): columns = the ellipsoid's axes in world (= array) axes
    shape_terms: tuple[np.ndarray, np.ndarray, np.ndarray]  # irregular edge: frequencies, phases, amplitudes
    inside: float  # share of its voxels inside its organ at placement


def _organ_codes(organ: str, token: str) -> tuple[int, ...]:
    if organ == "liver":
        return tuple(LIVER_CODES.values())
    if organ == "pancreas":
        return tuple(PANCREAS_CODES.values())
    return (KIDNEY_CODES[token],)


def _token_code(organ: str, token: str) -> int:
    return {"liver": LIVER_CODES, "pancreas": PANCREAS_CODES, "kidney": KIDNEY_CODES}[organ][token]


def _irregularity(rng: np.random.Generator, amount: float, terms: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    directions = rng.standard_normal((terms, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    freqs = directions * rng.uniform(1.5, 3.5, (terms, 1))
    return freqs, rng.uniform(0.0, 2.0 * np.pi, terms), amount * rng.standard_normal(terms) / np.sqrt(terms / 2.0)


def _rho(tumor: _Tumor, semi: np.ndarray, box: tuple[slice, ...], spacing: np.ndarray) -> np.ndarray:
    """Normalised radius of the tumor's irregular ellipsoid over ``box`` (<= 1 inside)."""
    idx = np.indices(tuple(s.stop - s.start for s in box), dtype=np.float32)
    d = (idx + np.array([s.start for s in box], dtype=np.float32)[:, None, None, None]
         - tumor.centre.astype(np.float32)[:, None, None, None]) * spacing.astype(np.float32)[:, None, None, None]
    local = np.einsum("ji,j...->i...", tumor.rotation.astype(np.float32), d)
    local /= semi.astype(np.float32)[:, None, None, None]
    rho = np.sqrt((local**2).sum(0))
    unit = local / np.maximum(rho, 1e-6)
    freqs, phases, amps = tumor.shape_terms
    radius = 1.0 + np.einsum("k,k...->...", amps.astype(np.float32),
                             np.cos(np.einsum("ki,i...->k...", freqs.astype(np.float32), unit)
                                    + phases.astype(np.float32)[:, None, None, None]))
    return rho / np.clip(radius, 0.7, 1.3)


def _box(centre: np.ndarray, half_mm: float, spacing: np.ndarray, shape) -> tuple[slice, ...]:
    half = np.ceil(half_mm / spacing).astype(int)
    return tuple(slice(max(int(c) - h, 0), min(int(c) + h + 1, n)) for c, h, n in zip(centre, half, shape))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal(4)
    return Rotation.from_quat(q / np.linalg.norm(q)).as_matrix()


def _along_gland(rng: np.random.Generator, organ: np.ndarray, centre: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """A rotation whose first axis follows the gland's local direction (PCA of the organ within 20 mm)."""
    pts = (np.argwhere(organ) - centre) * spacing
    pts = pts[(pts**2).sum(1) <= 20.0**2]
    if len(pts) < 4:
        return _random_rotation(rng)
    axis = np.linalg.svd(pts - pts.mean(0), full_matrices=False)[2][0]
    other = np.cross(axis, rng.standard_normal(3))
    other /= np.linalg.norm(other)
    return np.stack([axis, other, np.cross(axis, other)], axis=1)


def place_tumors(
    rng: np.random.Generator, plans: list[TumorPlan], labels: np.ndarray, spacing: np.ndarray, settings: RealCTSettings
) -> list[_Tumor]:
    """Centres, orientations and final diameters of the planned tumors on the deformed labels.

    The centre lies among the deepest voxels of the wanted sub-segment; of six candidates (centre, rotation, edge)
    the one with the largest share of voxels inside its organ wins; below ``min_inside_fraction`` the tumor
    shrinks (x 0.88, never below the organ's smallest diameter) and tries again. Pancreatic tumors lie along
    the gland. Tumors keep a 3 mm gap.
    """
    placed: list[_Tumor] = []
    occupied = np.zeros(labels.shape, dtype=bool)
    shell = max(1, int(round(3.0 / float(spacing.min()))))
    for plan in plans:
        region = (labels == _token_code(plan.organ, plan.token)) & ~occupied
        if not region.any():
            continue
        organ = np.isin(labels, _organ_codes(plan.organ, plan.token))
        allowed = (organ | (labels == 0)) & ~occupied
        where = np.argwhere(region)
        rbox = tuple(slice(max(lo - 2, 0), hi + 3) for lo, hi in zip(where.min(0), where.max(0)))
        depth = ndimage.distance_transform_edt(np.pad(region[rbox], 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
        diameters = np.array(plan.diameters_mm, dtype=float)
        lo = settings.tumor_diameter_mm[plan.organ][0]
        best: tuple[float, _Tumor, np.ndarray, tuple] | None = None
        for _ in range(5):
            semi = diameters / 2.0
            target = min(float(semi[1]), 0.85 * float(depth.max()))
            candidates = np.argwhere(depth >= max(target, 1e-3))
            for _ in range(6):
                centre = candidates[rng.integers(len(candidates))] + np.array([s.start for s in rbox])
                rotation = (_along_gland(rng, organ, centre, spacing) if plan.organ == "pancreas"
                            else _random_rotation(rng))
                tumor = _Tumor(TumorPlan(plan.organ, plan.token, tuple(float(d) for d in diameters)), centre,
                               rotation, _irregularity(rng, settings.tumor_irregularity), 0.0)
                box = _box(centre, 1.3 * 1.35 * float(semi.max()) + 2.0 * float(spacing.max()), spacing, labels.shape)
                mask = (_rho(tumor, semi, box, spacing) <= 1.0) & allowed[box]
                tumor.inside = float((mask & organ[box]).sum()) / max(int(mask.sum()), 1)
                if best is None or tumor.inside > best[0]:
                    best = (tumor.inside, tumor, mask, box)
            if best[0] >= settings.min_inside_fraction or diameters[0] <= lo + 1e-6:
                break
            diameters = diameters * max(0.88, lo / diameters[0])
        assert best is not None
        _, tumor, mask, box = best
        placed.append(tumor)
        occupied[box] |= ndimage.binary_dilation(mask, iterations=shell)
    return placed


def mass_effect(coords: np.ndarray, tumors: list[_Tumor], spacing: np.ndarray, strengths: list[float]) -> np.ndarray:
    """``coords`` composed with a radial push around each tumor: the output voxel x samples the source where
    ``x - k (x - c) exp(-|x - c|^2 / 2 s^2)`` maps (s = mean semi-axis + 5 mm), so tissue around the tumor
    is magnified by up to 1 / (1 - k) and pushed aside (monotone for k < 1)."""
    if not tumors:
        return coords
    shape = coords.shape[1:]
    grid = np.indices(shape, dtype=np.float32)
    pos = grid.copy()
    lo, hi = np.array(shape), np.zeros(3, dtype=int)
    for tumor, k in zip(tumors, strengths):
        s_mm = float(np.mean(tumor.plan.diameters_mm)) / 2.0 + 5.0
        box = _box(tumor.centre, 3.5 * s_mm, spacing, shape)
        d = grid[(slice(None), *box)] - tumor.centre.astype(np.float32)[:, None, None, None]
        r2 = ((d * spacing.astype(np.float32)[:, None, None, None]) ** 2).sum(0)
        pos[(slice(None), *box)] -= k * d * np.exp(-r2 / (2.0 * s_mm**2))
        lo, hi = np.minimum(lo, [b.start for b in box]), np.maximum(hi, [b.stop for b in box])
    region = (slice(None), *(slice(a, b) for a, b in zip(lo, hi)))  # outside it, pos is the identity
    out = coords.copy()
    out[region] = np.stack([ndimage.map_coordinates(c, pos[region], order=1, mode="nearest") for c in coords])
    return out


def parenchyma_hu(
    img: np.ndarray, organ: np.ndarray, rho: np.ndarray, box: tuple[slice, ...], centre: tuple[int, ...],
    semi: np.ndarray, spacing: np.ndarray,
) -> tuple[float, np.ndarray]:
    """The organ's local parenchymal HU around a tumor, and the voxels it comes from (bool, full grid).

    The organ's interior (eroded: no partial volume with fat) outside the tumor (normalised radius > 1.5) and
    within 15 mm of it: its 10-90 % trimmed mean, when it has at least 30 voxels (liver, kidney, a thick
    pancreatic head). A thin gland (the example's pancreas is 1-3 voxels thick and fatty) has no such interior:
    the mean of the upper half of its voxels within 25 mm, i.e. without the fat that partial volume mixes in.
    """
    shape = tuple(s.stop - s.start for s in box)
    dist = np.sqrt(sum(((np.indices(shape)[i] - centre[i]) * spacing[i]) ** 2 for i in range(3)))
    interior = ndimage.binary_erosion(organ[box]) & (rho > 1.5) & (dist <= float(semi.max()) + 15.0)
    ring = np.zeros(organ.shape, dtype=bool)
    if interior.sum() >= 30:
        ring[box] = interior
        values = img[ring]
        lo, hi = np.percentile(values, [10, 90])
        return float(values[(values >= lo) & (values <= hi)].mean()), ring
    ring[box] = organ[box] & (rho > 1.5) & (dist <= float(semi.max()) + 25.0)
    if ring.sum() < 10:
        ring = organ.copy()
        ring[box] &= rho > 1.5
    values = img[ring]
    return float(values[values >= np.median(values)].mean()), ring


def paint_tumors(
    rng: np.random.Generator, tumors: list[_Tumor], img: np.ndarray, labels: np.ndarray, spacing: np.ndarray,
    settings: RealCTSettings, affine: np.ndarray,
) -> list[PlacedTumor]:
    """Final tumor masks (on the deformed labels), their intensities and their joining their organ."""
    occupied = np.zeros(labels.shape, dtype=bool)
    shell = max(1, int(round(3.0 / float(spacing.min()))))
    out: list[PlacedTumor] = []
    for tumor in tumors:
        plan, semi = tumor.plan, np.asarray(tumor.plan.diameters_mm) / 2.0
        organ_full = np.isin(labels, _organ_codes(plan.organ, plan.token))
        box = _box(tumor.centre, 1.6 * 1.35 * float(semi.max()) + 15.0, spacing, labels.shape)
        rho = _rho(tumor, semi, box, spacing)
        organ, img_b, lab_b = organ_full[box], img[box], labels[box]
        allowed = (organ | ((lab_b == 0) & (img_b > -300.0))) & ~occupied[box]
        mask = (rho <= 1.0) & allowed
        comp, _ = ndimage.label(mask)
        local_c = tuple(int(c - s.start) for c, s in zip(tumor.centre, box))
        if comp[local_c] == 0:
            continue
        mask = comp == comp[local_c]
        local_mean, ring = parenchyma_hu(img, organ_full, rho, box, local_c, semi, spacing)
        texture_sd = float((img - ndimage.gaussian_filter(img, 1.0))[ring].std())
        noise = ndimage.gaussian_filter(rng.standard_normal(mask.shape).astype(np.float32), 0.5)
        noise_res = noise - ndimage.gaussian_filter(noise, 1.0)
        noise *= texture_sd / max(float(noise_res.std()), 1e-6)
        het = ndimage.gaussian_filter(rng.standard_normal(mask.shape).astype(np.float32), 2.0)
        het *= settings.tumor_heterogeneity_hu / max(float(het.std()), 1e-6)
        contrast = float(rng.uniform(*settings.tumor_contrast_hu))
        r_mm = (1.0 - rho) * float(semi.min())
        weight = 1.0 / (1.0 + np.exp(np.clip(-r_mm / max(settings.tumor_edge_mm / 2.0, 1e-3), -50.0, 50.0)))
        # Never darker than half-way outside the mask (pieces cut off by another structure stay unpainted).
        weight = np.where(mask, weight, np.where(allowed, np.minimum(weight, 0.45), 0.0)).astype(np.float32)
        img_b[...] = img_b * (1.0 - weight) + (local_mean + contrast + het + noise) * weight
        # The tumor joins its organ (AbdomenAtlas convention); voxels outside take the nearest sub-segment.
        if plan.organ == "kidney":
            lab_b[mask] = KIDNEY_CODES[plan.token]
        else:
            _, nearest = ndimage.distance_transform_edt(~organ, sampling=spacing, return_indices=True)
            outside = mask & ~organ
            lab_b[outside] = lab_b[tuple(n[outside] for n in nearest)]
        full = np.zeros(labels.shape, dtype=bool)
        full[box] = mask
        occupied[box] |= ndimage.binary_dilation(mask, iterations=shell)
        cv = tumor.centre.astype(float)
        out.append(PlacedTumor(
            plan=plan, mask=full, centre_vox=tuple(float(v) for v in cv),
            centre_mm=tuple(float(v) for v in affine[:3, :3] @ cv + affine[:3, 3]),
            location_fractions={}, contrast_hu=contrast, axial_position=0.5,
        ))
    for t in out:  # fractions and pole after all tumors have joined their organs
        codes = {"liver": LIVER_CODES, "pancreas": PANCREAS_CODES, "kidney": KIDNEY_CODES}[t.plan.organ]
        vals = labels[t.mask]
        t.location_fractions = {tok: float((vals == c).sum()) / len(vals) for tok, c in codes.items()
                                if (vals == c).any()}
        z = np.argwhere(np.isin(labels, _organ_codes(t.plan.organ, t.plan.token)))[:, 2]
        t.axial_position = float((t.centre_vox[2] - z.min()) / max(z.max() - z.min(), 1))
    return out


def _report_tokens(t: PlacedTumor) -> list[str]:
    """Tokens the report writer can phrase (a pancreatic tumor in head and tail but not body: its main part)."""
    if t.plan.organ == "pancreas" and tuple(t.tokens) not in PANCREAS_SITES:
        return [max(t.location_fractions, key=t.location_fractions.__getitem__)]
    return t.tokens


def generate_case(index: int, split: str, seed: int, settings: RealCTSettings, position: int = 0,
                  plans: list[TumorPlan] | None = None):
    """One realct patient: (Phantom, per-case info). Deterministic from ``SeedSequence([seed, index])``;
    ``plans`` replaces the drawn tumors (the same patient with chosen tumors, e.g. for paired probes)."""
    plan_rng, anatomy_rng, tumor_rng, image_rng, _, _, phase_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(7)
    )
    src = load_source(settings.ct_path, settings.seg_path)
    shape, affine = output_grid(src, settings)
    spacing = np.asarray(settings.spacing_mm, dtype=float)
    weights = np.asarray(
        settings.mask_phase_weights if split == "masks" and settings.mask_phase_weights is not None
        else settings.phase_weights, dtype=float)
    phase = str(phase_rng.choice(PHASES, p=weights / weights.sum()))
    findings = _incidental(src, anatomy_rng, phase)
    img_src, codes_src = source_image(src, anatomy_rng, phase_rng, findings, settings.phase_jitter)
    coords, info = coordinate_map(src, shape, affine, anatomy_rng, settings)
    plans = plan_tumors(plan_rng, settings.composition(), split, position) if plans is None else plans
    tumors = place_tumors(tumor_rng, plans, sample(codes_src, coords, 0), spacing, settings)
    strengths = [float(tumor_rng.uniform(*settings.mass_effect)) for _ in tumors]
    coords = mass_effect(coords, tumors, spacing, strengths)
    labels = sample(codes_src, coords, 0)
    img = sample(img_src, coords, 1)
    placed = paint_tumors(tumor_rng, tumors, img, labels, spacing, settings, affine)
    img = ndimage.gaussian_filter(img, image_rng.uniform(*settings.blur_sigma_vox))
    noise = ndimage.gaussian_filter(image_rng.standard_normal(shape).astype(np.float32), 0.6)
    img += noise * (image_rng.uniform(*settings.noise_sd_hu) / max(float(noise.std()), 1e-6))
    ct = np.clip(np.round(img), -1024, 3071).astype(np.int16)

    liver = labels >= LIVER_CODES["segment 1"]
    pancreas = np.isin(labels, tuple(PANCREAS_CODES.values()))
    organs = {"liver": liver, "spleen": labels == SPLEEN, "kidney_left": labels == KIDNEY_LEFT,
              "kidney_right": labels == KIDNEY_RIGHT, "pancreas": pancreas}
    subsegments = {f"pancreas_{t}": labels == c for t, c in PANCREAS_CODES.items()}
    subsegments.update({f"liver_segment_{k}": labels == LIVER_CODES[f"segment {k}"] for k in range(1, 9)})
    lesions = {lesion_class(o): np.zeros(shape, dtype=bool) for o in TUMOR_ORGANS}
    for t in placed:
        lesions[lesion_class(t.plan.organ)] |= t.mask
    as_u8 = {name: m.astype(np.uint8) for name, m in {**organs, **subsegments, **lesions}.items()}
    ph = Phantom(ct, affine, {k: as_u8[k] for k in organs}, {k: as_u8[k] for k in subsegments},
                 {k: as_u8[k] for k in lesions}, placed, findings)
    info.update(phase=phase, findings={k: v for k, v in findings.items() if k != "phase"},
                mass_effect=[round(k, 3) for k in strengths],
                inside_fraction=[round(t.inside, 3) for t in tumors])
    return ph, info


def make_case(root: Path, index: int, split: str, seed: int, settings: RealCTSettings, position: int = 0) -> dict:
    """Generates and writes one case; returns its report, gold findings, truth rows and info."""
    start = time.perf_counter()
    report_rng, orient_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(7)[4:6])
    cid = case_id(index)
    ph, info = generate_case(index, split, seed, settings, position)
    lps = bool(orient_rng.random() < settings.lps_fraction)
    write_case(ph, root, cid, split, lps)
    report_tumors = [ReportTumor(t.plan.organ, _report_tokens(t), t.plan.diameters_mm, t.axial_position)
                     for t in ph.tumors]
    text, stated = write_report(report_rng, report_tumors, ph.findings)
    gold_id = {rl.tumor_index: f"tumor {k}" for k, rl in enumerate(stated, 1) if rl.tumor_index is not None}
    voxel_mm3 = float(np.prod(settings.spacing_mm))
    truth = [truth_row(cid, split, k, t, gold_id.get(k, "multiple"), voxel_mm3) for k, t in enumerate(ph.tumors)]
    findings = CaseFindings(case_id=cid, lesions=[rl.lesion for rl in stated], backend="phantom-gold")
    info.update(case=cid, split=split, lps=lps, seconds=round(time.perf_counter() - start, 3))
    return {"case_id": cid, "split": split, "report": text, "findings": findings, "truth": truth, "lps": lps,
            "info": info}


def generate_realct_dataset(
    out_dir: str | Path,
    *,
    n_mask: int,
    n_report: int,
    n_test: int,
    seed: int,
    spacing_mm: float | tuple[float, float, float] = 3.0,
    ct_path: str | Path | None = None,
    seg_path: str | Path | None = None,
    workers: int = 1,
    fov_mm: tuple[float, float, float] | None = None,
    noise_sd_hu: tuple[float, float] = (2.0, 8.0),
    blur_sigma_vox: tuple[float, float] = (0.3, 0.6),
    tumor_contrast_hu: tuple[float, float] = (-70.0, -20.0),
    tumor_diameter_mm: dict[str, tuple[float, float]] | None = None,
    organ_weights: dict[str, float] | None = None,
    healthy_fraction: float = 0.45,
    mask_healthy_fraction: float | None = None,
    phase_weights: tuple[float, float, float] = (0.7, 0.15, 0.15),
    mask_phase_weights: tuple[float, float, float] | None = None,
    mask_cover_locations: bool = False,
    max_tumors: int = 3,
    mass_effect: tuple[float, float] = (0.10, 0.25),
    elastic_sd_mm: tuple[float, float] = (2.0, 5.0),
    scale_range: float = 0.10,
    lps_fraction: float = 0.0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Writes a realct phantom dataset to ``out_dir`` (the demo family's layout, docs/phantoms.md); returns a
    summary dict (also written to ``phantoms.json`` with ``"family": "realct"``).

    ``ct_path``/``seg_path``: the real CT and its TotalSegmentator label map (default: the example in
    ``../shared/data/totalseg_example``; a missing file raises ``FileNotFoundError``). ``spacing_mm`` and
    ``fov_mm`` (default: the source's 366 x 303 x 90 mm) set the fixed output grid. ``tumor_contrast_hu``:
    range of tumor minus local organ mean HU; ``tumor_diameter_mm``: per organ (min, max) largest diameter;
    ``organ_weights``: how often each organ gets a tumor (default pancreas 0.4, kidney 0.3, liver 0.3);
    ``noise_sd_hu``: range of the SD of noise added to the real CT's own; ``mass_effect``: range of the local
    magnification strength around a tumor ((0, 0) = none); ``elastic_sd_mm``, ``scale_range``: deformation.
    Composition knobs (``healthy_fraction``, ``mask_healthy_fraction``, ``phase_weights``,
    ``mask_phase_weights``, ``mask_cover_locations``, ``max_tumors``, ``lps_fraction``) mean what they mean
    in ``rsuper.synthetic.phantoms.generate_dataset``.
    """
    ct_file = Path(ct_path) if ct_path is not None else DEFAULT_CT
    seg_file = Path(seg_path) if seg_path is not None else DEFAULT_SEG
    for path in (ct_file, seg_file):
        if not path.is_file():
            raise missing_source_error(path)
    spacing = (float(spacing_mm),) * 3 if np.isscalar(spacing_mm) else tuple(float(s) for s in spacing_mm)
    if any(s <= 0 for s in spacing) or min(n_mask, n_report, n_test) < 0:
        raise ValueError(f"spacing must be > 0 mm and case counts >= 0, got {spacing}, {n_mask}/{n_report}/{n_test}")
    diameters = dict(DEFAULT_DIAMETERS_MM)
    diameters.update(tumor_diameter_mm or {})
    settings = RealCTSettings(
        ct_path=str(ct_file.resolve()), seg_path=str(seg_file.resolve()), spacing_mm=spacing,  # type: ignore[arg-type]
        fov_mm=None if fov_mm is None else tuple(float(f) for f in fov_mm),  # type: ignore[arg-type]
        noise_sd_hu=tuple(noise_sd_hu), blur_sigma_vox=tuple(blur_sigma_vox),  # type: ignore[arg-type]
        tumor_contrast_hu=tuple(sorted(tumor_contrast_hu)), tumor_diameter_mm=diameters,  # type: ignore[arg-type]
        organ_weights=dict(organ_weights or {"pancreas": 0.4, "kidney": 0.3, "liver": 0.3}),
        healthy_fraction=healthy_fraction, mask_healthy_fraction=mask_healthy_fraction,
        phase_weights=tuple(float(w) for w in phase_weights),  # type: ignore[arg-type]
        mask_phase_weights=(None if mask_phase_weights is None  # type: ignore[arg-type]
                            else tuple(float(w) for w in mask_phase_weights)),
        mask_cover_locations=mask_cover_locations, max_tumors=max_tumors,
        mass_effect=tuple(mass_effect), elastic_sd_mm=tuple(elastic_sd_mm),  # type: ignore[arg-type]
        scale_range=scale_range, lps_fraction=lps_fraction,
    )
    src = load_source(settings.ct_path, settings.seg_path)
    shape, _ = output_grid(src, settings)
    root = Path(out_dir)
    prepare_out_dir(root)
    jobs = [("masks", n_mask), ("reports", n_report), ("test", n_test)]
    results, seconds = make_cases(make_case, root, seed, settings, jobs, workers, progress)
    truth_rows = write_tables(root, results)
    inside = [f for r in results for f in r["info"]["inside_fraction"]]
    summary = {
        "family": FAMILY,
        **dataset_counts(root, seed, jobs, results, truth_rows),
        "phases": {p: sum(r["info"]["phase"] == p for r in results) for p in PHASES},
        "shape_vox": list(shape),
        "inside_fraction_min": round(min(inside), 3) if inside else None,
        "seconds": round(seconds, 2),
        "settings": asdict(settings),
        "phase_shift_hu": PHASE_SHIFT_HU,
        "case_info": [r["info"] for r in results],
    }
    write_json_atomic(root / "phantoms.json", summary)
    return summary
