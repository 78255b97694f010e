"""results.json: statistics over replicates from the finished classifier runs' files, per learning-curve point.

The study layer says where each point's runs lie and which arms ran there (`Point`); everything else is read from
the runs' own files (predictions.csv, val_metrics.json, config.json), never from objects in memory, so results
can be rebuilt at any time. The report renders this file and draws nothing it does not hold: the ROC points and
confusion matrices of the main point are written here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsyn.classify import parse_arm, read_predictions
from medsyn.config import RunConfig
from medsyn.fileio import read_json, write_json
from medsyn.metrics import predict_labels
from medsyn.stats.paired import summarize_arms
from medsyn.stats.worth import real_images_worth


@dataclass(frozen=True)
class Point:
    """One learning-curve point: where its runs lie and what it used."""
    folder: Path           # the point's run folder (arms/<arm>/seed<s>/ below it)
    prefix: str            # its place in the run folder ("" for a study of the whole train split)
    size: float            # the fraction or count asked for
    tag: str
    n_train: int
    n_val: int
    per_class: list[int]   # train images per class
    arms: tuple[str, ...]  # the arms that ran there


def evaluate(points: list[Point], config: RunConfig) -> dict:
    """The largest point's summary at the top level (the main verdict), every point under `curve` (with its train
    and val counts: the labelled images it used), whether the positive control saw help under `sensitivity`, and
    what each arm with extra images was worth in labelled real images under `worth`."""
    predictions = [{arm: _predictions(p, arm, config) for arm in p.arms} for p in points]  # each file read once
    summaries = [{"size": p.size, "tag": p.tag, "folder": p.prefix or ".", "n_train": p.n_train, "n_val": p.n_val,
                  "n_labelled": p.n_train + p.n_val, "per_class": p.per_class, **_summarize(p, config, runs)}
                 for p, runs in zip(points, predictions)]
    largest = max(range(len(points)), key=lambda i: points[i].n_train)
    result = {k: v for k, v in summaries[largest].items() if k not in ("size", "tag", "per_class")}
    result["test_curves"] = roc_and_confusion(predictions[largest], len(points[largest].per_class))
    if len(points) > 1:
        result["imbalance"] = config.imbalance
        result["val_scaled"] = config.scale_val
        result["curve"] = summaries
        result["sensitivity"] = _sensitivity(summaries)
        result["worth"] = _worth(summaries, config)
    return result


def write_results(run_dir: Path, points: list[Point], config: RunConfig) -> dict:
    result = evaluate(points, config)
    write_json(Path(run_dir) / "results.json", result)
    return result


def _predictions(point: Point, arm: str, config: RunConfig) -> dict:
    return {seed: read_predictions(point.folder / "arms" / arm / f"seed{seed}") for seed in config.seeds}


def _summarize(point: Point, config: RunConfig, results: dict) -> dict:
    arms = point.arms
    controls = {arm: parse_arm(arm).control for arm in arms if parse_arm(arm).control}
    clusters = {arm: {seed: config.generator_of(r) for r, seed in enumerate(config.seeds)}
                for arm in arms if parse_arm(arm).uses_synthetic}
    baselines = pseudo_baselines(arms)
    summary = summarize_arms(results, controls, n_bootstrap=config.n_bootstrap, seed=0, min_effect=config.min_effect,
                             clusters=clusters, positive_controls=positive_controls(arms), baselines=baselines)
    summary["generators"] = {str(seed): f"{config.gans[0]} g{config.generator_of(r)}"
                             for r, seed in enumerate(config.seeds)}
    summary["generators_learned_from"] = learned_from(point.folder)
    summary["exposure"] = _exposure(point.folder, config, arms)
    return summary


def learned_from(folder: Path) -> dict:
    """Per generator of a point ("cgan/g0"): what it learned from, as its record (gan/<model>/g<k>/config.json)
    says: labelled train images, unlabelled images (count, source, how they were labelled), starting weights."""
    records = sorted(Path(folder).glob("gan/*/g*/config.json"))
    return {f"{r.parent.parent.name}/{r.parent.name}": read_json(r).get("learned_from") for r in records}


def roc_and_confusion(predictions: dict, n_classes: int) -> dict:
    """Per arm of `predictions` ({arm: {seed: read_predictions(...)}}), on the test split: the ROC of its seed-averaged probabilities (micro-averaged one-vs-rest beyond two
    classes) and its confusion matrix summed over seeds at each run's val-chosen threshold."""
    from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

    out = {}
    for arm, by_seed in predictions.items():
        runs = list(by_seed.values())
        y_true = runs[0]["y_true"]
        proba = np.mean([r["proba"] for r in runs], axis=0)
        positive = (y_true == 1) if proba.shape[1] == 2 else np.eye(proba.shape[1])[y_true].ravel().astype(bool)
        score = proba[:, 1] if proba.shape[1] == 2 else proba.ravel()
        fpr, tpr, _ = roc_curve(positive, score)
        matrix = sum(confusion_matrix(r["y_true"], predict_labels(r["proba"], r.get("threshold")),
                                      labels=range(proba.shape[1])) for r in runs)
        out[arm] = {"roc_fpr": fpr.tolist(), "roc_tpr": tpr.tolist(), "roc_auc": float(roc_auc_score(positive, score)),
                    "confusion": matrix.tolist()}
    return {"roc": "one-vs-rest, micro-averaged" if n_classes > 2 else "binary",
            "probabilities": "seed-averaged", "confusion": "summed over seeds, at the val-chosen threshold",
            "arms": out}


def positive_controls(arms: tuple[str, ...]) -> dict[str, str]:
    """Each synthetic arm's positive control: the real+heldout arm with the same control and the same dose (an arm
    without one, such as real+balance, gets no efficiency)."""
    return _same_dose(arms, lambda arm: arm.heldout)


def pseudo_baselines(arms: tuple[str, ...]) -> dict[str, str]:
    """Each synthetic arm whose generators saw the unlabelled pool (unlabelled-synth) -> its pseudo-label baseline,
    the real+pseudo arm with the same control and dose (did the generator add anything beyond what the pool gives
    directly?)."""
    return {arm: baseline for arm, baseline in _same_dose(arms, lambda arm: arm.pseudo).items()
            if parse_arm(arm).unlabelled}


def _same_dose(arms: tuple[str, ...], kind) -> dict[str, str]:
    """Each synthetic arm riding along with real (not balance) -> the arm of `kind` with its control and dose."""
    others = [parse_arm(a) for a in arms if kind(parse_arm(a))]
    return {arm.name: o.name for arm in (parse_arm(a) for a in arms if parse_arm(a).uses_synthetic)
            for o in others if arm.real and not arm.balance and (o.control, o.synth_ratio) ==
            (arm.control, arm.synth_ratio)}


def _sensitivity(points: list[dict]) -> dict:
    """Could the study see help? The positive control's test-AUC verdict at each size where it ran; `sees_help`
    is whether it improved at the smallest size."""
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


def _exposure(folder: Path, config: RunConfig, arms: tuple[str, ...]) -> dict:
    """Per arm: real and extra images seen, the dose they make (extra per real image seen), real passes, best
    epoch and extra images drawn of each replicate's selected model, and the share of runs whose best epoch was
    the last one allowed (the epoch cap, not early stopping, ended them; None when runs keep their last epoch by
    design, selection "last")."""
    out = {}
    for arm in arms:
        runs = [folder / "arms" / arm / f"seed{s}" for s in config.seeds]
        exposure = [read_json(run / "val_metrics.json") for run in runs]
        out[arm] = {key: [r.get(key) for r in exposure]
                    for key in ("real_seen", "synthetic_seen", "dose", "real_passes", "best_epoch")}
        out[arm]["n_synthetic"] = [read_json(run / "config.json")["training_set"]["n_synthetic"] for run in runs]
    capped = [r == config.classify.epochs for a in out.values() for r in a["best_epoch"]]
    by_loss = config.classify.selection == "val-loss"
    return {"per_arm": out, "epoch_cap": config.classify.epochs, "selection": config.classify.selection,
            "share_best_at_cap": round(sum(capped) / max(1, len(capped)), 3) if by_loss else None}
