"""This machine's speed at a run's own settings, for the plan's time estimates.

A few timed steps of each costly inner loop, on one torch thread in this process as the jobs run them, on random
images of the run's size (speed does not depend on what the pixels show): a training step of every generator model
of the run, a classifier training step with and without augmentation (per image), and for ddpm one UNet pass of
sampling (per image). The rest of a study (data, synthesis of a GAN pool, the audit, evaluation) is scaled by how
this machine's classifier compares with the reference machine's at one fixed setting, the quick preset's at 28 px
(`machine_factor`): at the run's own settings the ratio also carried the reference's guess of how time grows with
width and pixels (a 64 px run's classifier at half the width gave 2.09 where the same machine's 28 px one gave
about 1.5). The result is cached per
machine and settings in medsyn's cache folder, so `--dry-run` measures once (seconds to a minute at 64 px) and every
later plan of the same settings reads the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from medsyn.config import RunConfig, preset
from medsyn.data.cache import cache_root
from medsyn.fileio import read_json, write_json

CALIBRATION_VERSION = 3         # 2: an untimed warm-up fit and medians (version 1's first fit carried one-off costs,
                                # so the difference of its two fits could even come out negative); 3: the machine
                                # factor at one fixed setting
WARM_UP, TIMED = 3, 8           # steps: the first ones pay for allocation and one-off set-up; the median step is kept
CLASSIFY_STEPS = (2, 8)         # pairs of short fits; their difference is the cost of 6 steps without the fixed costs
CLASSIFY_REPEATS = 3            # pairs timed, after one untimed fit; the median difference is kept
CLASSIFY_FIT_STEPS = CLASSIFY_STEPS[0] + CLASSIFY_REPEATS * sum(CLASSIFY_STEPS)  # all the timing's fits, warm-up too
MEASURE_LIMIT_S = 30.0          # a piece the reference machine would take longer to time is scaled instead
BUSY_LOAD_PER_CORE = 0.5        # a measurement taken at this load of other work per core or above is used for the plan at
                                # hand but not cached: one made beside a test run overestimated a study by half
                                # (benchmarks/results/study_unlabelled_2026-12-01.json, its note)


@dataclasses.dataclass(frozen=True)
class Speeds:
    """Seconds on one thread of this machine: per generator step (by model), per classifier training image (plain
    and augmented), per ddpm UNet pass of one image; and this machine's classifier time over the reference's."""
    gan_step_s: dict
    classify_image_s: float
    classify_aug_image_s: float
    ddpm_pass_s: float | None
    machine_factor: float
    measured: str = "reference"   # "reference": the plan's constants (no calibration); else where it was measured
    load_per_core: float | None = None  # other work's 1-minute load average per core while measuring (None: unknown)

    @property
    def busy(self) -> bool:
        """Measured while other work loaded the machine: the times are likely too long."""
        return self.load_per_core is not None and self.load_per_core >= BUSY_LOAD_PER_CORE

    def scaled(self, gan: float | dict = 1.0, classify: float = 1.0, machine: float = 1.0) -> "Speeds":
        """These speeds with every generator and ddpm time times `gan` (one factor, or one per model), every
        classifier time times `classify` and the machine factor times `machine` (other settings, or a slower
        machine)."""
        per_model = gan if isinstance(gan, dict) else dict.fromkeys(self.gan_step_s, gan)
        return dataclasses.replace(self, gan_step_s={m: s * per_model[m] for m, s in self.gan_step_s.items()},
                                   classify_image_s=self.classify_image_s * classify,
                                   classify_aug_image_s=self.classify_aug_image_s * classify,
                                   ddpm_pass_s=self.ddpm_pass_s and self.ddpm_pass_s * per_model["ddpm"],
                                   machine_factor=self.machine_factor * machine)


def cached_speeds(config: RunConfig, reference: Speeds) -> Speeds:
    """This machine's speeds at `config`'s settings, measured on first use and read from the cache after."""
    path = cache_root() / "calibration" / f"{_key(config)}.json"
    if path.is_file():
        try:
            return Speeds(**read_json(path))
        except (TypeError, ValueError):
            pass  # an older or damaged file: measure again
    speeds = measure(config, reference)
    if not speeds.busy:  # a busy machine's times would skew every later plan of these settings
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, dataclasses.asdict(speeds))
    return speeds


def load_per_core() -> float | None:
    """Other work's share of the cores: the 1-minute load average less the measuring thread itself, over the cores
    (None where the system does not say)."""
    try:
        return max(0.0, os.getloadavg()[0] - 1) / (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return None


def _key(config: RunConfig) -> str:
    settings = {"version": CALIBRATION_VERSION, "machine": machine(),
                "gans": {m: _gan_settings(config, m) for m in config.gans},
                "classify": _classify_settings(config)}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def machine() -> dict:
    """What makes one machine's speed differ from another's (the host name too: shared machines differ in load)."""
    import torch

    cpu = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    return {"host": platform.node(), "cpu": cpu or platform.processor(), "cores": os.cpu_count(),
            "torch": torch.__version__}


def _gan_settings(config: RunConfig, model: str) -> dict:
    gan = config.gan_config(model, 0)
    return {k: getattr(gan, k) for k in ("model", "size", "base_width", "batch_size", "diffaugment", "r1_gamma",
                                         "latent_dim", "sampling_steps")}


def _classify_settings(config: RunConfig) -> dict:
    c = config.classify
    return {"size": config.gan.size, "channels": config.data.channels,
            **{k: getattr(c, k) for k in ("arch", "width", "batch_norm", "batch_size", "dropout")}}


def measure(config: RunConfig, reference: Speeds) -> Speeds:
    """This machine's speeds at `config`'s settings; the machine factor from the quick preset's classifier at 28 px
    (timed once where the run's classifier is that one)."""
    import torch

    from medsyn.study.plan import reference_speeds

    load_before = load_per_core()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    progress = logging.getLogger("medsyn")
    level = progress.level
    progress.setLevel(logging.WARNING)  # the timed fits' epoch lines, on random images, are no study's progress
    try:
        small = preset("quick")
        small_image_s = _classify_image_seconds(small, _random_images(small), False)
        factor = small_image_s / reference_speeds(small).classify_image_s

        def timed(reference_s: float, steps: int, measure_it):
            """Measured where the reference machine would take at most MEASURE_LIMIT_S; else scaled by `factor`
            (a GPU-sized preset on a CPU would take minutes a step)."""
            return measure_it() if reference_s * steps <= MEASURE_LIMIT_S else reference_s * factor

        data = _random_images(config)
        gan_step = {m: timed(reference.gan_step_s[m], WARM_UP + TIMED,
                             lambda m=m: _gan_step_seconds(config.gan_config(m, 0), data)) for m in config.gans}
        images = CLASSIFY_FIT_STEPS * config.classify.batch_size
        plain = small_image_s if _classify_settings(config) == _classify_settings(small) else \
            timed(reference.classify_image_s, images, lambda: _classify_image_seconds(config, data, False))
        augmented = timed(reference.classify_aug_image_s, images, lambda: _classify_image_seconds(config, data, True))
        ddpm = timed(reference.ddpm_pass_s, 64, lambda: _ddpm_pass_seconds(config, data)) \
            if "ddpm" in config.gans else None
    finally:
        torch.set_num_threads(previous)
        progress.setLevel(level)
    return Speeds(gan_step_s=gan_step, classify_image_s=plain, classify_aug_image_s=augmented, ddpm_pass_s=ddpm,
                  machine_factor=factor,
                  measured=f"{machine()['host']} at {time.strftime('%Y-%m-%d %H:%M')}",
                  load_per_core=None if load_before is None else max(load_before, load_per_core()))


def _random_images(config: RunConfig):
    from medsyn.data import ImageSet

    size, channels = config.gan.size, config.data.channels or 1
    n = max(config.gan.batch_size, config.classify.batch_size) * 2
    rng = np.random.default_rng(0)
    split = np.array(["train"] * n + ["val"] * 32 + ["test"] * 32, dtype="<U5")
    total = len(split)
    return ImageSet(images=rng.integers(0, 256, (total, size, size, channels), dtype=np.uint8),
                    labels=np.arange(total) % 2, split=split, class_names=("a", "b"),
                    groups=np.full(total, ""), paths=np.array([f"random[{i}]" for i in range(total)]),
                    source="calibration")


def _gan_step_seconds(gan_config, data) -> float:
    from medsyn import generators

    if gan_config.model == "ddpm":
        from medsyn.generators.ddpm import require_diffusers

        require_diffusers()
    settings = dataclasses.replace(gan_config, steps=WARM_UP + TIMED, log_every=1, snapshot_every=10**9,
                                   device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        generators.train(data, settings, Path(folder) / "gan", progress=False)
        rows = generators.read_log(Path(folder) / "gan")[WARM_UP:]
    return float(np.median([settings.batch_size / r["images_per_s"] for r in rows]))


def _classify_image_seconds(config: RunConfig, data, augment: bool) -> float:
    from medsyn.classify import parse_arm
    from medsyn.classify.arms import training_data
    from medsyn.classify.train import fit

    settings = dataclasses.replace(config.classify, epochs=1, threads=1, device="cpu", ema_decay=0.0)
    train, val = data.subset("train"), data.subset("val")
    streamed = training_data(parse_arm("real"), train, None, 0)

    def seconds(steps: int) -> float:
        start = time.perf_counter()
        fit(streamed, val, 2, settings, seed=0, augment=augment, steps_per_epoch=steps)
        return time.perf_counter() - start

    seconds(CLASSIFY_STEPS[0])  # pays the one-off costs (kernels chosen, buffers allocated) outside the timing
    short, long = CLASSIFY_STEPS
    differences = []
    for _ in range(CLASSIFY_REPEATS):
        before = seconds(short)
        differences.append(seconds(long) - before)
    images = (long - short) * min(settings.batch_size, len(train))
    return max(float(np.median(differences)), 1e-6) / images


def _ddpm_pass_seconds(config: RunConfig, data) -> float:
    """One UNet pass per image of sampling: a short ddpm trained for a step, then sampled at 1 and 3 solver steps."""
    from medsyn import generators

    settings = dataclasses.replace(config.gan_config("ddpm", 0), steps=1, log_every=1, snapshot_every=10**9,
                                   device="cpu")
    labels = np.arange(16) % 2
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = generators.train(data, settings, Path(folder) / "ddpm", progress=False)
        seconds = []
        for steps in (1, 3):
            generator, info = generators.load_generator(checkpoint, sampler={"sampling_steps": steps, "guidance": 0.0})
            start = time.perf_counter()
            generators.generate_images(generator, info, labels, seed=0)
            seconds.append(time.perf_counter() - start)
    return max(seconds[1] - seconds[0], 1e-6) / (2 * len(labels))
