"""What a dataset holds: counts per split and class, duplicates, patients shared across splits."""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

from medsyn.data.dataset import SPLITS, ImageSet


def pixel_digest(image: np.ndarray) -> str:
    """The identity of an image's pixels: equal for pixel-identical images, whatever their files."""
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def duplicate_groups(dataset: ImageSet) -> list[list[int]]:
    """Row indices of pixel-identical images, one list per group of two or more."""
    by_hash = defaultdict(list)
    for i, image in enumerate(dataset.images):
        by_hash[pixel_digest(image)].append(i)
    return [rows for rows in by_hash.values() if len(rows) > 1]


def summarize(dataset: ImageSet) -> dict:
    counts = dataset.counts()
    total = np.bincount(dataset.labels, minlength=dataset.n_classes)
    groups = duplicate_groups(dataset)
    within = {s: sum(1 for g in groups if {dataset.split[i] for i in g} == {s}) for s in SPLITS}
    across = [g for g in groups if len({dataset.split[i] for i in g}) > 1]
    return {
        "source": dataset.source,
        "n_images": len(dataset),
        "image_size": [dataset.size, dataset.size],
        "channels": dataset.channels,
        "class_names": list(dataset.class_names),
        "counts": counts,
        "given_counts": dataset.counts(given=True) if dataset.given_split is not None else None,
        "class_balance": {name: round(float(n / total.sum()), 4) for name, n in zip(dataset.class_names, total)},
        "duplicates": {
            "groups_within_split": within,
            "groups_across_splits": len(across),
            "images_across_splits": {_pair_name(dataset, g): int(len(g)) for g in across},
            "across_split_examples": [[str(dataset.paths[i]) for i in g] for g in across[:20]],
        },
        "patients": _patients(dataset),
        "leak": dataset.leak,
        "warnings": warnings(dataset),
        "skipped_files": list(dataset.skipped),
        "ignored_files": dataset.ignored,
        "notes": list(dataset.notes),
    }


def _pair_name(dataset: ImageSet, group: list[int]) -> str:
    return "+".join(sorted({str(dataset.split[i]) for i in group})) + f"#{group[0]}"


def warnings(dataset: ImageSet) -> list[str]:
    """What `data info`, the report and summary.md put at the top: a leak the user allowed, and patient ids shared
    between the splits the source gave."""
    from medsyn.data.leaks import warning_text

    out = [warning_text(dataset.leak)] if dataset.leak and dataset.leak.get("policy") == "allow" else []
    shared = given_patient_overlap(dataset)
    if shared:
        counts = ", ".join(f"{pair.replace('&', ' and ')} {n}" for pair, n in shared.items())
        out.append(f"PATIENT IDS SHARED ACROSS THE GIVEN SPLITS: {counts} patient id(s). The ids come from "
                   f"{'the manifest or ' if not dataset.source.endswith('.npz') else ''}file names and may not be "
                   "unique (Kaggle's personN numbers, for one, are not known to be unique across its splits); if they "
                   "are one patient, the splits leak and --resplit regroups them.")
    return out


def given_patient_overlap(dataset: ImageSet) -> dict[str, int]:
    """Patient ids found in two of the splits the source gave (not the ones medsyn carved): {"train&test": n}."""
    if dataset.given_split is None or not (dataset.groups != "").any():
        return {}
    known = dataset.groups != ""
    ids = {s: set(dataset.groups[known & (dataset.given_split == s)].tolist()) for s in SPLITS}
    shared = {f"{a}&{b}": len(ids[a] & ids[b]) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:]}
    return {k: n for k, n in shared.items() if n}


def _patients(dataset: ImageSet) -> dict:
    known = dataset.groups != ""
    if not known.any():
        return {"known": False}
    per_split = {s: set(dataset.groups[known & (dataset.split == s)].tolist()) for s in SPLITS}
    shared = {f"{a}&{b}": sorted(per_split[a] & per_split[b])
              for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:]}
    return {"known": True, "n_patients": {s: len(v) for s, v in per_split.items()},
            "shared_across_splits": {k: len(v) for k, v in shared.items()},
            "shared_examples": {k: v[:10] for k, v in shared.items() if v}}


def _count_table(counts: dict, names: list[str], width: int) -> list[str]:
    lines = ["split".ljust(7) + "".join(n.rjust(width + 2) for n in names) + "total".rjust(9)]
    for split, row in counts.items():
        lines.append(split.ljust(7) + "".join(str(c).rjust(width + 2) for c in row) + str(sum(row)).rjust(9))
    return lines


def format_summary(summary: dict, cache_dir: str) -> str:
    names = summary["class_names"]
    width = max(8, *(len(n) for n in names))
    lines = [f"WARNING: {w}" for w in summary.get("warnings", [])]
    lines += [""] if lines else []
    lines += [f"source: {summary['source']}",
             f"images: {summary['n_images']}  size: {summary['image_size'][0]}x{summary['image_size'][1]}  "
             f"channels: {summary['channels']}  classes: {len(names)}", ""]
    given = summary.get("given_counts")
    if given and given != summary["counts"] and any(sum(r) for r in given.values()):
        lines += ["splits as given by the source:", *_count_table(given, names, width), "",
                  "splits medsyn uses (see notes):"]
    lines += _count_table(summary["counts"], names, width)
    balance = ", ".join(f"{k} {v:.1%}" for k, v in summary["class_balance"].items())
    lines += ["", f"class balance (all splits): {balance}"]
    dup = summary["duplicates"]
    within = ", ".join(f"{s} {n}" for s, n in dup["groups_within_split"].items())
    lines.append(f"pixel-identical duplicate groups: within a split: {within}; across splits: "
                 f"{dup['groups_across_splits']}")
    for example in dup["across_split_examples"][:5]:
        lines.append("  shared: " + "  ==  ".join(example))
    patients = summary["patients"]
    if patients["known"]:
        counts = ", ".join(f"{s} {n}" for s, n in patients["n_patients"].items())
        shared = ", ".join(f"{k} {n}" for k, n in patients["shared_across_splits"].items())
        lines.append(f"patients: {counts}; shared across splits: {shared}")
    else:
        lines.append("patients: the source gives no patient ids (splits cannot be checked for patient leakage)")
    leak = summary.get("leak")
    if leak:
        lines.append(f"near-copies across the given splits (leak guard, correlation > {leak['threshold']:g}): "
                     + (", ".join(f"{k} {v}" for k, v in leak["counts"].items()) or "none checked")
                     + f"; highest other cross-split match {leak['highest_other_correlation']}; {leak['policy']}")
    if summary["skipped_files"]:
        lines.append(f"skipped unreadable files: {len(summary['skipped_files'])}")
    for note in summary["notes"]:
        lines.append(f"note: {note}")
    lines.append(f"cache: {cache_dir}")
    return "\n".join(lines)
