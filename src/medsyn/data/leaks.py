"""The leak guard: near-copies across the splits a source gives, found before anything trains.

Every image of a held-out split (val, test) is compared with every image of the splits before it (train; train and
val) by `nearcopy.best_matches` on thumbnails of the images as the source gives them; a pair above
`nearcopy.SAME_IMAGE_CORRELATION` is a copy. Copies across splits are an error unless the user chooses one of the
two ways out: `--resplit` (merge the splits and re-split them grouped by content and patient) or `--allow-leak`
(continue, with a warning on every page of the report).
"""

from __future__ import annotations

import numpy as np

from medsyn.data import nearcopy
from medsyn.errors import MedsynError

LEAK_POLICIES = ("error", "resplit", "allow")
HELD_OUT = (("val", ("train",)), ("test", ("train", "val")))
MAX_RESPLIT_ROUNDS = 5


def find_leaks(thumbs: np.ndarray, split: np.ndarray, paths) -> dict:
    """Near-copies across `split`: for each held-out image, every earlier-split image it copies.

    Returns counts per split pair (held-out images with a copy in the other split), every pair (paths and
    correlation) and the highest cross-split correlation of images that are not copies."""
    paths = [str(p) for p in paths]
    threshold = nearcopy.SAME_IMAGE_CORRELATION
    pairs, counts, highest_other = [], {}, None
    for held, earlier in HELD_OUT:
        queries = np.flatnonzero(split == held)
        for other in earlier:
            references = np.flatnonzero(split == other)
            if not len(queries) or not len(references):
                continue
            found = nearcopy.best_matches(thumbs[queries], thumbs[references])
            copied = found.correlation > threshold
            counts[f"{other}&{held}"] = int(copied.any(axis=1).sum())
            for q, k in zip(*np.nonzero(copied)):
                pairs.append({"splits": f"{other}&{held}", "a": paths[references[found.index[q, k]]],
                              "b": paths[queries[q]], "correlation": round(float(found.correlation[q, k]), 5)})
            clean = found.best[~copied[:, 0]]
            if len(clean):
                highest_other = max(highest_other or -1.0, float(clean.max()))
    return {"threshold": threshold, "counts": counts, "n_copies": sum(counts.values()), "pairs": pairs,
            "highest_other_correlation": None if highest_other is None else round(highest_other, 5),
            "detector": "aspect-free 32 px gray thumbnails, rank-equalised; correlation over a left-right flip, "
                        "zoom, rotation and shift (data/nearcopy.py)"}


def leak_error(leaks: dict, source) -> MedsynError:
    counts = ", ".join(f"{pair.replace('&', ' and ')}: {n}" for pair, n in leaks["counts"].items() if n)
    examples = "\n  ".join(f"{p['a']}  ~  {p['b']}  (r = {p['correlation']:.4f})" for p in _examples(leaks, 6))
    return MedsynError(
        f"{source}: {leaks['n_copies']} image(s) of a held-out split are near-copies (resized, re-encoded, shifted, "
        f"mirrored, zoomed or rotated) of images in another split ({counts}; correlation above "
        f"{leaks['threshold']:g}), so a model would be tested on images it trained on. For example:\n  {examples}\n"
        "Fix the splits at the source, or pass --resplit (merge the splits and re-split them grouped by content and "
        "patient, recorded in data.json) or --allow-leak (continue; the report then carries a warning on every page).")


def _examples(leaks: dict, n: int) -> list[dict]:
    """A few pairs of every split pair."""
    by_pair = {}
    for p in leaks["pairs"]:
        by_pair.setdefault(p["splits"], []).append(p)
    per = max(1, n // max(1, len(by_pair)))
    return [p for rows in by_pair.values() for p in rows[:per]]


def warning_text(leak: dict) -> str:
    """The report's and `data info`'s top line for a leak the user allowed."""
    counts = ", ".join(f"{pair.replace('&', ' and ')} {n}" for pair, n in leak["counts"].items() if n)
    if leak.get("allowed_by") == "the bundled data":
        return (f"the bundled PneumoniaMNIST keeps MedMNIST's official splits, in which {leak['n_copies']} held-out "
                f"image(s) repeat a train image ({counts}): the numbers on those splits are slightly optimistic. See "
                "data.json `leak` for the pairs.")
    return (f"LEAK ALLOWED (--allow-leak): {leak['n_copies']} held-out image(s) are near-copies of images in another "
            f"split ({counts}); test and validation numbers are optimistic. See data.json `leak` for the pairs, or "
            "rerun with --resplit.")


def resplit(thumbs: np.ndarray, labels: np.ndarray, groups: np.ndarray, split: np.ndarray, paths, leaks: dict,
            seed: int) -> tuple[np.ndarray, dict]:
    """Merge the given splits and re-split them with the given proportions, stratified by class and grouped so that
    near-copies and a patient's images (by id) stay in one split; checked again with the guard and re-split with
    the new copies grouped too, until no copy crosses a split."""
    from medsyn.data.splits import carve

    paths = [str(p) for p in paths]
    row = {p: i for i, p in enumerate(paths)}
    parent = list(range(len(paths)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i, j):
        parent[root(i)] = root(j)

    by_patient = {}
    for i, g in enumerate(groups):
        if g:
            by_patient.setdefault(g, []).append(i)
    for rows in by_patient.values():
        for i in rows[1:]:
            join(i, rows[0])
    linked = set()
    given = {s: int((split == s).sum()) for s in ("train", "val", "test")}
    n = len(paths)
    new, found, rounds = split, leaks, 0
    while found["pairs"]:
        rounds += 1
        if rounds > MAX_RESPLIT_ROUNDS:
            raise MedsynError(f"--resplit: near-copies still cross the splits after {MAX_RESPLIT_ROUNDS} re-splits; "
                              "remove the copies at the source.")
        for p in found["pairs"]:
            join(row[p["a"]], row[p["b"]])
            linked.update((row[p["a"]], row[p["b"]]))
        content = np.array([f"g{root(i)}" for i in range(n)])
        new = np.full(n, "train", dtype="<U5")
        everything = np.ones(n, dtype=bool)
        if given["test"]:
            new[carve(labels, content, everything, given["test"] / n, seed)] = "test"
        val_share = given["val"] / max(1, n - given["test"])
        if given["val"] and val_share >= 0.01:
            new[carve(labels, content, new == "train", val_share, seed)] = "val"
        found = find_leaks(thumbs, new, paths)
    record = {"rounds": rounds, "seed": seed, "given_counts": given,
              "new_counts": {s: int((new == s).sum()) for s in ("train", "val", "test")},
              "moved": int((new != split).sum()), "images_in_copy_groups": len(linked),
              "copy_groups": len({root(i) for i in linked}),
              "rule": "the given splits merged, then re-split in their proportions (a val share under 1% is left to "
                      "the usual val carve), stratified by class, grouped by near-copy clusters and patient ids, "
                      "and checked again with the guard"}
    return new, record
