"""Statistics across arms and seeds on one shared real test split: seed mean/std, bootstrap CIs, paired
differences against reference arms, and DeLong's test for binary AUC.

What the numbers mean (all on the real TEST split; `results[arm][seed]` = that run's test labels/probabilities):
- `mean`, `std`: mean and sample standard deviation (ddof 1) over seeds of the metric on the full test split.
  `std` is the training-run (seed) variability; it says nothing about test-set sampling.
- `ci_low`, `ci_high` (per arm): a 95% percentile bootstrap CI of the SEED-AVERAGED metric under case resampling
  of the test images: each replicate draws N test images with replacement, computes the metric of every seed's
  model on those same images (with that run's own val-chosen threshold), and averages over seeds. It covers the
  uncertainty from the finite test sample, with the trained models held fixed; it does not cover retraining with
  new seeds (that is `std`) or a different training set.
- paired differences (arm minus reference): the same replicates (the same resampled test indices for both arms)
  give the bootstrap distribution of the difference of seed-averaged metrics; `ci_low`/`ci_high` are its 2.5 and
  97.5 percentiles and `p_value` is the two-sided bootstrap p-value 2 * min(P(d <= 0), P(d >= 0)) (with +1
  smoothing, at most 1), which is below 0.05 exactly when the 95% CI excludes 0 (up to ties). Not adjusted for
  multiple comparisons.
- `delong` (two classes only): DeLong's test of AUC(arm) = AUC(reference) on the same test cases, computed with the
  fast algorithm of Sun & Xu (2014) on each arm's SEED-AVERAGED probability of class 1 (one ensemble score per
  arm, so both arms are single scorers on the same cases as the test requires). Its AUCs are of those averaged
  scores and may differ slightly from `mean`, the mean of per-seed AUCs.
Replicates in which a metric is undefined (e.g. a resample without any positive case, for AUC) are left out and
counted in `n_valid`.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse, stats

from medsyn.errors import MedsynError
from medsyn.evaluate.metrics import METRICS, classification_metrics, predict_labels

LEVEL = 0.95


def summarize_arms(results: dict, reference_arms=("real", "real+aug"), n_bootstrap: int = 2000, seed: int = 0
                   ) -> dict:
    """results[arm][seed] = {"y_true", "proba"[, "threshold"]} -> JSON-ready summary (see the module docstring)."""
    y_true, seeds = _check_results(results)
    arms = list(results)
    rng = np.random.default_rng(seed)
    weights = bootstrap_weights(len(y_true), n_bootstrap, rng)
    # replicates[arm][metric] -> (B,) seed-averaged metric per bootstrap replicate
    replicates = {arm: _seed_average([weighted_metrics(weights, y_true, run["proba"], run.get("threshold"))
                                      for run in (results[arm][s] for s in seeds)]) for arm in arms}
    summary = {
        "split": "test", "n_test": int(len(y_true)), "seeds": [int(s) for s in seeds], "n_bootstrap": n_bootstrap,
        "ci_level": LEVEL, "metrics": list(METRICS), "bootstrap_seed": seed,
        "ci_method": "percentile bootstrap, case resampling of test images, of the seed-averaged metric "
                     "(trained models fixed)",
        "p_value_method": "two-sided paired bootstrap (same resampled test images for both arms); DeLong (fast, "
                          "Sun & Xu 2014) for binary AUC on seed-averaged probabilities",
        "arms": {arm: _arm_summary([results[arm][s] for s in seeds], y_true, replicates[arm]) for arm in arms},
        "comparisons": {},
    }
    for ref in reference_arms:
        if ref not in results:
            continue
        summary["comparisons"][ref] = {
            arm: _comparison(replicates[arm], replicates[ref], summary["arms"][arm], summary["arms"][ref],
                             _mean_score(results[arm], seeds), _mean_score(results[ref], seeds), y_true)
            for arm in arms if arm != ref}
    return summary


def bootstrap_weights(n: int, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n) counts: how often each test case appears in each resample of n cases drawn with replacement."""
    idx = rng.integers(0, n, size=(n_bootstrap, n))
    return np.stack([np.bincount(row, minlength=n) for row in idx]).astype(float)


def weighted_metrics(weights: np.ndarray, y_true: np.ndarray, proba: np.ndarray, threshold: float | None = None
                     ) -> dict[str, np.ndarray]:
    """Every metric in METRICS for many case weightings at once: weights (B, N) of counts -> {metric: (B,)}.
    With integer counts it equals `classification_metrics` on the resampled cases (tested), but costs one
    matrix product instead of B scikit-learn calls."""
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=float)
    k = proba.shape[1]
    y_pred = predict_labels(proba, threshold)
    pairs = sparse.csr_matrix((np.ones(len(y_true)), (np.arange(len(y_true)), y_true * k + y_pred)),
                              shape=(len(y_true), k * k))
    cm = np.asarray(pairs.T @ weights.T).T.reshape(-1, k, k)  # (B, true, predicted)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted, total = cm.sum(2), cm.sum(1), cm.sum((1, 2))[:, None]
    fp, fn = predicted - tp, support - tp
    tn = total - tp - fp - fn
    recall, precision = _div(tp, support), _div(tp, predicted)
    specificity, f1 = _div(tn, tn + fp), _div(2 * tp, 2 * tp + fp + fn)
    present = support > 0
    out = {
        "accuracy": tp.sum(1) / total[:, 0],
        "balanced_accuracy": np.where(present, recall, 0).sum(1) / present.sum(1),
        "auc": _weighted_auc(weights, y_true, proba),
    }
    pick = (lambda a: a[:, 1]) if k == 2 else (lambda a: a.mean(1))
    out.update(sensitivity=pick(recall), specificity=pick(specificity), precision=pick(precision), f1=pick(f1))
    return out


def delong_test(y_true, score_a, score_b) -> dict:
    """DeLong's test of equal AUC for two scores on the same cases (fast algorithm, Sun & Xu 2014)."""
    y_true = np.asarray(y_true, dtype=int)
    aucs, cov = delong_covariance(y_true, np.vstack([score_a, score_b]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = aucs[0] - aucs[1]
    z = diff / np.sqrt(var) if var > 0 else 0.0
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": float(diff),
            "se": float(np.sqrt(max(var, 0.0))), "z": float(z), "p_value": float(2 * stats.norm.sf(abs(z)))}


def delong_covariance(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of k scores (k, N) for the labels y_true (1 = positive) and DeLong's (k, k) covariance of them,
    via midranks (Sun & Xu 2014): O(k N log N) instead of the O(k m n) placement matrix."""
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    pos, neg = scores[:, y_true == 1], scores[:, y_true == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError("DeLong's test needs at least two positive and two negative cases")
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.hstack([pos, neg]), axis=1)
    aucs = tz[:, :m].sum(1) / (m * n) - (m + 1) / (2 * n)
    v10 = (tz[:, :m] - tx) / n            # per positive: share of negatives it outranks (ties count 1/2)
    v01 = 1 - (tz[:, m:] - ty) / m        # per negative: share of positives that outrank it
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


# --- helpers ---------------------------------------------------------------------------------------------------

def _arm_summary(runs: list[dict], y_true: np.ndarray, replicates: dict) -> dict:
    per_seed = [classification_metrics(y_true, run["proba"], run.get("threshold")) for run in runs]
    out = {}
    for metric in METRICS:
        values = np.array([np.nan if r[metric] is None else r[metric] for r in per_seed], dtype=float)
        low, high, n_valid = _percentile_ci(replicates[metric])
        out[metric] = {"mean": _num(np.mean(values)), "std": _num(np.std(values, ddof=1)) if len(values) > 1 else None,
                       "per_seed": [_num(v) for v in values], "ci_low": low, "ci_high": high, "n_valid": n_valid}
    return out


def _comparison(arm_reps: dict, ref_reps: dict, arm_summary: dict, ref_summary: dict, arm_score, ref_score,
                y_true) -> dict:
    out = {}
    for metric in METRICS:
        diff = arm_reps[metric] - ref_reps[metric]
        diff = diff[np.isfinite(diff)]
        low, high, n_valid = _percentile_ci(diff)
        point = None if arm_summary[metric]["mean"] is None or ref_summary[metric]["mean"] is None else \
            arm_summary[metric]["mean"] - ref_summary[metric]["mean"]
        out[metric] = {"diff": _num(point), "ci_low": low, "ci_high": high, "p_value": _bootstrap_p(diff),
                       "n_valid": n_valid}
    binary = arm_score is not None and len(np.unique(y_true)) == 2 and min(np.bincount(y_true)) >= 2
    out["delong"] = delong_test(y_true, arm_score, ref_score) if binary else None
    return out


def _mean_score(runs_by_seed: dict, seeds) -> np.ndarray | None:
    proba = np.mean([np.asarray(runs_by_seed[s]["proba"], dtype=float) for s in seeds], axis=0)
    return proba[:, 1] if proba.shape[1] == 2 else None


def _seed_average(per_seed: list[dict]) -> dict:
    return {metric: np.mean([reps[metric] for reps in per_seed], axis=0) for metric in METRICS}


def _weighted_auc(weights: np.ndarray, y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Binary AUC of p(class 1), or the macro one-vs-rest AUC, for each weighting; NaN where undefined."""
    k = proba.shape[1]
    if k == 2:
        return _weighted_binary_auc(weights, y_true == 1, proba[:, 1])
    return np.mean([_weighted_binary_auc(weights, y_true == c, proba[:, c]) for c in range(k)], axis=0)


def _weighted_binary_auc(weights: np.ndarray, positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """sum_{i pos, j neg} w_i w_j ([s_i > s_j] + [s_i = s_j] / 2) / (W_pos W_neg), through cumulative sums over
    the distinct score values."""
    values, inverse = np.unique(score, return_inverse=True)
    onehot = sparse.csr_matrix((np.ones(len(score)), (np.arange(len(score)), inverse)), shape=(len(score), len(values)))
    pos = np.asarray(onehot.T @ (weights * positive).T).T     # (B, U): weight of positives at each value
    neg = np.asarray(onehot.T @ (weights * ~positive).T).T
    below = np.cumsum(neg, axis=1) - neg
    w_pos, w_neg = pos.sum(1), neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(1) / (w_pos * w_neg)
    return np.where((w_pos > 0) & (w_neg > 0), auc, np.nan)


def _percentile_ci(values: np.ndarray) -> tuple[float | None, float | None, int]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None, None, 0
    alpha = (1 - LEVEL) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high), int(len(values))


def _bootstrap_p(diff: np.ndarray) -> float | None:
    if len(diff) == 0:
        return None
    tail = min((diff <= 0).sum(), (diff >= 0).sum())
    return float(min(1.0, 2 * (tail + 1) / (len(diff) + 1)))


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def _num(value) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _check_results(results: dict) -> tuple[np.ndarray, list]:
    if not results:
        raise MedsynError("no classifier results to summarize.")
    arms = list(results)
    seeds = sorted(results[arms[0]])
    y_true = np.asarray(results[arms[0]][seeds[0]]["y_true"], dtype=int)
    for arm in arms:
        if sorted(results[arm]) != seeds:
            raise MedsynError(f"arm {arm!r} has seeds {sorted(results[arm])}, arm {arms[0]!r} has {seeds}; every "
                              f"arm must be run over the same seeds for paired comparisons.")
        for s in seeds:
            run = results[arm][s]
            if not np.array_equal(np.asarray(run["y_true"], dtype=int), y_true):
                raise MedsynError(f"arm {arm!r} seed {s} was tested on different cases than arm {arms[0]!r}; "
                                  f"all arms must share one test split.")
            if np.shape(run["proba"]) != (len(y_true), np.shape(results[arms[0]][seeds[0]]["proba"])[1]):
                raise MedsynError(f"arm {arm!r} seed {s}: probabilities shaped {np.shape(run['proba'])}, expected "
                                  f"one row per test case and one column per class.")
    return y_true, seeds
