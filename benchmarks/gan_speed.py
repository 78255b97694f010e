"""Training and sampling speed of acgan, cgan and ddpm at 32 and 64 px on this machine, side by side.

For each model x size: parameters (G + D; ddpm has only its UNet), FLOPs of one training step (GANs: D update + G
update; ddpm: one denoising update; counted by torch.utils.flop_counter), training images/s over timed steps after
warm-up, sampling images/s of the EMA generator (64 images; ddpm at its preset's sampling steps and guidance, which
doubles the UNet batch), and the peak resident memory of a fresh process running it (ru_maxrss). Uses the bundled
PneumoniaMNIST resized by the data layer, the preset `--preset` widths (default quick), batch 32. Run:
PYTHONPATH=src python benchmarks/gan_speed.py [--steps 10] [--models ddpm] [--sizes 32] [--threads 1] [--note TEXT]
Writes benchmarks/results/gan_speed_<preset>_<date>.json (with the machine's reference speed: benchmarks/common.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import add_note_argument, dated, write_results


def measure(model: str, size: int, preset: str, steps: int) -> dict:
    """Runs in a child process, so ru_maxrss is this configuration's own peak."""
    import resource
    import time

    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from medsyn import data, generators
    from medsyn.config import DataConfig, gan_preset

    dataset = data.load(None, DataConfig(size=size))
    config = dataclasses.replace(gan_preset(preset, model), size=size, batch_size=32, log_every=1,
                                 snapshot_every=10**9)
    from medsyn.generators.families import FAMILIES

    with tempfile.TemporaryDirectory() as tmp:
        totals = []
        for n in (1, 2):  # the difference is one step, without the end-of-run snapshot both runs share
            with FlopCounterMode(display=False) as counter:
                generators.train(dataset, dataclasses.replace(config, steps=n), Path(tmp) / f"flops{n}", progress=False)
            totals.append(counter.get_total_flops())
        flops = totals[1] - totals[0]
        start = time.perf_counter()
        generators.train(dataset, dataclasses.replace(config, steps=steps + 3), Path(tmp) / "speed", progress=False)
        wall = time.perf_counter() - start
        rows = generators.read_log(Path(tmp) / "speed")[3:]  # skip warm-up steps
        generator, info = generators.load_generator(Path(tmp) / "speed" / "final.pt")
    labels = np.arange(64) % 2
    start = time.perf_counter()
    generators.generate_images(generator, info, labels, seed=0)
    sample_images_per_s = len(labels) / (time.perf_counter() - start)
    discriminator = 0 if model == "ddpm" else sum(p.numel() for p in FAMILIES[model].module.networks(
        size, 1, 2, config.latent_dim, config.base_width)[1].parameters())
    params = sum(p.numel() for p in generator.parameters()), discriminator
    seconds = sum(r["images_per_s"] and config.batch_size / r["images_per_s"] for r in rows)
    return {"model": model, "size": size, "width": config.base_width, "g_params": params[0], "d_params": params[1],
            "gflops_per_step": flops / 1e9, "images_per_s": len(rows) * config.batch_size / seconds,
            "steps_per_s": len(rows) / seconds, "sample_images_per_s": sample_images_per_s,
            "sampling_steps": config.sampling_steps if model == "ddpm" else 1, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads(), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration (after 3 warm-up)")
    parser.add_argument("--preset", default="quick", choices=("smoke", "quick", "full"))
    parser.add_argument("--models", default="acgan,cgan,ddpm", help="comma-separated (default: all three)")
    parser.add_argument("--sizes", default="32,64", help="comma-separated pixel sizes (default: 32,64)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per measurement (0: torch's default)")
    add_note_argument(parser)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.preset, args.steps)))
        return
    rows = []
    for size in map(int, args.sizes.split(",")):
        for model in args.models.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", model, str(size), "--preset", args.preset,
                                  "--steps", str(args.steps), "--threads", str(args.threads)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"Generator training and sampling speed, bundled PneumoniaMNIST resized, batch 32, preset {args.preset} widths, "
          f"{rows[0]['threads']} torch threads, CPU; {args.steps} timed steps each")
    header = f"{'model':6} {'px':>4} {'width':>5} {'G params':>10} {'D params':>10} {'GFLOP/step':>10} " \
             f"{'img/s':>8} {'steps/s':>8} {'sample img/s':>12} {'(steps)':>7} {'peak RSS MB':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:6} {r['size']:>4} {r['width']:>5} {r['g_params']:>10,} {r['d_params']:>10,} "
              f"{r['gflops_per_step']:>10.2f} {r['images_per_s']:>8.1f} {r['steps_per_s']:>8.2f} "
              f"{r['sample_images_per_s']:>12.1f} {r['sampling_steps']:>7} {r['peak_rss_mb']:>11.0f}")
    write_results(dated(f"gan_speed_{args.preset}"), {"timed_steps": args.steps, "rows": rows}, note=args.note)


if __name__ == "__main__":
    main()
