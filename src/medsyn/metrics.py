"""Classification metrics from labels and class probabilities, computed with scikit-learn.

Binary tasks: the positive class is index 1; a case is called positive when p(class 1) >= threshold (0.5 unless
given; medsyn passes the threshold chosen on the validation split). Several classes: the predicted class is the
argmax, and sensitivity, specificity, precision and F1 are macro averages over classes (one-vs-rest), AUC is the
macro one-vs-rest AUC.
"""

from __future__ import annotations

import numpy as np

METRICS = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "precision", "f1")


def predict_labels(proba: np.ndarray, threshold: float | None = None) -> np.ndarray:
    proba = np.asarray(proba)
    if proba.shape[1] == 2:
        return (proba[:, 1] >= (0.5 if threshold is None else threshold)).astype(int)
    if threshold is not None:
        raise ValueError("a decision threshold applies to two classes only; several classes use the argmax")
    return proba.argmax(axis=1)


def _sklearn_metrics():
    """sklearn.metrics, imported where a metric is computed: `predict` and the server need only `predict_labels`,
    and sklearn with scipy would add about 150 MB to their memory."""
    from sklearn import metrics

    return metrics


def classification_metrics(y_true, proba, threshold: float | None = None) -> dict:
    """Every metric in METRICS plus the confusion matrix (rows: true class, columns: predicted), as plain JSON."""
    skm = _sklearn_metrics()
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=float)
    n_classes = proba.shape[1]
    labels = list(range(n_classes))
    y_pred = predict_labels(proba, threshold)
    binary = n_classes == 2
    average = "binary" if binary else "macro"
    confusion = skm.confusion_matrix(y_true, y_pred, labels=labels)
    out = {
        "n": int(len(y_true)),
        "threshold": (0.5 if threshold is None else float(threshold)) if binary else None,
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
        "auc": _auc(y_true, proba),
        "sensitivity": skm.recall_score(y_true, y_pred, labels=labels, average=average, zero_division=0),
        "specificity": _specificity(y_true, y_pred, labels),
        "precision": skm.precision_score(y_true, y_pred, labels=labels, average=average, zero_division=0),
        "f1": skm.f1_score(y_true, y_pred, labels=labels, average=average, zero_division=0),
        "confusion_matrix": confusion.tolist(),
    }
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in out.items()}


def _auc(y_true: np.ndarray, proba: np.ndarray) -> float | None:
    """None when the labels hold a single class (AUC undefined)."""
    skm = _sklearn_metrics()
    if len(np.unique(y_true)) < 2:
        return None
    if proba.shape[1] == 2:
        return skm.roc_auc_score(y_true, proba[:, 1])
    if len(np.unique(y_true)) < proba.shape[1]:
        return None  # one-vs-rest needs every class present
    return skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=list(range(proba.shape[1])))


def _specificity(y_true: np.ndarray, y_pred: np.ndarray, labels: list[int]) -> float:
    """True-negative rate: of class 0 for two classes, else the macro mean of each class's one-vs-rest TNR."""
    per_class = _sklearn_metrics().multilabel_confusion_matrix(y_true, y_pred, labels=labels)  # [[tn, fp], [fn, tp]]
    tn, fp = per_class[:, 0, 0], per_class[:, 0, 1]
    tnr = np.divide(tn, tn + fp, out=np.zeros(len(labels)), where=(tn + fp) > 0)
    return float(tnr[1] if len(labels) == 2 else tnr.mean())


def youden_threshold(y_true, score) -> float:
    """The threshold on p(class 1) maximising sensitivity + specificity - 1 (Youden's J) on these cases."""
    roc_curve = _sklearn_metrics().roc_curve
    fpr, tpr, thresholds = roc_curve(np.asarray(y_true, dtype=int), np.asarray(score, dtype=float))
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))  # roc_curve's first threshold is +inf (nothing positive)
