"""The verdict's words on hand-made comparison records: what improved, what got worse, what is unresolved and
what would resolve it."""

from __future__ import annotations

from medsyn.report.verdict import headline, sentence


def _record(arm, diff, low, high, verdict, control="real", needed=None, between=0.01, test_sd=0.003):
    return {"arm": arm, "control": control, "metric": "auc", "diff": diff, "ci_low": low, "ci_high": high,
            "p_value": 0.01, "p_adjusted": 0.03, "n_replicates": 5, "between_replicate_sd": between,
            "test_sampling_sd": test_sd, "verdict": verdict, "replicates_needed": needed}


def _results(*records):
    return {"n_test": 624, "replicates": [0, 1, 2, 3, 4], "min_effect": 0.01, "comparisons": list(records)}


def test_headline_names_gains_losses_and_unresolved_comparisons():
    results = _results(_record("real+synth@1", 0.02, 0.01, 0.03, "improved"),
                       _record("synth", -0.08, -0.1, -0.06, "worse"),
                       _record("real+aug+synth", 0.001, -0.02, 0.022, "inconclusive", control="real+aug", needed=9))
    text = headline(results)
    assert text.startswith("Improved AUC: real+synth@1 vs real +0.020 [95% CI +0.010, +0.030], Holm p = 0.03")
    assert "Worse AUC: synth vs real -0.080" in text
    assert "Inconclusive (the 95% CI is wider than the smallest effect of interest, ±0.01): real+aug+synth vs " \
           "real+aug" in text
    assert "5 replicates, Holm-adjusted over 3 comparisons" in text


def test_no_gain_is_said_plainly_and_inconclusive_says_what_would_decide():
    results = _results(_record("real+synth@1", 0.002, -0.004, 0.008, "no difference"),
                       _record("real+balance", 0.004, -0.02, 0.028, "inconclusive", needed=12))
    text = headline(results)
    assert text.startswith("No arm with synthetic images improved test AUC over its matched control. No difference "
                           "larger than ±0.01: real+synth@1 vs real.")
    wide = sentence(results["comparisons"][1], results)
    assert "between-replicate sd 0.0100, test-sampling sd 0.0030: inconclusive" in wide
    assert "about 12 replicates would narrow the CI below ±0.01" in wide
    small_test = _record("synth", 0.0, -0.03, 0.03, "inconclusive", test_sd=0.008)
    assert "test split about 2.5 times larger" in sentence(small_test, results)
