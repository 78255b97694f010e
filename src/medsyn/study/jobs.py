"""The job bodies: thin calls of each stage's public function, reading and writing the run folder only.

Every body is idempotent: a job whose `done_file` exists is skipped by the executors, a job that was killed
half-way left only temporary files (every stage writes atomically) or a resumable checkpoint, so running it again
is safe. A job's printed output goes to `RUN/logs/<job>.log`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsyn.config import RunConfig
from medsyn.fileio import write_json
from medsyn.study.plan import Job, generator_of
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
    log = study.run_dir / "logs" / f"{job.name.replace('/', '_')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    with open(log, "a", encoding="utf-8") as handle, contextlib.redirect_stdout(handle), \
            contextlib.redirect_stderr(handle):
        BODIES[job.kind](job, study)
    return {"seconds": round(time.perf_counter() - start, 2), "cpu_seconds": round(time.process_time() - cpu_start, 2),
            "peak_rss_mib": round(peak_rss_mib(), 1), "threads": job.threads}


@functools.lru_cache(maxsize=2)
def dataset(src: str | None, data_config):
    """The run's dataset, loaded once per worker process (later loads read medsyn's decode cache)."""
    from medsyn import data

    return data.load(src, data_config)


@functools.lru_cache(maxsize=4)
def _point_dataset(src: str | None, data_config, size: float, imbalance: float):
    from medsyn.data.splits import nested_train_subset

    full = dataset(src, data_config)
    if size == 1.0 and imbalance == 1.0:
        return full
    kept = nested_train_subset(full.labels, full.groups, full.split, size, imbalance, data_config.split_seed)
    return full.select(kept | (full.split != "train"))


def point_dataset(study: Study, params: dict):
    """The data of one learning-curve point: the run's val and test splits and the point's nested train subset.
    Its generators and arms never see a real training image outside it."""
    return _point_dataset(study.src, study.config.data, params.get("size", 1.0), study.config.imbalance)


def _data(job: Job, study: Study) -> None:
    from medsyn import data

    write_json(study.run_dir / job.done_file, data.summarize(dataset(study.src, study.config.data)))


def _generator(job: Job, study: Study) -> None:
    from medsyn import gan

    p = job.params
    gan.train(point_dataset(study, p), study.config.gan_config(p["model"], p["seed"]),
              _folder(study, p, "gan", p["model"], f"g{p['index']}"), resume=True, progress=False)


def _synthesize(job: Job, study: Study) -> None:
    from medsyn import synth

    p = job.params
    real = point_dataset(study, p)
    train = real.subset("train")
    counts = synthetic_counts(np.bincount(train.labels, minlength=train.n_classes), study.config.arms)
    checkpoint = _folder(study, p, "gan", p["model"], f"g{p['index']}") / "final.pt"
    synth.generate(checkpoint, counts, seed=p["seed"], out_dir=study.run_dir / job.name, overwrite=True,
                   choose_guidance_on=real, guidance_scales=study.config.guidance if p["model"] == "ddpm" else (),
                   audit_config=study.config.audit)


def _audit(job: Job, study: Study) -> None:
    from medsyn import synth
    from medsyn.evaluate.audit import run_audit

    p = job.params
    real = point_dataset(study, p)
    pool = synth.load_synthetic(_folder(study, p, "synthetic", p["model"], f"g{p['index']}"), real)
    run_audit(real, pool, study.run_dir / job.name, study.config.audit, generator_name=f"{p['model']} g{p['index']}")


def _classify(job: Job, study: Study) -> None:
    from medsyn import synth
    from medsyn.classify import filter_pool, parse_arm, train_arm

    p = job.params
    real = point_dataset(study, p)
    arm = parse_arm(p["arm"])
    pool = None if p["generator"] is None else \
        synth.load_synthetic(_folder(study, p, "synthetic", study.config.gans[0], f"g{p['generator']}"), real)
    if arm.filtered:
        pool = filter_pool(pool, _folder(study, p, "arms", arm.filter_model, f"seed{p['seed']}"), real.subset("val"))
    train_arm(real, p["arm"], p["seed"], study.config.classify, _folder(study, p, "arms", p["arm"], f"seed{p['seed']}"),
              synthetic=pool)


def _folder(study: Study, params: dict, *parts: str) -> Path:
    return study.run_dir / params.get("prefix", "") / Path(*parts)


def _evaluate(job: Job, study: Study) -> None:
    evaluate_run(study)


def _report(job: Job, study: Study) -> None:
    from medsyn.report import build_report

    build_report(study.run_dir)


BODIES = {"data": _data, "generator": _generator, "synthesize": _synthesize, "audit": _audit,
          "classify": _classify, "evaluate": _evaluate, "report": _report}


def evaluate_run(study: Study) -> dict:
    """Statistics over replicates from the finished runs' prediction files, per learning-curve point, written to
    results.json: the largest point's summary at the top level (the main verdict), every point under `curve`,
    and what each synthetic arm was worth in real images under `worth`."""
    from medsyn.study.plan import size_points, size_tag

    config = study.config
    points = []
    for prefix, size in size_points(config):
        train = point_dataset(study, {"size": size}).subset("train")
        summary = _summarize(study.run_dir / prefix, config)
        points.append({"size": size, "tag": size_tag(size), "folder": prefix or ".", "n_train": len(train),
                       "per_class": np.bincount(train.labels, minlength=train.n_classes).tolist(), **summary})
    largest = max(points, key=lambda p: p["n_train"])
    result = {k: v for k, v in largest.items() if k not in ("size", "tag", "per_class")}
    if len(points) > 1:
        result["imbalance"] = config.imbalance
        result["curve"] = points
        result["worth"] = _worth(points, config)
    write_json(study.run_dir / "results.json", result)
    return result


def _summarize(folder: Path, config: RunConfig) -> dict:
    from medsyn.classify import parse_arm, read_predictions
    from medsyn.evaluate.stats import summarize_arms

    results = {arm: {seed: read_predictions(folder / "arms" / arm / f"seed{seed}") for seed in config.seeds}
               for arm in config.arms}
    controls = {arm: parse_arm(arm).control for arm in config.arms if parse_arm(arm).control}
    summary = summarize_arms(results, controls, n_bootstrap=config.n_bootstrap, seed=0, min_effect=config.min_effect)
    summary["generators"] = {str(seed): f"{config.gans[0]} g{generator_of(config, r)}"
                             for r, seed in enumerate(config.seeds)}
    summary["exposure"] = _exposure(folder, config)
    return summary


def _worth(points: list[dict], config: RunConfig) -> list[dict]:
    """For every arm with synthetic images and every point: the real images its test AUC and balanced accuracy
    are worth on the real-only curve."""
    from medsyn.classify import parse_arm
    from medsyn.classify.arms import synthetic_need
    from medsyn.evaluate.worth import real_images_worth

    sizes = [p["n_train"] for p in points]
    out = []
    for metric in ("auc", "balanced_accuracy"):
        real = [p["arms"]["real"][metric]["per_replicate"] for p in points]
        for arm in (a for a in config.arms if parse_arm(a).uses_synthetic):
            for point in points:
                worth = real_images_worth(sizes, real, point["arms"][arm][metric]["per_replicate"])
                drawn = int(synthetic_need(parse_arm(arm), np.array(point["per_class"])).sum())
                out.append({"arm": arm, "metric": metric, "n_train": point["n_train"],
                            "n_synthetic": drawn, **worth})
    return out


def synthetic_counts(train_counts: np.ndarray, arms: tuple[str, ...]) -> list[int]:
    """Images per class a generator's pool needs so that every arm's draw can be served from it."""
    from medsyn.classify import parse_arm
    from medsyn.classify.arms import synthetic_need

    needs = [synthetic_need(parse_arm(a), train_counts) * (2 if parse_arm(a).filtered else 1)  # filter headroom
             for a in arms if parse_arm(a).uses_synthetic]
    return [int(max(1, *column)) for column in zip(*needs)] if needs else [1] * len(train_counts)


def _exposure(folder: Path, config: RunConfig) -> dict:
    """Per arm: real passes, synthetic images seen and best epoch of each replicate's selected model, and the
    share of runs whose best epoch was the last one allowed (the epoch cap, not early stopping, ended them)."""
    from medsyn.fileio import read_json

    out = {}
    for arm in config.arms:
        runs = [read_json(folder / "arms" / arm / f"seed{s}" / "val_metrics.json") for s in config.seeds]
        out[arm] = {key: [r.get(key) for r in runs] for key in ("real_passes", "synthetic_seen", "best_epoch")}
    capped = [r == config.classify.epochs for a in out.values() for r in a["best_epoch"]]
    return {"per_arm": out, "epoch_cap": config.classify.epochs,
            "share_best_at_cap": round(sum(capped) / max(1, len(capped)), 3)}
