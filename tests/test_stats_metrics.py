"""Metrics against scikit-learn and hand counts, the vectorized bootstrap metrics, DeLong against the direct
placement computation, and summarize_arms on hand-checkable cases (its coverage: test_stats.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps
from sklearn import metrics as skm

from medsyn.errors import MedsynError
from medsyn.metrics import METRICS, classification_metrics, youden_threshold
from medsyn.stats.paired import (bootstrap_weights, delong_covariance, delong_test, summarize_arms,
                                   weighted_metrics)


def _binary_case(rng, n=120, shift=1.0):
    y = rng.integers(0, 2, n)
    score = 1 / (1 + np.exp(-(rng.normal(size=n) + shift * y)))
    score = np.round(score, 2)  # ties, as real rounded probabilities have
    return y, np.column_stack([1 - score, score])


def _multiclass_case(rng, n=90, k=3):
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, proba


def test_binary_metrics_match_hand_counts_and_sklearn():
    # 10 cases: confusion [[tn=3, fp=1], [fn=2, tp=4]] at threshold 0.5
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    p1 = np.array([.1, .2, .3, .7, .4, .45, .6, .8, .9, .95])
    m = classification_metrics(y, np.column_stack([1 - p1, p1]))
    assert m["confusion_matrix"] == [[3, 1], [2, 4]]
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["sensitivity"] == pytest.approx(4 / 6)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))
    assert m["balanced_accuracy"] == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p1))
    # a threshold moves the calls: at 0.42 the case at 0.45 becomes positive
    assert classification_metrics(y, np.column_stack([1 - p1, p1]), 0.42)["sensitivity"] == pytest.approx(5 / 6)


def test_multiclass_metrics_match_sklearn_macro():
    y, proba = _multiclass_case(np.random.default_rng(1))
    pred = proba.argmax(1)
    m = classification_metrics(y, proba)
    assert m["threshold"] is None
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    cm = skm.confusion_matrix(y, pred)
    tnr = [(cm.sum() - cm[c].sum() - cm[:, c].sum() + cm[c, c]) / (cm.sum() - cm[c].sum()) for c in range(3)]
    assert m["specificity"] == pytest.approx(np.mean(tnr))
    assert m["confusion_matrix"] == cm.tolist()
    with pytest.raises(ValueError):
        classification_metrics(y, proba, threshold=0.3)


def test_youden_threshold_maximises_j_on_the_given_cases():
    y, proba = _binary_case(np.random.default_rng(2))
    t = youden_threshold(y, proba[:, 1])
    j = lambda thr: np.mean(proba[y == 1, 1] >= thr) - np.mean(proba[y == 0, 1] >= thr)
    assert all(j(t) >= j(other) for other in np.unique(proba[:, 1]))
    assert t in proba[:, 1]


@pytest.mark.parametrize("case", ["binary", "multiclass"])
def test_vectorized_bootstrap_metrics_equal_sklearn_on_each_resample(case):
    rng = np.random.default_rng(3)
    y, proba = _binary_case(rng, n=60) if case == "binary" else _multiclass_case(rng, n=60)
    threshold = 0.37 if case == "binary" else None
    idx = rng.integers(0, len(y), size=(25, len(y)))
    weights = np.stack([np.bincount(row, minlength=len(y)) for row in idx]).astype(float)
    fast = weighted_metrics(weights, y, proba, threshold)
    for b in range(len(idx)):
        slow = classification_metrics(y[idx[b]], proba[idx[b]], threshold)
        for metric in METRICS:
            expected = np.nan if slow[metric] is None else slow[metric]
            np.testing.assert_allclose(fast[metric][b], expected, rtol=1e-10, err_msg=f"{metric} resample {b}")
    full = weighted_metrics(np.ones((1, len(y))), y, proba, threshold)  # no resampling: the plain metrics
    for metric in METRICS:
        assert full[metric][0] == pytest.approx(classification_metrics(y, proba, threshold)[metric])


def _direct_delong(y, scores):
    """DeLong et al. (1988) straight from the definition: the m x n placement matrix psi."""
    aucs, v10s, v01s = [], [], []
    for s in scores:
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        aucs.append(psi.mean())
        v10s.append(psi.mean(1))
        v01s.append(psi.mean(0))
    m, n = (y == 1).sum(), (y == 0).sum()
    return np.array(aucs), np.cov(np.array(v10s)) / m + np.cov(np.array(v01s)) / n


def test_fast_delong_equals_direct_computation_and_sklearn():
    rng = np.random.default_rng(5)
    y, proba_a = _binary_case(rng, n=150, shift=1.2)
    score_b = np.round(0.6 * proba_a[:, 1] + 0.4 * rng.random(len(y)), 2)  # correlated with a, with ties
    scores = np.vstack([proba_a[:, 1], score_b])
    aucs, cov = delong_covariance(y, scores)
    direct_aucs, direct_cov = _direct_delong(y, scores)
    np.testing.assert_allclose(aucs, direct_aucs, rtol=1e-12)
    np.testing.assert_allclose(cov, direct_cov, rtol=1e-10)
    assert aucs[0] == pytest.approx(skm.roc_auc_score(y, scores[0]))
    result = delong_test(y, scores[0], scores[1])
    z = (direct_aucs[0] - direct_aucs[1]) / np.sqrt(direct_cov[0, 0] + direct_cov[1, 1] - 2 * direct_cov[0, 1])
    assert result["z"] == pytest.approx(z)
    assert result["p_value"] == pytest.approx(2 * sps.norm.sf(abs(z)))
    assert delong_test(y, scores[0], scores[0])["p_value"] == 1.0


def test_delong_variance_agrees_with_the_bootstrap_variance():
    rng = np.random.default_rng(6)
    y, proba = _binary_case(rng, n=400)
    _, cov = delong_covariance(y, proba[:, 1])
    boot = weighted_metrics(bootstrap_weights(len(y), 3000, rng), y, proba)["auc"]
    assert np.sqrt(cov[0, 0]) == pytest.approx(boot.std(), rel=0.1)


def _arm(rng, y, quality, seeds=(0, 1, 2)):
    runs = {}
    for s in seeds:
        x = rng.normal(size=len(y)) + quality * y
        p1 = 1 / (1 + np.exp(-x))
        runs[s] = {"y_true": y, "proba": np.column_stack([1 - p1, p1]), "threshold": 0.5}
    return runs


def test_summarize_arms_pairs_arms_with_their_controls_and_detects_a_real_difference():
    rng = np.random.default_rng(7)
    y = (rng.random(300) < 0.5).astype(int)
    results = {"real": _arm(rng, y, 0.8), "real+aug": _arm(rng, y, 0.8), "better": _arm(rng, y, 2.5)}
    results["copy"] = results["real"]
    controls = {"better": "real", "copy": "real", "real+aug": "real"}
    summary = summarize_arms(results, controls, n_bootstrap=500, seed=0)
    json.dumps(summary, allow_nan=False)  # the report reads it as plain JSON
    assert summary["replicates"] == [0, 1, 2] and summary["n_test"] == 300
    real = summary["arms"]["real"]["auc"]
    per_seed = [skm.roc_auc_score(y, r["proba"][:, 1]) for r in results["real"].values()]
    assert real["mean"] == pytest.approx(np.mean(per_seed))
    assert real["between_replicate_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert real["n_clusters"] == 3 and real["df"] == 2       # no generator: each replicate is its own unit
    half = np.hypot(sps.t.ppf(0.975, 2) * real["between_cluster_sd"] / np.sqrt(3), 1.959964 * real["test_sampling_sd"])
    assert real["ci_high"] - real["mean"] == pytest.approx(half, rel=1e-6)
    by = {(c["arm"], c["metric"]): c for c in summary["comparisons"]}
    assert len(summary["comparisons"]) == 3 * len(METRICS)
    better = by["better", "auc"]
    assert better["control"] == "real" and better["ci_low"] > 0 and better["verdict"] == "improved"
    diffs = [skm.roc_auc_score(y, b["proba"][:, 1]) - skm.roc_auc_score(y, r["proba"][:, 1])
             for b, r in zip(results["better"].values(), results["real"].values())]
    assert better["diff"] == pytest.approx(np.mean(diffs))
    assert better["between_replicate_sd"] == pytest.approx(np.std(diffs, ddof=1))
    same = by["copy", "auc"]
    assert same["diff"] == 0 and same["p_value"] == 1.0 and same["verdict"] == "no difference"
    assert same["between_replicate_sd"] == 0 and same["test_sampling_sd"] == 0


def test_summarize_arms_multiclass_and_bad_input():
    rng = np.random.default_rng(8)
    y, _ = _multiclass_case(rng, n=80)
    results = {arm: {s: {"y_true": y, "proba": _multiclass_case(np.random.default_rng(s + 10 * i), n=80)[1]}
                     for s in (0, 1)} for i, arm in enumerate(("real", "synth"))}
    summary = summarize_arms(results, {"synth": "real"}, n_bootstrap=200)
    synth_auc = [skm.roc_auc_score(y, r["proba"], multi_class="ovr") for r in results["synth"].values()]
    assert summary["arms"]["synth"]["auc"]["mean"] == pytest.approx(np.mean(synth_auc))
    with pytest.raises(MedsynError, match="same replicates"):
        summarize_arms({"real": results["real"], "synth": {0: results["synth"][0]}}, {}, n_bootstrap=10)
    other = {s: {"y_true": np.roll(y, 1), "proba": r["proba"]} for s, r in results["synth"].items()}
    with pytest.raises(MedsynError, match="different cases"):
        summarize_arms({"real": results["real"], "synth": other}, {}, n_bootstrap=10)
    with pytest.raises(MedsynError, match="both arms must be in the run"):
        summarize_arms(results, {"synth": "real+aug"}, n_bootstrap=10)
