"""What data each arm trains on. Every arm is validated and tested on the same REAL val and test splits.

Arm names are `+`-joined parts: `real` (the real train split), `aug` (traditional augmentation of every training
image), `synth` or `synth@R` (synthetic images; with `real`, R synthetic per real image, default 1; alone, R times
as many synthetic images as the real train split holds, i.e. synthetic-only), `balance` (with `real`: synthetic
images for the minority classes only, up to the majority class's count), `filtered-synth@R` (with `real`: like
synth@R, from the pool's images that the replicate's real-only classifier gives their label with probability at
least tau, tau chosen on real val), `pretrain-synth@R` (with `real`: pretrain on R synthetic images per real
one, then fine-tune on real exactly as `real` trains) and `heldout@R` (with `real`: the positive control, R REAL
train images from outside a learning-curve subset per image inside it, at the same dose and through the same
pipeline as synth@R: what a perfect generator would give) and `pseudo@R` (with `real`: R unlabelled pool images per real
one, labelled by the replicate's real-only classifier and kept where it is confident enough, classify/pseudo.py:
the honest baseline for a generator that saw the same pool; drawn as filtered-synth@R draws, what the rule kept).
`unlabelled-synth@R` (also `pretrain-unlabelled-synth@R`, `filtered-unlabelled-synth@R`) takes its synthetic images
from generators that learned from the unlabelled pool too, beside the labelled-only generators that feed `synth@R`.
Examples: `real+aug`, `real+synth@0.5`, `real+heldout@1`, `real+pseudo@1`, `real+unlabelled-synth@1`.

Dose: an arm with R extra images per real one sees R of them per real image seen, at every size and steps per
epoch (`classify.train`'s batch stream).

Every arm with extra images has a matched control, the arm without them (`Arm.control`): the comparison that
isolates what the extra images did.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsyn.data import ImageSet, top_up_to_majority
from medsyn.errors import MedsynError

ARMS = ("real", "real+aug", "synth", "real+synth@0.5", "real+synth@1", "real+synth@2", "real+balance",
        "real+aug+synth")
_SYNTH = re.compile(r"^(filtered-|pretrain-)?(unlabelled-)?(synth|heldout|pseudo)(?:@(\d+(?:\.\d+)?))?$")


@dataclass(frozen=True)
class Arm:
    name: str
    real: bool              # train on the real train split
    augment: bool           # traditional augmentation on every training image (real and synthetic)
    synth_ratio: float      # synthetic images per real train image (0: none), class proportions like real train
    balance: bool           # synthetic images for minority classes only, up to the majority count
    filtered: bool = False  # synthetic images kept only where the replicate's real-only classifier agrees
    pretrain: bool = False  # pretrain on the synthetic images, then fine-tune on real (same real exposure as real)
    heldout: bool = False   # the extra images are real train images outside the subset (the positive control)
    pseudo: bool = False    # the extra images are unlabelled pool images with the real-only classifier's labels
    unlabelled: bool = False  # its synthetic images come from generators that also learned from the unlabelled pool

    @property
    def uses_pool(self) -> bool:
        """Trains on extra images beside the real train split (a synthetic or a held-out real pool)."""
        return self.synth_ratio > 0 or self.balance

    @property
    def uses_synthetic(self) -> bool:
        return self.uses_pool and not self.heldout and not self.pseudo

    @property
    def uses_unlabelled_pool(self) -> bool:
        """Needs --unlabelled: its pool images are pseudo-labelled, or its generators also learned from them."""
        return self.pseudo or self.unlabelled

    @property
    def labelled_by_model(self) -> bool:
        """Its pool passes through the replicate's real-only classifier (`filter_model`): filtered or pseudo."""
        return self.filtered or self.pseudo

    @property
    def control(self) -> str | None:
        """The arm that differs from this one only by the extra images (real+aug+synth -> real+aug,
        real+synth@R, real+heldout@R, real+balance and synth -> real); None for an arm without them."""
        if not self.uses_pool:
            return None
        return "real+aug" if self.augment else "real"

    @property
    def filter_model(self) -> str:
        """The arm whose classifier (of the same replicate) filters this arm's synthetic pool or labels its
        unlabelled pool."""
        return "real"


def parse_arm(name: str) -> Arm:
    """`real+synth@2` -> Arm(real=True, synth_ratio=2.0, ...); a MedsynError names what is wrong."""
    parts = name.strip().split("+")
    real = augment = balance = filtered = pretrain = heldout = pseudo = unlabelled = False
    ratio = 0.0
    for part in parts:
        if part == "real" and not real:
            real = True
        elif part == "aug" and not augment:
            augment = True
        elif part == "balance" and not balance:
            balance = True
        elif (match := _SYNTH.match(part)) and ratio == 0:
            ratio = float(match.group(4) or 1.0)
            filtered, pretrain = match.group(1) == "filtered-", match.group(1) == "pretrain-"
            unlabelled = match.group(2) == "unlabelled-"
            heldout, pseudo = match.group(3) == "heldout", match.group(3) == "pseudo"
            if ratio <= 0:
                raise MedsynError(f"arm {name!r}: the synthetic ratio must be positive.")
        else:
            raise MedsynError(f"arm {name!r}: cannot read {part!r} (or it is repeated). An arm joins real, aug, "
                              f"synth[@RATIO] and balance with '+', e.g. {', '.join(ARMS)}.")
    if not real and ratio == 0:
        raise MedsynError(f"arm {name!r} trains on nothing: include real and/or synth.")
    if balance and (not real or ratio):
        raise MedsynError(f"arm {name!r}: balance tops up the real train split's minority classes; write "
                          f"real+balance (optionally +aug), without synth@R.")
    if (filtered or pretrain) and not real:
        raise MedsynError(f"arm {name!r}: filtered-synth and pretrain-synth work with the real train split; add "
                          f"real, e.g. real+filtered-synth@1 or real+pretrain-synth@1.")
    if heldout and (not real or filtered or pretrain):
        raise MedsynError(f"arm {name!r}: the positive control is real+heldout@R (optionally +aug): held-out real "
                          f"images ride along with the real train split exactly as synth@R does.")
    if pseudo and (not real or filtered or pretrain):
        raise MedsynError(f"arm {name!r}: the pseudo-label baseline is real+pseudo@R (optionally +aug): pseudo-labelled "
                          f"pool images ride along with the real train split exactly as synth@R does.")
    if unlabelled and (not real or heldout or pseudo):
        raise MedsynError(f"arm {name!r}: unlabelled-synth@R takes synthetic images from generators that also saw the "
                          f"unlabelled pool and rides along with the real train split, e.g. real+unlabelled-synth@1.")
    return Arm(name=name.strip(), real=real, augment=augment, synth_ratio=ratio, balance=balance,
               filtered=filtered, pretrain=pretrain, heldout=heldout, pseudo=pseudo, unlabelled=unlabelled)


def arm_name(arm: Arm) -> str:
    """The name `parse_arm` reads back as `arm`: real, aug, the extra images with their dose, balance."""
    extra = ""
    if arm.synth_ratio:
        kind = "heldout" if arm.heldout else "pseudo" if arm.pseudo else "synth"
        use = "filtered-" if arm.filtered else "pretrain-" if arm.pretrain else ""
        extra = f"{use}{'unlabelled-' if arm.unlabelled else ''}{kind}@{arm.synth_ratio:g}"
    return "+".join(part for part, on in (("real", arm.real), ("aug", arm.augment), (extra, extra),
                                          ("balance", arm.balance)) if on)


def unlabelled_twin(name: str) -> str | None:
    """The arm that takes the same synthetic images from generators that also saw the unlabelled pool
    (real+synth@1 -> real+unlabelled-synth@1); None for an arm without synthetic images riding with real."""
    arm = parse_arm(name)
    if not (arm.uses_synthetic and arm.real and not arm.balance and not arm.unlabelled):
        return None
    return arm_name(dataclasses.replace(arm, unlabelled=True))


def pseudo_baseline(name: str) -> str:
    """The pseudo-label baseline at a synthetic arm's dose: the same pool size from the unlabelled images, labelled
    by the real-only classifier (real+pretrain-unlabelled-synth@1 -> real+pseudo@1)."""
    arm = parse_arm(name)
    return arm_name(dataclasses.replace(arm, pseudo=True, unlabelled=False, filtered=False, pretrain=False))


def with_unlabelled_arms(arms: tuple[str, ...]) -> tuple[str, ...]:
    """A preset's arms when an unlabelled pool is given: beside each synthetic arm riding with real, its twin from
    generators that also saw the pool, and the pseudo-label baseline at the twin's dose (real+pseudo@R)."""
    twins = [t for t in map(unlabelled_twin, arms) if t]
    return tuple(dict.fromkeys([*arms, *map(pseudo_baseline, twins), *twins]))


EXPOSURES = ("real-passes", "equal-steps")


@dataclass(frozen=True)
class TrainingData:
    """What one run trains on. The batches are drawn from `stream`; `ride` images (synthetic or held-out real)
    join them at the arm's dose, len(ride) / n_real per real image seen."""
    stream_images: np.ndarray
    stream_labels: np.ndarray
    ride_images: np.ndarray
    ride_labels: np.ndarray
    n_real: int
    n_synthetic: int


def training_data(arm: Arm, real_train: ImageSet, synthetic: ImageSet | None, seed: int,
                  exposure: str = "real-passes") -> TrainingData:
    """The arm's images. real-passes (default): the real train split is the stream, so every arm sees every real
    image once per epoch, in the same order for the same seed, and synthetic images ride along at the arm's
    ratio. equal-steps: real and synthetic images are pooled into one stream of as many batches per epoch as the
    real split alone gives, so an arm with R synthetic images per real one sees each real image 1/(1+R) as often.
    Synthetic images are drawn without replacement from the pool with `seed` (the same draw for every arm with the
    same needs)."""
    if exposure not in EXPOSURES:
        raise MedsynError(f"exposure {exposure!r}: choose one of {', '.join(EXPOSURES)}.")
    empty = real_train.images[:0], real_train.labels[:0]
    if not arm.uses_pool:
        return TrainingData(real_train.images, real_train.labels, *empty, len(real_train), 0)
    synth_images, synth_labels = _synthetic_draw(arm, real_train, synthetic, seed)
    if not arm.real:
        return TrainingData(synth_images, synth_labels, *empty, 0, len(synth_labels))
    if arm.pretrain:  # the synthetic images come first, in `pretraining_data`; fine-tuning is on real alone
        return TrainingData(real_train.images, real_train.labels, *empty, len(real_train), 0)
    if exposure == "equal-steps":
        return TrainingData(np.concatenate([real_train.images, synth_images]),
                            np.concatenate([real_train.labels, synth_labels]), *empty, len(real_train),
                            len(synth_labels))
    return TrainingData(real_train.images, real_train.labels, synth_images, synth_labels, len(real_train),
                        len(synth_labels))


def pretraining_data(arm: Arm, real_train: ImageSet, synthetic: ImageSet | None, seed: int) -> TrainingData:
    """What a pretrain-synth arm trains on before its real fine-tuning: its synthetic draw, as a stream."""
    images, labels = _synthetic_draw(arm, real_train, synthetic, seed)
    return TrainingData(images, labels, real_train.images[:0], real_train.labels[:0], 0, len(labels))


def filter_pool(pool: ImageSet, model_dir: Path, val: ImageSet, quantile: float = 0.1) -> ImageSet:
    """A filtered-synth arm's pool: the synthetic images a real-trained classifier finds typical of their label,
    p(label) >= tau, where tau is the `quantile` of that classifier's p(true label) over the real VALIDATION images
    (so 90% of real val images would pass by default). The returned set's `source` records the rule and tau."""
    from medsyn.classify import models

    model, meta = models.load_model(Path(model_dir) / "model.pt")
    val_p = models.predict_proba(model, meta, val.images)[np.arange(len(val)), val.labels]
    tau = float(np.quantile(val_p, quantile))
    pool_p = models.predict_proba(model, meta, pool.images)[np.arange(len(pool)), pool.labels]
    kept = pool.select(pool_p >= tau)
    rule = (f"filtered by {Path(model_dir).name} of {Path(model_dir).parent.name}: p(label) >= {tau:.4f} (the "
            f"{quantile:.0%} quantile on real val), kept {len(kept)}/{len(pool)}")
    return dataclasses.replace(kept, source=f"{pool.source} [{rule}]")


def synthetic_need(arm: Arm, real_counts: np.ndarray) -> np.ndarray:
    """Synthetic images per class the arm draws: R times the real train split in its class proportions, or the
    minority top-up to the majority count for balance."""
    if arm.balance:
        return top_up_to_majority(real_counts)
    return proportional(real_counts, round(arm.synth_ratio * int(real_counts.sum())))


def pool_counts(train_counts, arms: tuple[str, ...]) -> list[int]:
    """Images per class a generator's pool needs so that every arm's draw can be served from it: the one pool-size
    rule (the run's synthesis and the plan's estimate both use it). A filtered arm gets twice its need: the filter
    keeps what it keeps."""
    counts = np.asarray(train_counts)
    needs = [synthetic_need(parse_arm(a), counts) * (2 if parse_arm(a).filtered else 1)
             for a in arms if parse_arm(a).uses_synthetic]
    return [int(max(1, *column)) for column in zip(*needs)] if needs else [1] * len(counts)


def _synthetic_draw(arm: Arm, real_train: ImageSet, synthetic: ImageSet | None, seed: int):
    _check_pool(arm, real_train, synthetic)
    wanted = synthetic_need(arm, np.bincount(real_train.labels, minlength=real_train.n_classes))
    if arm.labelled_by_model:  # a filter (or a pseudo-label rule) keeps what it keeps: the run records the draw
        wanted = np.minimum(wanted, np.bincount(synthetic.labels, minlength=len(wanted)))
    picked = _draw(synthetic.labels, wanted, seed, arm.name)
    return synthetic.images[picked], synthetic.labels[picked]


def proportional(counts: np.ndarray, total: int) -> np.ndarray:
    """Split `total` across classes in the proportions of `counts` (largest remainders)."""
    exact = counts / counts.sum() * total
    out = np.floor(exact).astype(int)
    out[np.argsort(-(exact - out), kind="stable")[: total - out.sum()]] += 1
    return out


def _draw(pool_labels: np.ndarray, wanted: np.ndarray, seed: int, arm: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = []
    for cls, n in enumerate(wanted):
        candidates = np.flatnonzero(pool_labels == cls)
        if n > len(candidates):
            raise MedsynError(f"arm {arm!r} needs {n} synthetic images of class {cls}, the synthetic pool holds "
                              f"{len(candidates)}; generate more (`medsyn gan generate --n`) or use a smaller ratio.")
        picked.append(rng.permutation(candidates)[:n])
    return np.sort(np.concatenate(picked)).astype(int) if picked else np.zeros(0, int)


def _check_pool(arm: Arm, real: ImageSet, synthetic: ImageSet | None) -> None:
    if synthetic is None and arm.pseudo:
        raise MedsynError(f"arm {arm.name!r} needs an unlabelled pool: pass --unlabelled SRC (a folder or an .npz) or "
                          f"--unlabelled rest (a learning curve's train images outside each subset).")
    if synthetic is None and arm.heldout:
        raise MedsynError(f"arm {arm.name!r} needs real train images outside the training subset: it runs at the "
                          f"learning-curve sizes below the full train split (--fractions or --train-sizes).")
    if synthetic is None:
        raise MedsynError(f"arm {arm.name!r} needs synthetic images; pass --synthetic DIR (a folder holding "
                          f"synthetic.npz from `medsyn gan generate`) or an .npz file.")
    if tuple(synthetic.class_names) != tuple(real.class_names):
        raise MedsynError(f"the synthetic classes {list(synthetic.class_names)} differ from the real data's "
                          f"{list(real.class_names)}; generate them from a GAN trained on this dataset.")
    if synthetic.images.shape[1:] != real.images.shape[1:]:
        raise MedsynError(f"synthetic images are {synthetic.images.shape[1:]} (H, W, C), the real ones "
                          f"{real.images.shape[1:]}; load them with the same --size and --channels.")
