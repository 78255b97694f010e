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
    from medsyn.data.splits import learning_curve_point

    full = dataset(src, data_config)
    if size == 1.0 and imbalance == 1.0:
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


def _data(job: Job, study: Study) -> None:
    from medsyn import data

    write_json(study.run_dir / job.done_file, data.summarize(dataset(study.src, study.config.data)))


def _generator(job: Job, study: Study) -> None:
    from medsyn import generators

    p = job.params
    generators.train(development_data(study, p), study.config.gan_config(p["model"], p["seed"]),
              _folder(study, p, "gan", p["model"], f"g{p['index']}"), resume=True, progress=False)


def _synthesize(job: Job, study: Study) -> None:
    from medsyn import synth
    from medsyn.audit import guidance

    p = job.params
    real = development_data(study, p)
    train = real.subset("train")
    counts = synthetic_counts(np.bincount(train.labels, minlength=train.n_classes), study.config.arms)
    checkpoint = _folder(study, p, "gan", p["model"], f"g{p['index']}") / "final.pt"
    device = study.config.gan_config(p["model"], p["seed"]).device
    sampler, choice = guidance.sampler_for(checkpoint, study.config.guidance if p["model"] == "ddpm" else (), real,
                                           p["seed"], audit_config=study.config.audit, device=device)
    synth.generate(checkpoint, counts, seed=p["seed"], out_dir=study.run_dir / job.name, overwrite=True,
                   sampler=sampler, guidance_choice=choice, device=device)


def _audit(job: Job, study: Study) -> None:
    from medsyn import synth
    from medsyn.audit.run import run_audit

    p = job.params
    real = development_data(study, p)
    pool = synth.load_synthetic(_folder(study, p, "synthetic", p["model"], f"g{p['index']}"), real)
    run_audit(real, pool, study.run_dir / job.name, study.config.audit, generator_name=f"{p['model']} g{p['index']}")


def _classify(job: Job, study: Study) -> None:
    from medsyn import synth
    from medsyn.classify import filter_pool, parse_arm, train_arm

    p = job.params
    real = point_dataset(study, p)
    arm = parse_arm(p["arm"])
    pool = heldout_pool(study, p) if arm.heldout else None if p["generator"] is None else \
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
    results.json: the largest point's summary at the top level (the main verdict), every point under `curve`
    (with its train and val counts: the labelled images it used), whether the positive control saw help under
    `sensitivity`, and what each arm with extra images was worth in labelled real images under `worth`."""
    from medsyn.study.plan import arms_at, size_points, size_tag

    config = study.config
    n_full = int((dataset(study.src, config.data).split == "train").sum())
    points = []
    for prefix, size in size_points(config):
        point = point_dataset(study, {"size": size})
        train, val = point.subset("train"), point.subset("val")
        summary = _summarize(study.run_dir / prefix, config, arms_at(config, size, n_full))
        points.append({"size": size, "tag": size_tag(size), "folder": prefix or ".", "n_train": len(train),
                       "n_val": len(val), "n_labelled": len(train) + len(val),
                       "per_class": np.bincount(train.labels, minlength=train.n_classes).tolist(), **summary})
    largest = max(points, key=lambda p: p["n_train"])
    result = {k: v for k, v in largest.items() if k not in ("size", "tag", "per_class")}
    if len(points) > 1:
        result["imbalance"] = config.imbalance
        result["val_scaled"] = config.scale_val
        result["curve"] = points
        result["sensitivity"] = _sensitivity(points)
        result["worth"] = _worth(points, config)
    write_json(study.run_dir / "results.json", result)
    return result


def _summarize(folder: Path, config: RunConfig, arms: tuple[str, ...]) -> dict:
    from medsyn.classify import parse_arm, read_predictions
    from medsyn.stats.paired import summarize_arms

    results = {arm: {seed: read_predictions(folder / "arms" / arm / f"seed{seed}") for seed in config.seeds}
               for arm in arms}
    controls = {arm: parse_arm(arm).control for arm in arms if parse_arm(arm).control}
    clusters = {arm: {seed: generator_of(config, r) for r, seed in enumerate(config.seeds)}
                for arm in arms if parse_arm(arm).uses_synthetic}
    summary = summarize_arms(results, controls, n_bootstrap=config.n_bootstrap, seed=0, min_effect=config.min_effect,
                             clusters=clusters, positive_controls=positive_controls(arms))
    summary["generators"] = {str(seed): f"{config.gans[0]} g{generator_of(config, r)}"
                             for r, seed in enumerate(config.seeds)}
    summary["exposure"] = _exposure(folder, config, arms)
    return summary


def positive_controls(arms: tuple[str, ...]) -> dict[str, str]:
    """Each synthetic arm's positive control: the real+heldout arm with the same control and the same dose (an arm
    without one, such as real+balance, gets no efficiency)."""
    from medsyn.classify import parse_arm

    heldout = [parse_arm(a) for a in arms if parse_arm(a).heldout]
    return {arm.name: h.name for arm in (parse_arm(a) for a in arms if parse_arm(a).uses_synthetic)
            for h in heldout if arm.real and not arm.balance and (h.control, h.synth_ratio) ==
            (arm.control, arm.synth_ratio)}


def _sensitivity(points: list[dict]) -> dict:
    """Could the study see help? The positive control's test-AUC verdict at each size where it ran; `sees_help`
    is whether it improved at the smallest size."""
    from medsyn.classify import parse_arm

    rows = [{"n_train": p["n_train"], "n_labelled": p["n_labelled"], "arm": c["arm"], "diff": c["diff"],
             "ci_low": c["ci_low"], "ci_high": c["ci_high"], "verdict": c["verdict"]}
            for p in points for c in p["comparisons"] if c["metric"] == "auc" and parse_arm(c["arm"]).heldout]
    if not rows:
        return {"positive_control": None, "sees_help": None, "points": []}
    smallest = min(r["n_train"] for r in rows)
    sees = all(r["verdict"].startswith("improved") for r in rows if r["n_train"] == smallest)
    return {"positive_control": rows[0]["arm"], "sees_help": sees, "points": rows}


def _worth(points: list[dict], config: RunConfig) -> list[dict]:
    """For every arm with extra images and every point: the labelled real images its test AUC and balanced
    accuracy are worth on its matched control's curve, with how many extra images it actually drew (after a
    filter, what the filter kept)."""
    from medsyn.classify import parse_arm
    from medsyn.stats.worth import real_images_worth

    sizes = [p["n_labelled"] for p in points]
    out = []
    for metric in ("auc", "balanced_accuracy"):
        for arm in (a for a in config.arms if parse_arm(a).uses_pool):
            curve = [p["arms"][parse_arm(arm).control][metric] for p in points]
            for point in (p for p in points if arm in p["arms"]):
                worth = real_images_worth(sizes, curve, point["arms"][arm][metric])
                drawn = point["exposure"]["per_arm"][arm]["n_synthetic"]
                out.append({"arm": arm, "control": parse_arm(arm).control, "metric": metric,
                            "n_train": point["n_train"], "n_labelled": point["n_labelled"],
                            "n_synthetic": int(np.mean(drawn)), **worth})
    return out


def synthetic_counts(train_counts: np.ndarray, arms: tuple[str, ...]) -> list[int]:
    """Images per class a generator's pool needs so that every arm's draw can be served from it."""
    from medsyn.classify import parse_arm
    from medsyn.classify.arms import synthetic_need

    needs = [synthetic_need(parse_arm(a), train_counts) * (2 if parse_arm(a).filtered else 1)  # filter headroom
             for a in arms if parse_arm(a).uses_synthetic]
    return [int(max(1, *column)) for column in zip(*needs)] if needs else [1] * len(train_counts)


def _exposure(folder: Path, config: RunConfig, arms: tuple[str, ...]) -> dict:
    """Per arm: real and extra images seen, the dose they make (extra per real image seen), real passes, best
    epoch and extra images drawn of each replicate's selected model, and the share of runs whose best epoch was
    the last one allowed (the epoch cap, not early stopping, ended them)."""
    from medsyn.fileio import read_json

    out = {}
    for arm in arms:
        runs = [folder / "arms" / arm / f"seed{s}" for s in config.seeds]
        exposure = [read_json(run / "val_metrics.json") for run in runs]
        out[arm] = {key: [r.get(key) for r in exposure]
                    for key in ("real_seen", "synthetic_seen", "dose", "real_passes", "best_epoch")}
        out[arm]["n_synthetic"] = [read_json(run / "config.json")["training_set"]["n_synthetic"] for run in runs]
    capped = [r == config.classify.epochs for a in out.values() for r in a["best_epoch"]]
    return {"per_arm": out, "epoch_cap": config.classify.epochs,
            "share_best_at_cap": round(sum(capped) / max(1, len(capped)), 3)}
