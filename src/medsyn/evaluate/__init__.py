"""The evaluate stage: metrics of one run (metrics.py), statistics across arms and replicates (stats.py), what
synthetic images are worth in real images (worth.py), the audit of synthetic data (audit.py: fidelity.py,
memorization.py, features.py), and the audit's measures used to choose a diffusion model's guidance (guidance.py).

Public API:
    medsyn.evaluate.metrics.classification_metrics(y_true, proba, threshold=None) -> dict
    medsyn.evaluate.stats.summarize_arms(results, controls, n_bootstrap=2000, seed=0, min_effect=0.01) -> dict
    medsyn.evaluate.stats.delong_test(y_true, score_a, score_b) -> dict     (one pair of scorers on one test set)
    medsyn.evaluate.worth.real_images_worth(sizes, real, arm) -> dict
    medsyn.evaluate.audit.run_audit(real, synthetic, out_dir, config, generator_name) -> dict
    medsyn.evaluate.guidance.choose_guidance(real, sample, scales, config) -> dict   (a ddpm's scale, on real val)
"""
