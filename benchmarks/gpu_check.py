"""The two Python steps of benchmarks/gpu_check.sh.

    python benchmarks/gpu_check.py subset --train N --size S --out small.npz   the bundled data cut to N train images
    python benchmarks/gpu_check.py summary OUT      throughput on each device, the run's jobs; OUT/gpu_check.json

Throughput is images per second of training: the generator's from its log (the windows after the first, which holds
the warm-up; on the CPU, whose few steps make one window, warm-up included), the classifier's from its epoch
seconds (on the GPU the last epoch, after cuDNN's autotuning; on the CPU the one epoch it ran).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from medsyn.fileio import read_json, write_json


def subset(train: int, size: int, out: Path) -> None:
    from medsyn import data
    from medsyn.config import DataConfig

    full = data.load(None, DataConfig(size=size))
    keep = np.zeros(len(full), dtype=bool)
    for split, n in (("train", train), ("val", train // 4), ("test", train // 4)):
        keep[np.flatnonzero(full.split == split)[:n]] = True
    data.save_npz(full.select(keep), out)


def _gan_rate(run: Path) -> dict | None:
    if not (run / "log.jsonl").exists():
        return None
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    batch = read_json(run / "config.json")["gan"]["batch_size"]  # over all processes, as images_per_s counts them
    windows = list(zip([{"step": 0}] + rows, rows))
    timed = windows[1:] or windows
    steps = sum(r["step"] - p["step"] for p, r in timed)
    seconds = sum((r["step"] - p["step"]) * batch / r["images_per_s"] for p, r in timed)
    return {"steps_timed": steps, "images_per_s": round(steps * batch / seconds, 1),
            "warm_up_included": len(windows) == 1}


def _classify_rate(run: Path) -> dict | None:
    if not (run / "history.csv").exists():
        return None
    with open(run / "history.csv", newline="", encoding="utf-8") as handle:
        history = list(csv.DictReader(handle))
    seen = read_json(run / "val_metrics.json")
    per_epoch = (seen["real_seen"] + seen["synthetic_seen"]) / seen["best_epoch"]
    last = float(history[-1]["seconds"])
    return {"epochs": len(history), "images_per_epoch": int(per_epoch), "last_epoch_s": last,
            "images_per_s": round(per_epoch / last, 1)}


def summary(out: Path) -> dict:
    seconds = {}
    for line in (out / "seconds.txt").read_text().splitlines():
        name, start, end = line.split()
        seconds[name] = round(float(end) - float(start), 1)
    result = {"wall_seconds": seconds, "throughput": {}}
    for what, rate in (("gan", _gan_rate), ("classify", _classify_rate)):
        for device in ("cuda", "cpu"):
            measured = rate(out / f"{what}-{device}")
            if measured:
                result["throughput"][f"{what}_{device}"] = measured
    for what in ("gan", "classify"):
        gpu, cpu = (result["throughput"].get(f"{what}_{d}") for d in ("cuda", "cpu"))
        if gpu and cpu:
            result["throughput"][f"{what}_gpu_over_cpu"] = round(gpu["images_per_s"] / cpu["images_per_s"], 1)
    run = out / "run"
    if (run / "timings.json").exists():
        jobs = read_json(run / "timings.json")["jobs"]
        result["run_jobs"] = {name: {k: job.get(k) for k in ("kind", "seconds", "gpus", "gpu", "peak_gpu_mib")}
                              for name, job in jobs.items()}
    if (run / "results.json").exists():
        results = read_json(run / "results.json")
        result["run_test_auc"] = {arm: record["auc"]["mean"] for arm, record in results["arms"].items()}
    write_json(out / "gpu_check.json", result)
    return result


def _print(result: dict) -> None:
    print("wall seconds per command:", json.dumps(result["wall_seconds"]))
    for name, value in result["throughput"].items():
        print(f"  {name:<24} {json.dumps(value)}")
    for name, job in result.get("run_jobs", {}).items():
        print(f"  job {name:<44} {job['kind']:<10} {job['seconds']:>7} s  GPU share {job.get('gpus') or 0:<5} "
              f"{job.get('gpu') or 'cpu'} {'' if job.get('peak_gpu_mib') is None else str(job['peak_gpu_mib']) + ' MiB'}")
    print("run's test AUC per arm (a check that it ran, not a result):", json.dumps(result.get("run_test_auc")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    cut = verbs.add_parser("subset")
    cut.add_argument("--train", type=int, required=True)
    cut.add_argument("--size", type=int, required=True)
    cut.add_argument("--out", type=Path, required=True)
    report = verbs.add_parser("summary")
    report.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.verb == "subset":
        subset(args.train, args.size, args.out)
    else:
        _print(summary(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
