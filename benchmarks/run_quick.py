"""Run the default `medsyn run` (quick preset, bundled PneumoniaMNIST) and print wall time and peak memory per
stage, next to the targets: 15 minutes in all and 4 GiB peak on a 2-core machine.

    python benchmarks/run_quick.py [--preset quick] [--out DIR] [extra `medsyn run` flags...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 15 * 60
TARGET_PEAK_MIB = 4 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--out", type=Path, default=None)
    args, extra = parser.parse_known_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="medsyn-bench-")) / "run"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medsyn", "run", "--preset", args.preset, "--out", str(out), *extra],
                   check=True)
    wall = time.perf_counter() - start
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    stages = json.loads((out / "timings.json").read_text())
    print(f"\nmedsyn run --preset {args.preset} on {os.cpu_count()} CPU cores, run folder {out}")
    print(f"{'stage':<16}{'seconds':>10}{'share':>8}{'peak RSS MiB (process so far)':>32}")
    for name, entry in stages.items():
        print(f"{name:<16}{entry['seconds']:>10.1f}{entry['seconds'] / wall:>8.1%}{entry['peak_rss_mib']:>32.0f}")
    print(f"{'wall (incl. start-up)':<24}{wall:>10.1f} s   target {TARGET_SECONDS} s   ratio {wall / TARGET_SECONDS:.2f}")
    print(f"{'peak RSS of the run':<24}{child_peak:>10.0f} MiB target {TARGET_PEAK_MIB} MiB ratio "
          f"{child_peak / TARGET_PEAK_MIB:.2f}")


if __name__ == "__main__":
    main()
