"""Run the default `medsyn run` (quick preset, bundled PneumoniaMNIST) and print, per stage (job kind): wall time
from its first job's start to its last job's end, summed job seconds, CPU seconds and peak memory; the CPU
utilisation of the classifier stage (target: at least 85% of all cores); and the whole run's wall time and peak
memory against the targets (the preset's `budget_minutes` in config.py; 4 GiB).

Then, in the same invocation, the sequential vs parallel ratio: the same 4 classifier jobs of the quick preset
(arm `real`, seeds 0-3) run with 1 worker and with 2 workers.

    python benchmarks/run_quick.py [--preset quick] [--out DIR] [--skip-ratio] [--note TEXT]
                                   [extra `medsyn run` flags...]

Writes benchmarks/results/run_<preset>_<date>.json (with the machine's reference speed: benchmarks/common.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import add_note_argument, dated, write_results

TARGET_PEAK_MIB = 4 * 1024


def main() -> None:
    from medsyn.config import preset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip-ratio", action="store_true", help="leave out the sequential vs parallel measurement")
    add_note_argument(parser)
    args, extra = parser.parse_known_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="medsyn-bench-")) / "run"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medsyn", "run", "--preset", args.preset, "--out", str(out), *extra],
                   check=True)
    wall = time.perf_counter() - start
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    cores = len(os.sched_getaffinity(0))
    stages = stage_rows(json.loads((out / "timings.json").read_text())["jobs"], cores)
    budget = preset(args.preset).budget_minutes
    target_s = budget and budget * 60  # the full preset has none (a GPU)
    print(f"\nmedsyn run --preset {args.preset} on {cores} CPU cores, run folder {out}")
    print(stage_table(stages))
    print(f"{'wall (incl. start-up)':<28}{wall:>10.1f} s   " +
          (f"target {target_s:.0f} s   ratio {wall / target_s:.2f}" if target_s else "no budget"))
    print(f"{'peak RSS of one process':<28}{child_peak:>10.0f} MiB target {TARGET_PEAK_MIB} MiB ratio "
          f"{child_peak / TARGET_PEAK_MIB:.2f}")
    ratio = None if args.skip_ratio else parallel_ratio(args.preset)
    if ratio:
        print(f"\n4 classifier jobs (arm real, seeds 0-3, {args.preset} preset, 1 thread per job): 1 worker "
              f"{ratio['one_worker_s']} s, 2 workers {ratio['two_workers_s']} s, speed-up {ratio['speed_up']}x")
    write_results(dated(f"run_{args.preset}"),
                  {"preset": args.preset, "extra_flags": extra, "cores": cores, "wall_s": round(wall, 1),
                   "target_s": target_s, "peak_rss_mib": round(child_peak), "target_peak_mib": TARGET_PEAK_MIB,
                   "stages": stages, "parallel_ratio": ratio}, note=args.note)


def stage_rows(jobs: dict, cores: int) -> list[dict]:
    """Per stage (job kind): jobs, wall seconds from its first start to its last end, job and CPU seconds, the
    share of all cores busy meanwhile, and the peak memory of its largest job."""
    rows = []
    for kind in dict.fromkeys(j["kind"] for j in jobs.values()):
        group = [j for j in jobs.values() if j["kind"] == kind]
        span = max(j["finished_at"] for j in group) - min(j["finished_at"] - j["seconds"] for j in group)
        rows.append({"stage": kind, "jobs": len(group), "wall_s": round(span, 1),
                     "job_s": round(sum(j["seconds"] for j in group), 1),
                     "cpu_s": round(sum(j["cpu_seconds"] for j in group), 1),
                     "cpu_use": round(_busy(jobs.values(), group) / cores, 3),
                     "peak_mib": round(max(j["peak_rss_mib"] for j in group))})
    return rows


def stage_table(rows: list[dict]) -> str:
    lines = ["(CPU use: CPU seconds of all jobs running during the stage / its wall time / cores)",
             f"{'stage':<12}{'jobs':>5}{'wall s':>9}{'job s':>9}{'CPU s':>9}{'CPU use':>9}{'peak MiB':>10}"]
    for r in rows:
        lines.append(f"{r['stage']:<12}{r['jobs']:>5}{r['wall_s']:>9.1f}{r['job_s']:>9.1f}{r['cpu_s']:>9.1f}"
                     f"{r['cpu_use']:>9.0%}{r['peak_mib']:>10.0f}")
    return "\n".join(lines)


def _busy(every: list, group: list) -> float:
    """CPU seconds per second of every job (of any stage) while this stage ran: the cores kept busy."""
    start = min(j["finished_at"] - j["seconds"] for j in group)
    end = max(j["finished_at"] for j in group)
    used = 0.0
    for j in every:
        a, b = j["finished_at"] - j["seconds"], j["finished_at"]
        overlap = max(0.0, min(b, end) - max(a, start))
        used += j["cpu_seconds"] * overlap / max(b - a, 1e-9)
    return used / max(end - start, 1e-9)


def parallel_ratio(preset_name: str) -> dict:
    """The same 4 classifier jobs with 1 and with 2 local workers (1 thread each), timed in this process."""
    from medsyn import config as configs
    from medsyn import study

    config = dataclasses.replace(configs.preset(preset_name), arms=("real",), seeds=(0, 1, 2, 3), n_generators=1)
    jobs = [j for j in study.build_plan(config, 4708) if j.kind in ("data", "classify")]
    seconds = {}
    for workers in (1, 2):
        folder = Path(tempfile.mkdtemp(prefix=f"medsyn-ratio-{workers}-"))
        (folder / "config.json").write_text("{}")
        start = time.perf_counter()
        study.execute(jobs, study.Study(config, None, folder), "local", workers, progress=False)
        seconds[workers] = time.perf_counter() - start
    return {"one_worker_s": round(seconds[1], 1), "two_workers_s": round(seconds[2], 1),
            "speed_up": round(seconds[1] / seconds[2], 2)}


if __name__ == "__main__":
    main()
