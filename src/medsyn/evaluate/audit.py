"""The audit of a synthetic dataset against the real one: realism, diversity, labels, and copies of patients.

    run_audit(real, synthetic, out_dir, config) -> dict    writes audit.json, nn_gallery.png,
                                                           nearest_neighbours.csv and config.json
    table_rows(audit) -> list[dict]                        flat rows for the report table

Which real split is used for what: train is the reference for every fidelity metric and for memorization; val
early-stops the domain encoder and gives the real-vs-real reference row (what new real images score); test is
only the "genuinely new images" baseline of nearest-neighbour distances and the classifier's reference accuracy.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np

from medsyn.config import AuditConfig, to_dict
from medsyn.data import ImageSet
from medsyn.errors import MedsynError
from medsyn.evaluate import features, fidelity, memorization
from medsyn.fileio import refuse_overwrite, write_json, write_text

REFERENCE_SET = "real val (reference)"


def run_audit(real: ImageSet, synthetic: ImageSet, out_dir: Path, config: AuditConfig,
              generator_name: str = "synthetic", overwrite: bool = False, log=print) -> dict:
    """Audit `synthetic` (all its rows) against `real` (train/val/test splits); write the files into out_dir."""
    out_dir = Path(out_dir)
    refuse_overwrite(out_dir / "audit.json", overwrite)
    _check_compatible(real, synthetic)
    timings, started = {}, time.perf_counter()
    train, val, test = real.subset("train"), real.subset("val"), real.subset("test")
    if len(test) == 0:
        raise MedsynError(f"{real.source}: no test images; the audit's memorization baseline is the real test split.")

    clock = time.perf_counter()
    encoder = features.domain_encoder(real, config, log)
    timings["encoder"] = time.perf_counter() - clock

    clock = time.perf_counter()
    encoded = {name: features.encode(encoder, part.images)
               for name, part in (("train", train), ("val", val), ("test", test), ("synthetic", synthetic))}
    timings["encode"] = time.perf_counter() - clock

    rng = np.random.default_rng(config.seed)
    sample = {"train": _sample(rng, len(train), config.max_samples),
              "synthetic": _sample(rng, len(synthetic), config.max_samples),
              "val": _sample(rng, len(val), config.max_samples)}
    labels = {"train": train.labels, "synthetic": synthetic.labels, "val": val.labels}
    feature_sets = {"domain-encoder": {name: encoded[name][0][rows] for name, rows in sample.items()}}
    extractors = {"domain-encoder": encoder.info}
    weights, inception_note = features.inception_weights_path(config)
    log(f"audit: {inception_note}")
    if weights is not None:
        clock = time.perf_counter()
        parts = {"train": train, "synthetic": synthetic, "val": val}
        feature_sets["inception-v3"] = {name: features.inception_features(parts[name].images[rows], weights)
                                        for name, rows in sample.items()}
        extractors["inception-v3"] = {"name": "inception-v3", "trained_on": "ImageNet (torch-fidelity FID weights)",
                                      "dims": 2048, "weights": str(weights)}
        timings["inception"] = time.perf_counter() - clock

    clock = time.perf_counter()
    distribution, reference = {}, {}
    for extractor, sets in feature_sets.items():
        distribution[extractor] = _compare_per_class(sets["train"], labels["train"][sample["train"]],
                                                     sets["synthetic"], labels["synthetic"][sample["synthetic"]],
                                                     real.class_names, config)
        reference[extractor] = _compare_per_class(sets["train"], labels["train"][sample["train"]],
                                                  sets["val"], labels["val"][sample["val"]], real.class_names, config)
    timings["fidelity"] = time.perf_counter() - clock

    clock = time.perf_counter()
    checked = _sample(rng, len(synthetic), config.n_memorization)
    train_pixels = memorization.pixels(train.images)
    found = memorization.neighbours(memorization.pixels(synthetic.images[checked]), encoded["synthetic"][0][checked],
                                    train_pixels, encoded["train"][0])
    baseline = memorization.neighbours(memorization.pixels(test.images), encoded["test"][0],
                                       train_pixels, encoded["train"][0])
    memo, near_copy = memorization.summarize(found, baseline, synthetic.labels[checked], real.class_names,
                                             config.near_copy_percentile, config.near_copy_min_distance)
    memo["features"] = "domain-encoder (feature-space distances); pixels (near-copy rule)"
    out_dir.mkdir(parents=True, exist_ok=True)
    memorization.gallery(out_dir / "nn_gallery.png", synthetic.images[checked], train.images, found, near_copy,
                         config.gallery_pairs, f"{generator_name}: closest synthetic / real-train pairs (pixel RMS "
                         f"distance; red = near-copy, threshold {memo['threshold']['pixel_rms']:.3f})")
    write_text(out_dir / "nearest_neighbours.csv", _neighbours_csv(synthetic, train, checked, found, near_copy))
    timings["memorization"] = time.perf_counter() - clock

    audit = {
        "generator": generator_name,
        "real_source": real.source,
        "synthetic_source": synthetic.source,
        "class_names": list(real.class_names),
        "counts": {"real_train": _counts(train), "real_val": _counts(val), "real_test": _counts(test),
                   "synthetic": _counts(synthetic)},
        "feature_extractors": extractors,
        "inception_note": inception_note,
        "fidelity": {"compared": "synthetic vs real train", "by_features": distribution},
        "reference": {"compared": "real val vs real train: what genuinely new real images score (val is small, "
                                  "so its FID/KID are biased upward and its recall downward)",
                      "by_features": reference},
        "label_fidelity": _label_fidelity(encoded["synthetic"][1], synthetic.labels, encoded["test"][1],
                                          test.labels, real.class_names),
        "memorization": memo,
        "config": to_dict(config),
    }
    timings["total"] = time.perf_counter() - started
    audit["timing_s"] = {name: round(seconds, 2) for name, seconds in timings.items()}
    write_json(out_dir / "config.json", to_dict(config))
    write_json(out_dir / "audit.json", audit)
    log(f"audit: wrote {out_dir / 'audit.json'} in {timings['total']:.1f} s")
    return audit


def table_rows(audit: dict) -> list[dict]:
    """One row per (set, features, class or "all"): the synthetic set's metrics, then the real-val reference."""
    labels, memo = audit["label_fidelity"], audit["memorization"]
    rows = []
    for set_name, block in ((audit["generator"], audit["fidelity"]), (REFERENCE_SET, audit["reference"])):
        synthetic = set_name != REFERENCE_SET
        for extractor, by_class in block["by_features"].items():
            for class_name, values in by_class.items():
                row = {"set": set_name, "features": extractor, "class": class_name,
                       **{key: values.get(key) for key in ("n_real", "n_synthetic", "fid", "kid", "kid_std",
                                                           "precision", "recall", "density", "coverage",
                                                           "diversity_ratio")}}
                if synthetic:
                    accuracy = labels["synthetic_accuracy"] if class_name == "all" else \
                        labels["synthetic_per_class"][class_name]
                    reference = labels["reference_real_test_accuracy"] if class_name == "all" else \
                        labels["reference_real_test_per_class"][class_name]
                    copies = memo if class_name == "all" else memo["per_class"][class_name]
                    row.update(label_accuracy=accuracy, label_accuracy_real_test=reference,
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


def _counts(part: ImageSet) -> list[int]:
    return np.bincount(part.labels, minlength=part.n_classes).astype(int).tolist()


def _compare_per_class(real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray,
                       class_names, config: AuditConfig) -> dict:
    def compare(real_rows, fake_rows):
        return fidelity.compare(real[real_rows], fake[fake_rows], config.k, config.kid_subsets,
                                config.kid_subset_size, config.seed)

    results = {"all": compare(slice(None), slice(None))}
    for label, name in enumerate(class_names):
        results[name] = compare(real_labels == label, fake_labels == label)
    return results


def _label_fidelity(synthetic_probs, synthetic_labels, test_probs, test_labels, class_names) -> dict:
    def accuracy(probs, labels, mask=None):
        mask = np.ones(len(labels), bool) if mask is None else mask
        return float((probs[mask].argmax(1) == labels[mask]).mean()) if mask.any() else None

    return {
        "classifier": "the domain encoder's classifier head (trained on real train, early-stopped on real val)",
        "synthetic_accuracy": accuracy(synthetic_probs, synthetic_labels),
        "synthetic_per_class": {name: accuracy(synthetic_probs, synthetic_labels, synthetic_labels == label)
                                for label, name in enumerate(class_names)},
        "reference_real_test_accuracy": accuracy(test_probs, test_labels),
        "reference_real_test_per_class": {name: accuracy(test_probs, test_labels, test_labels == label)
                                          for label, name in enumerate(class_names)},
        "meaning": "share of synthetic images the real-trained classifier assigns to the class they were generated "
                   "for; the reference is the same classifier's accuracy on the real test split",
    }


def _neighbours_csv(synthetic: ImageSet, train: ImageSet, checked: np.ndarray,
                    found: memorization.Neighbours, near_copy: np.ndarray) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["synthetic_path", "label", "pixel_nn_train_path", "pixel_rms_distance",
                     "feature_nn_train_path", "feature_distance", "near_copy"])
    for row, index in enumerate(checked):
        writer.writerow([synthetic.paths[index], synthetic.class_names[synthetic.labels[index]],
                         train.paths[found.pixel_index[row]], f"{found.pixel_distance[row]:.6f}",
                         train.paths[found.feature_index[row]], f"{found.feature_distance[row]:.6f}",
                         int(near_copy[row])])
    return buffer.getvalue()
