"""Statistics of the gain benchmark against hand-made numbers with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rsuper.evaluate.gain import ARMS, OrganCases, aggregate, bootstrap, choose_threshold, gap_closure, seed_table, \
    side_lock, validation_split

IDS = [f"c{i}" for i in range(8)]  # sorted; c0, c2, c4, c6 are validation


def _cases(volumes: dict[str, list[float]], truth: list[bool], **extra) -> OrganCases:
    """Eight cases (validation at even positions); max_probability = volume / 1000, DSC = 0.5 everywhere."""
    n = len(truth)
    return OrganCases(organ="pancreas", case_ids=np.array(IDS[:n]), truth=np.array(truth),
                      tumor_mask=np.array(truth), validation=np.arange(n) % 2 == 0,
                      volume={arm: np.array(v, float) for arm, v in volumes.items()},
                      max_probability={arm: np.array(v, float) / 1000 for arm, v in volumes.items()},
                      dsc={arm: np.full(n, 0.5) for arm in volumes}, **extra)


def test_gap_closure_hand_values_and_na_guard():
    assert gap_closure(0.5, 0.7, 0.9) == pytest.approx(0.5)
    assert gap_closure(0.5, 0.95, 0.9) == pytest.approx(1.125)  # beyond the upper bound: > 1
    assert gap_closure(0.5, 0.4, 0.9) == pytest.approx(-0.25)  # worse than the baseline: < 0
    assert math.isnan(gap_closure(0.5, 0.7, 0.51))  # headroom 1 point < 2 points: n/a
    assert math.isnan(gap_closure(0.5, 0.7, 0.3))  # the "upper bound" below the baseline: n/a
    assert math.isnan(gap_closure(0.5, float("nan"), 0.9))
    assert gap_closure(0.25, 0.5, 0.5, min_gap=0.25) == pytest.approx(1.0)  # exactly min_gap is enough


def test_validation_split_is_a_fixed_rule_on_sorted_ids():
    split = validation_split(["c3", "c1", "c0", "c2", "c4"])
    assert split == {"c0": True, "c1": False, "c2": True, "c3": False, "c4": True}


def test_threshold_is_chosen_on_validation_and_reported_on_the_test_half():
    # positions: validation c0 c2 c4 c6 = truth T T F F, volumes 500 400 100 0 -> best F1 (1.0) at 400 mm3
    # test c1 c3 c5 c7 = truth T T F F, volumes 450 350 420 0 -> at 400: TP 1, FN 1, FP 1, TN 1
    # (the test half alone would pick 350: sensitivity 1, specificity 0.5, F1 0.8)
    truth = [True, True, True, True, False, False, False, False]
    volume = [500, 450, 400, 350, 100, 420, 0, 0]
    cases = _cases({arm: volume for arm in ARMS}, truth)
    assert choose_threshold(np.array([True, True, False, False]), np.array([500, 400, 100, 0])) == 400
    assert cases.thresholds() == {arm: 400 for arm in ARMS}
    metrics = cases.metrics("R-Super", 400)
    assert (metrics["sensitivity"], metrics["specificity"], metrics["f1"]) == (0.5, 0.5, 0.5)
    # AUROC and DSC use every test CT: positives 500 450 400 350 vs negatives 100 420 0 0 -> 4+4+3+3 = 14/16
    assert metrics["auroc_volume"] == pytest.approx(14 / 16)
    assert metrics["auroc_max_probability"] == pytest.approx(14 / 16)
    assert metrics["dsc_tumor"] == 0.5
    # fixed 300 mm3 on all eight: TP 4, FP 1 (420) -> F1 = 8 / 9
    assert metrics["f1_fixed"] == pytest.approx(8 / 9)


def test_seed_table_gains_and_closure():
    truth = [True, True, True, True, False, False, False, False]
    base = [500, 0, 400, 0, 100, 0, 0, 0]  # test half c1 c3 c5 c7: nothing found -> F1 0
    method = [500, 450, 400, 0, 100, 0, 0, 0]  # one of two test tumors -> F1 2/3
    upper = [500, 450, 400, 420, 100, 0, 0, 0]  # both (>= the 400 mm3 chosen on validation) -> F1 1
    table = seed_table(_cases({"masks-only": base, "R-Super": method, "all-masks": upper}, truth)).set_index("metric")
    assert table.loc["f1", ["masks-only", "R-Super", "all-masks"]].tolist() == pytest.approx([0, 2 / 3, 1])
    assert table.loc["f1", "gain"] == pytest.approx(2 / 3) and table.loc["f1", "headroom"] == 1
    assert table.loc["f1", "gap_closure"] == pytest.approx(2 / 3)
    assert math.isnan(table.loc["dsc_tumor", "gap_closure"])  # all arms 0.5: headroom 0 -> n/a
    assert table.loc["threshold_mm3", "masks-only"] == 400


def test_per_side_rates_and_side_lock_flag():
    # kidney: test half c1 c3 c5 c7; left tumors in c1 c3, right tumor in c5; a right call also in c7 (healthy)
    truth = [True, True, True, True, True, True, False, False]
    sides = {"kidney_left": np.array([1, 1, 0, 1, 0, 0, 0, 0], bool),
             "kidney_right": np.array([0, 0, 1, 0, 1, 1, 0, 0], bool)}
    left = np.array([0, 600, 0, 600, 0, 0, 0, 0], float)  # finds both left tumors
    right = np.array([0, 0, 0, 0, 0, 0, 0, 600], float)  # misses the right tumor, calls the healthy right in c7
    volume = left + right
    cases = _cases({arm: volume for arm in ARMS}, truth, side_truth=sides,
                   side_volume={arm: {"kidney_left": left, "kidney_right": right} for arm in ARMS})
    metrics = cases.metrics("R-Super", 300)
    assert metrics["sensitivity_left"] == 1.0 and metrics["sensitivity_right"] == 0.0
    assert metrics["healthy_call_left"] == 0.0  # left tumor-free on test: c5 c7, neither called
    assert metrics["healthy_call_right"] == pytest.approx(1 / 3)  # right tumor-free on test: c1 c3 c7
    assert side_lock(metrics)
    table = seed_table(cases).set_index("metric")
    assert table.loc["side_lock", "R-Super"] == 1.0
    summary = aggregate([cases, cases], n_bootstrap=20).set_index("metric")
    assert summary.loc["side_lock", "R-Super_mean"] == 1.0 and summary.loc["side_lock", "R-Super_seeds_flagged"] == 2
    assert summary.loc["sensitivity_left", "R-Super_mean"] == 1.0


def test_side_lock_threshold():
    assert not side_lock({"sensitivity_left": 0.8, "sensitivity_right": 0.6,
                          "healthy_call_left": 0.1, "healthy_call_right": 0.2})
    assert not side_lock({"sensitivity_left": 0.75, "sensitivity_right": 0.5})  # exactly 25 points: no flag
    assert side_lock({"sensitivity_left": 0.8, "sensitivity_right": 0.8,
                      "healthy_call_left": 0.0, "healthy_call_right": 0.3})
    assert not side_lock({"sensitivity_left": float("nan"), "sensitivity_right": 1.0})


def _random_seed(rng: np.random.Generator) -> OrganCases:
    truth = rng.random(20) < 0.5
    volumes = {arm: np.where(truth, rng.uniform(0, 1000, 20) + 300 * k, rng.uniform(0, 800, 20))
               for k, arm in enumerate(ARMS)}
    cases = OrganCases(organ="liver", case_ids=np.array([f"c{i:02d}" for i in range(20)]), truth=truth,
                       tumor_mask=truth, validation=np.arange(20) % 2 == 0, volume=volumes,
                       max_probability={arm: v / 2000 for arm, v in volumes.items()},
                       dsc={arm: rng.uniform(0.2 * k, 0.5 + 0.2 * k, 20) for k, arm in enumerate(ARMS)})
    return cases


def test_bootstrap_intervals_contain_the_mean_and_vanish_for_identical_arms():
    rng = np.random.default_rng(0)
    seeds = [_random_seed(rng) for _ in range(3)]
    summary = aggregate(seeds, n_bootstrap=300, seed=1).set_index("metric")
    for metric in ("auroc_volume", "dsc_tumor", "f1"):
        for col in (*ARMS, "gain", "headroom"):
            row = summary.loc[metric]
            assert row[f"{col}_ci_low"] <= row[f"{col}_mean"] <= row[f"{col}_ci_high"], (metric, col)
    assert summary.loc["dsc_tumor", "seeds"] == 3
    # the mean over seeds and its SD are those of the per-seed values
    per_seed = [seed_table(s).set_index("metric").loc["dsc_tumor", "R-Super"] for s in seeds]
    assert summary.loc["dsc_tumor", "R-Super_mean"] == pytest.approx(np.mean(per_seed))
    assert summary.loc["dsc_tumor", "R-Super_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    # paired: the same arm twice has a gain of exactly 0 in every replicate
    same = [OrganCases(**{**s.__dict__, "volume": {a: s.volume["masks-only"] for a in ARMS},
                          "dsc": {a: s.dsc["masks-only"] for a in ARMS},
                          "max_probability": {a: s.max_probability["masks-only"] for a in ARMS}}) for s in seeds]
    replicates = bootstrap(same, n=50)
    assert np.all(replicates["gain/f1"] == 0)
    assert np.all(np.isnan(replicates["gap_closure/f1"]))  # headroom 0: n/a in every replicate
    row = aggregate(same, n_bootstrap=50).set_index("metric").loc["f1"]
    assert math.isnan(row["gap_closure"]) and row["gap_closure_defined"] == 0.0


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(3)
    seeds = [_random_seed(rng) for _ in range(2)]
    a, b = bootstrap(seeds, n=20, seed=5), bootstrap(seeds, n=20, seed=5)
    assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def test_from_frame_aligns_arms_and_rejects_other_cases():
    rows = []
    for arm, volume in zip(ARMS, (0.0, 200.0, 400.0)):
        for case in ("b", "a"):  # unsorted on purpose
            rows.append({"arm": arm, "case_id": case, "organ": "kidney", "truth": case == "a",
                         "tumor_mask": case == "a",
                         "pred_volume_mm3": volume if case == "a" else 0.0, "max_probability": 0.1, "dsc": 0.3,
                         "truth_kidney_left": case == "a", "truth_kidney_right": False,
                         "pred_volume_kidney_left_mm3": volume, "pred_volume_kidney_right_mm3": 0.0})
    frame = pd.DataFrame(rows)
    cases = OrganCases.from_frame(frame, "kidney", sides=("kidney_left", "kidney_right"))
    assert cases.case_ids.tolist() == ["a", "b"] and cases.validation.tolist() == [True, False]
    assert cases.volume["all-masks"].tolist() == [400.0, 0.0]
    assert cases.side_volume["R-Super"]["kidney_left"].tolist() == [200.0, 200.0]
    with pytest.raises(ValueError, match="other test cases"):
        OrganCases.from_frame(frame.drop(index=0), "kidney")
