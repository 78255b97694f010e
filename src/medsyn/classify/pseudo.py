"""Pseudo-labels: an unlabelled pool labelled by a real-only classifier, kept where it is confident enough.

The one rule, shared by the `real+pseudo@R` arm and by a generator that learns from an unlabelled pool: each pool
image gets the classifier's most probable class c, and is kept when that probability is at least tau_c. tau_c is
chosen on REAL VAL only: the lowest confidence at which the classifier's val precision for class c (among the val
images it assigns to c with at least that confidence) reaches PSEUDO_PRECISION, i.e. the most pool images whose
labels are expected to be right at that rate. A class whose val precision never reaches it keeps no pool image
(tau_c = inf), and the record says so. The test split is never read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsyn.data import ImageSet
from medsyn.data.unlabelled import PseudoLabelled, UnlabelledPool

PSEUDO_PRECISION = 0.9  # the val precision per class a pseudo-label must be expected to reach


def class_thresholds(val_labels: np.ndarray, val_proba: np.ndarray, target: float = PSEUDO_PRECISION) -> np.ndarray:
    """tau_c per class: the lowest confidence at which the val images assigned to c with at least that confidence
    are of class c at a rate of at least `target`; inf where no confidence reaches it."""
    predicted, confidence = val_proba.argmax(1), val_proba.max(1)
    taus = np.full(val_proba.shape[1], np.inf)
    for c in range(val_proba.shape[1]):
        mine = predicted == c
        for tau in np.sort(np.unique(confidence[mine])):
            above = mine & (confidence >= tau)
            if np.mean(val_labels[above] == c) >= target:
                taus[c] = tau
                break
    return taus


def pseudo_label(pool: UnlabelledPool, model, meta: dict, val: ImageSet, labeller: str,
                 target: float = PSEUDO_PRECISION) -> PseudoLabelled:
    """The pool images `model` labels with confidence at least its class's val-chosen tau (class_thresholds), as a
    train-split ImageSet with those labels, and the record of what was kept. `labeller` names the model."""
    from medsyn.classify import models

    taus = class_thresholds(val.labels, models.predict_proba(model, meta, val.images), target)
    proba = models.predict_proba(model, meta, pool.images) if len(pool) else np.zeros((0, val.n_classes))
    labels, confidence = proba.argmax(1), proba.max(1)
    kept = confidence >= taus[labels]
    per_class = np.bincount(labels[kept], minlength=val.n_classes).astype(int).tolist()
    record = {"source": pool.source, "n_pool": len(pool), "n_kept": int(kept.sum()), "kept_per_class": per_class,
              "thresholds": [None if np.isinf(t) else round(float(t), 6) for t in taus],
              "rule": f"label = the classifier's most probable class c, kept where p(c) >= tau_c, tau_c the lowest "
                      f"confidence at which its precision for c on real val reaches {target:g} (none: the class "
                      "keeps nothing)",
              "labeller": labeller}
    n = int(kept.sum())
    images = ImageSet(images=pool.images[kept], labels=labels[kept].astype(np.int64),
                      split=np.full(n, "train", dtype="<U5"), class_names=val.class_names,
                      groups=np.full(n, "", dtype="<U1"), paths=pool.paths[kept],
                      source=f"{pool.source} [pseudo-labelled by {labeller}: kept {n}/{len(pool)}, per class "
                             f"{per_class}, tau {record['thresholds']}]")
    return PseudoLabelled(images, record)


def pseudo_label_with(pool: UnlabelledPool, model_dir: Path, val: ImageSet) -> PseudoLabelled:
    """`pseudo_label` with a finished classifier run's model (RUN/arms/real/seed<s>): a study's labeller."""
    from medsyn.classify import models

    model, meta = models.load_model(Path(model_dir) / "model.pt")
    return pseudo_label(pool, model, meta, val, f"{Path(model_dir).parent.name} {Path(model_dir).name}")
