"""Does the verdict replicate? Run the default study twice with disjoint classifier and generator seeds and
compare every comparison: both verdicts side by side, whether the two 95% CIs overlap, and whether each CI covers
the other run's point estimate.

    python benchmarks/replicate.py [--preset quick] [--seeds-a 0-3] [--seeds-b 10-13] [--out DIR]
                                   [--reuse RUN_A RUN_B] [extra `medsyn run` flags...]

The second study's generators are trained with its own seeds (generator k takes the seed of replicate k), so the
two studies share no training randomness; they share the data and its test split. `--reuse` compares two
finished run folders without running anything.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

METRICS = ("auc", "balanced_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--seeds-a", default=None, help="default: the preset's seeds")
    parser.add_argument("--seeds-b", default=None, help="default: the preset's seeds shifted by 10")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--reuse", nargs=2, type=Path, default=None, metavar=("RUN_A", "RUN_B"))
    args, extra = parser.parse_known_args()
    if args.reuse:
        run_a, run_b = args.reuse
    else:
        from medsyn.config import preset

        seeds = preset(args.preset).seeds
        seeds_a = args.seeds_a or ",".join(map(str, seeds))
        seeds_b = args.seeds_b or ",".join(str(s + 10) for s in seeds)
        out = args.out or Path(tempfile.mkdtemp(prefix="medsyn-replicate-"))
        run_a, run_b = out / "a", out / "b"
        for folder, seed_list in ((run_a, seeds_a), (run_b, seeds_b)):
            if not (folder / "results.json").exists():
                subprocess.run([sys.executable, "-m", "medsyn", "run", "--preset", args.preset, "--seeds", seed_list,
                                "--out", str(folder), *(["--resume"] if folder.exists() else []), *extra], check=True)
    print(compare(json.loads((run_a / "results.json").read_text()), json.loads((run_b / "results.json").read_text()),
                  run_a, run_b))


def compare(a: dict, b: dict, run_a: Path, run_b: Path) -> str:
    from medsyn.report.verdict import headline

    lines = [f"A: {run_a} (replicates {a['replicates']})", f"   {headline(a)}",
             f"B: {run_b} (replicates {b['replicates']})", f"   {headline(b)}", "",
             f"{'comparison':<34}{'metric':<18}{'A diff [95% CI]':<28}{'B diff [95% CI]':<28}{'A verdict':<15}"
             f"{'B verdict':<15}{'overlap':>8}{'A covers B':>11}{'B covers A':>11}"]
    key = lambda c: (c["arm"], c["control"], c["metric"])
    b_rows = {key(c): c for c in b["comparisons"]}
    consistent = total = same_verdict = 0
    for ca in (c for c in a["comparisons"] if c["metric"] in METRICS):
        cb = b_rows.get(key(ca))
        if cb is None or ca["ci_low"] is None or cb["ci_low"] is None:
            continue
        overlap = ca["ci_low"] <= cb["ci_high"] and cb["ci_low"] <= ca["ci_high"]
        total += 1
        consistent += overlap
        same_verdict += ca["verdict"] == cb["verdict"]
        lines.append(f"{ca['arm'] + ' vs ' + ca['control']:<34}{ca['metric']:<18}{_ci(ca):<28}{_ci(cb):<28}"
                     f"{ca['verdict']:<15}{cb['verdict']:<15}{_yes(overlap):>8}"
                     f"{_yes(ca['ci_low'] <= cb['diff'] <= ca['ci_high']):>11}"
                     f"{_yes(cb['ci_low'] <= ca['diff'] <= cb['ci_high']):>11}")
    lines += ["", f"verdicts agree in {same_verdict}/{total} comparisons",
              f"replicate: {consistent}/{total} comparisons consistent (CIs overlap)"]
    return "\n".join(lines)


def _ci(c: dict) -> str:
    return f"{c['diff']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


if __name__ == "__main__":
    main()
