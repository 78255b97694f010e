"""Statistics across arms and training replicates on one shared real test split.

The unit of replication is a *replicate*: one draw of every source of training randomness (the classifier's seed
and, for arms with synthetic images, the generator that made their pool). Every arm runs on the same replicates,
so arm r and its matched control r form a pair. `results[arm][replicate]` holds that run's test labels and
probabilities; `clusters[arm][replicate]` names the generator that fed it (None: no generator).

What each interval covers. The quantity estimated is the recipe's expected test metric (or the expected paired
difference arm - control), expected over new generators, new classifier seeds AND a new test sample from the
same population. Two levels: replicates that share a generator are not independent, so the estimate is the mean
over generators of each generator's mean over its replicates (an arm without a generator: each replicate is its
own cluster), and its variance has two parts:
- between-cluster: the sample variance of the K cluster means on the whole test split, divided by K. It holds the
  generator, the seed and the model-by-test-case variance, so its degrees of freedom are K - 1, whatever R is;
- test-sampling: the variance that a new test sample adds to every cluster alike, estimated by the mean
  bootstrap COVARIANCE between different clusters' means under case resampling (the same resampled cases for
  every arm and replicate). The variance of one cluster's bootstrap would count the model-by-case interaction a
  second time (it is already in the between-cluster part).
se = sqrt(sb^2 / K + st^2). The interval's half-width adds the two parts' own half-widths in quadrature:
sqrt((t_{K-1} sb / sqrt(K))^2 + (z st)^2), the between-cluster part on its K - 1 degrees of freedom, the
test-sampling part (from many resamples) as normal. (A Welch-Satterthwaite t on se undercovers at K = 2: a small
sb both shrinks se and inflates the degrees of freedom.) The p-value is the level at which that interval just
reaches 0, so p < alpha exactly when the 1 - alpha interval excludes 0. Assumption: the cluster means are
approximately normal. `benchmarks/interval_coverage.py` simulates studies with a generator effect and with a small seed
variance and prints this interval's coverage beside the previous estimator's; tests/test_stats.py holds it to 95%.

Multiplicity: Bonferroni over the m comparisons of each metric (one learning-curve point at a time). Each
comparison's CI is at level 1 - 0.05/m, its p_adjusted is min(1, m p), and the verdict reads that CI, so the
interval shown and the verdict always agree.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse, stats

from medsyn.errors import MedsynError
from medsyn.metrics import METRICS, predict_labels

LEVEL = 0.95
POWER = 0.8
VERDICTS = ("improved", "improved, by less than min_effect", "worse", "worse, by less than min_effect",
            "no difference", "inconclusive")
CI_METHOD = ("mean over generators (clusters of replicates) +- sqrt((t_{K-1} * between-cluster sd / sqrt(K))^2 + "
             "(z * test-sampling sd)^2); test sampling: the bootstrap covariance between clusters under paired case "
             "resampling of the real test split; comparisons' CIs Bonferroni-adjusted over the comparisons of each "
             "metric")


def summarize_arms(results: dict, controls: dict[str, str], n_bootstrap: int = 2000, seed: int = 0,
                   min_effect: float = 0.01, clusters: dict | None = None,
                   positive_controls: dict[str, str] | None = None, baselines: dict[str, str] | None = None) -> dict:
    """results[arm][replicate] = {"y_true", "proba"[, "threshold"]}; controls[arm] = its matched control arm;
    clusters[arm][replicate] = the generator behind that run (None or missing: none); positive_controls[arm] =
    the real+heldout arm of the same dose and control; baselines[arm] = a second arm it is compared with (the
    pseudo-label baseline of a generator that saw an unlabelled pool), recorded with `versus` "baseline". Returns
    the JSON-ready summary: per arm and metric the mean,
    both variance components and the 95% interval; `comparisons`, one record per (arm, control, metric) with its
    Bonferroni-adjusted interval and p-value and a verdict (see `judge`); and `efficiency`, each arm's gain as a
    share of its positive control's gain, where that gain is significant."""
    y_true, replicates = _check_results(results, {**controls, **(baselines or {})})
    weights = bootstrap_weights(len(y_true), n_bootstrap, np.random.default_rng(seed))
    full = np.ones((1, len(y_true)))
    per_rep, boot = {}, {}
    for arm, runs in results.items():
        metrics = [(weighted_metrics(full, y_true, runs[r]["proba"], runs[r].get("threshold")),
                    weighted_metrics(weights, y_true, runs[r]["proba"], runs[r].get("threshold"))) for r in replicates]
        per_rep[arm] = {m: np.array([whole[m][0] for whole, _ in metrics]) for m in METRICS}
        boot[arm] = {m: np.stack([b[m] for _, b in metrics]) for m in METRICS}     # (R, B)
    cluster_of = {arm: _cluster_ids((clusters or {}).get(arm, {}), replicates) for arm in results}
    arms = {arm: {m: _arm_estimate(per_rep[arm][m], boot[arm][m], cluster_of[arm]) for m in METRICS}
            for arm in results}
    records = [_comparison(arm, control, m, per_rep[arm][m] - per_rep[control][m],
                           boot[arm][m] - boot[control][m], cluster_of[arm])
               for arm, control in controls.items() for m in METRICS]
    records += [{**_comparison(arm, baseline, m, per_rep[arm][m] - per_rep[baseline][m],
                               boot[arm][m] - boot[baseline][m], cluster_of[arm]), "versus": "baseline"}
                for arm, baseline in (baselines or {}).items() for m in METRICS]
    _adjust_and_judge(records, min_effect)
    efficiency = [_efficiency(arm, positive, controls[arm], m, per_rep, boot, cluster_of[arm], records)
                  for arm, positive in (positive_controls or {}).items() for m in METRICS]
    return {"split": "test", "n_test": int(len(y_true)), "replicates": [int(r) for r in replicates],
            "n_bootstrap": n_bootstrap, "bootstrap_seed": seed, "ci_level": LEVEL, "ci_method": CI_METHOD,
            "min_effect": min_effect, "metrics": list(METRICS), "controls": dict(controls),
            "multiplicity": "Bonferroni over every (arm, control) comparison of the same metric: each comparison's "
                            "CI is at level 1 - 0.05/m and the verdict reads it",
            "arms": arms, "comparisons": records, "efficiency": efficiency}


def judge(record: dict, min_effect: float) -> str:
    """Read off the comparison's (multiplicity-adjusted) CI: improved / worse when it excludes 0 ("by less than
    min_effect" when it also lies inside +-min_effect); no difference when it lies inside +-min_effect;
    inconclusive otherwise (too wide to tell), or with fewer than two independent clusters."""
    if record["diff"] is None or record["ci_low"] is None or record["n_clusters"] < 2:
        return "inconclusive"
    small = -min_effect < record["ci_low"] and record["ci_high"] < min_effect
    if record["ci_low"] > 0:
        return "improved, by less than min_effect" if small else "improved"
    if record["ci_high"] < 0:
        return "worse, by less than min_effect" if small else "worse"
    return "no difference" if small else "inconclusive"


def replicates_needed(diff: float | None, between_sd: float | None, test_sd: float, min_effect: float,
                      n_comparisons: int, have: int, limit: int = 1000) -> int | None:
    """Independent clusters (generators, or replicates for arms without one) that would decide an inconclusive
    comparison, by a power calculation at the observed difference with the same Bonferroni level: where |diff| is
    at least `min_effect`, the fewest whose test rejects zero with probability POWER; where it is smaller, the
    fewest whose expected adjusted CI, centred on diff, lies inside +-min_effect. Never fewer than `have` + 1.
    None when no count would (the test split's own sampling error is too large: only a larger test split helps)."""
    if between_sd is None or diff is None:
        return None
    level = 1 - (1 - LEVEL) / n_comparisons
    if abs(diff) < min_effect and abs(diff) + _half_width(None, test_sd, 1, level) >= min_effect:
        return None
    k = np.arange(max(2, have + 1), limit + 1)
    half, se = _half_width(between_sd, test_sd, k, level), _se(between_sd, test_sd, k)
    enough = stats.norm.cdf((abs(diff) - half) / se) >= POWER if abs(diff) >= min_effect else \
        abs(diff) + half < min_effect
    return int(k[enough][0]) if enough.any() else None


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

def _cluster_ids(generators: dict, replicates: list) -> np.ndarray:
    """One cluster per generator; a replicate without a generator is a cluster of its own."""
    return np.array([f"g:{generators[r]}" if generators.get(r) is not None else f"r:{r}" for r in replicates])


def _estimate(per_replicate: np.ndarray, bootstrap: np.ndarray, clusters: np.ndarray, with_p: bool = True) -> dict:
    """Mean over clusters with both variance components and the interval (module docstring); the p-value of
    mean = 0 when `with_p`. per_replicate (R,), bootstrap (R, B), clusters (R,)."""
    finite = np.isfinite(per_replicate)
    names = list(dict.fromkeys(clusters[finite]))
    k = len(names)
    empty = {"mean": None, "per_replicate": [_num(v) for v in per_replicate], "n_replicates": int(finite.sum()),
             "n_clusters": k, "between_replicate_sd": None, "between_cluster_sd": None, "test_sampling_sd": None,
             "se": None, "df": None, "ci_low": None, "ci_high": None, "p_value": None}
    if k == 0:
        return empty
    means = np.array([per_replicate[finite & (clusters == c)].mean() for c in names])
    boot = np.stack([bootstrap[finite & (clusters == c)].mean(0) for c in names])   # (K, B)
    boot = boot[:, np.isfinite(boot).all(0)]
    if boot.shape[1] < 2:
        return empty
    mean = float(means.mean())
    between = float(means.std(ddof=1)) if k > 1 else None
    test_sd = float(np.sqrt(_shared_variance(boot)))
    values = per_replicate[finite]
    out = {**empty, "mean": mean, "between_replicate_sd": float(values.std(ddof=1)) if len(values) > 1 else None,
           "between_cluster_sd": between, "test_sampling_sd": test_sd, "se": float(_se(between, test_sd, k))}
    if between is None:  # one generator (or replicate): its training variance is unknown, and test sampling
        return out       # alone would claim more than the data show, so no interval and no p
    half = float(_half_width(between, test_sd, k))
    return {**out, "df": k - 1, "ci_low": mean - half, "ci_high": mean + half,
            "p_value": _p_value(mean, between, test_sd, k) if with_p else None}


def _shared_variance(boot: np.ndarray) -> float:
    """The test-sampling variance every cluster shares: the mean bootstrap covariance between different clusters
    (one cluster: its bootstrap variance, an upper bound). Never negative."""
    if len(boot) == 1:
        return float(boot[0].var(ddof=1))
    cov = np.cov(boot)
    k = len(boot)
    return max(0.0, float((cov.sum() - np.trace(cov)) / (k * (k - 1))))


def _arm_estimate(per_replicate: np.ndarray, bootstrap: np.ndarray, clusters: np.ndarray) -> dict:
    out = _estimate(per_replicate, bootstrap, clusters, with_p=False)
    out.pop("p_value")
    if out["ci_low"] is not None:  # every metric is a share: a t interval on few generators can reach past [0, 1]
        out["ci_low"], out["ci_high"] = max(0.0, out["ci_low"]), min(1.0, out["ci_high"])
    return {"mean": out.pop("mean"), "std": out["between_replicate_sd"], **out}


def _comparison(arm: str, control: str, metric: str, per_replicate: np.ndarray, bootstrap: np.ndarray,
                clusters: np.ndarray) -> dict:
    """A paired difference (with one generator or replicate: no interval and no p, as `_estimate` says)."""
    out = _estimate(per_replicate, bootstrap, clusters)
    unit = "generator" if any(c.startswith("g:") for c in clusters) else "replicate"
    return {"arm": arm, "control": control, "metric": metric, "diff": out.pop("mean"), "unit": unit, **out}


def _se(between_sd: float | None, test_sd: float, k):
    """Standard error of the mean over k clusters (k may be an array of counts)."""
    return np.sqrt((0.0 if between_sd is None else between_sd ** 2 / k) + test_sd ** 2)


def _half_width(between_sd: float | None, test_sd: float, k, level: float = LEVEL):
    """The two parts' half-widths in quadrature: t on K - 1 df for the between-cluster part, normal for the
    test-sampling part (module docstring); k may be an array of counts."""
    q = 0.5 + level / 2
    between = 0.0 if between_sd is None else stats.t.ppf(q, np.asarray(k) - 1) * between_sd / np.sqrt(k)
    return np.hypot(between, stats.norm.ppf(q) * test_sd)


def _p_value(mean: float, between_sd: float | None, test_sd: float, k: int) -> float:
    """Two-sided: the alpha at which the 1 - alpha interval just reaches 0."""
    from scipy.optimize import brentq

    reach = lambda alpha: _half_width(between_sd, test_sd, k, 1 - alpha) - abs(mean)
    if abs(mean) == 0 or reach(1 - 1e-12) >= 0:
        return 1.0
    if reach(1e-15) <= 0:
        return 0.0
    return float(brentq(reach, 1e-15, 1 - 1e-12, xtol=1e-12, rtol=1e-10))


def _adjust_and_judge(records: list[dict], min_effect: float) -> None:
    """Bonferroni within each metric's family: each comparison's CI is widened to level 1 - 0.05/m (the 95% one is
    kept as ci_unadjusted); then the verdict and, for an inconclusive one, what would decide it."""
    for metric in {r["metric"] for r in records}:
        family = [r for r in records if r["metric"] == metric]
        m = len(family)
        for record in family:
            record.update(ci_unadjusted=[record["ci_low"], record["ci_high"]], n_comparisons=m,
                          ci_level=1 - (1 - LEVEL) / m,
                          p_adjusted=None if record["p_value"] is None else min(1.0, m * record["p_value"]))
            if record["ci_low"] is not None:
                half = float(_half_width(record["between_cluster_sd"], record["test_sampling_sd"],
                                         record["n_clusters"], record["ci_level"]))
                record["ci_low"], record["ci_high"] = record["diff"] - half, record["diff"] + half
    for record in records:
        record["verdict"] = judge(record, min_effect)
        inconclusive = record["verdict"] == "inconclusive"
        record["replicates_needed"] = replicates_needed(
            record["diff"], record["between_cluster_sd"], record["test_sampling_sd"] or 0.0, min_effect,
            record["n_comparisons"], record["n_clusters"]) if inconclusive else None
        record["decided_by"] = _decided_by(record) if inconclusive else None


def _decided_by(record: dict) -> str:
    """In words: what more data would decide an inconclusive comparison."""
    if record["between_cluster_sd"] is None:
        return "a second generator (or replicate): one cannot estimate the training variance"
    if record["replicates_needed"] is None:
        return "a larger test split: its sampling error alone is wider than the smallest effect of interest"
    if record["n_clusters"] < record["n_replicates"]:
        return (f"about {record['replicates_needed']} generators, one per replicate: more replicates on the same "
                f"{record['n_clusters']} generators would not")
    return f"about {record['replicates_needed']} replicates"


def _efficiency(arm: str, positive: str, control: str, metric: str, per_rep: dict, boot: dict,
                clusters: np.ndarray, records: list[dict]) -> dict:
    """The arm's gain over its control as a share of the positive control's gain (a perfect generator at the
    same dose), with a 95% interval by the delta method through the same two-level estimator: the linearised
    per-replicate values d_arm - e d_positive have mean 0, and their standard error over |gain of the positive
    control| is e's. Given only where the positive control improved significantly (after the adjustment)."""
    record = {r["arm"]: r for r in records if r["metric"] == metric and r["control"] == control}  # not a baseline's
    verdict = record[positive]["verdict"]
    out = {"arm": arm, "positive_control": positive, "control": control, "metric": metric, "efficiency": None,
           "ci_low": None, "ci_high": None, "se": None, "df": None, "note": None}
    if not verdict.startswith("improved"):
        return {**out, "note": f"the positive control's gain is not significant ({verdict})"}
    d_arm = per_rep[arm][metric] - per_rep[control][metric]
    d_pos = per_rep[positive][metric] - per_rep[control][metric]
    gain_pos = record[positive]["diff"]      # the gains as the comparisons state them
    e = float(record[arm]["diff"] / gain_pos)
    linear = _estimate(d_arm - e * d_pos, (boot[arm][metric] - boot[control][metric]) -
                       e * (boot[positive][metric] - boot[control][metric]), clusters, with_p=False)
    if linear["se"] is None or linear["between_cluster_sd"] is None:
        return {**out, "efficiency": e, "note": "one generator: no interval"}
    half = (linear["ci_high"] - linear["ci_low"]) / 2 / abs(gain_pos)
    return {**out, "efficiency": e, "ci_low": e - half, "ci_high": e + half, "se": linear["se"] / abs(gain_pos),
            "df": linear["df"]}


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
