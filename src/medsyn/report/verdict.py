"""The plain-language answer: did any synthetic arm beat the references on the test split?"""

from __future__ import annotations

SYNTHETIC_MARK = "synth"


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (controls the family-wise error rate over the comparisons)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def verdicts(results: dict, metric: str = "auc") -> list[dict]:
    """One verdict per reference arm: the best synthetic arm's paired difference in `metric`, with its CI and the
    Holm-adjusted p-value over every synthetic arm compared with that reference."""
    out = []
    for reference, comparisons in results.get("comparisons", {}).items():
        rows = [(arm, c[metric]) for arm, c in comparisons.items()
                if SYNTHETIC_MARK in arm and c.get(metric, {}).get("diff") is not None]
        if not rows:
            continue
        adjusted = holm([r[1]["p_value"] if r[1]["p_value"] is not None else 1.0 for r in rows])
        best = max(range(len(rows)), key=lambda i: rows[i][1]["diff"])
        arm, stats = rows[best]
        significant = stats["ci_low"] is not None and (stats["ci_low"] > 0 or stats["ci_high"] < 0) \
            and adjusted[best] < 0.05
        out.append({"reference": reference, "arm": arm, "metric": metric, "diff": stats["diff"],
                    "ci_low": stats["ci_low"], "ci_high": stats["ci_high"], "p_value": stats["p_value"],
                    "p_holm": adjusted[best], "n_compared": len(rows), "significant": significant,
                    "text": _sentence(arm, reference, metric, stats, adjusted[best], significant, len(rows),
                                      results)})
    return out


def _sentence(arm, reference, metric, stats, p_holm, significant, n, results) -> str:
    label = metric.upper() if metric == "auc" else metric.replace("_", " ")
    where = f"on the held-out real test split (n={results['n_test']}, mean of {len(results['seeds'])} seeds)"
    effect = f"{stats['diff']:+.3f} [95% CI {stats['ci_low']:+.3f}, {stats['ci_high']:+.3f}]"
    if significant:
        direction = "improved" if stats["diff"] > 0 else "worsened"
        return (f"{arm} {direction} test {label} by {effect} over {reference} {where}; "
                f"Holm-adjusted p = {p_holm:.3g} over {n} synthetic arms.")
    return (f"No significant improvement over {reference}: the best synthetic arm, {arm}, changed test {label} by "
            f"{effect} {where}; Holm-adjusted p = {p_holm:.3g} over {n} synthetic arms.")
