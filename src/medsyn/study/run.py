"""A whole study from its configuration: checks before anything is written, the folder, the plan and its executor.

`medsyn run` (cli/run.py) turns flags into a RunConfig and calls `run` or `dry_run`; nothing here reads flags.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from medsyn import config as configs
from medsyn.errors import MedsynError
from medsyn.fileio import changed_settings, check_out_dir, claim_out_dir, holds_files, read_json, write_json
from medsyn.study import calibrate
from medsyn.study.execute import check_executor, default_workers, execute
from medsyn.study.jobs import Study
from medsyn.study.plan import budget_advice, build_plan, describe, estimate_line, reference_speeds


def run(config: configs.RunConfig, src, out: Path, resume: bool = False, executor: str = "local",
        workers: int | None = None, ray_address: str | None = None, progress: bool = True) -> Path:
    out = Path(out)
    validate(config)
    check_executor(executor, ray_address)
    check_out_dir(out, "run", resume=resume)
    train_counts = _train_counts(src, config)  # bad or missing data fails before the run folder exists
    check_heldout_dose(config, sum(train_counts))
    check_sources(config, src)
    speeds = machine_speeds(config)
    _prepare_folder(out, config, src, resume)
    plan = build_plan(config, train_counts, speeds)
    if progress:
        workers_used = workers or default_workers()
        print(estimate_line(plan, workers_used, speeds))
        advice = budget_advice(config, plan, train_counts, speeds, workers_used)
        if advice:
            print(advice)
    start = time.perf_counter()
    execute(plan, Study(config, None if src is None else str(src), out), executor, workers, ray_address,
                  progress)
    print(f"study finished in {(time.perf_counter() - start) / 60:.1f} min")
    print(f"report: {out / 'report.html'}")
    return out / "report.html"


def dry_run(config: configs.RunConfig, src, workers: int | None) -> str:
    """The plan `run` would execute, with job counts and an estimated time; nothing is written but the cached
    measurement of this machine's speed."""
    from medsyn import data

    validate(config)
    workers = workers or default_workers()
    train_counts = _train_counts(src, config)
    check_heldout_dose(config, sum(train_counts))
    check_sources(config, src)
    warnings = "".join(f"WARNING: {w}\n" for w in data.warnings(data.load(src, config.data)))
    speeds = machine_speeds(config)
    plan = build_plan(config, train_counts, speeds)
    advice = budget_advice(config, plan, train_counts, speeds, workers)
    return warnings + describe(plan, workers, speeds) + (f"\n{advice}" if advice else "")


def machine_speeds(config: configs.RunConfig):
    """This machine's measured speeds at the run's settings (study/calibrate.py, cached), or the reference CPU's
    where the run will use a GPU: the calibration times the CPU."""
    import torch

    reference = reference_speeds(config)
    if "cpu" not in (config.gan.device, config.classify.device) and torch.cuda.is_available():
        return reference
    return calibrate.cached_speeds(config, reference)


def _train_counts(src, config: configs.RunConfig) -> list[int]:
    """Real train images per class (the plan sizes the synthetic pools by class)."""
    from medsyn import data

    return [int(n) for n in data.load(src, config.data).counts()["train"]]


def validate(config: configs.RunConfig) -> None:
    """Everything that can be checked before a run folder is made, so a typo leaves nothing behind."""
    from medsyn import classify, generators

    unknown = [g for g in config.gans if g not in configs.GAN_MODELS]
    if not config.gans or unknown:
        raise MedsynError(f"--gan {','.join(config.gans)}: choose one or more of {', '.join(configs.GAN_MODELS)}, "
                          "comma-separated.")
    for model in config.gans:
        generators.check_config(config.gan_config(model, config.seeds[0] if config.seeds else 0))
    if config.guidance_scales and "ddpm" not in config.gans:
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
    if not 1 <= config.n_generators <= len(config.seeds):
        raise MedsynError(f"--gan-seeds {config.n_generators}: give between 1 and the number of replicates "
                          f"({len(config.seeds)}); generator k is trained with the seed of replicate k.")
    if not 0 < config.min_effect < 1:
        raise MedsynError(f"--min-effect {config.min_effect}: give a difference between 0 and 1, e.g. 0.01.")
    if not 0 < config.imbalance <= 1:
        raise MedsynError(f"--imbalance {config.imbalance}: give the share kept of every class but the largest, in "
                          "(0, 1], e.g. 0.2.")
    heldout = [a for a in config.arms if classify.parse_arm(a).heldout]
    if heldout and all(s == 1.0 for s in config.train_sizes):
        raise MedsynError(f"arm {heldout[0]} draws real train images from outside a learning-curve subset, and this "
                          "run trains on the whole train split; add sizes (--fractions 0.02,0.1,1) or drop the arm.")
    _validate_unlabelled(config)
    controls = {classify.parse_arm(a).control for a in config.arms} - {None}
    controls |= {classify.parse_arm(a).filter_model for a in config.arms if classify.parse_arm(a).labelled_by_model}
    missing = sorted(controls - set(config.arms))
    if missing:
        raise MedsynError(f"the arms compare with their matched controls {', '.join(missing)}, which are not in the "
                          "run; add them to the arms.")


def _validate_unlabelled(config: configs.RunConfig) -> None:
    from medsyn import classify
    from medsyn.data.unlabelled import REST

    users = [a for a in config.arms if classify.parse_arm(a).uses_unlabelled_pool]
    if users and config.unlabelled is None:
        raise MedsynError(f"arm {users[0]} learns from an unlabelled pool labelled by the real-only classifier; pass "
                          f"--unlabelled SRC (a folder or an .npz) or --unlabelled {REST} (a learning curve's train "
                          "images outside each subset), or drop the arm.")
    if config.unlabelled is not None and not users:
        raise MedsynError("--unlabelled: no arm uses the pool; add real+pseudo@1 (the pool with pseudo-labels) and/or "
                          "real+unlabelled-synth@1 (synthetic images from generators that also saw the pool).")
    if config.unlabelled == REST and all(s == 1.0 for s in config.train_sizes):
        raise MedsynError(f"--unlabelled {REST} gives each learning-curve size the train images outside its subset, "
                          "and this run trains on the whole train split; add sizes (--fractions 0.02,0.1,1) or give "
                          "a pool (--unlabelled FOLDER or .npz).")
    if config.unlabelled is not None and "real" not in config.arms:
        raise MedsynError("--unlabelled: the pool is labelled by each replicate's real-only classifier (arm real); "
                          "add the arm real.")


def check_sources(config: configs.RunConfig, src) -> None:
    """Before the run folder exists: an --unlabelled pool (other than `rest`) is refused where it holds a val or
    test image of the data, by content; a --generator-init checkpoint where it cannot start the primary
    generator (another model, size or channel count)."""
    from medsyn import data, generators
    from medsyn.data.unlabelled import REST, check_no_held_out, load_unlabelled

    real = data.load(src, config.data)
    if config.unlabelled not in (None, REST):
        check_no_held_out(load_unlabelled(config.unlabelled, real.size, real.channels, real.aspect), real)
    if config.gan.init:
        generators.read_init(config.gan.init, config.gan, real.channels, real.class_names)


def check_heldout_dose(config: configs.RunConfig, n_train: int) -> None:
    """The positive control real+heldout@R draws R real images per image of a size's subset from the train images
    outside it: a size that leaves too few outside is refused before anything runs."""
    from medsyn import classify
    from medsyn.data.splits import is_whole_split

    for arm in (classify.parse_arm(a) for a in config.arms if classify.parse_arm(a).heldout):
        for size in config.train_sizes:
            inside = size * n_train if size <= 1 else size
            if not is_whole_split(size, n_train) and arm.synth_ratio * inside > HELDOUT_MARGIN * (n_train - inside):
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
        changed = changed_settings(read_json(saved), record, configs.EXECUTION_ONLY) if saved.exists() else []
        if changed:
            raise MedsynError(f"{out} was started with a different configuration ({', '.join(changed[:5])} differ "
                              f"from {saved}); resume it with the same preset and flags, or choose another --out.")
    claim_out_dir(out, "run")
    write_json(saved, record)
