"""The audit of a synthetic dataset against the real one: realism, diversity, labels, and copies of patients.

    run_audit(real, synthetic, out_dir, config) -> dict    writes audit.json, nn_gallery.png,
                                                           nearest_neighbours.csv and config.json
    table_rows(audit) -> list[dict]                        flat rows for the report table

Every distribution metric is measured in every feature extractor of the registry (features.py) against one
reference set, half A of the real train split, and given for three sets of equal size: the synthetic images, the
other half of real train (the real-vs-real floor, medigan's lower bound: what "as good as real" scores at this
sample size) and real val (genuinely new images; val is small, so fewer of them).

Which real split is used for what: train is the reference for fidelity and memorization; val early-stops the
label-trained CNN and gives every baseline (the new-images row, the near-copy yardstick, the label-fidelity
reference accuracy). The test split is never read: only the final evaluation of the classifiers opens it.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

import numpy as np

from medsyn.config import AuditConfig, to_dict
from medsyn.data import ImageSet
from medsyn.errors import MedsynError
from medsyn.audit import features, fidelity, memorization
from medsyn.fileio import refuse_overwrite, write_json, write_text

LOG = logging.getLogger(__name__)
FLOOR_SET = "real train half B (floor)"
NEW_REAL_SET = "real val (new images)"


def run_audit(real: ImageSet, synthetic: ImageSet, out_dir: Path, config: AuditConfig,
              generator_name: str = "synthetic", overwrite: bool = False) -> dict:
    """Audit `synthetic` (all its rows) against `real` (its train and val splits); write the files into out_dir."""
    out_dir = Path(out_dir)
    refuse_overwrite(out_dir / "audit.json", overwrite)
    _check_compatible(real, synthetic)
    timings, started = {}, time.perf_counter()
    train, val = real.subset("train"), real.subset("val")
    if len(val) == 0:
        raise MedsynError(f"{real.source}: no val images; the audit's baselines are the real val split "
                          f"(load the data with --val auto).")

    clock = time.perf_counter()
    classifier = features.label_trained_cnn(real, config)
    extractors = features.extractors(real, config, classifier)
    timings["encoders"] = time.perf_counter() - clock

    rng = np.random.default_rng(config.seed)
    half_a, half_b = _halves(rng, train.labels, config.max_samples)
    compared = {generator_name: (synthetic, _sample(rng, len(synthetic), len(half_b))),
                FLOOR_SET: (train, half_b), NEW_REAL_SET: (val, _sample(rng, len(val), len(half_b)))}
    by_features = {}
    for extractor in extractors:
        clock = time.perf_counter()
        reference = extractor.features(train.images[half_a])
        by_features[extractor.name] = {
            name: _compare_per_class(reference, train.labels[half_a], extractor.features(part.images[rows]),
                                     part.labels[rows], real.class_names, config)
            for name, (part, rows) in compared.items()}
        timings[f"fidelity:{extractor.name}"] = time.perf_counter() - clock

    clock = time.perf_counter()
    checked = _sample(rng, len(synthetic), config.n_memorization)
    train_features, _ = features.encode(classifier, train.images)
    synthetic_features, synthetic_probs = features.encode(classifier, synthetic.images)
    val_features, val_probs = features.encode(classifier, val.images)
    found = memorization.neighbours(synthetic.images[checked], synthetic_features[checked], train.images,
                                    train_features)
    baseline = memorization.cached_baseline(features.encoder_cache_dir(real, config), val.images, val_features,
                                            train.images, train_features)
    memo, near_copy = memorization.summarize(found, baseline, synthetic.labels[checked], real.class_names,
                                             config.near_copy_percentile, config.exact_copy_correlation)
    memo["features"] = "label-trained-cnn (feature-space distances); flip/zoom/rotation/shift-tolerant correlation (near-copy rule)"
    out_dir.mkdir(parents=True, exist_ok=True)
    memorization.gallery(out_dir / "nn_gallery.png", synthetic.images[checked], train.images, found, near_copy,
                         config.gallery_pairs, f"{generator_name}: best-matching synthetic / real-train pairs "
                         f"(correlation over shifts and a flip; red = near-copy, above "
                         f"{memo['threshold']['correlation']:.3f})")
    write_text(out_dir / "nearest_neighbours.csv", _neighbours_csv(synthetic, train, checked, found, near_copy))
    timings["memorization"] = time.perf_counter() - clock

    audit = {
        "generator": generator_name,
        "real_source": real.source,
        "synthetic_source": synthetic.source,
        "class_names": list(real.class_names),
        "counts": {"real_train": _counts(train), "real_val": _counts(val), "synthetic": _counts(synthetic)},
        "feature_extractors": {e.name: e.info for e in extractors},
        "fidelity": {
            "reference": f"real train half A ({len(half_a)} images)",
            "compared": {generator_name: f"{len(compared[generator_name][1])} synthetic images",
                         FLOOR_SET: f"the other half of real train ({len(half_b)} images): what real images score "
                                    f"against real images at this sample size, the floor to read every number by",
                         NEW_REAL_SET: f"{len(compared[NEW_REAL_SET][1])} real val images: genuinely new images "
                                       f"(when fewer than the others, their FID/KID read higher and recall lower)"},
            "by_features": by_features},
        "label_fidelity": _label_fidelity(synthetic_probs, synthetic.labels, val_probs, val.labels,
                                          real.class_names),
        "memorization": memo,
        "config": to_dict(config),
    }
    timings["total"] = time.perf_counter() - started
    audit["timing_s"] = {name: round(seconds, 2) for name, seconds in timings.items()}
    write_json(out_dir / "config.json", to_dict(config))
    write_json(out_dir / "audit.json", audit)
    LOG.info(f"audit: wrote {out_dir / 'audit.json'} in {timings['total']:.1f} s")
    return audit


def table_rows(audit: dict) -> list[dict]:
    """One row per (features, class, set): the synthetic set, then the real-vs-real floor and new real images
    right under it, so every number stands beside its floor."""
    labels, memo, generator = audit["label_fidelity"], audit["memorization"], audit["generator"]
    rows = []
    for extractor, by_set in audit["fidelity"]["by_features"].items():
        for class_name in ["all", *audit["class_names"]]:
            for set_name, by_class in by_set.items():
                values = by_class[class_name]
                row = {"features": extractor, "class": class_name, "set": set_name,
                       **{key: values.get(key) for key in ("n_real", "n_synthetic", "fid", "kid", "kid_std",
                                                           "precision", "recall", "density", "coverage",
                                                           "diversity_ratio")}}
                if set_name == generator:
                    per_class = class_name != "all"
                    copies = memo["per_class"][class_name] if per_class else memo
                    row.update(label_accuracy=labels["synthetic_per_class"][class_name] if per_class
                               else labels["synthetic_accuracy"],
                               label_accuracy_real_val=labels["reference_real_val_per_class"][class_name]
                               if per_class else labels["reference_real_val_accuracy"],
                               near_copies=copies["near_copies"], near_copy_share=copies["near_copy_share"])
                rows.append(row)
    return rows


def as_synthetic(images: np.ndarray, labels: np.ndarray, class_names, source: str) -> ImageSet:
    """In-memory generated images (uint8 (N, H, W, C), intended labels) as an ImageSet the audit accepts."""
    n = len(images)
    return ImageSet(images=np.asarray(images, np.uint8), labels=np.asarray(labels, np.int64),
                    split=np.full(n, "train", dtype="<U5"), class_names=tuple(class_names), groups=np.full(n, ""),
                    paths=np.array([f"{source}[{i}]" for i in range(n)]), source=source)


def _check_compatible(real: ImageSet, synthetic: ImageSet) -> None:
    if len(synthetic) == 0:
        raise MedsynError(f"{synthetic.source}: no synthetic images to audit.")
    if tuple(synthetic.class_names) != tuple(real.class_names):
        raise MedsynError(f"{synthetic.source}: classes {list(synthetic.class_names)} differ from the real data's "
                          f"{list(real.class_names)}; audit a synthetic set generated from this dataset.")
    if (synthetic.size, synthetic.channels) != (real.size, real.channels):
        raise MedsynError(f"{synthetic.source}: images are {synthetic.size}px x {synthetic.channels} channels, the "
                          f"real data {real.size}px x {real.channels}; load both at one size (--size, --channels).")


def _sample(rng: np.random.Generator, n: int, limit: int) -> np.ndarray:
    return np.sort(rng.choice(n, limit, replace=False)) if n > limit else np.arange(n)


def _halves(rng: np.random.Generator, labels: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of (at most `limit` of) the real train rows, each class split evenly between them."""
    rows = _sample(rng, len(labels), limit)
    half_a, half_b = [], []
    for label in np.unique(labels[rows]):
        mine = rng.permutation(rows[labels[rows] == label])
        half_a.append(mine[: len(mine) // 2])
        half_b.append(mine[len(mine) // 2:])
    return np.sort(np.concatenate(half_a)), np.sort(np.concatenate(half_b))


def _counts(part: ImageSet) -> list[int]:
    return np.bincount(part.labels, minlength=part.n_classes).astype(int).tolist()


def _compare_per_class(real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray,
                       class_names, config: AuditConfig) -> dict:
    """compare() on all images, then on each class ("fake" is whichever set is measured against "real")."""
    def compare(real_rows, fake_rows):
        return fidelity.compare(real[real_rows], fake[fake_rows], config.k, config.kid_subsets,
                                config.kid_subset_size, config.seed)

    results = {"all": compare(slice(None), slice(None))}
    for label, name in enumerate(class_names):
        results[name] = compare(real_labels == label, fake_labels == label)
    return results


def _label_fidelity(synthetic_probs, synthetic_labels, val_probs, val_labels, class_names) -> dict:
    def accuracy(probs, labels, mask=None):
        mask = np.ones(len(labels), bool) if mask is None else mask
        return float((probs[mask].argmax(1) == labels[mask]).mean()) if mask.any() else None

    return {
        "classifier": "the label-trained CNN's head (trained on real train, early-stopped on real val)",
        "synthetic_accuracy": accuracy(synthetic_probs, synthetic_labels),
        "synthetic_per_class": {name: accuracy(synthetic_probs, synthetic_labels, synthetic_labels == label)
                                for label, name in enumerate(class_names)},
        "reference_real_val_accuracy": accuracy(val_probs, val_labels),
        "reference_real_val_per_class": {name: accuracy(val_probs, val_labels, val_labels == label)
                                         for label, name in enumerate(class_names)},
        "meaning": "share of synthetic images the real-trained classifier assigns to the class they were generated "
                   "for; the reference is the same classifier's accuracy on real val (slightly optimistic: val "
                   "also chose its stopping epoch; the test split is left to the final evaluation)",
    }


def _neighbours_csv(synthetic: ImageSet, train: ImageSet, checked: np.ndarray,
                    found: memorization.Neighbours, near_copy: np.ndarray) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["synthetic_path", "label", "best_match_train_path", "best_correlation", "best_transform",
                     "pixel_nn_train_path", "pixel_rms_distance", "feature_nn_train_path", "feature_distance",
                     "near_copy"])
    for row, index in enumerate(checked):
        writer.writerow([synthetic.paths[index], synthetic.class_names[synthetic.labels[index]],
                         train.paths[found.correlation_index[row]], f"{found.correlation[row]:.6f}",
                         found.transform[row],
                         train.paths[found.pixel_index[row]], f"{found.pixel_distance[row]:.6f}",
                         train.paths[found.feature_index[row]], f"{found.feature_distance[row]:.6f}",
                         int(near_copy[row])])
    return buffer.getvalue()
