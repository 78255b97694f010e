"""The near-copy detector (data/nearcopy.py) on real chest X-rays: what pairs that are certainly different score,
against `SAME_IMAGE_CORRELATION`, and which share of planted copies of each kind it flags, with the search's time.

Certainly different: the official Kaggle splits of chest_xray_224 (every val and test image against every train
image; no copies are known) and PneumoniaMNIST's test split against its train split. Planted: `--planted` train
images of chest_xray_224 at 224 px, each changed one way (resized and re-saved as RGB JPEG, gamma, contrast, blur,
a zoom-crop of 4-11%, a rotation of 3-5 degrees) and searched among all 5,216 train images.

    python benchmarks/nearcopy_calibration.py [--data ../shared/data/chest_xray_224] [--planted 200]

Writes benchmarks/results/nearcopy_calibration.json (with the machine's reference speed: benchmarks/common.py).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from medsyn.data import nearcopy

from common import add_note_argument, write_results



def _gray(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def _changed(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    picture = Image.fromarray(image)
    if kind == "resized RGB re-save":
        buffer = io.BytesIO()
        picture.resize((180, 150)).convert("RGB").save(buffer, "JPEG", quality=60)
        return np.asarray(Image.open(buffer).convert("L"))
    if kind == "gamma":
        return (255 * (image / 255.0) ** rng.choice([0.6, 1.6])).astype(np.uint8)
    if kind == "contrast":
        return np.clip((image.astype(float) - 128) * rng.uniform(0.6, 1.4) + 128, 0, 255).astype(np.uint8)
    if kind == "blur":
        return np.asarray(picture.filter(ImageFilter.GaussianBlur(1.5)))
    if kind == "zoom-crop 4-11%":
        side = image.shape[0]
        cut = int(side * rng.uniform(0.04, 0.11))
        top, left = rng.integers(0, cut + 1, 2)
        return np.asarray(picture.crop((left, top, left + side - cut, top + side - cut)).resize((side, side)))
    if kind == "rotation 3-5 degrees":
        return np.asarray(picture.rotate(rng.uniform(3, 5) * rng.choice([-1, 1]), resample=Image.Resampling.BILINEAR))
    raise ValueError(kind)


KINDS = ("resized RGB re-save", "gamma", "contrast", "blur", "zoom-crop 4-11%", "rotation 3-5 degrees")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[2] / "shared" / "data" / "chest_xray_224")
    parser.add_argument("--planted", type=int, default=200)
    add_note_argument(parser)
    args = parser.parse_args()
    threshold = nearcopy.SAME_IMAGE_CORRELATION
    files = {s: sorted((args.data / s).glob("*/*.jp*g")) for s in ("train", "val", "test")}
    train = nearcopy.thumbnails([_gray(p) for p in files["train"]])
    held = nearcopy.thumbnails([_gray(p) for s in ("val", "test") for p in files[s]])
    start = time.perf_counter()
    official = nearcopy.best_matches(held, train).best
    search_s = time.perf_counter() - start

    from medsyn import data
    mnist = data.load()
    mnist_train = nearcopy.thumbnails(mnist.subset("train").images)
    mnist_test = nearcopy.best_matches(nearcopy.thumbnails(mnist.subset("test").images), mnist_train).best

    rng = np.random.default_rng(0)
    chosen = rng.choice(len(files["train"]), args.planted, replace=False)
    planted = {}
    for kind in KINDS:
        copies = nearcopy.thumbnails([_changed(_gray(files["train"][i]), kind, rng) for i in chosen])
        found = nearcopy.best_matches(copies, train)
        right = found.best_index == chosen
        planted[kind] = {"flagged": round(float((found.best > threshold).mean()), 3),
                         "matched_its_source": round(float(right.mean()), 3),
                         "median_correlation": round(float(np.median(found.best)), 5)}
    result = {"threshold": threshold,
              "official_chest_xray_splits": {"pairs": f"{len(held)} val+test x {len(train)} train",
                                             "false_alarms": int((official > threshold).sum()),
                                             "max": round(float(official.max()), 5),
                                             "p99": round(float(np.percentile(official, 99)), 5),
                                             "median": round(float(np.median(official)), 5),
                                             "search_seconds": round(search_s, 1)},
              "pneumoniamnist_test_vs_train": {"false_alarms": int((mnist_test > threshold).sum()),
                                               "max": round(float(mnist_test.max()), 5)},
              "planted_copies": {"n": args.planted, "by_kind": planted}}
    print(json.dumps(result, indent=1))
    write_results("nearcopy_calibration", result, note=args.note)


if __name__ == "__main__":
    main()
