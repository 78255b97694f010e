"""The jobs of a study as plain values: what each one makes (files in the run folder), what it needs first, and
how many CPU threads it uses. Pure: no I/O, so `--dry-run` prints a plan and the tests check one without running.

A replicate r is one draw of every source of training randomness: classifier seed `seeds[r]` and generator
`r mod K` of the first (primary) generator model, whose own synthetic pool feeds that replicate's arms. Generator
k is trained with seed `seeds[k]`, so disjoint `--seeds` give disjoint generator seeds too.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from medsyn.config import GAN_SIZES, RunConfig, fixed_or_chosen, preset
from medsyn.generators import generator_folder

KINDS = ("data", "generator", "synthesize", "audit", "classify", "evaluate", "report")


@dataclass(frozen=True)
class Job:
    name: str                   # unique, path-like: gan/cgan/g0, arms/real/seed3, ...
    kind: str                   # one of KINDS
    params: dict                # what the job body needs beyond the run's config
    done_file: str              # relative to the run folder; written last and atomically, so it means "finished"
    deps: tuple[str, ...] = ()
    threads: int = 1            # torch threads (and CPUs asked of Ray)
    gpus: float = 0.0
    estimate_s: float = 1.0     # expected seconds on one 2-core machine's core, for ordering, ETA and --dry-run


GPU_KINDS = ("generator", "synthesize", "audit", "classify")  # the jobs whose torch work runs on the run's device
JOBS_PER_GPU = 4  # torch jobs sharing one card: a full-preset job (128 px) holds a few GiB, and one job alone leaves
                  # a card idle between its small batches


def with_gpus(plan: list[Job], config: RunConfig, gpus: int) -> list[Job]:
    """The plan with every GPU job asking for 1/JOBS_PER_GPU of a card where `gpus` cards can be used and the run's
    devices allow one (not --device cpu); else with no GPU asked for, since a Ray task that asks for a GPU no node
    has waits forever."""
    use = gpus > 0 and "cpu" not in (config.gan.device, config.classify.device, config.audit.device)
    share = 1 / JOBS_PER_GPU if use else 0.0
    return [replace(j, gpus=share if j.kind in GPU_KINDS else 0.0) for j in plan]


def generator_seeds(config: RunConfig) -> list[int]:
    """Generator k's seed is the seed of replicate k (so two runs with disjoint --seeds share no generator)."""
    return list(config.seeds[:config.n_generators])


def size_points(config: RunConfig) -> list[tuple[str, float]]:
    """(folder prefix, size) of every learning-curve point. A study of the whole train split as given keeps the
    run folder's root; a curve puts each point under sizes/<f0.05 | n250>/."""
    if tuple(config.train_sizes) == (1.0,) and config.imbalance == 1.0:
        return [("", 1.0)]
    return [(f"sizes/{size_tag(s)}/", s) for s in config.train_sizes]


def size_tag(size: float) -> str:
    return f"f{size:g}" if size <= 1 else f"n{int(size)}"


def arms_at(config: RunConfig, size: float, n_train: int) -> tuple[str, ...]:
    """The arms that run at one learning-curve point: all of them, but the positive control (real+heldout@R) only
    where real train images lie outside the point's subset, and real+pseudo@R only where the point has an
    unlabelled pool."""
    from medsyn.classify import parse_arm
    from medsyn.data.splits import is_whole_split

    def runs(arm) -> bool:
        return not (arm.heldout and is_whole_split(size, n_train)) and \
            not (arm.uses_unlabelled_pool and not has_unlabelled_pool(config, size, n_train))

    return tuple(a for a in config.arms if runs(parse_arm(a)))


def has_unlabelled_pool(config: RunConfig, size: float, n_train: int) -> bool:
    """Whether a point has an unlabelled pool: --unlabelled was given and, for `rest`, train images lie outside the
    point's subset. Only such a point's generators wait for (and learn through) the real-only classifier."""
    from medsyn.data.splits import is_whole_split
    from medsyn.data.unlabelled import REST

    return config.unlabelled is not None and not (config.unlabelled == REST and is_whole_split(size, n_train))


def generator_kinds(config: RunConfig, arms: tuple[str, ...], model: str) -> tuple[bool, ...]:
    """Which generators a point trains of `model` (False: labelled-only, True: also from the unlabelled pool): the
    primary model's that the point's arms draw from (labelled-only where no arm draws synthetic images, for the
    audit); the other models' labelled-only, audited."""
    from medsyn.classify import parse_arm

    synthetic = [parse_arm(a) for a in arms if parse_arm(a).uses_synthetic]
    if model != config.gans[0] or not synthetic:
        return (False,)
    return tuple(kind for kind in (False, True) if any(a.unlabelled == kind for a in synthetic))


def build_plan(config: RunConfig, n_train: int | Sequence[int], speeds=None) -> list[Job]:
    """Every job of `medsyn run`, in an order that respects the dependencies. `n_train`: real train images (per
    class where known: the synthetic pools' sizes depend on the classes), and `speeds` (study/calibrate.py;
    default: the reference machine's), for the time estimates only."""
    speeds = speeds or reference_speeds(config)
    jobs = [Job("data", "data", {}, "data.json", estimate_s=5)]
    for prefix, size in size_points(config):
        jobs += _size_jobs(config, prefix, size, n_train, speeds, after=_last_audit(jobs))
    classify = tuple(j.name for j in jobs if j.kind == "classify")
    audits = tuple(j.name for j in jobs if j.kind == "audit")
    jobs.append(Job("evaluate", "evaluate", {}, "results.json", classify, estimate_s=10))
    jobs.append(Job("report", "report", {}, "report.html", ("evaluate", *audits), estimate_s=15))
    return jobs


def _size_jobs(config: RunConfig, prefix: str, size: float, train_counts, speeds,
               after: tuple[str, ...]) -> list[Job]:
    from medsyn.classify import parse_arm
    from medsyn.classify.arms import proportional

    counts = np.atleast_1d(np.asarray(train_counts))
    n_train = int(counts.sum())
    size_counts = proportional(counts, round(n_train * size if size <= 1 else size))
    n_size = int(size_counts.sum())
    point = {"prefix": prefix, "size": size}
    jobs: list[Job] = []
    arms = arms_at(config, size, n_train)
    for model in config.gans:  # the primary model feeds the arms, one generator per seed; the others are audited
        seeds = generator_seeds(config) if model == config.gans[0] else generator_seeds(config)[:1]
        for unlabelled in generator_kinds(config, arms, model):
            for k, seed in enumerate(seeds):
                jobs += _generator_jobs(config, model, k, seed, point, size_counts, speeds,
                                       after=_last_audit(jobs) or after, pool=unlabelled,
                                       first_audit=not _last_audit(jobs))
    for r, seed in enumerate(config.seeds):
        for arm in arms:
            parsed = parse_arm(arm)
            folder = generator_folder(config.gans[0], parsed.unlabelled)
            needs = (f"{prefix}synthetic/{folder}/g{config.generator_of(r)}",) if parsed.uses_synthetic else ()
            if parsed.labelled_by_model:
                needs += (f"{prefix}arms/{parsed.filter_model}/seed{seed}",)
            jobs.append(Job(f"{prefix}arms/{arm}/seed{seed}", "classify",
                            {**point, "arm": arm, "seed": seed,
                             "generator": config.generator_of(r) if parsed.uses_synthetic else None},
                            f"{prefix}arms/{arm}/seed{seed}/test_metrics.json", ("data", *needs),
                            threads=config.classify.threads or 1,
                            estimate_s=_classify_seconds(config, parsed, n_size, speeds)))
    return jobs


def _last_audit(jobs: list[Job]) -> tuple[str, ...]:
    """Audits run one after another: the first trains the audit's feature encoder, the others read its cache."""
    audits = [j.name for j in jobs if j.kind == "audit"]
    return tuple(audits[-1:])


def _generator_jobs(config: RunConfig, model: str, k: int, seed: int, point: dict, size_counts: np.ndarray,
                    speeds, after: tuple[str, ...], pool: bool, first_audit: bool) -> list[Job]:
    p = point["prefix"]
    folder = generator_folder(model, pool)
    base = f"{folder}/g{k}"
    gan = config.gan_config(model, seed)
    params = {**point, "model": model, "unlabelled": pool, "generator": k, "seed": seed}
    labeller = (f"{p}arms/real/seed{seed}",) if pool else ()  # it labels the generator's unlabelled pool
    return [
        Job(f"{p}gan/{base}", "generator", params, f"{p}gan/{base}/final.pt", ("data", *labeller),
            estimate_s=_gan_seconds(gan, speeds)),
        Job(f"{p}synthetic/{base}", "synthesize", params, f"{p}synthetic/{base}/manifest.json", (f"{p}gan/{base}",),
            estimate_s=_synthesize_seconds(config, gan, size_counts, speeds)),
        Job(f"{p}audit/{base}", "audit", params, f"{p}audit/{base}/audit.json", (f"{p}synthetic/{base}", *after),
            estimate_s=_audit_seconds(config, size_counts, first_audit, speeds)),
    ]


# The reference machine's seconds (one of this project's 2-core CPUs, one thread per job), measured with
# benchmarks/gan_speed.py and benchmarks/classify_quick.py before the benchmarks wrote results files, so no file
# holds them: the plan's estimates where no calibration was made (tests, a GPU run), and the yardstick of
# `Speeds.machine_factor`. A calibrated plan measures the costly ones on this machine (study/calibrate.py).
GAN_SECONDS_PER_STEP = 0.30          # cgan, width 12, batch 32, 28 px, no minibatch std layer
MBSTD_STEP_COST = 1.11               # a cgan step with the minibatch std layer over one without (measured side by
                                     # side: benchmarks/results/gan_quality_mbstd_2026-12-01.json)
DDPM_SECONDS_PER_STEP = 0.26         # ddpm, width 8, batch 32, 28 px
DDPM_SECONDS_PER_UNET_PASS = 3.3e-3  # ddpm sampling, width 8, 28 px, per image and solver step (guided: 2 passes)
GUIDANCE_SAMPLES = 400               # images sampled per candidate scale when the guidance is chosen on val
CLASSIFY_SECONDS_PER_IMAGE = 1.1e-3  # vgg16 width 1/8, 28 px, forward + backward
AUGMENT_COST = 1.3                   # real+aug's images cost this much more (augmentation on the CPU)
# The audit, fitted to its parts' timings in benchmarks/results/audit_cost_2026-12-01.json (reference seconds =
# measured / the run's machine factor): a fixed part; its feature CNNs' part per real train image (scaled by the
# encoder's pixels); the near-copy search's part per (checked synthetic image x train image) pair (thumbnails: no
# pixel scaling); and, in a point's first audit only, the label-trained encoder's training and the val-vs-train
# near-copy baseline, which the point's other audits read from the cache. A GAN's pool costs per image about
# pixels^1.35 (the generator's forward and the PNG writes: 1.4 ms at 28 px, 13.5 at 64; fitted to
# benchmarks/results/plan_accuracy_{bundled-quick,xray64-quick}_2026-11-30.json).
AUDIT_FIXED_SECONDS = 10.0
AUDIT_CNN_SECONDS_PER_IMAGE = 0.0100
AUDIT_SECONDS_PER_PAIR = 4.0e-6
AUDIT_FIRST_SECONDS_PER_IMAGE = 7.0e-3
SYNTHESIZE_SECONDS_PER_IMAGE = 1.42e-3
SYNTHESIZE_PIXEL_EXPONENT = 1.35
# Early stopping (selection "val-loss") ends classifier runs before their cap: on average after 0.80 of it in the
# quick run (4.8 of 6 epochs, 20 runs) and 0.74 in the study run (14.8 of 20, 120 runs) of 2026-11-30. Selection
# "last" runs every epoch.
EXPECTED_EPOCH_SHARE = 0.8


def reference_speeds(config: RunConfig):
    """The reference machine's speeds at `config`'s settings (the constants above, scaled by width and pixels)."""
    from medsyn.study.calibrate import Speeds

    c = config.classify
    image = CLASSIFY_SECONDS_PER_IMAGE * (c.width / 0.125) ** 2 * (max(config.gan.size, 32) / 32) ** 2
    ddpm_pass = DDPM_SECONDS_PER_UNET_PASS * _ddpm_scale(config.gan_config("ddpm", 0)) if "ddpm" in config.gans \
        else None
    return Speeds(gan_step_s={m: _reference_gan_step(config.gan_config(m, 0)) for m in config.gans},
                  classify_image_s=image, classify_aug_image_s=image * AUGMENT_COST, ddpm_pass_s=ddpm_pass,
                  machine_factor=1.0)


def _reference_gan_step(gan) -> float:
    if gan.model == "ddpm":
        return DDPM_SECONDS_PER_STEP * (gan.batch_size / 32) * _ddpm_scale(gan)
    return GAN_SECONDS_PER_STEP * (gan.batch_size / 32) * (gan.base_width / 12) ** 2 * (gan.size / 28) ** 2 * \
        (MBSTD_STEP_COST if gan.mbstd_group else 1.0)


def _ddpm_scale(gan) -> float:
    return (gan.base_width / 8) ** 2 * (gan.size / 28) ** 2


def _gan_seconds(gan, speeds) -> float:
    return gan.steps * speeds.gan_step_s[gan.model]


def _synthesize_seconds(config: RunConfig, gan, size_counts: np.ndarray, speeds) -> float:
    """A GAN's pool is one forward pass (seconds); a ddpm's is sampling_steps UNet passes per image, twice with
    guidance, and choosing the guidance on val samples GUIDANCE_SAMPLES images per candidate scale."""
    from medsyn.classify import parse_arm
    from medsyn.classify.arms import pool_counts

    uses_pool = any(parse_arm(a).uses_synthetic for a in config.arms)
    pool = sum(pool_counts(size_counts, config.arms)) if uses_pool else 0
    if gan.model != "ddpm":
        per_image = SYNTHESIZE_SECONDS_PER_IMAGE * ((gan.size / 28) ** 2) ** SYNTHESIZE_PIXEL_EXPONENT
        return (10 + pool * per_image) * speeds.machine_factor
    fixed, scales = fixed_or_chosen(config.guidance_scales)
    guidance = gan.guidance if fixed is None else fixed
    images = pool * (2 if guidance > 0 else 1) + GUIDANCE_SAMPLES * sum(2 if s > 0 else 1 for s in scales)
    return 10 * speeds.machine_factor + images * gan.sampling_steps * speeds.ddpm_pass_s


def _audit_seconds(config: RunConfig, size_counts: np.ndarray, first: bool, speeds) -> float:
    from medsyn.classify.arms import pool_counts

    n_size = int(size_counts.sum())
    pixels = (min(config.gan.size, config.audit.encoder_max_size) / 28) ** 2
    checked = min(sum(pool_counts(size_counts, config.arms)), config.audit.n_memorization)
    per_image = AUDIT_CNN_SECONDS_PER_IMAGE + (AUDIT_FIRST_SECONDS_PER_IMAGE if first else 0.0)
    return (AUDIT_FIXED_SECONDS + per_image * n_size * pixels + AUDIT_SECONDS_PER_PAIR * checked * n_size) \
        * speeds.machine_factor


def _classify_seconds(config: RunConfig, arm, n_train: float, speeds) -> float:
    c = config.classify
    images_per_epoch = max(n_train, c.min_epoch_steps * c.batch_size) * \
        (1 + (arm.synth_ratio if arm.real else 0) + (0.4 if arm.balance else 0) + (1 if arm.pretrain else 0))
    per_image = speeds.classify_aug_image_s if arm.augment else speeds.classify_image_s
    share = EXPECTED_EPOCH_SHARE if c.selection == "val-loss" else 1.0
    return share * c.epochs * images_per_epoch * per_image + 2 * speeds.machine_factor


def describe(plan: list[Job], workers: int, speeds=None) -> str:
    """The plan as `--dry-run` prints it: job counts per kind, the jobs, and the estimated wall time."""
    counts = {kind: sum(j.kind == kind for j in plan) for kind in KINDS}
    lines = [f"{len(plan)} jobs: " + ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)]
    for job in plan:
        after = f"  after {', '.join(job.deps)}" if job.deps and len(job.deps) <= 2 else \
            f"  after {len(job.deps)} jobs" if job.deps else ""
        lines.append(f"  {job.name:<32} ~{job.estimate_s:6.0f} s  {job.threads} thread(s){after}")
    return "\n".join([*lines, estimate_line(plan, workers, speeds)])


def estimate_line(plan: list[Job], workers: int, speeds=None) -> str:
    """The plan's estimated wall time, and where its speeds come from: what `run` prints before it starts."""
    source = "the reference CPU's speeds" if speeds is None or speeds.measured == "reference" else \
        f"this machine's speeds (measured {speeds.measured}; {speeds.machine_factor:.2f}x the reference's time" + \
        (f"; measured while busy, load {speeds.load_per_core:.2f} per core: likely too long, not kept for later "
         f"plans)" if speeds.busy else ")")
    return (f"estimated wall time with {workers} worker(s): about {simulate(plan, workers) / 60:.1f} min "
            f"(from job sizes and {source}; serial work {sum(j.estimate_s for j in plan) / 60:.1f} min)")


def budget_advice(config: RunConfig, plan: list[Job], n_train: int | Sequence[int], speeds, workers: int) -> str:
    """Empty where `plan` (config's) fits the preset's budget; else what would fit: fewer replicates, a smaller
    --size (its speeds scaled by pixels from this machine's), or a GPU."""
    def minutes(changed: RunConfig, changed_speeds=speeds) -> float:
        return simulate(build_plan(changed, n_train, changed_speeds), workers) / 60

    budget, estimate = config.budget_minutes, simulate(plan, workers) / 60
    if budget is None or estimate <= budget:
        return ""
    options = []
    for k in range(len(config.seeds) - 1, 1, -1):
        fewer = replace(config, seeds=config.seeds[:k], n_generators=min(config.n_generators, k))
        if minutes(fewer) <= budget:
            options.append(f"--seeds {','.join(map(str, fewer.seeds))} ({k} replicates, about {minutes(fewer):.0f} "
                           "min)")
            break
    for size in sorted((s for s in GAN_SIZES if s < config.gan.size), reverse=True):
        smaller = _at_size(config, size)
        at_size = minutes(smaller, _scaled(speeds, config, smaller))
        if at_size <= budget:
            options.append(f"--size {size} (about {at_size:.0f} min)")
            break
    options.append("a CUDA GPU (every job uses one when torch sees it)")
    return (f"this exceeds the {config.preset} preset's budget of {budget:g} min on this machine; what would fit: "
            + "; or ".join(options) + ".")


def _at_size(config: RunConfig, size: int) -> RunConfig:
    """`config` at another image size: the generator's steps and layer and the classifier's width become the
    preset's at that size where the run kept the preset's (the quick preset is cheaper at 64 px and above)."""
    here, there = preset(config.preset, config.gan.size), preset(config.preset, size)
    kept = {k: getattr(there.gan, k) for k in ("steps", "mbstd_group") if getattr(config.gan, k) == getattr(here.gan, k)}
    width = there.classify.width if config.classify.width == here.classify.width else config.classify.width
    return replace(config, gan=replace(config.gan, size=size, **kept), classify=replace(config.classify, width=width),
                   data=replace(config.data, size=size))


def _scaled(speeds, config: RunConfig, other: RunConfig):
    """This machine's speeds at `other`'s settings: its measured ones times the reference machine's ratio between
    the two settings (convolution cost goes with the pixels and the widths)."""
    here, there = reference_speeds(config), reference_speeds(other)
    return speeds.scaled(gan={m: there.gan_step_s[m] / here.gan_step_s[m] for m in speeds.gan_step_s},
                         classify=there.classify_image_s / here.classify_image_s)


def simulate(plan: list[Job], workers: int) -> float:
    """Wall seconds of the plan under the executors' rule: whenever a slot is free, the ready job (every dependency
    finished) that `priority` puts first starts on it."""
    finished: set[str] = set()
    running: list[tuple[float, str]] = []  # (end, name), a heap
    pending, now = list(plan), 0.0
    while pending or running:
        for job in ready_jobs(pending, finished)[:max(1, workers) - len(running)]:
            pending.remove(job)
            heapq.heappush(running, (now + job.estimate_s, job.name))
        if not running:
            raise ValueError(f"jobs wait for jobs outside the plan: {[j.name for j in pending]}")
        now, name = heapq.heappop(running)
        finished.add(name)
    return now


def ready_jobs(pending: list[Job], done: set[str]) -> list[Job]:
    """The pending jobs whose dependencies are all done, the one to start first first."""
    return sorted((j for j in pending if all(d in done for d in j.deps)), key=priority, reverse=True)


def priority(job: Job) -> tuple:
    """Which ready job goes first: generators (the long chain every synthetic arm waits for), then the longest."""
    return (job.kind == "generator", job.kind in ("synthesize", "audit"), job.estimate_s)
