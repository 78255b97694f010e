"""The plain-language answer: did any synthetic arm beat the references on the test split?"""

from __future__ import annotations


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (controls the family-wise error rate over the comparisons)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def verdicts(results: dict, metric: str = "auc") -> list[dict]:
    """One verdict per reference arm over every arm that uses synthetic images: the largest significant improvement
    (95% CI above 0 and Holm-adjusted p < 0.05 over those arms) if there is one, else the largest difference,
    stated as not significant; arms that significantly worsened the metric are named either way."""
    from medsyn.classify import parse_arm

    out = []
    for reference, comparisons in results.get("comparisons", {}).items():
        rows = [(arm, c[metric]) for arm, c in comparisons.items()
                if parse_arm(arm).uses_synthetic and c.get(metric, {}).get("diff") is not None]
        if not rows:
            continue
        adjusted = holm([s["p_value"] if s["p_value"] is not None else 1.0 for _, s in rows])
        candidates = [dict(arm=arm, stats=s, p_holm=p, significant=_excludes_zero(s) and p < 0.05)
                      for (arm, s), p in zip(rows, adjusted)]
        better = [c for c in candidates if c["significant"] and c["stats"]["diff"] > 0]
        worse = [c["arm"] for c in candidates if c["significant"] and c["stats"]["diff"] < 0]
        pick = max(better or candidates, key=lambda c: c["stats"]["diff"])
        stats = pick["stats"]
        out.append({"reference": reference, "arm": pick["arm"], "metric": metric, "diff": stats["diff"],
                    "ci_low": stats["ci_low"], "ci_high": stats["ci_high"], "p_value": stats["p_value"],
                    "p_holm": pick["p_holm"], "n_compared": len(rows), "significant": pick["significant"],
                    "significantly_worse": worse,
                    "text": _sentence(pick, reference, metric, len(rows), worse, results)})
    return out


def _excludes_zero(stats: dict) -> bool:
    return stats["ci_low"] is not None and (stats["ci_low"] > 0 or stats["ci_high"] < 0)


def _sentence(pick: dict, reference: str, metric: str, n: int, worse: list[str], results: dict) -> str:
    stats, arm = pick["stats"], pick["arm"]
    label = metric.upper() if metric == "auc" else metric.replace("_", " ")
    where = f"on the held-out real test split (n={results['n_test']}, mean of {len(results['seeds'])} seeds)"
    effect = f"{stats['diff']:+.3f} [95% CI {stats['ci_low']:+.3f}, {stats['ci_high']:+.3f}]"
    holm_text = f"Holm-adjusted p = {pick['p_holm']:.3g} over {n} arms with synthetic images"
    if pick["significant"] and stats["diff"] > 0:
        text = f"{arm} improved test {label} by {effect} over {reference} {where}; {holm_text}."
    else:
        text = (f"No significant improvement over {reference}: the best arm with synthetic images, {arm}, changed "
                f"test {label} by {effect} {where}; {holm_text}.")
    if worse:
        text += f" Significantly worse than {reference}: {', '.join(worse)}."
    return text
