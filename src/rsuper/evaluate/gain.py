"""Statistics of the gain benchmark (``benchmarks/bench_gain.py``, issue 28): three arms on the same test CTs.

Arms: ``masks-only`` (the baseline), ``R-Super`` (the method) and ``all-masks`` (the upper bound: the report CTs
trained with their true lesion masks). Per seed and tumor organ the test CTs are one :class:`OrganCases`, every
arm's numbers aligned over the same cases, so differences between arms are paired.

Metrics (fractions in [0, 1]; the tables print points = 100 x):
  ``auroc_volume``           CT-level AUROC, score = predicted tumor volume in the organ (after the light opening of
                             ``rsuper.evaluate.collect``), all test CTs;
  ``auroc_max_probability``  the same with score = the largest lesion probability inside the gated organ;
  ``dsc_tumor``              mean DSC over the CTs whose true lesion mask is not empty, all test CTs;
  ``sensitivity``, ``specificity``, ``f1``
                             CT-level call = predicted volume >= a threshold chosen per arm and organ on the
                             validation half (best F1, :func:`choose_threshold`), reported on the test half only;
  ``f1_fixed``               F1 at a fixed volume threshold (the demo's 300 mm³) on all test CTs, for comparison with
                             the demo's headline;
  per side of a paired organ (kidney), test half, at the same chosen threshold: ``sensitivity_left``/``_right``
                             (CTs with a true tumor on that side whose predicted tumor volume on that side reaches the
                             threshold) and ``healthy_call_left``/``_right`` (the same call rate on the tumor-free
                             side).

Validation split (:func:`validation_split`): a fixed rule, the same for every arm and seed: the test case ids
sorted, every other one (positions 0, 2, 4, ...) is validation, the rest is the reported test half.

Gap closure (:func:`gap_closure`): (R-Super - masks-only) / (all-masks - masks-only); "n/a" (NaN) when the
headroom all-masks - masks-only is below ``min_gap`` (default 0.02 = 2 points, also when it is negative: the upper
bound is then no upper bound and the ratio means nothing).

Side lock (:func:`side_lock`): a lesion channel tied to one side of a paired organ; flagged when left and right
differ by more than 0.25 (25 points) in sensitivity or in healthy-organ call rate.

Bootstrap over seeds x cases (:func:`bootstrap`): each replicate resamples the seeds with replacement and, inside
each drawn seed, its validation and test halves with replacement (each half keeps its size; all arms get the
same cases, so the replicate is paired); the thresholds stay those chosen on the original validation half. A
replicate's value is the mean over its seeds; gains and gap closures are computed from the replicate's means.
Intervals are percentile intervals of the replicates whose value is defined (a gap closure's interval
says in how many replicates the headroom passed the n/a guard).

Example:
    >>> cases = [OrganCases.from_frame(per_case_of_seed, "pancreas") for per_case_of_seed in tables]
    >>> summary = aggregate(cases, n_bootstrap=1000)  # one row per metric
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rsuper.evaluate.detection import auroc, binary_metrics, choose_operating_point, predict_positive, \
    threshold_sweep

BASE, METHOD, UPPER = ARMS = ("masks-only", "R-Super", "all-masks")
METRICS = ("auroc_volume", "auroc_max_probability", "dsc_tumor", "sensitivity", "specificity", "f1", "f1_fixed")
SIDE_METRICS = ("sensitivity_left", "sensitivity_right", "healthy_call_left", "healthy_call_right")
MIN_GAP = 0.02
SIDE_LOCK_GAP = 0.25
DEFAULT_FIXED_THRESHOLD_MM3 = 300.0


def validation_split(case_ids: Iterable[str]) -> dict[str, bool]:
    """{case id: True for validation}: sorted ids, positions 0, 2, 4, ... are validation, the others test."""
    return {case_id: i % 2 == 0 for i, case_id in enumerate(sorted(case_ids))}


def choose_threshold(truth: np.ndarray, volume_mm3: np.ndarray) -> float:
    """The volume threshold (mm³) with the best F1 on these CTs (``rsuper.evaluate.detection``: candidates 0
    and every predicted volume; ties go to the higher specificity, then the lower threshold)."""
    return choose_operating_point(threshold_sweep(np.asarray(truth, bool), np.asarray(volume_mm3, float)))


def gap_closure(base: float, method: float, upper: float, min_gap: float = MIN_GAP) -> float:
    """(method - base) / (upper - base); NaN ("n/a") when upper - base < ``min_gap`` or a value is NaN."""
    headroom = upper - base
    if not np.isfinite(headroom) or not np.isfinite(method) or headroom < min_gap:
        return float("nan")
    return float((method - base) / headroom)


def side_lock(metrics: Mapping[str, float], max_gap: float = SIDE_LOCK_GAP) -> bool:
    """True when sensitivity or healthy-organ call rate differs between left and right by more than ``max_gap``
    (``metrics`` holds :data:`SIDE_METRICS`; an undefined rate never flags)."""
    for stem in ("sensitivity", "healthy_call"):
        left, right = metrics.get(f"{stem}_left", np.nan), metrics.get(f"{stem}_right", np.nan)
        if np.isfinite(left) and np.isfinite(right) and abs(left - right) > max_gap:
            return True
    return False


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


@dataclass
class OrganCases:
    """One seed's test CTs for one organ, every arm aligned over the same cases.

    ``truth``: the CT has a tumor in the organ (report); ``tumor_mask``: its true lesion mask is not empty (the
    DSC's CTs); ``validation``: the case is in the validation half. Per arm: ``volume`` (mm³, opened),
    ``max_probability`` and ``dsc``. Per side of a paired organ (``side_truth``: a true tumor on that side;
    ``side_volume[arm][side]``: predicted tumor volume on that side).
    """

    organ: str
    case_ids: np.ndarray
    truth: np.ndarray
    tumor_mask: np.ndarray
    validation: np.ndarray
    volume: dict[str, np.ndarray]
    max_probability: dict[str, np.ndarray]
    dsc: dict[str, np.ndarray]
    side_truth: dict[str, np.ndarray] = field(default_factory=dict)
    side_volume: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def arms(self) -> list[str]:
        return list(self.volume)

    @classmethod
    def from_frame(cls, per_case: pd.DataFrame, organ: str, arms: Sequence[str] = ARMS,
                   sides: Sequence[str] = ()) -> OrganCases:
        """From a long table with one row per (arm, case_id, organ) and columns ``truth``, ``tumor_mask``,
        ``pred_volume_mm3``, ``max_probability``, ``dsc`` and, per side, ``truth_<side>`` and
        ``pred_volume_<side>_mm3``. Every arm must have the same cases; the split is :func:`validation_split`."""
        rows = per_case[per_case["organ"] == organ]
        by_arm = {arm: rows[rows["arm"] == arm].set_index("case_id").sort_index() for arm in arms}
        ids = by_arm[arms[0]].index
        for arm, frame in by_arm.items():
            if not frame.index.equals(ids):
                raise ValueError(f"{organ}: arm {arm!r} has other test cases than {arms[0]!r}")
        first = by_arm[arms[0]]
        split = validation_split(ids)
        floats = {name: {arm: frame[name].astype(float).to_numpy() for arm, frame in by_arm.items()}
                  for name in ("pred_volume_mm3", "max_probability", "dsc")}
        return cls(
            organ=organ, case_ids=ids.to_numpy(), truth=first["truth"].to_numpy(bool),
            tumor_mask=first["tumor_mask"].to_numpy(bool), validation=np.array([split[c] for c in ids]),
            volume=floats["pred_volume_mm3"], max_probability=floats["max_probability"], dsc=floats["dsc"],
            side_truth={side: first[f"truth_{side}"].to_numpy(bool) for side in sides},
            side_volume={arm: {side: frame[f"pred_volume_{side}_mm3"].astype(float).to_numpy() for side in sides}
                         for arm, frame in by_arm.items()} if sides else {})

    def thresholds(self) -> dict[str, float]:
        """Per arm: the volume threshold with the best F1 on the validation half."""
        val = self.validation
        return {arm: choose_threshold(self.truth[val], self.volume[arm][val]) for arm in self.arms}

    def metrics(self, arm: str, threshold: float, fixed_threshold: float = DEFAULT_FIXED_THRESHOLD_MM3,
                index: np.ndarray | None = None) -> dict[str, float]:
        """Every metric of one arm (see module doc) on the cases ``index`` (default: all, in order; repeats
        allowed: a bootstrap draw)."""
        idx = np.arange(len(self.case_ids)) if index is None else np.asarray(index)
        truth, tumor, val = self.truth[idx], self.tumor_mask[idx], self.validation[idx]
        volume, prob, dsc = self.volume[arm][idx], self.max_probability[arm][idx], self.dsc[arm][idx]
        test = ~val
        at_threshold = binary_metrics(truth[test], predict_positive(volume[test], threshold))
        out = {"auroc_volume": auroc(truth, volume),
               "auroc_max_probability": auroc(truth, prob) if np.isfinite(prob).all() else float("nan"),
               "dsc_tumor": _mean(dsc[tumor]),
               "sensitivity": at_threshold["sensitivity"], "specificity": at_threshold["specificity"],
               "f1": at_threshold["f1"],
               "f1_fixed": binary_metrics(truth, predict_positive(volume, fixed_threshold))["f1"]}
        for side, side_truth in self.side_truth.items():
            has = side_truth[idx][test]
            called = predict_positive(self.side_volume[arm][side][idx][test], threshold)
            suffix = side.rsplit("_", 1)[-1]  # kidney_left -> left
            out[f"sensitivity_{suffix}"] = _mean(called[has].astype(float))
            out[f"healthy_call_{suffix}"] = _mean(called[~has].astype(float))
        return out

    def resample(self, rng: np.random.Generator) -> np.ndarray:
        """Bootstrap draw of case indices: each half resampled with replacement, keeping its size."""
        halves = [np.flatnonzero(self.validation), np.flatnonzero(~self.validation)]
        return np.concatenate([rng.choice(h, len(h), replace=True) for h in halves if len(h)])


def seed_table(cases: OrganCases, fixed_threshold: float = DEFAULT_FIXED_THRESHOLD_MM3,
               min_gap: float = MIN_GAP) -> pd.DataFrame:
    """One seed, one organ: a row per metric with each arm's value, gain (R-Super - masks-only), headroom
    (all-masks - masks-only) and gap closure; plus rows ``threshold_mm3`` (chosen on validation) and, for a
    paired organ, ``side_lock`` (1 = flagged) per arm."""
    thresholds = cases.thresholds()
    values = {arm: cases.metrics(arm, thresholds[arm], fixed_threshold) for arm in cases.arms}
    names = list(values[cases.arms[0]])
    rows = []
    for name in names:
        row = {"organ": cases.organ, "metric": name, **{arm: values[arm][name] for arm in cases.arms}}
        rows.append(_with_gains(row, min_gap, closure=name not in SIDE_METRICS))
    rows.append({"organ": cases.organ, "metric": "threshold_mm3", **thresholds})
    if cases.side_truth:
        rows.append({"organ": cases.organ, "metric": "side_lock",
                     **{arm: float(side_lock(values[arm])) for arm in cases.arms}})
    return pd.DataFrame(rows)


def _with_gains(row: dict, min_gap: float, closure: bool = True) -> dict:
    if all(arm in row for arm in ARMS):
        row["gain"] = row[METHOD] - row[BASE]
        row["headroom"] = row[UPPER] - row[BASE]
        row["gap_closure"] = gap_closure(row[BASE], row[METHOD], row[UPPER], min_gap) if closure else float("nan")
    return row


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def bootstrap(seeds: Sequence[OrganCases], n: int = 1000, seed: int = 0, fixed_threshold: float =
              DEFAULT_FIXED_THRESHOLD_MM3, min_gap: float = MIN_GAP) -> dict[str, np.ndarray]:
    """Replicates over seeds x cases (module doc): {"<arm>/<metric>", "gain/<metric>", "headroom/<metric>",
    "gap_closure/<metric>": n values each (NaN where undefined)}."""
    rng = np.random.default_rng(seed)
    thresholds = [cases.thresholds() for cases in seeds]
    arms = seeds[0].arms
    out: dict[str, list[float]] = {}
    for _ in range(n):
        drawn = rng.integers(0, len(seeds), len(seeds))
        per_seed: dict[tuple[str, str], list[float]] = {}
        for s in drawn:
            index = seeds[s].resample(rng)
            for arm in arms:
                for name, value in seeds[s].metrics(arm, thresholds[s][arm], fixed_threshold, index).items():
                    per_seed.setdefault((arm, name), []).append(value)
        means = {key: _nanmean(values) for key, values in per_seed.items()}
        for (arm, name), value in means.items():
            out.setdefault(f"{arm}/{name}", []).append(value)
        if all(arm in arms for arm in ARMS):
            for name in {name for _, name in means}:
                base, method, upper = (means[(arm, name)] for arm in ARMS)
                out.setdefault(f"gain/{name}", []).append(method - base)
                out.setdefault(f"headroom/{name}", []).append(upper - base)
                out.setdefault(f"gap_closure/{name}", []).append(gap_closure(base, method, upper, min_gap))
    return {key: np.asarray(values, float) for key, values in out.items()}


def _nanmean(values: Sequence[float]) -> float:
    array = np.asarray(values, float)
    array = array[np.isfinite(array)]
    return float(array.mean()) if len(array) else float("nan")


def _sd(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def aggregate(seeds: Sequence[OrganCases], n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95,
              fixed_threshold: float = DEFAULT_FIXED_THRESHOLD_MM3, min_gap: float = MIN_GAP) -> pd.DataFrame:
    """One organ over seeds: a row per metric with, per arm and for gain / headroom, the mean over seeds, the SD
    over seeds and the bootstrap interval (``<col>_mean``, ``<col>_sd``, ``<col>_ci_low``, ``<col>_ci_high``), the gap
    closure of the means (n/a guard) with its interval (over the replicates where it is defined;
    ``gap_closure_defined`` = their share) and ``seeds``; for a paired organ one more row
    ``side_lock``: ``<arm>_mean`` = the flag (1/0) on the side metrics' means over seeds, ``<arm>_seeds_flagged``."""
    tables = [seed_table(cases, fixed_threshold, min_gap) for cases in seeds]
    replicates = bootstrap(seeds, n_bootstrap, seed, fixed_threshold, min_gap)
    every = pd.concat(tables, ignore_index=True)
    arms = seeds[0].arms
    rows = []
    for name in [m for m in tables[0]["metric"] if m not in ("threshold_mm3", "side_lock")]:
        group = every[every["metric"] == name]
        row: dict = {"organ": seeds[0].organ, "metric": name, "seeds": len(seeds)}
        columns = arms + [c for c in ("gain", "headroom") if c in group]
        for col in columns:
            values = group[col].to_numpy(float)
            row[f"{col}_mean"], row[f"{col}_sd"] = _nanmean(values), _sd(values)
            key = f"{col}/{name}"
            row[f"{col}_ci_low"], row[f"{col}_ci_high"] = _percentile(replicates.get(key, np.array([])), level)
        if all(arm in arms for arm in ARMS) and name not in SIDE_METRICS:
            row["gap_closure"] = gap_closure(row[f"{BASE}_mean"], row[f"{METHOD}_mean"], row[f"{UPPER}_mean"], min_gap)
            closures = replicates[f"gap_closure/{name}"]
            row["gap_closure_ci_low"], row["gap_closure_ci_high"] = _percentile(closures, level)
            row["gap_closure_defined"] = float(np.isfinite(closures).mean()) if len(closures) else float("nan")
        rows.append(row)
    result = pd.DataFrame(rows)
    if seeds[0].side_truth:
        locks = every[every["metric"] == "side_lock"]
        side = result.set_index("metric")
        lock_rows = [{"organ": seeds[0].organ, "metric": "side_lock", "seeds": len(seeds),
                      **{f"{arm}_mean": float(side_lock({m: side.loc[m, f"{arm}_mean"] for m in SIDE_METRICS}))
                         for arm in arms},
                      **{f"{arm}_seeds_flagged": int(locks[arm].sum()) for arm in arms}}]
        result = pd.concat([result, pd.DataFrame(lock_rows)], ignore_index=True)
    return result
