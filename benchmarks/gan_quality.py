"""Sample quality per GAN configuration on the bundled PneumoniaMNIST (28 px), side by side.

Each configuration is the `--preset` GAN settings (default quick, cgan) with some fields replaced, written
NAME:field=value,field=value (e.g. `base:` or `ttur:lr_d=4e-4,steps=400`). Each one is trained on real train, then
`--n` images are generated with the train split's class proportions and audited with the preset's audit settings
in every feature extractor the audit uses (label-trained CNN, random CNN, Inception-v3 when its weights are on
disk), each number beside the real-vs-real floor (two halves of real train): FID, KID, precision, recall,
density, coverage, and label fidelity (the share of synthetic images the real-trained CNN assigns to their
intended class). `model=acgan` or `model=ddpm` in a spec starts from that model's preset instead, so the models
compare at equal images seen (same steps x batch_size) or at equal wall time (steps chosen from each one's
steps/s), e.g. `cgan: acgan:model=acgan,steps=2800,batch_size=32` (equal images seen) or
`--equal-time ddpm:model=ddpm cgan:` (the cgan trained for the quick ddpm's training time, its steps set from a
short calibration run of its steps/s). `--equal-time --budgets 1,2,4,8` runs every configuration at each multiple
of the first one's training time (the first at its own steps is the 1x budget, e.g. the quick cgan's); a spec's
`budgets=1+2` narrows that list for a slow model. Every row also has the per-class numbers (label fidelity beside
real val's, precision, recall, density, coverage beside the floor's), the sampling time per 1000 images and
whether it meets issue 19's target (label fidelity >= 0.90; each class's precision and recall in the random CNN's
space >= 0.7 of the floor's). "sample s" is the time to
generate the audited images (ddpm: its sampling steps x the UNet). `--acgan-baseline` compares cgan and acgan
fairly: the cgan, then acgan (its own preset) at equal images seen and at the cgan's training time. Wall time and
steps/s are of training only: wall time includes snapshots and whatever else
loads the machine; steps/s is the median over logging windows, and "quiet s" = steps / that, the training time on
an otherwise idle machine. The run folders (with samples/grid-*.png) stay under --out.
The floor row gives what real images score against real images at the same sample size.

Usage: MEDSYN_CACHE=/tmp/mc PYTHONPATH=src python benchmarks/gan_quality.py base: wide:base_width=16 [--out DIR]
       MEDSYN_CACHE=/tmp/mc PYTHONPATH=src python benchmarks/gan_quality.py --acgan-baseline cgan:steps=300
       ... gan_quality.py --equal-time --budgets 1,2,4 before:aux_weight=0 cgan: acgan:model=acgan \
           ddpm:model=ddpm,budgets=1+2
       ... --data ../shared/data/chest_xray_224 --size 64 w12: w8:base_width=8 (a folder at 64 px)
Writes benchmarks/results/gan_quality_<date>.json, or gan_quality_<folder>_<size>px_<date>.json with --data (with
the machine's reference speed: benchmarks/common.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medsyn import data, generators
from medsyn.config import GanConfig, gan_preset, preset
from medsyn.audit.run import FLOOR_SET, as_synthetic, run_audit

from common import add_note_argument, dated, write_results

METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")


def parse(spec: str, base: GanConfig, preset_name: str) -> tuple[str, GanConfig, list[float] | None]:
    """(name, settings, budgets): `budgets=1+2` is not a setting but the budget multiples this configuration
    runs at under --budgets (default: all of them), for a slow model whose large budgets do not fit."""
    name, _, fields = spec.partition(":")
    items = dict(item.partition("=")[::2] for item in filter(None, fields.split(",")))
    budgets = [float(b) for b in items.pop("budgets").split("+")] if "budgets" in items else None
    model = items.get("model")
    if model and model != base.model:
        base = gan_preset(preset_name, model, base.size)
    types = {f.name: f.type for f in dataclasses.fields(GanConfig)}
    changes = {}
    for key, value in items.items():
        kind = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes")}.get(types[key], str)
        changes[key] = kind(value.replace("+", ",")) if kind is str else kind(value)  # policies: color+translation
    return name, dataclasses.replace(base, **changes), budgets


def measure(name: str, config: GanConfig, real: data.ImageSet, out: Path, n: int, audit_config) -> dict:
    run = out / name
    start = time.perf_counter()
    checkpoint = generators.train(real, config, run, progress=False)
    wall = time.perf_counter() - start
    train = real.subset("train")
    labels = np.random.default_rng(0).choice(train.labels, n)
    generator, info = generators.load_generator(checkpoint)
    start = time.perf_counter()
    images = generators.generate_images(generator, info, labels, seed=1)
    sample_s = time.perf_counter() - start
    synthetic = as_synthetic(images, labels, real.class_names, name)
    audit = run_audit(real, synthetic, run / "audit", audit_config, name, overwrite=True)
    by_features = audit["fidelity"]["by_features"]
    scores = {extractor: by_set[name]["all"] for extractor, by_set in by_features.items()}
    floors = {extractor: by_set[FLOOR_SET]["all"] for extractor, by_set in by_features.items()}
    per_class = {extractor: {c: by_set[name][c] for c in real.class_names} for extractor, by_set in by_features.items()}
    floors_per_class = {extractor: {c: by_set[FLOOR_SET][c] for c in real.class_names}
                        for extractor, by_set in by_features.items()}
    labels_audit = audit["label_fidelity"]
    # the median logging window is the speed of an unloaded machine; the wall time includes any other load
    steps_per_s = float(np.median([row["images_per_s"] for row in generators.read_log(run)])) / config.batch_size
    row = {"name": name, "wall_s": wall, "sample_s": sample_s, "sample_s_per_1000": sample_s / n * 1000,
           "steps_per_s": steps_per_s, "quiet_s": config.steps / steps_per_s,
           "images_seen": config.steps * config.batch_size, "scores": scores, "floors": floors,
           "per_class": per_class, "floors_per_class": floors_per_class,
           "label_acc": labels_audit["synthetic_accuracy"], "label_acc_per_class": labels_audit["synthetic_per_class"],
           "real_val_acc": labels_audit["reference_real_val_accuracy"],
           "real_val_acc_per_class": labels_audit["reference_real_val_per_class"], "config": dataclasses.asdict(config)}
    return {**row, "target": target(row)}


TARGET_LABEL_ACC = 0.90      # issue 19: label fidelity at the quick budget
TARGET_FLOOR_SHARE = 0.7     # each class's precision and recall, in the random CNN's space, vs the real floor's
TARGET_FEATURES = "random-cnn"


def target(row: dict) -> dict:
    """Whether a row meets issue 19's target: label fidelity >= TARGET_LABEL_ACC and, per class, precision and
    recall in TARGET_FEATURES' space at least TARGET_FLOOR_SHARE of the real-vs-real floor's (the worst class's
    share is reported)."""
    shares = {f"{c}:{m}": row["per_class"][TARGET_FEATURES][c][m] / row["floors_per_class"][TARGET_FEATURES][c][m]
              for c in row["per_class"][TARGET_FEATURES] for m in ("precision", "recall")}
    worst = min(shares, key=shares.get)
    return {"label_acc_ok": row["label_acc"] >= TARGET_LABEL_ACC, "worst_share_of_floor": shares[worst],
            "worst": worst, "met": row["label_acc"] >= TARGET_LABEL_ACC and shares[worst] >= TARGET_FLOOR_SHARE}


def acgan_baseline(cgan: GanConfig, preset_name: str, measure_one) -> list[dict]:
    """cgan; acgan at the cgan's images seen; acgan for the cgan's training time (quiet seconds, so the other
    load on the machine during either run does not tilt it)."""
    cgan_row = measure_one("cgan", cgan)
    acgan = dataclasses.replace(gan_preset(preset_name, "acgan", cgan.size), steps=cgan.steps,
                                batch_size=cgan.batch_size)
    same_images = measure_one("acgan=images", acgan)
    steps = max(1, round(cgan_row["quiet_s"] * same_images["steps_per_s"]))
    return [cgan_row, same_images, measure_one("acgan=time", dataclasses.replace(acgan, steps=steps))]


def steps_per_second(name: str, config: GanConfig, real: data.ImageSet, out: Path, steps: int = 60) -> float:
    """Training steps/s of `config` from a short calibration run (median logging window)."""
    run = out / f"{name}-calibration"
    generators.train(real, dataclasses.replace(config, steps=steps, snapshot_every=steps, log_every=10), run, progress=False)
    return float(np.median([row["images_per_s"] for row in generators.read_log(run)])) / config.batch_size


def equal_time(configs: list[tuple[str, GanConfig, list[float] | None]], real: data.ImageSet, out: Path, measure_one,
               budgets: list[float] = (1.0,)) -> None:
    """The first configuration as given: its quiet training time is the budget. Then every configuration at each
    multiple of that budget (its own `budgets=` list if it has one), its steps set from its steps/s: the first's
    from its own run, every other's from a calibration run. With budgets 1 alone, the first is not run again."""
    name, config, _ = configs[0]
    reference = measure_one(f"{name}@1x", config)
    budget_s = reference["quiet_s"]
    reference.update(budget=1.0, budget_s=budget_s)
    for name, config, own in configs:
        rate = reference["steps_per_s"] if name == configs[0][0] else steps_per_second(name, config, real, out)
        for multiple in own or budgets:
            if name == configs[0][0] and multiple == 1:
                continue
            steps = max(1, round(multiple * budget_s * rate))
            row = measure_one(f"{name}@{multiple:g}x", dataclasses.replace(config, steps=steps,
                                                                          snapshot_every=max(1, steps // 2)))
            row.update(budget=multiple, budget_s=multiple * budget_s)


def print_per_class(rows: list[dict]) -> None:
    """Per class: label fidelity (real val beside it), precision / recall / density / coverage beside the floor in
    each extractor, the sample time per 1000 images, and whether the row meets the target."""
    classes = list(rows[0]["label_acc_per_class"])
    print(f"\nper class ({', '.join(classes)}); each metric as synthetic/floor")
    for r in rows:
        print(f"{r['name']:16} steps {r['config']['steps']:>6}  {r['steps_per_s']:6.2f} steps/s  "
              f"sample {r['sample_s_per_1000']:7.1f} s/1000  label acc {r['label_acc']:.3f}  target "
              f"{'met' if r['target']['met'] else 'not met'} (worst {r['target']['worst']} "
              f"{r['target']['worst_share_of_floor']:.2f} of floor)")
        for c in classes:
            cells = "  ".join(f"{extractor[:6]} " + " ".join(
                f"{m[0]} {r['per_class'][extractor][c][m]:.2f}/{r['floors_per_class'][extractor][c][m]:.2f}"
                for m in ("precision", "recall", "density", "coverage")) for extractor in r["per_class"])
            print(f"    {c:10} label {r['label_acc_per_class'][c]:.3f} (val {r['real_val_acc_per_class'][c]:.3f})  "
                  f"{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help="NAME:field=value,... (',' inside a value: write '+')")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--data", default=None, help="any source `medsyn run --data` takes (default: the bundled data)")
    parser.add_argument("--size", type=int, default=None, help="image side (default: the preset's)")
    parser.add_argument("--model", default="cgan")
    parser.add_argument("--n", type=int, default=2000, help="synthetic images audited per configuration")
    parser.add_argument("--out", type=Path, default=None, help="keep run folders here (default: a temp dir)")
    parser.add_argument("--acgan-baseline", action="store_true",
                        help="the cgan (first configuration) against acgan at equal images seen and equal time")
    parser.add_argument("--equal-time", action="store_true",
                        help="train every configuration after the first for the first one's training time")
    parser.add_argument("--budgets", type=lambda text: [float(b) for b in text.split(",")], default=[1.0],
                        help="with --equal-time: multiples of the first configuration's training time that every "
                             "configuration trains for, e.g. 1,2,4,8 (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, for comparable timings)")
    add_note_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="medsyn-ganq-"))
    data_config = preset(args.preset, args.size).data
    real = data.load(args.data, data_config)
    audit_config = preset(args.preset, args.size).audit
    base = gan_preset(args.preset, args.model, data_config.size)
    rows = []

    def measure_one(name: str, config: GanConfig) -> dict:
        rows.append(measure(name, config, real, out, args.n, audit_config))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "config"}), flush=True)
        return rows[-1]

    configs = [parse(spec, base, args.preset) for spec in args.configs or ["cgan:"]]
    if args.acgan_baseline:
        acgan_baseline(configs[0][1], args.preset, measure_one)
    elif args.equal_time:
        equal_time(configs, real, out, measure_one, args.budgets)
    else:
        for name, config, _ in configs:
            measure_one(name, config)
    print(f"\nGAN quality on {args.data or 'bundled PneumoniaMNIST'} at {data_config.size} px (preset {args.preset} + "
          f"changes); {args.n} synthetic images "
          f"vs half of real train; floor = the other half of real train; runs in {out}")
    header = f"{'config':14} {'features':18} {'wall s':>7} {'quiet s':>7} {'sample s':>8} {'images':>7} " + \
        " ".join(f"{m:>7} {'floor':>6}" for m in METRICS) + f" {'label acc':>9}"
    print(header + "\n" + "-" * len(header))
    for r in rows:
        for extractor, scores in r["scores"].items():
            cells = " ".join(f"{scores[m]:>7.3f} {r['floors'][extractor][m]:>6.3f}" for m in METRICS)
            print(f"{r['name']:14} {extractor:18} {r['wall_s']:>7.1f} {r['quiet_s']:>7.1f} {r['sample_s']:>8.1f} "
                  f"{r['images_seen']:>7} "
                  f"{cells} {r['label_acc']:>9.3f}")
    print(f"label accuracy of the same classifier on real val: {rows[0]['real_val_acc']:.3f}")
    print_per_class(rows)
    for r in rows:
        own_preset = dataclasses.asdict(gan_preset(args.preset, r["config"]["model"], data_config.size))
        changed = {k: v for k, v in r["config"].items() if own_preset.get(k) != v}
        print(f"  {r['name']}: {changed or 'preset'}")
    name = "gan_quality" if args.data is None else f"gan_quality_{Path(args.data).name}_{data_config.size}px"
    write_results(dated(name), {"preset": args.preset, "data": args.data or "bundled",
                                         "size": data_config.size, "n": args.n, "threads_per_run": args.threads,
                                         "runs_folder": str(out), "rows": rows}, note=args.note)


if __name__ == "__main__":
    main()
