"""The job bodies: thin calls of each stage's public function, reading and writing the run folder only.

Every body is idempotent: a job whose `done_file` exists is skipped by the executors, a job that was killed
half-way left only temporary files (every stage writes atomically) or a resumable checkpoint, so running it again
is safe. A job's progress lines (medsyn's logger, see `medsyn.show_progress`) and anything else it prints go to
`RUN/logs/<job>.log`: the job's stdout and stderr point there while it runs.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsyn import show_progress
from medsyn.config import RunConfig
from medsyn.fileio import write_json
from medsyn.study.plan import Job
from medsyn.timing import peak_rss_mib


@dataclass(frozen=True)
class Study:
    """What every job of one run shares: its configuration, its data source and its folder."""
    config: RunConfig
    src: str | None
    run_dir: Path


def run_job(job: Job, study: Study) -> dict:
    """Run `job` in this process with its thread count; return its wall and CPU seconds and peak memory."""
    import torch

    torch.set_num_threads(job.threads)
    if torch.cuda.is_initialized():  # a worker's earlier job: its peak is not this one's
        torch.cuda.reset_peak_memory_stats()
    log = study.run_dir / "logs" / f"{job.name.replace('/', '_')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    show_progress()  # a worker process has not run the `medsyn` command, which installs it
    start, cpu_start = time.perf_counter(), time.process_time()
    with open(log, "a", encoding="utf-8") as handle, contextlib.redirect_stdout(handle), \
            contextlib.redirect_stderr(handle):
        BODIES[job.kind](job, study)
    return {"seconds": round(time.perf_counter() - start, 2), "cpu_seconds": round(time.process_time() - cpu_start, 2),
            "peak_rss_mib": round(peak_rss_mib(), 1), "threads": job.threads, **_gpu_use(job)}


def _gpu_use(job: Job) -> dict:
    """The GPU a job held (its Ray reservation and what torch used): empty for a job that ran on the CPU."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return {"gpus": job.gpus} if job.gpus else {}
    return {"gpus": job.gpus, "gpu": torch.cuda.get_device_name(),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


@functools.lru_cache(maxsize=2)
def dataset(src: str | None, data_config):
    """The run's dataset, loaded once per worker process (later loads read medsyn's decode cache)."""
    from medsyn import data

    return data.load(src, data_config)


@functools.lru_cache(maxsize=4)
def _point_rows(src: str | None, data_config, size: float, imbalance: float, scale_val: bool) -> np.ndarray:
    from medsyn.data.splits import is_whole_split, learning_curve_point

    full = dataset(src, data_config)
    if is_whole_split(size, int((full.split == "train").sum())) and imbalance == 1.0:
        return np.ones(len(full), dtype=bool)
    return learning_curve_point(full.labels, full.groups, full.split, size, imbalance, data_config.split_seed,
                                scale_val)


def _rows(study: Study, params: dict) -> np.ndarray:
    return _point_rows(study.src, study.config.data, params.get("size", 1.0), study.config.imbalance,
                       study.config.scale_val)


def point_dataset(study: Study, params: dict):
    """The data of one learning-curve point: its nested train subset, its val subset (in proportion, see
    `learning_curve_point`) and the whole test split. Only the classifier runs receive it, and they seal the test
    rows until their final evaluation; every earlier stage gets `development_data`."""
    return dataset(study.src, study.config.data).select(_rows(study, params))


def development_data(study: Study, params: dict):
    """The point's train and val rows, without any test row: what generators, synthesis (with its guidance
    choice), the audit and the filter learn from and choose on."""
    return point_dataset(study, params).without_test()


def heldout_pool(study: Study, params: dict):
    """The positive control's pool: the real train images outside the point's train subset, labelled as they are,
    standing in for a perfect generator's output. An image whose pixels also stand in val or test (a duplicate
    the source carries across splits) is left out: the pool never holds a val or test image, by content."""
    from medsyn.data.splits import heldout_train_rows

    full = dataset(study.src, study.config.data)
    return full.select(heldout_train_rows(full.images, full.split, _rows(study, params)))


def unlabelled_pool(study: Study, params: dict):
    """The point's unlabelled pool (--unlabelled): `rest`, the train images outside its subset without their
    labels (the positive control's rows), or the given folder or .npz at the data's size and channels (checked
    for val and test images before the run began, `study.run.check_sources`)."""
    from medsyn.data.unlabelled import REST, rest_of_train

    full = dataset(study.src, study.config.data)
    if study.config.unlabelled == REST:
        return rest_of_train(full, _rows(study, params))
    return external_pool(study.config.unlabelled, full.size, full.channels, full.aspect)


@functools.lru_cache(maxsize=1)
def external_pool(src: str, size: int, channels: int, aspect: str):
    from medsyn.data.unlabelled import load_unlabelled

    return load_unlabelled(src, size, channels, aspect)


def _data(job: Job, study: Study) -> None:
    from medsyn import data

    write_json(study.run_dir / job.done_file, data.summarize(dataset(study.src, study.config.data)))


def _generator(job: Job, study: Study) -> None:
    from medsyn import generators

    p = job.params
    real = development_data(study, p)
    generators.train(real, study.config.gan_config(p["model"], p["seed"]),
                     _generated(study, p, "gan"), resume=True, progress=False,
                     pseudo=generator_pool(study, p, real.subset("val")) if p["unlabelled"] else None)


def generator_pool(study: Study, params: dict, val):
    """The point's unlabelled pool, labelled by the real-only classifier of the replicate whose seed the generator
    has (the rule of real+pseudo@R, classify/pseudo.py), for a generator to learn from."""
    from medsyn.classify import pseudo_label_with

    return pseudo_label_with(unlabelled_pool(study, params), labeller_folder(study, params), val)


def labeller_folder(study: Study, params: dict) -> Path:
    """The real-only classifier that labels a generator's pool: that of the replicate whose seed it has."""
    return _folder(study, params, "arms", "real", f"seed{params['seed']}")


def _synthesize(job: Job, study: Study) -> None:
    from medsyn import synth
    from medsyn.classify.arms import pool_counts
    from medsyn.audit import guidance

    p = job.params
    real = development_data(study, p)
    train = real.subset("train")
    counts = pool_counts(np.bincount(train.labels, minlength=train.n_classes), study.config.arms)
    checkpoint = _generated(study, p, "gan") / "final.pt"
    device = study.config.gan_config(p["model"], p["seed"]).device
    sampler, choice = guidance.sampler_for(checkpoint, study.config.guidance_scales if p["model"] == "ddpm" else (), real,
                                           p["seed"], audit_config=study.config.audit, device=device)
    synth.generate(checkpoint, counts, seed=p["seed"], out_dir=study.run_dir / job.name, overwrite=True,
                   sampler=sampler, guidance_choice=choice, device=device)


def _audit(job: Job, study: Study) -> None:
    from medsyn import synth
    from medsyn.audit.run import run_audit

    p = job.params
    real = development_data(study, p)
    generated = _generated(study, p, "synthetic")
    pool = synth.load_synthetic(generated, real)
    run_audit(real, pool, study.run_dir / job.name, study.config.audit,
              generator_name=f"{generated.parent.name} {generated.name}")


def _classify(job: Job, study: Study) -> None:
    from medsyn import synth
    from medsyn.classify import filter_pool, parse_arm, pseudo_label_with, train_arm
    p = job.params
    real = point_dataset(study, p)
    arm = parse_arm(p["arm"])
    labeller = _folder(study, p, "arms", arm.filter_model, f"seed{p['seed']}")
    pool = heldout_pool(study, p) if arm.heldout else None if p["generator"] is None else \
        synth.load_synthetic(_generated(study, p, "synthetic", study.config.gans[0], arm.unlabelled), real)
    record = None
    if arm.filtered:
        pool = filter_pool(pool, labeller, real.subset("val"))
    if arm.pseudo:
        labelled = pseudo_label_with(unlabelled_pool(study, p), labeller, real.subset("val"))
        pool, record = labelled.images, labelled.record
    train_arm(real, p["arm"], p["seed"], study.config.classify, _folder(study, p, "arms", p["arm"], f"seed{p['seed']}"),
              synthetic=pool, pool_record=record)


def _folder(study: Study, params: dict, *parts: str) -> Path:
    return study.run_dir / params.get("prefix", "") / Path(*parts)


def _generated(study: Study, params: dict, stage: str, model: str | None = None, unlabelled: bool | None = None) -> Path:
    """A generator's folder of `stage` (gan, synthetic, audit): the job's own generator, or with `model` and
    `unlabelled` given, generator params["generator"] of that model and kind."""
    from medsyn.generators import generator_folder

    folder = generator_folder(model or params["model"], params["unlabelled"] if unlabelled is None else unlabelled)
    return _folder(study, params, stage, folder, f"g{params['generator']}")


def _evaluate(job: Job, study: Study) -> None:
    evaluate_run(study)


def _report(job: Job, study: Study) -> None:
    from medsyn.report import build_report

    build_report(study.run_dir)


BODIES = {"data": _data, "generator": _generator, "synthesize": _synthesize, "audit": _audit,
          "classify": _classify, "evaluate": _evaluate, "report": _report}


def evaluate_run(study: Study) -> dict:
    """results.json (medsyn.stats.results) from the finished runs' files of every learning-curve point."""
    from medsyn.stats.results import Point, write_results
    from medsyn.study.plan import arms_at, size_points, size_tag

    config = study.config
    n_full = int((dataset(study.src, config.data).split == "train").sum())
    points = []
    for prefix, size in size_points(config):
        point = point_dataset(study, {"size": size})
        train, val = point.subset("train"), point.subset("val")
        points.append(Point(folder=study.run_dir / prefix, prefix=prefix, size=size, tag=size_tag(size),
                            n_train=len(train), n_val=len(val),
                            per_class=np.bincount(train.labels, minlength=train.n_classes).tolist(),
                            arms=arms_at(config, size, n_full)))
    return write_results(study.run_dir, points, config)
