"""The statistics stage: what the finished classifier runs' files say, across arms and replicates.

Paired comparisons with each arm's matched control, clustered by generator, with Bonferroni-adjusted intervals and
verdicts (paired.py); what synthetic images are worth in real images on a learning curve (worth.py); the run's
results.json, written from the runs' files only, so a report can be rebuilt at any time (results.py).

Public API:
    medsyn.stats.summarize_arms(results, controls, n_bootstrap=2000, seed=0, min_effect=0.01) -> dict
    medsyn.stats.delong_test(y_true, score_a, score_b) -> dict     (one pair of scorers on one test set)
    medsyn.stats.real_images_worth(sizes, curve, arm) -> dict
"""

from medsyn.stats.paired import delong_test, summarize_arms
from medsyn.stats.worth import real_images_worth

__all__ = ["delong_test", "real_images_worth", "summarize_arms"]
