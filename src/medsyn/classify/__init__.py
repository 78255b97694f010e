"""The classify stage: train a classifier per arm x seed, select on real val, evaluate once on real test.

A library below the audit: the audit's label-trained CNN is trained by this stage's loop (`fit`).
    arms.py     what data each arm trains on (and a filtered arm's pool: filter_pool)
    batches.py  the batches of one run: the dose, the seeded per-step draws
    train.py    a run (train_arm) and the training loop (fit)
    files.py    the run folder: record, history, model, predictions
    models.py   the networks, checkpoints, predictions with the training preprocessing

Public API:
    ARMS, parse_arm(name) -> Arm                         the default arms and the arm grammar (see arms.py)
    filter_pool(pool, model_dir, val) -> ImageSet        a filtered-synth arm's pool
    pseudo_label(pool, model, meta, val, labeller) -> PseudoLabelled   an unlabelled pool with confident labels
    pseudo_label_with(pool, model_dir, val)              ... labelled by a finished run's model (pseudo.py)
    train_arm(dataset, arm, seed, config, out_dir, synthetic=None) -> dict   one run; returns the test metrics
    fit(data, val, n_classes, config, seed, ..., network=None) -> Fitted    the training loop
    real_only_model(dataset, config, seed) -> (model, meta)   the arm real's classifier, in memory (no test read)
    check_config(config)                                  MedsynError for untrainable settings
    read_predictions(run_dir) -> {"y_true", "proba", "threshold"}          a finished run's test predictions
    load_model(path) -> (model, meta)                     a saved model.pt, in eval mode
    predict_proba(model, meta, images_uint8_NHWC) -> (N, n_classes)      with the training preprocessing
    features(model, meta, images_uint8_NHWC) -> (N, D)   penultimate-layer features

Names that need torch are imported on first use, so `medsyn --help` does not load torch.
"""

from medsyn.classify.arms import ARMS, Arm, filter_pool, parse_arm

_LAZY = {
    "train_arm": "medsyn.classify.train", "read_predictions": "medsyn.classify.files",
    "evaluate_on_test": "medsyn.classify.train", "check_config": "medsyn.classify.train",
    "fit": "medsyn.classify.train", "pseudo_label": "medsyn.classify.pseudo",
    "pseudo_label_with": "medsyn.classify.pseudo", "real_only_model": "medsyn.classify.train",
    "load_model": "medsyn.classify.models", "predict_proba": "medsyn.classify.models",
    "features": "medsyn.classify.models", "build": "medsyn.classify.models",
}

__all__ = ["ARMS", "Arm", "filter_pool", "parse_arm", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medsyn.classify' has no attribute {name!r}")
