"""Do the verdict's intervals cover the truth? Simulated studies with a known true AUC difference, scored by
`medsyn.stats.paired.summarize_arms` and by the estimator it replaced.

    python benchmarks/interval_coverage.py [--studies 400] [--out benchmarks/results/interval_coverage.json]

The simulated study: N test cases with labels y and a case effect e shared by every model (paired cases).
Replicate r of arm a scores s = (mu_a + g_k(r) + u_ar) y + e + z, with g_k ~ N(0, GEN_SD^2) the effect of the
generator k = r mod K behind a synthetic arm (0 for the real arm), u_ar ~ N(0, SEED_SD^2) the classifier seed
and z ~ N(0, TAU^2) a fresh per-case noise per model (the model-by-case interaction). Given g and u the
population AUC is Phi((mu + g + u) / sqrt(2 (1 + TAU^2))); over them it is Phi(mu / sqrt(2 (1 + TAU^2) + var)):
the recipe's true expected AUC.

The previous estimator treated the R replicates as independent (sd / sqrt(R), R - 1 degrees of freedom) and added
the bootstrap variance of the replicate mean (which counts the model-by-case interaction twice).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats as sps

from common import add_note_argument, write_results

MU = {"real": 1.2, "real+synth@1": 1.3}
TAU, N_TEST = 0.7, 250


@dataclass(frozen=True)
class Scenario:
    name: str
    replicates: int
    generators: int
    generator_sd: float
    seed_sd: float


SCENARIOS = (
    Scenario("generator effect, 5 replicates on 2 generators", 5, 2, 0.25, 0.1),
    Scenario("generator effect, one generator per replicate", 5, 5, 0.25, 0.1),
    Scenario("small seed variance, no generator effect", 5, 5, 0.0, 0.02),
)


def true_difference(scenario: Scenario) -> float:
    base = 2 * (1 + TAU ** 2) + scenario.seed_sd ** 2
    return float(sps.norm.cdf(MU["real+synth@1"] / np.sqrt(base + scenario.generator_sd ** 2))
                 - sps.norm.cdf(MU["real"] / np.sqrt(base)))


def simulate(scenario: Scenario, rng: np.random.Generator) -> tuple[dict, dict]:
    """(results, clusters) in the form `summarize_arms` takes."""
    y = (rng.random(N_TEST) < 0.6).astype(int)
    e = rng.normal(size=N_TEST)
    g = rng.normal(0, scenario.generator_sd, scenario.generators)
    results, clusters = {}, {"real+synth@1": {r: r % scenario.generators for r in range(scenario.replicates)}}
    for arm, mu in MU.items():
        results[arm] = {}
        for r in range(scenario.replicates):
            shift = g[r % scenario.generators] if arm in clusters else 0.0
            s = (mu + shift + rng.normal(0, scenario.seed_sd)) * y + e + rng.normal(0, TAU, N_TEST)
            p1 = 1 / (1 + np.exp(-s))
            results[arm][r] = {"y_true": y, "proba": np.column_stack([1 - p1, p1]), "threshold": 0.5}
    return results, clusters


def previous_interval(results: dict, n_bootstrap: int, seed: int) -> tuple[float, float]:
    """The replaced estimator: replicates as independent units, plus the bootstrap variance of their mean."""
    from medsyn.stats.paired import bootstrap_weights, weighted_metrics

    y = results["real"][0]["y_true"]
    weights = bootstrap_weights(len(y), n_bootstrap, np.random.default_rng(seed))
    full = np.ones((1, len(y)))
    diff = {key: [] for key in ("whole", "boot")}
    for r in results["real"]:
        for key, w in (("whole", full), ("boot", weights)):
            a, b = (weighted_metrics(w, y, results[arm][r]["proba"])["auc"] for arm in ("real+synth@1", "real"))
            diff[key].append(a - b)
    whole, boot = np.array(diff["whole"])[:, 0], np.mean(diff["boot"], axis=0)
    seed_var, test_var = whole.var(ddof=1) / len(whole), boot.var(ddof=1)
    se = np.sqrt(seed_var + test_var)
    df = (len(whole) - 1) * (se ** 2 / seed_var) ** 2
    half = sps.t.ppf(0.975, df) * se
    return whole.mean() - half, whole.mean() + half


def coverage(scenario: Scenario, studies: int, seed: int = 11, n_bootstrap: int = 200) -> dict:
    """Share of simulated studies whose 95% interval covers the true difference, new and previous estimator."""
    from medsyn.stats.paired import summarize_arms

    truth = true_difference(scenario)
    rng = np.random.default_rng(seed)
    covered = covered_previous = 0
    for i in range(studies):
        results, clusters = simulate(scenario, rng)
        summary = summarize_arms(results, {"real+synth@1": "real"}, n_bootstrap=n_bootstrap, seed=i,
                                 clusters=clusters)
        auc = next(c for c in summary["comparisons"] if c["metric"] == "auc")
        low, high = auc["ci_unadjusted"]  # one comparison: the adjusted interval is the 95% one
        covered += low <= truth <= high
        low, high = previous_interval(results, n_bootstrap, i)
        covered_previous += low <= truth <= high
    return {"scenario": asdict(scenario), "truth": truth, "studies": studies,
            "coverage": covered / studies, "coverage_previous": covered_previous / studies,
            "simulation_sd": float(np.sqrt(0.95 * 0.05 / studies))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "interval_coverage.json")
    add_note_argument(parser)
    args = parser.parse_args()
    start, rows = time.perf_counter(), []
    for scenario in SCENARIOS:
        row = coverage(scenario, args.studies)
        rows.append(row)
        print(f"{scenario.name:<50} true diff {row['truth']:+.4f}: coverage {row['coverage']:.1%} "
              f"(previous estimator {row['coverage_previous']:.1%}; simulation sd {row['simulation_sd']:.1%})")
    write_results(args.out.stem, {"rows": rows, "seconds": round(time.perf_counter() - start, 1)},
                  note=args.note, folder=args.out.parent)


if __name__ == "__main__":
    main()
