"""`medsyn run`: data -> GAN -> synthesis -> audit -> classifier arms x seeds -> statistics -> report.

Every stage writes its files into the run folder and is skipped when they are already there, so a killed run
continues with `--resume` and never redoes a finished stage or arm.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from medsyn import config as configs
from medsyn.errors import MedsynError
from medsyn.fileio import check_out_dir, claim_out_dir, holds_files, read_json, write_json

RUN_LAYOUT = """RUN/
  config.json            the full RunConfig of this run
  data.json              dataset summary (counts, duplicates, patients, notes)
  gan/<model>/           GAN checkpoints, sample grids, log.jsonl
  synthetic/<model>/     synthetic.npz, <CLASS>/*.png, manifest.json
  audit/<model>/         audit.json, nn_gallery.png
  arms/<arm>/seed<k>/    model.pt, predictions.csv, val_metrics.json, test_metrics.json
  results.json           statistics over seeds and the paired comparisons (test split)
  timings.json           wall time and peak memory per stage
  report.html, summary.md"""


def register(verbs) -> None:
    from medsyn.data.cli import add_data_arguments

    parser = verbs.add_parser("run", help="the whole study: GAN, synthesis, audit, all arms x seeds, report",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=RUN_LAYOUT)
    add_data_arguments(parser)
    parser.add_argument("--preset", choices=configs.PRESETS, default="quick",
                        help="smoke (about a minute, for tests), quick (default, <15 min on 2 CPU cores), full (GPU)")
    parser.add_argument("--gan", default=None,
                        help="generator(s), comma-separated: cgan, acgan or cgan,acgan (default: the preset's); "
                             "the first one feeds the classifier arms, every one is audited")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<preset>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue a run folder, skipping finished work")
    parser.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    from medsyn.data.cli import data_config

    config = configs.preset(args.preset)
    data_overrides = {k: v for k, v in dataclasses.asdict(data_config(args)).items()
                      if v != getattr(configs.DataConfig(), k)}
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, **data_overrides))
    if args.size is not None:
        config = dataclasses.replace(config, gan=dataclasses.replace(config.gan, size=args.size))
    if args.gan:
        config = dataclasses.replace(config, gans=tuple(g.strip() for g in args.gan.split(",") if g.strip()))
    out = args.out or Path("runs") / f"{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run(config, args.src, out, resume=args.resume)
    return 0


def run(config: configs.RunConfig, src, out: Path, resume: bool = False) -> Path:
    from medsyn import data
    from medsyn.timing import StageTimer

    out = Path(out)
    validate(config)
    check_out_dir(out, "run", resume=resume)
    data.load(src, config.data)  # bad or missing data fails before the run folder exists (decoded once, cached)
    _prepare_folder(out, config, src, resume)
    timer = StageTimer(out / "timings.json")
    with timer.stage("data"):
        dataset = data.load(src, config.data)
        write_json(out / "data.json", data.summarize(dataset))
    print(f"data: {dataset.source}: {dataset.size}x{dataset.size}x{dataset.channels}, "
          f"{ {s: sum(c) for s, c in dataset.counts().items()} }")
    synthetic_sets = {}
    for model in config.gans:
        synthetic_sets[model] = _generator_stages(dataset, config, model, out, timer)
    primary = synthetic_sets[config.gans[0]]
    with timer.stage("classify"):
        _classifier_stage(dataset, primary, config, out)
    with timer.stage("evaluate"):
        evaluate_run(out, config)
    with timer.stage("report"):
        from medsyn.report import build_report

        report = build_report(out)
    print(timer.summary())
    print(f"report: {report}")
    return report


def validate(config: configs.RunConfig) -> None:
    """Everything that can be checked before a run folder is made, so a typo leaves nothing behind."""
    from medsyn import classify, gan

    unknown = [g for g in config.gans if g not in configs.GAN_MODELS]
    if not config.gans or unknown:
        raise MedsynError(f"--gan {','.join(config.gans)}: choose one or more of {', '.join(configs.GAN_MODELS)}, "
                          "comma-separated.")
    for model in config.gans:
        gan.check_config(_gan_config(config, model))
    if config.data.size not in (None, config.gan.size):
        raise MedsynError(f"the data size {config.data.size} differs from the GAN size {config.gan.size}; "
                          "set both with --size.")
    for arm in config.arms:
        classify.parse_arm(arm)
    classify.check_config(config.classify)
    if not config.seeds:
        raise MedsynError("a run needs at least one seed.")


def _prepare_folder(out: Path, config: configs.RunConfig, src, resume: bool) -> None:
    saved = out / "config.json"
    record = json.loads(json.dumps({"source": str(src) if src else "bundled PneumoniaMNIST",
                                    **configs.to_dict(config)}))  # tuples as JSON lists, as saved
    if holds_files(out):
        if not resume:
            raise MedsynError(f"{out} already holds a run; pass --resume to continue it, or choose another --out.")
        if saved.exists() and read_json(saved) != record:
            raise MedsynError(f"{out} was started with a different configuration ({saved}); resume it with the same "
                              "preset and flags, or choose another --out.")
    claim_out_dir(out, "run")
    write_json(saved, record)


def synthetic_counts(train_counts: np.ndarray, arms: tuple[str, ...]) -> list[int]:
    """Images per class that every arm's draw can be served from: the largest real+synth ratio, and the
    minority top-up of real+balance."""
    from medsyn.classify import parse_arm

    ratio = max([parse_arm(a).synth_ratio for a in arms] + [1.0])
    balance = train_counts.max() - train_counts
    return [int(max(np.ceil(ratio * n), b, 1)) for n, b in zip(train_counts, balance)]


def _gan_config(config: configs.RunConfig, model: str) -> configs.GanConfig:
    """The run's GAN settings for `model`: its own preset at the run's size and seed, unless it is the primary."""
    if model == config.gan.model:
        return config.gan
    return dataclasses.replace(configs.gan_preset(config.preset, model), size=config.gan.size, seed=config.gan.seed)


def _generator_stages(dataset, config: configs.RunConfig, model: str, out: Path, timer):
    from medsyn import gan, synth
    from medsyn.evaluate.audit import run_audit

    with timer.stage(f"gan:{model}"):
        checkpoint = gan.train(dataset, _gan_config(config, model), out / "gan" / model, resume=True)
    synthetic_dir = out / "synthetic" / model
    with timer.stage(f"synth:{model}"):
        if not (synthetic_dir / "manifest.json").exists():
            train_counts = np.bincount(dataset.subset("train").labels, minlength=dataset.n_classes)
            synth.generate(checkpoint, synthetic_counts(train_counts, config.arms), seed=config.gan.seed,
                           out_dir=synthetic_dir, overwrite=True)
    synthetic = synth.load_synthetic(synthetic_dir, dataset)
    with timer.stage(f"audit:{model}"):
        if not (out / "audit" / model / "audit.json").exists():
            run_audit(dataset, synthetic, out / "audit" / model, config.audit, generator_name=model)
    return synthetic


def _classifier_stage(dataset, synthetic, config: configs.RunConfig, out: Path) -> None:
    from medsyn.classify import train_arm

    for arm in config.arms:
        for seed in config.seeds:
            metrics = train_arm(dataset, arm, seed, config.classify, out / "arms" / arm / f"seed{seed}",
                                synthetic=synthetic)
            print(f"  {arm:>16} seed {seed}: test AUC {metrics.get('auc', float('nan')):.3f} "
                  f"acc {metrics.get('accuracy', float('nan')):.3f}")


def evaluate_run(out: Path, config: configs.RunConfig) -> dict:
    """Statistics over seeds from the predictions files, written to results.json."""
    from medsyn.classify import read_predictions
    from medsyn.evaluate.stats import summarize_arms

    results = {arm: {seed: read_predictions(out / "arms" / arm / f"seed{seed}") for seed in config.seeds}
               for arm in config.arms}
    summary = summarize_arms(results, n_bootstrap=config.n_bootstrap, seed=0)
    write_json(out / "results.json", summary)
    return summary
