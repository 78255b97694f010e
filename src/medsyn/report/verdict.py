"""The plain-language answer, from results.json's `comparisons`: for each arm with synthetic images, did it change
the test metric against its matched control, and how sure is that? The positive control (real+heldout@R) is stated
apart: it says whether the study could see help at all."""

from __future__ import annotations


def comparisons(results: dict, metric: str = "auc", positive: bool = False, pseudo: bool = False) -> list[dict]:
    """The comparisons of `metric`: the synthetic ones, or with `positive` the positive controls', or with `pseudo`
    those of the pseudo-label baseline (real+pseudo@R with its control, and each synthetic arm with it)."""
    group = "positive" if positive else "pseudo" if pseudo else "synthetic"
    return [c for c in results.get("comparisons", []) if c["metric"] == metric and _group(c) == group]


def headline(results: dict, metric: str = "auc") -> str:
    """One sentence over every synthetic comparison of `metric`: what improved, what got worse, what is
    unresolved; led by the positive control's result where the run has one."""
    rows = comparisons(results, metric)
    lead = [sensitivity_sentence(c) for c in comparisons(results, metric, positive=True)]
    if not rows:
        return " ".join(lead + ["No arm with synthetic images was compared with its control in this run."])
    label = _label(metric)
    by = {v: [c for c in rows if c["verdict"].split(",")[0] == v]
          for v in ("improved", "worse", "no difference", "inconclusive")}
    m = rows[0].get("n_comparisons", len(rows))
    where = (f"on the held-out real test split (n = {results['n_test']}; {len(results['replicates'])} replicates; "
             f"CIs Bonferroni-adjusted over {m} comparisons)")
    parts = []
    if by["improved"]:
        parts.append("improved " + label + ": " + "; ".join(_effect(c) for c in by["improved"]))
    if by["worse"]:
        parts.append("worse " + label + ": " + "; ".join(_effect(c) for c in by["worse"]))
    if by["no difference"]:
        parts.append(f"no difference larger than ±{results['min_effect']:g}: "
                     + ", ".join(_pair(c) for c in by["no difference"]))
    if by["inconclusive"]:
        parts.append("inconclusive (the adjusted CI is wider than the smallest effect of interest, "
                     f"±{results['min_effect']:g}): " + ", ".join(_pair(c) for c in by["inconclusive"]))
    if not by["improved"]:
        parts.insert(0, f"No arm with synthetic images improved test {label} over its matched control")
    return " ".join(lead + [f"{'. '.join(p[0].upper() + p[1:] for p in parts)} {where}."] +
                    [pseudo_sentence(results, metric)] * bool(comparisons(results, metric, pseudo=True)))


def pseudo_sentence(results: dict, metric: str = "auc") -> str:
    """Did the generators, which saw the unlabelled pool, add anything beyond what the pool gives directly when
    the real-only classifier labels it (real+pseudo@R)?"""
    rows = comparisons(results, metric, pseudo=True)
    beyond = [c for c in rows if c.get("versus") == "baseline"]
    better = [c for c in beyond if c["verdict"].startswith("improved")]
    answer = ("Synthetic images beat pseudo-labels: " + "; ".join(_effect(c) for c in better)) if better else \
        "No arm with synthetic images beat the pseudo-labelled pool at the same dose"
    return (f"{answer}. Pseudo-label comparisons ({_label(metric)}): "
            + "; ".join(f"{_effect(c)}: {c['verdict']}" for c in rows) + ".")


def sensitivity_sentence(c: dict) -> str:
    """Whether the positive control saw the help it is certain to bring, and what that means for the rest."""
    effect = _effect(c, pair=False)
    if c["verdict"].startswith("improved"):
        return f"The study can see help here: the positive control {_pair(c)} improved {effect}."
    return (f"THE STUDY CANNOT SEE HELP HERE: the positive control {_pair(c)} ({effect}) did not improve "
            f"significantly, so no verdict on synthetic images at this size can say they do not help.")


def sentence(c: dict, results: dict) -> str:
    """One comparison, stated with its interval, both variance components and what would resolve it."""
    text = (f"{_pair(c)}: {_label(c['metric'])} {_effect(c, pair=False)}, sd between {c['n_clusters']} "
            f"{c.get('unit', 'replicate')}s {_num(c['between_cluster_sd'])}, test-sampling sd "
            f"{_num(c['test_sampling_sd'])}: {c['verdict']}")
    if c["verdict"] == "inconclusive" and c.get("decided_by"):
        text += "; would be decided by " + c["decided_by"]
    return text + "."


def _effect(c: dict, pair: bool = True) -> str:
    head = f"{_pair(c)} " if pair else ""
    if c["diff"] is None or c["ci_low"] is None:
        return f"{head}n/a" if c["diff"] is None else f"{head}{c['diff']:+.3f} (no interval: one generator)"
    level = c.get("ci_level", 0.95)
    return (f"{head}{c['diff']:+.3f} [{level:.1%} CI {c['ci_low']:+.3f}, {c['ci_high']:+.3f}], "
            f"adjusted p = {c['p_adjusted']:.3g}")


def _group(c: dict) -> str:
    from medsyn.classify import parse_arm

    arm = parse_arm(c["arm"])
    return "positive" if arm.heldout else "pseudo" if arm.pseudo or c.get("versus") == "baseline" else "synthetic"


def _pair(c: dict) -> str:
    return f"{c['arm']} vs {c['control']}"


def _label(metric: str) -> str:
    return metric.upper() if metric == "auc" else metric.replace("_", " ")


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
