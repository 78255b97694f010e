"""The verdict's logic on hand-made comparisons, and Holm's adjustment against its definition."""

from __future__ import annotations

import pytest

from medsyn.report.verdict import holm, verdicts


def test_holm_matches_its_definition():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max keeps 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def _results(**arms):
    """arms: name -> (diff, ci_low, ci_high, p) against `real`."""
    comparisons = {name: {"auc": {"diff": d, "ci_low": lo, "ci_high": hi, "p_value": p}}
                   for name, (d, lo, hi, p) in arms.items()}
    return {"n_test": 624, "seeds": [0, 1, 2], "comparisons": {"real": comparisons}}


def test_a_significant_gain_is_reported_even_when_a_larger_noisy_one_exists():
    results = _results(**{"real+synth@1": (0.020, 0.010, 0.030, 0.001),
                          "real+synth@2": (0.030, -0.050, 0.110, 0.40),
                          "real+aug": (0.050, 0.040, 0.060, 0.001)})      # no synthetic images: not in the family
    (verdict,) = verdicts(results)
    assert verdict["arm"] == "real+synth@1" and verdict["significant"]
    assert verdict["n_compared"] == 2 and verdict["p_holm"] == pytest.approx(0.002)
    assert verdict["text"].startswith("real+synth@1 improved test AUC by +0.020 [95% CI +0.010, +0.030] over real")


def test_balance_arm_counts_as_synthetic_and_losses_are_named():
    results = _results(**{"real+balance": (-0.004, -0.010, 0.002, 0.20),
                          "synth": (-0.080, -0.100, -0.060, 0.001)})
    (verdict,) = verdicts(results)
    assert verdict["n_compared"] == 2 and verdict["arm"] == "real+balance" and not verdict["significant"]
    assert verdict["text"].startswith("No significant improvement over real")
    assert verdict["significantly_worse"] == ["synth"] and "Significantly worse than real: synth." in verdict["text"]


def test_holm_can_take_away_a_nominal_gain():
    results = _results(**{f"real+synth@{r}": (0.01, 0.001, 0.02, 0.04) for r in (0.5, 1, 2)})
    (verdict,) = verdicts(results)
    assert not verdict["significant"] and verdict["p_holm"] == pytest.approx(0.12)
