"""Two generators on the same data and seeds: their audits and their classifier arms, side by side.

    python benchmarks/compare_generators.py RUN_A RUN_B

RUN_A and RUN_B are finished `medsyn run` folders that differ only in the generator feeding the arms (e.g.
`--gan cgan` and `--gan ddpm`, both with `--seeds 0-3`). Every replicate then shares its classifier seed, initial
weights and real-batch order between the two runs, so each synthetic arm of B is compared with the same arm of A as
its matched control, paired by replicate, with the statistics of `medsyn run` (mean over replicates; 95% CI from
the between-replicate variance, which here includes both runs' generator seeds, plus test-set sampling by a
paired bootstrap, clustered by generator; Bonferroni over the arms). Arms without synthetic images are the same runs in both folders and are
checked to have the same predictions. Runs with a learning curve are compared point by point. The audit rows are each run's primary generators (g0, g1, ...) in the
label-trained CNN's feature space, each against its own run's real-vs-real floor.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from medsyn.classify import parse_arm, read_predictions
from medsyn.audit.run import FLOOR_SET
from medsyn.stats.paired import summarize_arms

AUDIT = ("fid", "precision", "recall", "density", "coverage")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs=2, type=Path, metavar="RUN")
    args = parser.parse_args()
    configs = [json.loads((run / "config.json").read_text()) for run in args.runs]
    names = [f"{c['gans'][0]} ({run.name})" for c, run in zip(configs, args.runs)]
    if configs[0]["seeds"] != configs[1]["seeds"] or configs[0]["arms"] != configs[1]["arms"]:
        raise SystemExit("the two runs must have the same --seeds and --arms")
    for point in points(args.runs[0]):
        if point != ".":
            print(f"\n=== learning-curve point {point} ===")
        folders = [run / point for run in args.runs]
        print_audits(folders, configs, names)
        print_arms(folders, configs[0], names)


def points(run: Path) -> list[str]:
    """The run folder itself, or each learning-curve point's folder (sizes/<tag>) of a run with sizes."""
    sizes = run / "sizes"
    return [f"sizes/{p.name}" for p in sorted(sizes.iterdir())] if sizes.is_dir() else ["."]


def print_audits(runs: list[Path], configs: list[dict], names: list[str]) -> None:
    print("audit (label-trained CNN features, all classes; floor = real train half B against half A)")
    print(f"{'generator':28} " + " ".join(f"{m:>9} {'floor':>6}" for m in AUDIT) +
          f" {'label acc':>9} {'val acc':>7} {'near-copies':>11}")
    for run, config, name in zip(runs, configs, names):
        model = config["gans"][0]
        for folder in sorted((run / "audit" / model).iterdir()):
            audit = json.loads((folder / "audit.json").read_text())
            by_set = audit["fidelity"]["by_features"]["label-trained-cnn"]
            scores, floor = by_set[audit["generator"]]["all"], by_set[FLOOR_SET]["all"]
            labels, memo = audit["label_fidelity"], audit["memorization"]
            guidance = _guidance(run / "synthetic" / model / folder.name)
            print(f"{name + ' ' + folder.name + guidance:28} " +
                  " ".join(f"{scores[m]:>9.3f} {floor[m]:>6.3f}" for m in AUDIT) +
                  f" {labels['synthetic_accuracy']:>9.3f} {labels['reference_real_val_accuracy']:>7.3f}"
                  f" {memo['near_copies']:>5}/{memo['n_checked']:<5}")


def _guidance(folder: Path) -> str:
    sampler = json.loads((folder / "manifest.json").read_text()).get("sampler")
    return f" g={sampler['guidance']:g}" if sampler else ""


def print_arms(runs: list[Path], config: dict, names: list[str]) -> None:
    seeds = config["seeds"]
    synthetic = [arm for arm in config["arms"] if parse_arm(arm).uses_synthetic]
    for arm in (a for a in config["arms"] if a not in synthetic):
        same = all(np.array_equal(read_predictions(runs[0] / "arms" / arm / f"seed{s}")["proba"],
                                  read_predictions(runs[1] / "arms" / arm / f"seed{s}")["proba"]) for s in seeds)
        print(f"\n{arm}: {'the same predictions in both runs' if same else 'PREDICTIONS DIFFER between the runs'}")
    results = {f"{arm} [{tag}]": {s: read_predictions(run / "arms" / arm / f"seed{s}") for s in seeds}
               for arm in synthetic for tag, run in zip("AB", runs)}
    generators = {s: r % config["n_generators"] for r, s in enumerate(seeds)}  # replicates on one generator: one unit
    summary = summarize_arms(results, {f"{arm} [B]": f"{arm} [A]" for arm in synthetic},
                             clusters={name: generators for name in results})
    print(f"\narms on the real test split (n = {summary['n_test']}), replicates {seeds}; A = {names[0]}, "
          f"B = {names[1]}; B - A paired by replicate, clustered by generator, Bonferroni over {len(synthetic)} arms")
    for metric in ("auc", "balanced_accuracy"):
        print(f"\n{'arm':18} {'A ' + metric:>24} {'B ' + metric:>24} {'B - A [adjusted CI]':>28} {'adj. p':>7}  "
              f"verdict")
        for arm in synthetic:
            a, b = (summary["arms"][f"{arm} [{tag}]"][metric] for tag in "AB")
            c = next(r for r in summary["comparisons"] if r["arm"] == f"{arm} [B]" and r["metric"] == metric)
            if c["ci_low"] is None:
                print(f"{arm:18} {_interval(a):>24} {_interval(b):>24} {c['diff']:>+8.4f} (one generator: no interval)")
                continue
            print(f"{arm:18} {_interval(a):>24} {_interval(b):>24} "
                  f"{c['diff']:>+8.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] {c['p_adjusted']:>7.3f}  {c['verdict']}")


def _interval(estimate: dict) -> str:
    return f"{estimate['mean']:.4f} [{estimate['ci_low']:.4f}, {estimate['ci_high']:.4f}]"


if __name__ == "__main__":
    main()
