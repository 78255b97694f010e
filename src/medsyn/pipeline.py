"""`medsyn run`: data -> generators -> synthesis -> audit -> classifier arms x replicates -> statistics -> report.

The run is a plan of jobs (medsyn.study) executed on every core (or on a Ray cluster). Every job writes its files
into the run folder and is skipped when they are already there, so a killed run continues with `--resume` and
never redoes a finished job.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from medsyn import config as configs
from medsyn.errors import MedsynError
from medsyn.fileio import check_out_dir, claim_out_dir, holds_files, read_json, write_json

RUN_LAYOUT = """RUN/
  config.json              the full RunConfig of this run
  data.json                dataset summary (counts, duplicates, patients, notes)
  gan/<model>/g<k>/        generator k: checkpoints, sample grids, log.jsonl
  synthetic/<model>/g<k>/  its synthetic pool: synthetic.npz, <CLASS>/*.png, manifest.json
  audit/<model>/g<k>/      audit.json, nn_gallery.png
  arms/<arm>/seed<s>/      model.pt, predictions.csv, val_metrics.json, test_metrics.json
  results.json             statistics over replicates, `comparisons` with each arm's matched control (test split)
  timings.json, logs/      seconds, CPU seconds and peak memory per job; each job's printed output
  report.html, summary.md"""


def register(verbs) -> None:
    from medsyn.data.cli import add_data_arguments
    from medsyn.study import EXECUTORS

    parser = verbs.add_parser("run", help="the whole study: GANs, synthesis, audit, all arms x replicates, report",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=RUN_LAYOUT)
    add_data_arguments(parser)
    parser.add_argument("--preset", choices=configs.PRESETS, default="quick",
                        help="smoke (about a minute, for tests), quick (default, a real answer on 2 CPU cores), "
                             "study (a learning curve with a positive control), full (GPU)")
    parser.add_argument("--gan", default=None,
                        help="generator model(s), comma-separated: cgan, acgan or cgan,acgan (default: the preset's); "
                             "the first one feeds the classifier arms, every one is audited")
    parser.add_argument("--arms", default=None,
                        help="classifier arms, comma-separated (default: the preset's), e.g. "
                             "real,real+aug,real+synth@1; every arm with synthetic images needs its matched control; "
                             "real+heldout@R is the positive control of a learning curve")
    parser.add_argument("--seeds", default=None,
                        help="replicates, as a list or a range: 0,1,2 or 10-14 (default: the preset's); replicate "
                             "seed s is the classifier seed of every arm")
    parser.add_argument("--gan-seeds", type=configs.count("--gan-seeds", MAX_REPLICATES), default=None,
                        help="generators of the first model, K (default: the preset's); replicate r uses generator "
                             "r mod K, trained with the seed of replicate k")
    parser.add_argument("--fractions", default=None,
                        help="learning curve: fractions of the real train split, e.g. 0.02,0.05,0.1,0.25,1 (nested, "
                             "stratified, patient-grouped subsets; generators and arms run per size)")
    parser.add_argument("--train-sizes", default=None,
                        help="learning curve in images instead of fractions, e.g. 100,250,1000,4708")
    parser.add_argument("--imbalance", type=configs.real("--imbalance", 0, 1, above=True), default=None,
                        help="keep the largest class and subsample every other class to this share, e.g. 0.2")
    parser.add_argument("--full-val", action="store_true",
                        help="learning curve: validate every size on the whole val split (optimistic: by default a "
                             "size's val split shrinks in proportion to its train subset)")
    parser.add_argument("--exposure", choices=("real-passes", "equal-steps"), default=None,
                        help="real-passes (default): every arm sees every real image once per epoch, synthetic "
                             "images ride along; equal-steps: real and synthetic pooled into as many batches as real")
    parser.add_argument("--guidance", metavar="G|auto|G1,G2,...", default=None,
                        help="ddpm: classifier-free guidance scale of the synthetic pools (default: the preset's); "
                             "auto or a list: each generator's scale is chosen among them on real val")
    parser.add_argument("--min-effect", type=configs.real("--min-effect", 0, 1), default=None,
                        help="smallest difference of interest (default 0.01): a wider 95%% CI is 'inconclusive'")
    parser.add_argument("--gan-steps", type=configs.count("--gan-steps", 10_000_000), default=None,
                        help="training steps of every generator (default: the preset's); e.g. a short check of a "
                             "large preset")
    parser.add_argument("--epochs", type=configs.count("--epochs", 10_000), default=None, help="classifier epochs at most (default: the preset's)")
    parser.add_argument("--device", default=None,
                        help="auto (default: a CUDA GPU when torch sees one, shared by the jobs) | cpu | cuda | cuda:N")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<preset>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue a run folder, skipping finished jobs")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its estimated time; write nothing")
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local worker processes (default), sequential (in this process) or ray")
    parser.add_argument("--workers", type=configs.count("--workers", 1024), default=None,
                        help="local worker processes (default: the CPU cores this process may use)")
    parser.add_argument("--ray-address", default=None,
                        help="a running Ray cluster (default: start a local instance); the run folder must be on "
                             "a filesystem every node sees")
    parser.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    config = run_config(args)
    if args.workers is not None and args.workers < 1:
        raise MedsynError(f"--workers {args.workers}: give at least 1.")
    out = args.out or Path("runs") / f"{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.dry_run:
        print(dry_run(config, args.src, args.workers))
        return 0
    run(config, args.src, out, resume=args.resume, executor=args.executor, workers=args.workers,
        ray_address=args.ray_address)
    return 0


def run_config(args) -> configs.RunConfig:
    """The run's configuration from its flags: the preset, then every flag given on top of it."""
    from medsyn.data.cli import data_config

    config = configs.preset(args.preset)
    data_overrides = {k: v for k, v in dataclasses.asdict(data_config(args)).items()
                      if v != getattr(configs.DataConfig(), k)}
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, **data_overrides))
    if args.size is not None:
        config = dataclasses.replace(config, gan=dataclasses.replace(config.gan, size=args.size))
    if args.gan:
        config = dataclasses.replace(config, gans=tuple(g.strip() for g in args.gan.split(",") if g.strip()))
        if config.gans and config.gans[0] in configs.GAN_MODELS and config.gans[0] != config.gan.model:
            # the run's own GAN settings are the primary model's, so --gan-steps and --device reach it
            primary = configs.gan_preset(args.preset, config.gans[0])
            config = dataclasses.replace(config, gan=dataclasses.replace(primary, size=config.gan.size))
    if args.arms:
        config = dataclasses.replace(config, arms=tuple(a.strip() for a in args.arms.split(",") if a.strip()))
    if args.seeds is not None:
        config = dataclasses.replace(config, seeds=parse_seeds(args.seeds))
    if args.exposure:
        config = dataclasses.replace(config, classify=dataclasses.replace(config.classify, exposure=args.exposure))
    if args.guidance is not None:
        from medsyn.evaluate.guidance import parse_guidance

        config = dataclasses.replace(config, guidance=parse_guidance(args.guidance))
    if args.fractions or args.train_sizes:
        config = dataclasses.replace(config, sizes=parse_sizes(args.fractions, args.train_sizes))
    if args.full_val:
        config = dataclasses.replace(config, scale_val=False)
    for flag, field in (("gan_seeds", "gan_seeds"), ("min_effect", "min_effect"), ("imbalance", "imbalance")):
        if getattr(args, flag) is not None:
            config = dataclasses.replace(config, **{field: getattr(args, flag)})
    if args.gan_steps is not None:
        config = dataclasses.replace(config, gan=dataclasses.replace(config.gan, steps=args.gan_steps))
    if args.epochs is not None:
        config = dataclasses.replace(config, classify=dataclasses.replace(config.classify, epochs=args.epochs))
    if args.device is not None:
        config = dataclasses.replace(config, gan=dataclasses.replace(config.gan, device=args.device),
                                     classify=dataclasses.replace(config.classify, device=args.device),
                                     audit=dataclasses.replace(config.audit, device=args.device))
    return config


MAX_REPLICATES = 1000  # seeds of one run: the plan is sized by them, so more are refused before anything is made


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0,1,2' or '10-14' (or a mix: '0-2,7') -> a tuple of distinct seeds in the given order; at most
    MAX_REPLICATES of them, each within 0..2^32-1, counted before any list is made."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            low, _, high = part.partition("-") if not part.startswith("-") else (part, "", "")
            low, high = int(low), int(high) if high else int(low)
            for value in (low, high):
                configs.check_number("--seeds", value, 0, configs.SEED_MAX, whole=True)
            if len(seeds) + (high - low + 1) > MAX_REPLICATES:
                raise MedsynError(f"--seeds {text!r}: {len(seeds) + high - low + 1:,} seeds, over the maximum of "
                                  f"{MAX_REPLICATES} replicates per run; give fewer seeds.")
            seeds += range(low, high + 1)
    except ValueError:
        raise MedsynError(f"--seeds {text!r}: give non-negative integers as a list or a range, e.g. 0,1,2 or "
                          "10-14.") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise MedsynError(f"--seeds {text!r}: give distinct non-negative seeds, e.g. 0,1,2 or 10-14.")
    return tuple(seeds)


def parse_sizes(fractions: str | None, train_sizes: str | None) -> tuple[float, ...]:
    """--fractions 0.02,0.1,1 or --train-sizes 100,250,1000 -> sizes in increasing order."""
    if fractions and train_sizes:
        raise MedsynError("give --fractions or --train-sizes, not both.")
    text, flag = (fractions, "--fractions") if fractions else (train_sizes, "--train-sizes")
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise MedsynError(f"{flag} {text!r}: give comma-separated numbers, e.g. 0.02,0.05,0.1,0.25,1.") from None
    for value in values:
        configs.check_number(flag, value, 0, 1, above=True) if fractions else \
            configs.check_number(flag, value, 2, configs.COUNT_MAX, whole=True)
    bad = [v for v in values if (v <= 0 or v > 1) if fractions] + \
          [v for v in values if (v < 2 or v != int(v)) if train_sizes]
    if not values or bad:
        raise MedsynError(f"{flag} {text!r}: fractions lie in (0, 1]; train sizes are whole numbers of images >= 2.")
    return tuple(values)


def run(config: configs.RunConfig, src, out: Path, resume: bool = False, executor: str = "local",
        workers: int | None = None, ray_address: str | None = None, progress: bool = True) -> Path:
    from medsyn import study

    out = Path(out)
    validate(config)
    study.check_executor(executor, ray_address)
    check_out_dir(out, "run", resume=resume)
    n_train = _train_size(src, config)  # bad or missing data fails before the run folder exists (decoded once)
    check_heldout_dose(config, n_train)
    speeds = machine_speeds(config)
    _prepare_folder(out, config, src, resume)
    plan = study.build_plan(config, n_train, speeds)
    if progress:
        workers_used = workers or study.default_workers()
        print(study.describe(plan, workers_used, speeds).splitlines()[-1])
        advice = study.budget_advice(config, n_train, speeds, workers_used)
        if advice:
            print(advice)
    start = time.perf_counter()
    study.execute(plan, study.Study(config, None if src is None else str(src), out), executor, workers, ray_address,
                  progress)
    print(f"study finished in {(time.perf_counter() - start) / 60:.1f} min")
    print(f"report: {out / 'report.html'}")
    return out / "report.html"


def dry_run(config: configs.RunConfig, src, workers: int | None) -> str:
    """The plan `run` would execute, with job counts and an estimated time; nothing is written but the cached
    measurement of this machine's speed."""
    from medsyn import data, study

    validate(config)
    workers = workers or study.default_workers()
    n_train = _train_size(src, config)
    check_heldout_dose(config, n_train)
    warnings = "".join(f"WARNING: {w}\n" for w in data.warnings(data.load(src, config.data)))
    speeds = machine_speeds(config)
    advice = study.budget_advice(config, n_train, speeds, workers)
    plan = study.describe(study.build_plan(config, n_train, speeds), workers, speeds)
    return warnings + plan + (f"\n{advice}" if advice else "")


def machine_speeds(config: configs.RunConfig):
    """This machine's measured speeds at the run's settings (study/calibrate.py, cached), or the reference CPU's
    where the run will use a GPU: the calibration times the CPU."""
    import torch

    from medsyn.study import calibrate, plan

    reference = plan.reference_speeds(config)
    if "cpu" not in (config.gan.device, config.classify.device) and torch.cuda.is_available():
        return reference
    return calibrate.cached_speeds(config, reference)


def _train_size(src, config: configs.RunConfig) -> int:
    from medsyn import data

    return int(sum(data.load(src, config.data).counts()["train"]))


def validate(config: configs.RunConfig) -> None:
    """Everything that can be checked before a run folder is made, so a typo leaves nothing behind."""
    from medsyn import classify, gan

    unknown = [g for g in config.gans if g not in configs.GAN_MODELS]
    if not config.gans or unknown:
        raise MedsynError(f"--gan {','.join(config.gans)}: choose one or more of {', '.join(configs.GAN_MODELS)}, "
                          "comma-separated.")
    for model in config.gans:
        gan.check_config(config.gan_config(model, config.seeds[0] if config.seeds else 0))
    if config.guidance and "ddpm" not in config.gans:
        raise MedsynError(f"--guidance applies to the ddpm generator, and this run trains {', '.join(config.gans)}; "
                          "add it with --gan ddpm (or cgan,ddpm).")
    if config.data.size not in (None, config.gan.size):
        raise MedsynError(f"the data size {config.data.size} differs from the GAN size {config.gan.size}; "
                          "set both with --size.")
    for arm in config.arms:
        classify.parse_arm(arm)
    classify.check_config(config.classify)
    configs.check_device(config.audit.device)
    if not config.seeds:
        raise MedsynError("a run needs at least one seed.")
    if not 1 <= config.gan_seeds <= len(config.seeds):
        raise MedsynError(f"--gan-seeds {config.gan_seeds}: give between 1 and the number of replicates "
                          f"({len(config.seeds)}); generator k is trained with the seed of replicate k.")
    if not 0 < config.min_effect < 1:
        raise MedsynError(f"--min-effect {config.min_effect}: give a difference between 0 and 1, e.g. 0.01.")
    if not 0 < config.imbalance <= 1:
        raise MedsynError(f"--imbalance {config.imbalance}: give the share kept of every class but the largest, in "
                          "(0, 1], e.g. 0.2.")
    heldout = [a for a in config.arms if classify.parse_arm(a).heldout]
    if heldout and all(s == 1.0 for s in config.sizes):
        raise MedsynError(f"arm {heldout[0]} draws real train images from outside a learning-curve subset, and this "
                          "run trains on the whole train split; add sizes (--fractions 0.02,0.1,1) or drop the arm.")
    controls = {classify.parse_arm(a).control for a in config.arms} - {None}
    controls |= {classify.parse_arm(a).filter_model for a in config.arms if classify.parse_arm(a).filtered}
    missing = sorted(controls - set(config.arms))
    if missing:
        raise MedsynError(f"the arms compare with their matched controls {', '.join(missing)}, which are not in the "
                          "run; add them to the arms.")


def check_heldout_dose(config: configs.RunConfig, n_train: int) -> None:
    """The positive control real+heldout@R draws R real images per image of a size's subset from the train images
    outside it: a size that leaves too few outside is refused before anything runs."""
    from medsyn import classify

    for arm in (classify.parse_arm(a) for a in config.arms if classify.parse_arm(a).heldout):
        for size in config.sizes:
            inside = size * n_train if size <= 1 else size
            if inside < n_train and arm.synth_ratio * inside > HELDOUT_MARGIN * (n_train - inside):
                raise MedsynError(
                    f"arm {arm.name} at size {size:g}: {arm.synth_ratio:g} held-out images per train image need "
                    f"{arm.synth_ratio * inside:.0f} real train images outside the subset, and only "
                    f"{n_train - inside:.0f} are; use smaller sizes (at most {1 / (1 + arm.synth_ratio):.2f} of "
                    f"train, less a margin) or a lower dose.")


HELDOUT_MARGIN = 0.9  # of the images outside a subset: room for a larger class share and duplicates left out


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
