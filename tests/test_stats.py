"""The verdict's statistics: interval coverage by simulation against a known true difference, with a generator
shared by replicates and with a small seed variance (benchmarks/interval_coverage.py; the previous estimator undercovers
the first), the Bonferroni adjustment that the shown interval and the verdict share, the verdict rules, the power
calculation behind `replicates_needed`, and generator efficiency."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from medsyn.metrics import METRICS
from medsyn.stats.paired import judge, replicates_needed, summarize_arms

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import interval_coverage as simulation  # noqa: E402  (benchmarks/interval_coverage.py: the simulated studies)

STUDIES = 250


@pytest.mark.slow
@pytest.mark.parametrize("scenario", [simulation.SCENARIOS[0], simulation.SCENARIOS[2]], ids=lambda s: s.name)
def test_intervals_cover_a_known_difference(scenario):
    row = simulation.coverage(scenario, STUDIES)
    print(f"{scenario.name}: coverage {row['coverage']:.1%}, previous estimator {row['coverage_previous']:.1%} "
          f"({STUDIES} studies, simulation sd {row['simulation_sd']:.1%})")
    assert 0.92 <= row["coverage"] <= 0.98                     # 95% within about 2 simulation sds
    if scenario.generators < scenario.replicates:
        assert row["coverage_previous"] < 0.88                 # replicates on shared generators as independent


def _three_arms(rng, replicates=4):
    y = (rng.random(200) < 0.5).astype(int)

    def arm(quality):
        return {r: {"y_true": y, "proba": np.column_stack([1 - p, p]), "threshold": 0.5}
                for r in range(replicates) for p in [1 / (1 + np.exp(-(rng.normal(size=200) + quality * y)))]}

    return {"real": arm(1.0), "real+synth@1": arm(1.1), "real+synth@2": arm(1.6), "synth": arm(0.7)}


def test_bonferroni_adjusts_the_shown_interval_and_the_verdict_reads_it():
    results = _three_arms(np.random.default_rng(3))
    controls = {a: "real" for a in results if a != "real"}
    summary = summarize_arms(results, controls, n_bootstrap=200)
    for metric in METRICS:
        family = [c for c in summary["comparisons"] if c["metric"] == metric]
        for c in family:
            assert c["n_comparisons"] == 3 and c["ci_level"] == pytest.approx(1 - 0.05 / 3)
            assert c["p_adjusted"] == pytest.approx(min(1.0, 3 * c["p_value"]))
            low, high = c["ci_unadjusted"]
            assert c["ci_low"] < low < c["diff"] < high < c["ci_high"]          # wider than the 95% one
            assert (c["p_adjusted"] < 0.05) == (c["ci_low"] > 0 or c["ci_high"] < 0)   # p and CI agree
            assert c["verdict"] == judge(c, 0.01)
    one = summarize_arms({"real": results["real"], "synth": results["synth"]}, {"synth": "real"}, n_bootstrap=200)
    c = next(c for c in one["comparisons"] if c["metric"] == "auc")
    assert c["ci_unadjusted"] == [c["ci_low"], c["ci_high"]]                    # a family of one: unadjusted


def _record(diff, low, high, clusters=5):
    return {"diff": diff, "ci_low": low, "ci_high": high, "n_clusters": clusters}


def test_verdict_rules():
    assert judge(_record(0.02, 0.012, 0.03), 0.01) == "improved"
    assert judge(_record(0.005, 0.002, 0.008), 0.01) == "improved, by less than min_effect"
    assert judge(_record(-0.02, -0.03, -0.011), 0.01) == "worse"
    assert judge(_record(-0.005, -0.008, -0.001), 0.01) == "worse, by less than min_effect"
    assert judge(_record(0.001, -0.004, 0.006), 0.01) == "no difference"
    assert judge(_record(0.001, -0.02, 0.022), 0.01) == "inconclusive"       # wider than +-0.01
    assert judge(_record(0.02, -0.001, 0.04), 0.01) == "inconclusive"        # the adjusted CI reaches 0
    assert judge(_record(0.02, 0.01, 0.03, clusters=1), 0.01) == "inconclusive"   # no training variance known


def test_replicates_needed_is_a_power_calculation_at_the_observed_difference():
    from medsyn.stats.paired import _half_width, _se
    from scipy import stats as sps

    between, test_sd, effect = 0.03, 0.003, 0.01
    needed = replicates_needed(0.02, between, test_sd, effect, n_comparisons=3, have=5)
    level = 1 - 0.05 / 3
    power = lambda k: sps.norm.cdf((0.02 - _half_width(between, test_sd, k, level)) / _se(between, test_sd, k))
    assert power(needed) >= 0.8 > power(needed - 1)
    assert replicates_needed(0.02, 0.001, test_sd, effect, 3, have=5) == 6      # never fewer than those run + 1
    # a small difference: enough to bring the CI inside +-min_effect around it
    small = replicates_needed(0.002, between, test_sd, effect, 3, have=5)
    assert 0.002 + _half_width(between, test_sd, small, level) < effect <= \
        0.002 + _half_width(between, test_sd, small - 1, level)
    assert replicates_needed(0.002, between, 0.006, effect, 3, have=5) is None  # only a larger test split
    assert replicates_needed(0.02, None, test_sd, effect, 3, have=1) is None


def test_shared_generators_say_more_generators_are_needed_and_widen_the_interval():
    rng = np.random.default_rng(7)
    results = _three_arms(rng, replicates=6)
    controls = {"real+synth@1": "real"}
    results = {a: results[a] for a in ("real", "real+synth@1")}
    shared = summarize_arms(results, controls, n_bootstrap=200, clusters={"real+synth@1": {r: r % 2 for r in range(6)}})
    own = summarize_arms(results, controls, n_bootstrap=200, clusters={"real+synth@1": {r: r for r in range(6)}})
    a, b = (next(c for c in s["comparisons"] if c["metric"] == "auc") for s in (shared, own))
    assert a["n_clusters"] == 2 and b["n_clusters"] == 6 and a["df"] == 1 and b["df"] == 5
    assert a["ci_high"] - a["ci_low"] > b["ci_high"] - b["ci_low"]
    assert a["verdict"] == "inconclusive" and a["replicates_needed"] > 2
    assert a["decided_by"] == (f"about {a['replicates_needed']} generators, one per replicate: more replicates on "
                               f"the same 2 generators would not")


def test_generator_efficiency_recovers_a_known_share_of_the_perfect_gain():
    rng = np.random.default_rng(0)
    y = (rng.random(600) < 0.5).astype(int)
    case = rng.normal(size=600)

    def arm(quality, sd=0.02):
        return {r: {"y_true": y, "proba": np.column_stack([1 - p, p]), "threshold": 0.5}
                for r in range(6) for p in [1 / (1 + np.exp(-((quality + rng.normal(0, sd)) * y + case
                                                              + rng.normal(0, 0.3, 600))))]}

    results = {"real": arm(0.5), "real+heldout@1": arm(1.5), "real+synth@1": arm(1.0), "real+pseudo@1": arm(0.8)}
    summary = summarize_arms(results, {"real+heldout@1": "real", "real+synth@1": "real", "real+pseudo@1": "real"},
                             n_bootstrap=300, clusters={"real+synth@1": {r: r for r in range(6)}},
                             positive_controls={"real+synth@1": "real+heldout@1"},
                             baselines={"real+synth@1": "real+pseudo@1"})  # a second comparison of the arm
    auc = next(e for e in summary["efficiency"] if e["metric"] == "auc")
    diffs = {c["arm"]: c["diff"] for c in summary["comparisons"] if c["metric"] == "auc" and c["control"] == "real"}
    assert auc["efficiency"] == pytest.approx(diffs["real+synth@1"] / diffs["real+heldout@1"])
    assert 0.3 < auc["efficiency"] < 0.7 and auc["ci_low"] < auc["efficiency"] < auc["ci_high"]
    useless = summarize_arms({"real": results["real"], "real+heldout@1": results["real"],
                              "real+synth@1": results["real+synth@1"]},
                             {"real+heldout@1": "real", "real+synth@1": "real"}, n_bootstrap=100,
                             positive_controls={"real+synth@1": "real+heldout@1"})
    none = next(e for e in useless["efficiency"] if e["metric"] == "auc")
    assert none["efficiency"] is None and "not significant" in none["note"]


@pytest.mark.parametrize("metric", ["auc", "accuracy"])
def test_a_single_replicate_is_never_decisive(metric):
    study, _ = simulation.simulate(simulation.SCENARIOS[0], np.random.default_rng(5))
    results = {arm: {0: runs[0]} for arm, runs in study.items()}
    summary = summarize_arms(results, {"real+synth@1": "real"}, n_bootstrap=100)
    record = next(c for c in summary["comparisons"] if c["metric"] == metric)
    assert record["between_replicate_sd"] is None and record["verdict"] == "inconclusive"
    assert "second generator" in record["decided_by"]
    assert record["ci_low"] is None and record["p_value"] is None and record["p_adjusted"] is None


@pytest.mark.slow
def test_worth_recovers_a_known_answer_on_a_constructed_curve():
    from medsyn.stats.worth import real_images_worth

    sizes = np.array([100, 250, 1000, 4000])
    curve = lambda n: 0.70 + 0.05 * np.log10(n)                      # a known learning curve
    points = [{"mean": curve(n), "se": 0.001, "df": 5} for n in sizes]
    arm = {"mean": curve(1000), "se": 0.001, "df": 5}                  # an arm at 250 images as good as 1000
    worth = real_images_worth(sizes, points, arm)
    assert worth["worth"] == pytest.approx(1000, rel=1e-9) and worth["beyond"] is None
    assert worth["ci_low"] < 1000 < worth["ci_high"] and worth["ci_high"] / worth["ci_low"] < 1.5
    exact = real_images_worth(sizes, points, {"mean": curve(600), "se": 0.0, "df": None})
    assert exact["worth"] == pytest.approx(600, rel=1e-9)               # linear in log n: exact at any size
    bent = [dict(p) for p in points]
    bent[2]["mean"] = curve(100) - 0.01                                 # a noisy dip: the isotonic fit stays monotone
    assert real_images_worth(sizes, bent, {"mean": curve(2000), "se": 0.0, "df": None})["worth"] > 1000
    above = real_images_worth(sizes, points, {**arm, "mean": curve(1000) + 0.2})
    assert above["beyond"] == "above" and above["worth"] is None and above["bound"] == 4000
    assert above["ci_high"] is None                                     # no collapsed "[4000, 4000]"
    below = real_images_worth(sizes, points, {**arm, "mean": curve(1000) - 0.2})
    assert below["beyond"] == "below" and below["ci_low"] is None


def test_an_arm_on_one_generator_gets_no_interval_only_its_spread():
    """Six replicates on one generator: the spread between them is shown, but an interval from test sampling alone
    would claim to cover a generator's randomness that one generator cannot show."""
    rng = np.random.default_rng(3)
    results = {a: r for a, r in _three_arms(rng, replicates=6).items() if a in ("real", "real+synth@1")}
    summary = summarize_arms(results, {"real+synth@1": "real"}, n_bootstrap=200,
                             clusters={"real+synth@1": {r: 0 for r in range(6)}})
    arm, real = summary["arms"]["real+synth@1"]["auc"], summary["arms"]["real"]["auc"]
    assert arm["n_clusters"] == 1 and arm["std"] > 0 and arm["ci_low"] is None and arm["ci_high"] is None
    assert real["n_clusters"] == 6 and real["ci_low"] < real["mean"] < real["ci_high"]


def test_an_arms_interval_stays_within_the_metrics_range():
    """Two generators far apart (one near-perfect): a t interval at 1 df would reach past 1; every metric is a
    share, so the shown interval is clipped to [0, 1]."""
    rng = np.random.default_rng(5)
    y = (rng.random(300) < 0.5).astype(int)
    def replicate(quality):
        p = 1 / (1 + np.exp(-(rng.normal(size=300) + quality * (2 * y - 1))))
        return {"y_true": y, "proba": np.column_stack([1 - p, p]), "threshold": 0.5}
    results = {"real": {r: replicate(1.0) for r in range(4)},
               "synth": {r: replicate(6.0 if r < 2 else 0.5) for r in range(4)}}
    summary = summarize_arms(results, {"synth": "real"}, n_bootstrap=200,
                             clusters={"synth": {0: 0, 1: 0, 2: 1, 3: 1}})
    bounds = [(m["ci_low"], m["ci_high"]) for m in summary["arms"]["synth"].values()]
    assert all(0.0 <= low <= high <= 1.0 for low, high in bounds)
    assert any(high == 1.0 for _, high in bounds) and any(low == 0.0 for low, _ in bounds)  # clipped, not narrow


def test_a_synthetic_arm_is_also_compared_with_its_pseudo_label_baseline():
    from sklearn.metrics import roc_auc_score

    from medsyn.report.verdict import headline

    arms = _three_arms(np.random.default_rng(5))
    results = {"real": arms["real"], "real+pseudo@1": arms["real+synth@1"], "real+synth@1": arms["real+synth@2"]}
    controls = {"real+pseudo@1": "real", "real+synth@1": "real"}
    summary = summarize_arms(results, controls, n_bootstrap=200, baselines={"real+synth@1": "real+pseudo@1"})
    beyond = [c for c in summary["comparisons"] if c.get("versus") == "baseline"]
    assert {(c["arm"], c["control"], c["metric"]) for c in beyond} == \
        {("real+synth@1", "real+pseudo@1", m) for m in METRICS}
    auc = next(c for c in beyond if c["metric"] == "auc")
    per_replicate = [roc_auc_score(r["y_true"], r["proba"][:, 1]) for r in results["real+synth@1"].values()]
    baseline = [roc_auc_score(r["y_true"], r["proba"][:, 1]) for r in results["real+pseudo@1"].values()]
    assert auc["diff"] == pytest.approx(np.mean(per_replicate) - np.mean(baseline))
    assert auc["n_comparisons"] == 3                                   # Bonferroni over the baseline comparison too
    said = headline(summary, "auc")
    assert ("Synthetic images beat pseudo-labels: real+synth@1 vs real+pseudo@1" in said) == \
        auc["verdict"].startswith("improved")
    assert "Pseudo-label comparisons (AUC): real+pseudo@1 vs real " in said
