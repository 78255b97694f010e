"""Run the default `medsyn run` (quick preset, bundled PneumoniaMNIST) and print, per stage (job kind): wall time
from its first job's start to its last job's end, summed job seconds, CPU seconds and peak memory; the CPU
utilisation of the classifier stage (target: at least 85% of all cores); and the whole run's wall time and peak
memory against the targets (12 minutes, so that a slower machine stays within 15; 4 GiB).

Then, in the same invocation, the sequential vs parallel ratio: the same 4 classifier jobs of the quick preset
(arm `real`, seeds 0-3) run with 1 worker and with 2 workers.

    python benchmarks/run_quick.py [--preset quick] [--out DIR] [--skip-ratio] [extra `medsyn run` flags...]
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

TARGET_SECONDS = 12 * 60
TARGET_PEAK_MIB = 4 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip-ratio", action="store_true", help="leave out the sequential vs parallel measurement")
    args, extra = parser.parse_known_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="medsyn-bench-")) / "run"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medsyn", "run", "--preset", args.preset, "--out", str(out), *extra],
                   check=True)
    wall = time.perf_counter() - start
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(stage_table(json.loads((out / "timings.json").read_text())["jobs"], wall, args.preset, out))
    print(f"{'peak RSS of one process':<28}{child_peak:>10.0f} MiB target {TARGET_PEAK_MIB} MiB ratio "
          f"{child_peak / TARGET_PEAK_MIB:.2f}")
    if not args.skip_ratio:
        print(parallel_ratio(args.preset))


def stage_table(jobs: dict, wall: float, preset: str, out: Path) -> str:
    cores = len(os.sched_getaffinity(0))
    lines = [f"\nmedsyn run --preset {preset} on {cores} CPU cores, run folder {out}",
             "(CPU use: CPU seconds of all jobs running during the stage / its wall time / cores)",
             f"{'stage':<12}{'jobs':>5}{'wall s':>9}{'job s':>9}{'CPU s':>9}{'CPU use':>9}{'peak MiB':>10}"]
    for kind in dict.fromkeys(j["kind"] for j in jobs.values()):
        group = [j for j in jobs.values() if j["kind"] == kind]
        span = max(j["finished_at"] for j in group) - min(j["finished_at"] - j["seconds"] for j in group)
        cpu = sum(j["cpu_seconds"] for j in group)
        lines.append(f"{kind:<12}{len(group):>5}{span:>9.1f}{sum(j['seconds'] for j in group):>9.1f}{cpu:>9.1f}"
                     f"{_busy(jobs.values(), group) / cores:>9.0%}{max(j['peak_rss_mib'] for j in group):>10.0f}")
    lines.append(f"{'wall (incl. start-up)':<28}{wall:>10.1f} s   target {TARGET_SECONDS} s   ratio "
                 f"{wall / TARGET_SECONDS:.2f}")
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


def parallel_ratio(preset_name: str) -> str:
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
    return (f"\n4 classifier jobs (arm real, seeds 0-3, {preset_name} preset, 1 thread per job): 1 worker "
            f"{seconds[1]:.1f} s, 2 workers {seconds[2]:.1f} s, speed-up {seconds[1] / seconds[2]:.2f}x")


if __name__ == "__main__":
    main()
