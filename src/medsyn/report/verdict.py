"""The plain-language answer, from results.json's `comparisons`: for each arm with synthetic images, did it change
the test metric against its matched control, and how sure is that?"""

from __future__ import annotations


def comparisons(results: dict, metric: str = "auc") -> list[dict]:
    return [c for c in results.get("comparisons", []) if c["metric"] == metric]


def headline(results: dict, metric: str = "auc") -> str:
    """One sentence over every comparison of `metric`: what improved, what got worse, what is unresolved."""
    rows = comparisons(results, metric)
    if not rows:
        return "No arm with synthetic images was compared with its control in this run."
    label = _label(metric)
    by = {v: [c for c in rows if c["verdict"] == v] for v in ("improved", "worse", "no difference", "inconclusive")}
    where = (f"on the held-out real test split (n = {results['n_test']}; {len(results['replicates'])} replicates, "
             f"Holm-adjusted over {len(rows)} comparisons)")
    parts = []
    if by["improved"]:
        parts.append("improved " + label + ": " + "; ".join(_effect(c) for c in by["improved"]))
    if by["worse"]:
        parts.append("worse " + label + ": " + "; ".join(_effect(c) for c in by["worse"]))
    if by["no difference"]:
        parts.append(f"no difference larger than ±{results['min_effect']:g}: "
                     + ", ".join(_pair(c) for c in by["no difference"]))
    if by["inconclusive"]:
        parts.append("inconclusive (the 95% CI is wider than the smallest effect of interest, "
                     f"±{results['min_effect']:g}): " + ", ".join(_pair(c) for c in by["inconclusive"]))
    if not by["improved"]:
        parts.insert(0, f"No arm with synthetic images improved test {label} over its matched control")
    return f"{'. '.join(p[0].upper() + p[1:] for p in parts)} {where}."


def sentence(c: dict, results: dict) -> str:
    """One comparison, stated with its interval, both variance components and what would resolve it."""
    text = (f"{_pair(c)}: {_label(c['metric'])} {_effect(c, pair=False)}, between-replicate sd "
            f"{_num(c['between_replicate_sd'])}, test-sampling sd {_num(c['test_sampling_sd'])}: {c['verdict']}")
    if c["verdict"] == "inconclusive":
        text += "; " + resolution(c, results)
    return text + "."


def resolution(c: dict, results: dict) -> str:
    """What data would decide an inconclusive comparison."""
    from medsyn.evaluate.stats import test_split_growth_needed

    if c["n_replicates"] < 2:
        return "one replicate cannot measure training variability: run at least 2 (--seeds)"
    if c["replicates_needed"]:
        return f"about {c['replicates_needed']} replicates would narrow the CI below ±{results['min_effect']:g}"
    factor = test_split_growth_needed(c["test_sampling_sd"] or 0.0, results["min_effect"])
    return (f"more replicates alone cannot: the test split's sampling error needs a test split about "
            f"{factor:.1f} times larger")


def _effect(c: dict, pair: bool = True) -> str:
    head = f"{_pair(c)} " if pair else ""
    return (f"{head}{c['diff']:+.3f} [95% CI {c['ci_low']:+.3f}, {c['ci_high']:+.3f}], "
            f"Holm p = {c['p_adjusted']:.3g}") if c["diff"] is not None else f"{head}n/a"


def _pair(c: dict) -> str:
    return f"{c['arm']} vs {c['control']}"


def _label(metric: str) -> str:
    return metric.upper() if metric == "auc" else metric.replace("_", " ")


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
