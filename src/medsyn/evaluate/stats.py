"""Statistics across arms and training replicates on one shared real test split.

The unit of replication is a *replicate*: one draw of every source of training randomness (the classifier's seed
and, for arms with synthetic images, the generator seed that made their pool). Every arm runs on the same
replicates, so arm r and its matched control r form a pair. `results[arm][replicate]` holds that run's test labels
and probabilities.

What each interval covers. The quantity estimated is the recipe's expected test metric (or the expected paired
difference arm - control), expected over new training replicates AND a new test sample from the same population.
Its estimate is the mean over replicates of the metric on the whole test split; its variance has two parts:
- between-replicate: the sample variance over replicates of the per-replicate metric (or per-replicate paired
  difference) on the whole test split, divided by R (training randomness: seeds of the classifier and generator);
- test-sampling: the variance of the replicate-averaged metric (difference) under case resampling of the test
  images, the same resampled cases for every arm and replicate (paired), with the trained models fixed.
se = sqrt(sb^2 / R + st^2). The 95% interval is mean +- t * se with Welch-Satterthwaite degrees of freedom
(R - 1) * (se^2 / (sb^2 / R))^2, treating the test-sampling part as known: with few replicates and a large seed
variance it is a t-interval on R - 1 degrees of freedom (a percentile bootstrap over 3 seeds is far too narrow),
with a negligible seed variance it is the normal test-sampling interval. Assumption: the replicate-level estimates
are approximately normal. The two-sided p-value comes from the same t statistic. A test in tests/ checks that the
interval reaches 95% coverage on simulated studies with a known true difference and seed-level noise, where a
test-only bootstrap falls well short.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse, stats

from medsyn.errors import MedsynError
from medsyn.evaluate.metrics import METRICS, predict_labels

LEVEL = 0.95
VERDICTS = ("improved", "worse", "no difference", "inconclusive")
CI_METHOD = ("mean over replicates +- t * sqrt(between-replicate variance / R + test-sampling variance), "
             "Welch-Satterthwaite df; test sampling by paired case bootstrap of the real test split")


def summarize_arms(results: dict, controls: dict[str, str], n_bootstrap: int = 2000, seed: int = 0,
                   min_effect: float = 0.01) -> dict:
    """results[arm][replicate] = {"y_true", "proba"[, "threshold"]}; controls[arm] = its matched control arm.
    Returns the JSON-ready summary: per arm and metric the mean, both variance components and the interval; and
    `comparisons`, a flat list of records, one per (arm, control, metric), with Holm-adjusted p-values over the
    family of comparisons of each metric and a verdict (see `judge`)."""
    y_true, replicates = _check_results(results, controls)
    weights = bootstrap_weights(len(y_true), n_bootstrap, np.random.default_rng(seed))
    full = np.ones((1, len(y_true)))
    per_rep, boot = {}, {}
    for arm, runs in results.items():
        metrics = [(weighted_metrics(full, y_true, runs[r]["proba"], runs[r].get("threshold")),
                    weighted_metrics(weights, y_true, runs[r]["proba"], runs[r].get("threshold"))) for r in replicates]
        per_rep[arm] = {m: np.array([whole[m][0] for whole, _ in metrics]) for m in METRICS}
        boot[arm] = {m: np.mean([b[m] for _, b in metrics], axis=0) for m in METRICS}
    arms = {arm: {m: _arm_estimate(per_rep[arm][m], boot[arm][m]) for m in METRICS} for arm in results}
    records = [_comparison(arm, control, m, per_rep[arm][m] - per_rep[control][m], boot[arm][m] - boot[control][m])
               for arm, control in controls.items() for m in METRICS]
    _adjust_and_judge(records, min_effect)
    return {"split": "test", "n_test": int(len(y_true)), "replicates": [int(r) for r in replicates],
            "n_bootstrap": n_bootstrap, "bootstrap_seed": seed, "ci_level": LEVEL, "ci_method": CI_METHOD,
            "min_effect": min_effect, "metrics": list(METRICS), "controls": dict(controls),
            "multiplicity": "Holm over every (arm, control) comparison of the same metric",
            "arms": arms, "comparisons": records}


def judge(record: dict, min_effect: float) -> str:
    """improved / worse: Holm-adjusted p < 0.05; no difference: the 95% CI lies inside +-min_effect;
    inconclusive: neither (the interval is too wide to tell), or fewer than two replicates."""
    if record["diff"] is None or record["n_replicates"] < 2:
        return "inconclusive"
    if record["p_adjusted"] < 1 - LEVEL:
        return "improved" if record["diff"] > 0 else "worse"
    if -min_effect < record["ci_low"] and record["ci_high"] < min_effect:
        return "no difference"
    return "inconclusive"


def replicates_needed(between_sd: float | None, test_sd: float, min_effect: float, limit: int = 1000) -> int | None:
    """The fewest replicates whose 95% interval half-width falls below `min_effect`, given the measured variance
    components; None when even infinitely many replicates would not (the test split is too small)."""
    if between_sd is None or stats.norm.ppf(0.5 + LEVEL / 2) * test_sd >= min_effect:
        return None
    for r in range(2, limit + 1):
        if _half_width(between_sd, test_sd, r) < min_effect:
            return r
    return None


def test_split_growth_needed(test_sd: float, min_effect: float) -> float:
    """How many times larger the test split must be for its sampling error alone to fit in +-min_effect."""
    return float((stats.norm.ppf(0.5 + LEVEL / 2) * test_sd / min_effect) ** 2)


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

def _estimate(per_replicate: np.ndarray, bootstrap: np.ndarray) -> dict:
    """Mean over replicates with both variance components and the Satterthwaite t-interval (module docstring)."""
    values = per_replicate[np.isfinite(per_replicate)]
    boot = bootstrap[np.isfinite(bootstrap)]
    r = len(values)
    if r == 0 or len(boot) < 2:
        return {"mean": None, "per_replicate": [_num(v) for v in per_replicate], "n_replicates": r,
                "between_replicate_sd": None, "test_sampling_sd": None, "se": None, "df": None,
                "ci_low": None, "ci_high": None, "p_value": None}
    mean = float(values.mean())
    between = float(values.std(ddof=1)) if r > 1 else None
    test_sd = float(boot.std(ddof=1))
    se, df = _se_df(between, test_sd, r)
    half = float(stats.t.ppf(0.5 + LEVEL / 2, df)) * se if se > 0 else 0.0
    p = float(2 * stats.t.sf(abs(mean) / se, df)) if se > 0 else float(mean == 0)
    return {"mean": mean, "per_replicate": [_num(v) for v in per_replicate], "n_replicates": r,
            "between_replicate_sd": between, "test_sampling_sd": test_sd, "se": se,
            "df": None if not np.isfinite(df) else float(df), "ci_low": mean - half, "ci_high": mean + half,
            "p_value": p}


def _arm_estimate(per_replicate: np.ndarray, bootstrap: np.ndarray) -> dict:
    out = _estimate(per_replicate, bootstrap)
    out.pop("p_value")
    return {"mean": out.pop("mean"), "std": out["between_replicate_sd"], **out}


def _comparison(arm: str, control: str, metric: str, per_replicate: np.ndarray, bootstrap: np.ndarray) -> dict:
    out = _estimate(per_replicate, bootstrap)
    return {"arm": arm, "control": control, "metric": metric, "diff": out.pop("mean"), **out}


def _se_df(between_sd: float | None, test_sd: float, r: int) -> tuple[float, float]:
    seed_var = 0.0 if between_sd is None else between_sd ** 2 / r
    var = seed_var + test_sd ** 2
    df = (r - 1) * (var / seed_var) ** 2 if seed_var > 0 else np.inf
    return float(np.sqrt(var)), df


def _half_width(between_sd: float, test_sd: float, r: int) -> float:
    se, df = _se_df(between_sd, test_sd, r)
    return float(stats.t.ppf(0.5 + LEVEL / 2, df)) * se


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment (family-wise error rate), as statsmodels' multipletests(method="holm"), without
    the garbage collection that call runs each time."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    stepped = np.maximum.accumulate(np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order]))
    adjusted = np.empty_like(p)
    adjusted[order] = stepped
    return adjusted


def _adjust_and_judge(records: list[dict], min_effect: float) -> None:
    for metric in {r["metric"] for r in records}:
        family = [r for r in records if r["metric"] == metric and r["p_value"] is not None]
        adjusted = holm([r["p_value"] for r in family])
        for record, p in zip(family, adjusted):
            record["p_adjusted"] = float(p)
    for record in records:
        record.setdefault("p_adjusted", None)
        record["verdict"] = judge(record, min_effect)
        needed = replicates_needed(record["between_replicate_sd"], record["test_sampling_sd"] or 0.0, min_effect)
        record["replicates_needed"] = needed if record["verdict"] == "inconclusive" else None


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


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def _num(value) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _check_results(results: dict, controls: dict[str, str]) -> tuple[np.ndarray, list]:
    if not results:
        raise MedsynError("no classifier results to summarize.")
    arms = list(results)
    replicates = sorted(results[arms[0]])
    y_true = np.asarray(results[arms[0]][replicates[0]]["y_true"], dtype=int)
    for arm, control in controls.items():
        if arm not in results or control not in results:
            raise MedsynError(f"comparison {arm} vs {control}: both arms must be in the run (have {arms}).")
    for arm in arms:
        if sorted(results[arm]) != replicates:
            raise MedsynError(f"arm {arm!r} has replicates {sorted(results[arm])}, arm {arms[0]!r} has {replicates}; "
                              f"every arm must run on the same replicates for paired comparisons.")
        for r in replicates:
            run = results[arm][r]
            if not np.array_equal(np.asarray(run["y_true"], dtype=int), y_true):
                raise MedsynError(f"arm {arm!r} replicate {r} was tested on different cases than arm {arms[0]!r}; "
                                  f"all arms must share one test split.")
            if np.shape(run["proba"]) != (len(y_true), np.shape(results[arms[0]][replicates[0]]["proba"])[1]):
                raise MedsynError(f"arm {arm!r} replicate {r}: probabilities shaped {np.shape(run['proba'])}, "
                                  f"expected one row per test case and one column per class.")
    return y_true, replicates
