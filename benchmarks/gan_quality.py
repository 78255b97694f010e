"""Sample quality per GAN configuration on the bundled PneumoniaMNIST (28 px), side by side.

Each configuration is the `--preset` GAN settings (default quick, cgan) with some fields replaced, written
NAME:field=value,field=value (e.g. `base:` or `ttur:lr_d=4e-4,steps=400`). Each one is trained on real train, then
`--n` images are generated with the train split's class proportions and audited with the preset's audit settings
(domain-encoder features, reference = real train): FID, KID, precision, recall, density, coverage, and label
fidelity (the share of synthetic images the real-trained encoder assigns to their intended class). Wall time and
steps/s are of training only: wall time includes snapshots and whatever else
loads the machine; steps/s is the median over logging windows, and "quiet s" = steps / that, the training time on
an otherwise idle machine. The run folders (with samples/grid-*.png) stay under --out.
The last row is the real val split scored the same way: what genuinely new real images get.

Usage: MEDSYN_CACHE=/tmp/mc PYTHONPATH=src python benchmarks/gan_quality.py base: wide:base_width=16 [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from medsyn import data, gan
from medsyn.config import GanConfig, gan_preset, preset
from medsyn.evaluate.audit import as_synthetic, run_audit

METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")


def parse(spec: str, base: GanConfig) -> tuple[str, GanConfig]:
    name, _, fields = spec.partition(":")
    types = {f.name: f.type for f in dataclasses.fields(GanConfig)}
    changes = {}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        kind = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes")}.get(types[key], str)
        changes[key] = kind(value.replace("+", ",")) if kind is str else kind(value)  # policies: color+translation
    return name, dataclasses.replace(base, **changes)


def measure(name: str, config: GanConfig, real: data.ImageSet, out: Path, n: int, audit_config) -> dict:
    run = out / name
    start = time.perf_counter()
    checkpoint = gan.train(real, config, run, progress=False)
    wall = time.perf_counter() - start
    train = real.subset("train")
    labels = np.random.default_rng(0).choice(train.labels, n)
    generator, info = gan.load_generator(checkpoint)
    images = gan.generate_images(generator, info, labels, seed=1)
    synthetic = as_synthetic(images, labels, real.class_names, name)
    audit = run_audit(real, synthetic, run / "audit", audit_config, name, overwrite=True, log=lambda *_: None)
    scores = audit["fidelity"]["by_features"]["domain-encoder"]["all"]
    # the median logging window is the speed of an unloaded machine; the wall time includes any other load
    steps_per_s = float(np.median([row["images_per_s"] for row in gan.read_log(run)])) / config.batch_size
    return {"name": name, "wall_s": wall, "steps_per_s": steps_per_s, "quiet_s": config.steps / steps_per_s,
            **{k: scores[k] for k in METRICS}, "label_acc": audit["label_fidelity"]["synthetic_accuracy"],
            "reference": audit["reference"]["by_features"]["domain-encoder"]["all"],
            "real_test_acc": audit["label_fidelity"]["reference_real_test_accuracy"], "config": dataclasses.asdict(config)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="NAME:field=value,... (',' inside a value: write '+')")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--model", default="cgan")
    parser.add_argument("--n", type=int, default=2000, help="synthetic images audited per configuration")
    parser.add_argument("--out", type=Path, default=None, help="keep run folders here (default: a temp dir)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="medsyn-ganq-"))
    real = data.load(None, preset(args.preset).data)
    audit_config = preset(args.preset).audit
    base = gan_preset(args.preset, args.model)
    rows = []
    for spec in args.configs:
        name, config = parse(spec, base)
        rows.append(measure(name, config, real, out, args.n, audit_config))
        print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("reference", "config")}), flush=True)
    print(f"\nGAN quality on bundled PneumoniaMNIST 28 px ({args.model}, preset {args.preset} + changes); "
          f"{args.n} synthetic images vs real train, domain-encoder features; runs in {out}")
    header = f"{'config':16} {'wall s':>7} {'steps/s':>7} {'quiet s':>7} {'FID':>7} {'KID':>7} {'prec':>5} {'recall':>6} " \
             f"{'dens':>5} {'cover':>5} {'label acc':>9}"
    print(header + "\n" + "-" * len(header))
    for r in rows:
        print(f"{r['name']:16} {r['wall_s']:>7.1f} {r['steps_per_s']:>7.2f} {r['quiet_s']:>7.1f} {r['fid']:>7.2f} {r['kid']:>7.4f} "
              f"{r['precision']:>5.2f} {r['recall']:>6.2f} {r['density']:>5.2f} {r['coverage']:>5.2f} "
              f"{r['label_acc']:>9.3f}")
    ref = rows[0]["reference"]
    print(f"{'real val (ref)':16} {'':>7} {'':>7} {'':>7} {ref['fid']:>7.2f} {ref['kid']:>7.4f} {ref['precision']:>5.2f} "
          f"{ref['recall']:>6.2f} {ref['density']:>5.2f} {ref['coverage']:>5.2f} {rows[0]['real_test_acc']:>9.3f}"
          "  (label acc: real test)")
    for r in rows:
        changed = {k: v for k, v in r["config"].items() if dataclasses.asdict(base).get(k) != v}
        print(f"  {r['name']}: {changed or 'preset'}")


if __name__ == "__main__":
    main()
