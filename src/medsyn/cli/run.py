"""`medsyn run`: data -> generators -> synthesis -> audit -> classifier arms x replicates -> statistics -> report.

The run is a plan of jobs (medsyn.study) executed on every core (or on a Ray cluster). Every job writes its files
into the run folder and is skipped when they are already there, so a killed run continues with `--resume` and
never redoes a finished job.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from medsyn import config as configs
from medsyn.errors import MedsynError
from medsyn.cli.flags import (MAX_REPLICATES, RUN_FLAGS, add_data_arguments, add_pool_arguments,
                              add_selection_argument, apply_flags, names,
                              parse_fractions, parse_guidance, parse_seeds, parse_train_sizes)

RUN_LAYOUT = """RUN/
  config.json              the full RunConfig of this run
  data.json                dataset summary (counts, duplicates, patients, notes)
  gan/<model>/g<k>/        generator k: checkpoints, sample grids, log.jsonl
  synthetic/<model>/g<k>/  its synthetic pool: synthetic.npz, <CLASS>/*.png, manifest.json
  audit/<model>/g<k>/      audit.json, nn_gallery.png
  arms/<arm>/seed<s>/      model.pt, predictions.csv, val_metrics.json, test_metrics.json
  results.json             statistics over replicates, `comparisons` with each arm's matched control (test split)
  timings.json, logs/      seconds, CPU seconds and peak memory per job; each job's progress and output
  report.html, summary.md"""


def register(verbs) -> None:
    from medsyn.study import EXECUTORS

    parser = verbs.add_parser("run", help="the whole study: GANs, synthesis, audit, all arms x replicates, report",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=RUN_LAYOUT)
    add_data_arguments(parser)
    parser.add_argument("--preset", choices=configs.PRESETS, default="quick",
                        help="smoke (for tests), quick (default, a real answer on 2 CPU cores), study (a learning "
                             "curve with a positive control), full (GPU); `--dry-run` estimates its time here")
    parser.add_argument("--gan", dest="gans", type=names, default=None,
                        help="generator model(s), comma-separated: cgan, acgan, ddpm or e.g. cgan,ddpm (default: the "
                             "preset's); the first one feeds the classifier arms, every one is audited")
    parser.add_argument("--arms", type=names, default=None,
                        help="classifier arms, comma-separated (default: the preset's), e.g. "
                             "real,real+aug,real+synth@1; every arm with synthetic images needs its matched control; "
                             "real+heldout@R is the positive control of a learning curve")
    parser.add_argument("--seeds", type=parse_seeds, default=None,
                        help="replicates, as a list or a range: 0,1,2 or 10-14 (default: the preset's); replicate "
                             "seed s is the classifier seed of every arm")
    parser.add_argument("--n-generators", "--gan-seeds", dest="n_generators",
                        type=configs.count("--n-generators", MAX_REPLICATES), default=None,
                        help="generators of the first model, K (default: the preset's); replicate r uses generator "
                             "r mod K, trained with the seed of replicate k (--gan-seeds is the old name)")
    curve = parser.add_mutually_exclusive_group()
    curve.add_argument("--fractions", dest="train_sizes", type=parse_fractions, default=None,
                        help="learning curve: fractions of the real train split, e.g. 0.02,0.05,0.1,0.25,1 (nested, "
                             "stratified, patient-grouped subsets; generators and arms run per size)")
    curve.add_argument("--train-sizes", dest="train_sizes", type=parse_train_sizes,
                        help="learning curve in images instead of fractions, e.g. 100,250,1000,4708")
    parser.add_argument("--imbalance", type=configs.real("--imbalance", 0, 1, above=True), default=None,
                        help="keep the largest class and subsample every other class to this share, e.g. 0.2")
    parser.add_argument("--full-val", dest="scale_val", action="store_const", const=False, default=None,
                        help="learning curve: validate every size on the whole val split (optimistic: by default a "
                             "size's val split shrinks in proportion to its train subset)")
    parser.add_argument("--exposure", choices=("real-passes", "equal-steps"), default=None,
                        help="real-passes (default): every arm sees every real image once per epoch, synthetic "
                             "images ride along; equal-steps: real and synthetic pooled into as many batches as real")
    add_selection_argument(parser)
    parser.add_argument("--guidance", dest="guidance_scales", type=parse_guidance, metavar="G|auto|G1,G2,...",
                        default=None,
                        help="ddpm: classifier-free guidance scale of the synthetic pools (default: the preset's); "
                             "auto or a list: each generator's scale is chosen among them on real val")
    add_pool_arguments(parser, curve=True)
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
    from medsyn.study import run as study_run

    config = run_config(args)
    if args.workers is not None and args.workers < 1:
        raise MedsynError(f"--workers {args.workers}: give at least 1.")
    out = args.out or Path("runs") / f"{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.dry_run:
        print(study_run.dry_run(config, args.src, args.workers))
        return 0
    study_run.run(config, args.src, out, resume=args.resume, executor=args.executor, workers=args.workers,
        ray_address=args.ray_address)
    return 0


def run_config(args) -> configs.RunConfig:
    """The run's configuration from its flags: the preset, then every flag given on top of it (cli/flags.py's
    table)."""
    config = configs.preset(args.preset, args.size)
    if args.gans is not None:  # an empty list too: the run's checks then refuse it
        config = dataclasses.replace(config, gans=args.gans)
        if args.gans and args.gans[0] in configs.GAN_MODELS and args.gans[0] != config.gan.model:
            # the run's own GAN settings are the primary model's, so --gan-steps, --size and --device reach it
            config = dataclasses.replace(config, gan=configs.gan_preset(args.preset, args.gans[0], config.gan.size))
    config = apply_flags(config, args, RUN_FLAGS)
    if config.unlabelled is not None and args.arms is None:
        from medsyn.classify.arms import with_unlabelled_arms

        config = dataclasses.replace(config, arms=with_unlabelled_arms(config.arms))
    return config
