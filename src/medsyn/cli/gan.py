"""`medsyn gan train` and `medsyn gan generate` (also spelt `medsyn generator ...`: ddpm is no GAN)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from medsyn.config import GAN_MODELS, PRESETS, count, real, seed


def register(verbs) -> None:
    parser = verbs.add_parser("gan", aliases=["generator"],
                              help="train a class-conditional generator (cgan, acgan, ddpm), or generate labelled "
                                   "images from one (`medsyn generator` is the same verb)")
    sub = parser.add_subparsers(dest="gan_verb", metavar="ACTION")
    sub.required = True

    from medsyn.cli.flags import add_data_arguments, add_pool_arguments

    train = sub.add_parser("train", help="train cgan, acgan or ddpm on the train split; sample grids, log, checkpoints")
    add_data_arguments(train)
    add_pool_arguments(train, curve=False)
    train.add_argument("--model", choices=GAN_MODELS, default="cgan",
                       help="cgan: data-efficient (default); acgan: the original design; ddpm: diffusion "
                            "(pip install 'medsyn[diffusion]'; a GPU feature at scale)")
    train.add_argument("--preset", choices=PRESETS, default="quick", help="default settings (default: quick)")
    train.add_argument("--steps", type=count("--steps", 10_000_000), help="generator steps (default: the preset's)")
    train.add_argument("--batch-size", type=count("--batch-size", 65_536), help="images per step, over all processes (default: preset)")
    train.add_argument("--width", dest="base_width", type=count("--width", 1024), help="channel multiplier of both networks")
    train.add_argument("--snapshot-every", type=count("--snapshot-every", 10_000_000), help="steps between sample grids and checkpoints")
    train.add_argument("--r1", dest="r1_gamma", type=real("--r1", 0, 1e6), help="R1 penalty weight (0 = off)")
    train.add_argument("--ada-target", type=real("--ada-target", 0, 1), help="adapt augmentation strength to this E[sign D(real)]")
    train.add_argument("--guidance", type=real("--guidance", 0, 100), help="ddpm: classifier-free guidance scale for samples")
    train.add_argument("--sampling-steps", type=count("--sampling-steps", 1000), help="ddpm: solver steps per sample")
    train.add_argument("--device", default=None, help="auto (default: cuda when available) | cpu | cuda | cuda:N")
    train.add_argument("--seed", type=seed(), help="seed of weights, noise and data order (default 0)")
    train.add_argument("--out", type=Path, required=True, help="run folder")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=run_train)

    generate = sub.add_parser("generate", help="labelled synthetic images from a checkpoint")
    generate.add_argument("--checkpoint", type=Path, required=True, help="RUN/final.pt or RUN/checkpoint.pt")
    generate.add_argument("--n", type=count("--n", 10_000_000), help="number of images, split evenly over the classes")
    generate.add_argument("--per-class", help="counts per class: 100,50 or NORMAL=100,PNEUMONIA=50")
    generate.add_argument("--balance-to", metavar="SRC",
                          help="top up each class of SRC's train split to its largest class (plus --n more)")
    generate.add_argument("--seed", type=seed(), default=0,
                          help="noise and label seed: the same seed gives the same images")
    generate.add_argument("--guidance", metavar="G|auto|G1,G2,...",
                          help="ddpm: classifier-free guidance scale (default: the trained one); auto or a list: "
                               "choose among them on the real val split of --data (guidance.json says how)")
    generate.add_argument("--sampling-steps", type=count("--sampling-steps", 1000), help="ddpm: solver steps per image (default: trained)")
    generate.add_argument("--out", type=Path, required=True, help="output folder")
    generate.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    add_data_arguments(generate)  # only read to choose the guidance on real val
    generate.set_defaults(func=run_generate)


def run_train(args: argparse.Namespace) -> int:
    from medsyn import data, generators
    from medsyn.config import gan_preset
    from medsyn.cli.flags import GAN_FLAGS, apply_flags, data_config
    from medsyn.errors import MedsynError
    from medsyn.fileio import check_out_dir, claim_out_dir

    config = gan_preset(args.preset, args.model, args.size)
    if args.model != "ddpm" and (args.guidance is not None or args.sampling_steps is not None):
        raise MedsynError(f"--guidance and --sampling-steps apply to --model ddpm, not {args.model}.")
    config = apply_flags(config, args, GAN_FLAGS)
    generators.check_config(config)  # before any data is decoded
    check_out_dir(args.out, "gan train", resume=args.resume)
    dataset = data.load(args.src, dataclasses.replace(data_config(args), size=config.size))
    if config.init:
        generators.read_init(config.init, config, dataset.channels, dataset.class_names)
    pseudo = _pseudo_labelled(args, dataset, config.seed) if args.unlabelled else None
    claim_out_dir(args.out, "gan train")
    final = generators.train(dataset, config, args.out, resume=args.resume, progress=not args.no_progress,
                             pseudo=pseudo)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    rows = generators.read_log(args.out)
    speed = f", {rows[-1]['images_per_s']} images/s" if rows else ""
    print(f"wrote {final} ({config.model}, {config.size} px, {config.steps} steps{speed}); "
          f"sample grids in {args.out / 'samples'}")
    return 0


def _pseudo_labelled(args: argparse.Namespace, dataset, seed: int):
    """--unlabelled SRC for one generator: the pool (refused if it holds a val or test image), labelled by a
    real-only classifier trained here on the train split and selected on val (the preset's classifier, seed
    --seed), with the per-class thresholds real+pseudo@R uses (classify/pseudo.py)."""
    from medsyn import classify
    from medsyn.config import preset
    from medsyn.data.unlabelled import REST, check_no_held_out, load_unlabelled
    from medsyn.errors import MedsynError

    if args.unlabelled == REST:
        raise MedsynError(f"--unlabelled {REST} is a learning curve's train images outside each subset (medsyn run "
                          "--fractions ...); for one generator give a folder or an .npz of unlabelled images.")
    pool = load_unlabelled(args.unlabelled, dataset.size, dataset.channels, dataset.aspect)
    check_no_held_out(pool, dataset)
    config = preset(args.preset).classify
    model, meta = classify.real_only_model(dataset, config, seed)
    return classify.pseudo_label(pool, model, meta, dataset.subset("val"),
                                 f"a real-only {config.arch} trained by gan train (the {args.preset} preset's "
                                 f"classifier, seed {seed})")


def run_generate(args: argparse.Namespace) -> int:
    from medsyn import generators, synth
    from medsyn.audit import guidance
    from medsyn.config import fixed_or_chosen
    from medsyn.fileio import check_out_dir

    # a folder of someone else's files is never replaced, --overwrite or not; nor is a user's file put in ours
    check_out_dir(args.out, "gan generate", replaces=args.overwrite)
    sampler, scales = _sampler_overrides(args)
    _, info = generators.load_generator(args.checkpoint, sampler=sampler)
    names = info["class_names"]
    per_class = synth.parse_per_class(args.per_class, names) if args.per_class else None
    balance = synth.balance_counts(args.balance_to, names) if args.balance_to else None
    counts = synth.plan_counts(len(names), n=args.n, per_class=per_class, balance_counts=balance)
    real = _training_data(args, info) if fixed_or_chosen(scales)[1] else None  # val data to choose on
    sampler, choice = guidance.sampler_for(args.checkpoint, scales, real, args.seed, sampler)
    out = synth.generate(args.checkpoint, counts, args.seed, args.out, overwrite=args.overwrite, sampler=sampler,
                         guidance_choice=choice)
    if choice:
        print(f"guidance {choice['chosen']:g} chosen on real val among {', '.join(f'{s:g}' for s in scales)} "
              f"({out / 'guidance.json'})" if choice["chosen"] is not None else
              f"guidance not chosen: {choice['not_chosen']} ({out / 'guidance.json'})")
    print(f"wrote {sum(counts)} images to {out} ({', '.join(f'{n} {c}' for n, c in zip(counts, names))}); "
          f"data source: {out / 'synthetic.npz'}")
    return 0


def _sampler_overrides(args: argparse.Namespace) -> tuple[dict, tuple[float, ...]]:
    """(sampler settings for the checkpoint, --guidance's scales: one is that scale, several are chosen among)."""
    from medsyn.errors import MedsynError
    from medsyn.cli.flags import parse_guidance

    if args.sampling_steps is not None and args.sampling_steps < 1:
        raise MedsynError(f"--sampling-steps must be at least 1, not {args.sampling_steps}.")
    scales = parse_guidance(args.guidance) if args.guidance is not None else ()
    sampler = {"sampling_steps": args.sampling_steps} if args.sampling_steps is not None else {}
    return sampler, scales


def _training_data(args: argparse.Namespace, info: dict):
    """The real data whose val split chooses the guidance, at the checkpoint's size and channels."""
    from medsyn import data
    from medsyn.cli.flags import data_config

    config = data_config(args)
    return data.load(args.src, dataclasses.replace(config, size=config.size or info["size"],
                                                   channels=config.channels or info["channels"]))
