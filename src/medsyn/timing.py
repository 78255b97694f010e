"""Wall time and peak memory per pipeline stage, kept in a JSON file so a resumed run adds to it."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from pathlib import Path

from medsyn.fileio import read_json, write_json


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB). ru_maxrss is KiB on Linux, bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class StageTimer:
    def __init__(self, path: Path):
        self.path = path
        self.stages: dict[str, dict] = read_json(path) if path.exists() else {}

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        yield
        entry = self.stages.setdefault(name, {"seconds": 0.0, "peak_rss_mib": 0.0, "runs": 0})
        entry["seconds"] = round(entry["seconds"] + time.perf_counter() - start, 2)
        entry["peak_rss_mib"] = round(max(entry["peak_rss_mib"], peak_rss_mib()), 1)
        entry["runs"] += 1
        write_json(self.path, self.stages)

    def summary(self) -> str:
        width = max([len(n) for n in self.stages] + [5])
        lines = [f"{'stage'.ljust(width)}  {'seconds':>8}  {'peak RSS MiB':>12}"]
        for name, entry in self.stages.items():
            lines.append(f"{name.ljust(width)}  {entry['seconds']:8.1f}  {entry['peak_rss_mib']:12.0f}")
        total = sum(e["seconds"] for e in self.stages.values())
        lines.append(f"{'total'.ljust(width)}  {total:8.1f}")
        return "\n".join(lines)
