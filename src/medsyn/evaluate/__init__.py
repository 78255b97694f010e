"""The evaluate stage: metrics of one run (metrics.py), statistics across arms and seeds (stats.py), and the
audit of synthetic data (audit.py: fidelity.py, memorization.py, features.py).

Public API:
    medsyn.evaluate.metrics.classification_metrics(y_true, proba, threshold=None) -> dict
    medsyn.evaluate.stats.summarize_arms(results, reference_arms=("real", "real+aug"), n_bootstrap=2000, seed=0)
    medsyn.evaluate.stats.delong_test(y_true, score_a, score_b) -> dict
    medsyn.evaluate.audit.run_audit(real, synthetic, out_dir, config, generator_name) -> dict
"""
