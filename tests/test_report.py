"""The verdict's words on hand-made comparison records: what improved, what got worse, what is unresolved, what
would resolve it, and the positive control stated before everything else."""

from __future__ import annotations

from medsyn.report.verdict import headline, sentence


def _record(arm, diff, low, high, verdict, control="real", decided_by=None, between=0.01, test_sd=0.003):
    return {"arm": arm, "control": control, "metric": "auc", "diff": diff, "ci_low": low, "ci_high": high,
            "p_value": 0.01, "p_adjusted": 0.03, "n_replicates": 5, "n_clusters": 5, "n_comparisons": 3,
            "ci_level": 1 - 0.05 / 3, "between_cluster_sd": between, "unit": "generator", "test_sampling_sd": test_sd,
            "verdict": verdict, "decided_by": decided_by}


def _results(*records):
    return {"n_test": 624, "replicates": [0, 1, 2, 3, 4], "min_effect": 0.01, "comparisons": list(records)}


def test_headline_names_gains_losses_and_unresolved_comparisons():
    results = _results(_record("real+synth@1", 0.02, 0.01, 0.03, "improved"),
                       _record("synth", -0.08, -0.1, -0.06, "worse"),
                       _record("real+aug+synth", 0.001, -0.02, 0.022, "inconclusive", control="real+aug"))
    text = headline(results)
    assert text.startswith("Improved AUC: real+synth@1 vs real +0.020 [98.3% CI +0.010, +0.030], adjusted p = 0.03")
    assert "Worse AUC: synth vs real -0.080" in text
    assert "Inconclusive (the adjusted CI is wider than the smallest effect of interest, ±0.01): real+aug+synth vs " \
           "real+aug" in text
    assert "5 replicates; CIs Bonferroni-adjusted over 3 comparisons" in text


def test_small_gains_count_as_gains_and_the_positive_control_leads():
    results = _results(_record("real+synth@1", 0.004, 0.001, 0.007, "improved, by less than min_effect"),
                       _record("real+heldout@1", 0.002, -0.01, 0.014, "inconclusive"))
    text = headline(results)
    assert text.startswith("THE STUDY CANNOT SEE HELP HERE: the positive control real+heldout@1 vs real")
    assert "Improved AUC: real+synth@1 vs real +0.004" in text and "over 3 comparisons" in text
    seen = headline(_results(_record("real+heldout@1", 0.03, 0.01, 0.05, "improved")))
    assert seen.startswith("The study can see help here: the positive control real+heldout@1 vs real improved")


def test_no_gain_is_said_plainly_and_inconclusive_says_what_would_decide():
    results = _results(_record("real+synth@1", 0.002, -0.004, 0.008, "no difference"),
                       _record("real+balance", 0.004, -0.02, 0.028, "inconclusive",
                               decided_by="about 12 generators, one per replicate"))
    text = headline(results)
    assert text.startswith("No arm with synthetic images improved test AUC over its matched control. No difference "
                           "larger than ±0.01: real+synth@1 vs real.")
    wide = sentence(results["comparisons"][1], results)
    assert "sd between 5 generators 0.0100, test-sampling sd 0.0030: inconclusive" in wide
    assert "would be decided by about 12 generators, one per replicate" in wide
