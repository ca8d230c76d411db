"""Classification metrics as the DeSamba paper reports them (Tables 1–3), computed with scikit-learn.

The paper's tables give accuracy, specificity, sensitivity, precision and F1 *weighted by class
support* — which is why their sensitivity column equals accuracy in every row (support-weighted
recall is accuracy) — and a one-vs-rest AUC, plus Top-2/Top-3 accuracy. ``classification_metrics``
returns those, the macro averages beside them, the per-class AUCs, the confusion matrix and
percentile-bootstrap 95 % confidence intervals.

Choices *(ours)*:
- Specificity of class k is ``TN_k / (TN_k + FP_k)``; its weighted average uses the class supports
  (the same weights scikit-learn uses for the other weighted scores). scikit-learn has no
  specificity function, so it is derived from ``multilabel_confusion_matrix``.
- AUC: macro average of one-vs-rest AUCs over the classes present in ``y_true`` (a class absent from
  the labels has no ROC curve; its per-class AUC is ``nan`` and it is listed in ``absent_classes``).
  For two classes it is the ordinary binary AUC of the positive class's probability.
- Bootstrap: ``n_bootstrap`` resamples of the cases with replacement (seeded); a resample that lacks a
  class still yields the metrics that are defined for it. The CI is the 2.5/97.5 percentile.

Shapes: ``y_true`` ``(n,)`` integer class indices in ``[0, K)``; ``probs`` ``(n, K)`` class
probabilities (rows sum to 1; logits must be soft-maxed first).

Example::

    >>> import numpy as np
    >>> from spectral3d.metrics import classification_metrics
    >>> y = np.array([0, 1, 2, 1, 0, 2]); p = np.eye(3)[[0, 1, 1, 1, 0, 2]] * 0.8 + 0.2 / 3
    >>> m = classification_metrics(y, p, class_names=["a", "b", "c"], n_bootstrap=0)
    >>> round(m["accuracy"], 4), m["confusion_matrix"][2]
    (0.8333, [0, 1, 1])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["classification_metrics", "metrics_table", "SCALAR_METRICS"]

#: The scalar metrics reported (and bootstrapped), in the paper's column order first.
SCALAR_METRICS = (
    "accuracy",
    "specificity",
    "sensitivity",
    "precision",
    "f1",
    "auc",
    "specificity_macro",
    "sensitivity_macro",
    "precision_macro",
    "f1_macro",
    "top2_accuracy",
    "top3_accuracy",
)


def _validate(y_true: Any, probs: Any, class_names: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"y_true: expected shape (n,), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y_true: expected integer class indices, got dtype {y.dtype}")
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs: expected shape (n, K) with n = {y.shape[0]}, got {p.shape}")
    if y.shape[0] == 0:
        raise ValueError("y_true: no cases to evaluate (n = 0)")
    k = p.shape[1]
    if k < 2:
        raise ValueError(f"probs: expected at least 2 classes on axis 1, got {k}")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"y_true: class indices must lie in [0, {k}), got range [{y.min()}, {y.max()}]")
    if not np.isfinite(p).all():
        raise ValueError("probs: contains NaN or Inf")
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("probs: rows must sum to 1 (apply softmax to logits first)")
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"class_names: expected {k} names (one per column of probs), got {len(names)}")
    return y.astype(np.int64), p, names


def _point_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import (
        accuracy_score,
        multilabel_confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
        top_k_accuracy_score,
    )

    k = p.shape[1]
    labels = np.arange(k)
    pred = p.argmax(axis=1)
    out: dict[str, Any] = {"accuracy": float(accuracy_score(y, pred))}
    for avg in ("weighted", "macro"):
        prec, rec, f1, _ = precision_recall_fscore_support(y, pred, labels=labels, average=avg, zero_division=0)
        suffix = "" if avg == "weighted" else "_macro"
        out[f"precision{suffix}"] = float(prec)
        out[f"sensitivity{suffix}"] = float(rec)
        out[f"f1{suffix}"] = float(f1)
    mcm = multilabel_confusion_matrix(y, pred, labels=labels)  # (K, 2, 2): [[tn, fp], [fn, tp]]
    tn, fp = mcm[:, 0, 0].astype(np.float64), mcm[:, 0, 1].astype(np.float64)
    spec = np.divide(tn, tn + fp, out=np.zeros(k), where=(tn + fp) > 0)
    support = np.bincount(y, minlength=k).astype(np.float64)
    out["specificity"] = float((spec * support).sum() / support.sum())
    out["specificity_macro"] = float(spec.mean())
    present = support > 0
    per_class_auc = np.full(k, np.nan)
    for c in np.flatnonzero(present):
        onehot = (y == c).astype(np.int64)
        if 0 < onehot.sum() < len(y):
            per_class_auc[c] = roc_auc_score(onehot, p[:, c])
    if k == 2:
        out["auc"] = float(per_class_auc[1]) if present.all() else math.nan
    else:
        valid = ~np.isnan(per_class_auc)
        out["auc"] = float(per_class_auc[valid].mean()) if valid.any() else math.nan
    out["per_class_auc"] = per_class_auc.tolist()
    for top in (2, 3):
        out[f"top{top}_accuracy"] = float(top_k_accuracy_score(y, p, k=top, labels=labels)) if top < k else 1.0
    return out


def classification_metrics(
    y_true: Any,
    probs: Any,
    class_names: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """All the paper's metrics, their macro versions, per-class AUC, confusion matrix and bootstrap CIs.

    Args:
        y_true: ``(n,)`` integer class indices.
        probs: ``(n, K)`` class probabilities.
        class_names: K names, in column order (default ``"0".."K-1"``).
        n_bootstrap: number of bootstrap resamples for the CIs (0 disables them).
        seed: seed of the bootstrap.
        ci: confidence level of the intervals.

    Returns:
        A JSON-serialisable dict: every name in ``SCALAR_METRICS`` (fractions in [0, 1]),
        ``per_class_auc`` (dict name → AUC), ``confusion_matrix`` (K×K list, rows = true class),
        ``class_names``, ``support``, ``n``, ``absent_classes`` and, when ``n_bootstrap > 0``,
        ``ci`` (dict metric → ``[low, high]``).
    """
    y, p, names = _validate(y_true, probs, class_names)
    from sklearn.metrics import confusion_matrix

    k = p.shape[1]
    out = _point_metrics(y, p)
    out["per_class_auc"] = dict(zip(names, out["per_class_auc"]))
    out["confusion_matrix"] = confusion_matrix(y, p.argmax(axis=1), labels=np.arange(k)).tolist()
    out["class_names"] = names
    support = np.bincount(y, minlength=k)
    out["support"] = dict(zip(names, support.tolist()))
    out["absent_classes"] = [n for n, s in zip(names, support) if s == 0]
    out["n"] = int(len(y))
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        samples: dict[str, list[float]] = {m: [] for m in SCALAR_METRICS}
        for _ in range(n_bootstrap):
            idx = rng.integers(0, len(y), size=len(y))
            point = _point_metrics(y[idx], p[idx])
            for m in SCALAR_METRICS:
                if not math.isnan(point[m]):
                    samples[m].append(point[m])
        lo, hi = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
        out["ci"] = {
            m: [float(np.percentile(v, lo)), float(np.percentile(v, hi))] if v else [math.nan, math.nan]
            for m, v in samples.items()
        }
        out["ci_level"] = ci
        out["n_bootstrap"] = n_bootstrap
    return out


_TABLE_COLUMNS = (
    ("ACC", "accuracy"),
    ("Spe", "specificity"),
    ("Sen", "sensitivity"),
    ("P", "precision"),
    ("F1", "f1"),
    ("AUC", "auc"),
    ("Top2", "top2_accuracy"),
    ("Top3", "top3_accuracy"),
)


def metrics_table(results: dict[str, dict[str, Any]], with_ci: bool = False) -> str:
    """A markdown table laid out like the paper's Table 1 (values in %), one row per model.

    Args:
        results: model name → the dict returned by :func:`classification_metrics`.
        with_ci: append the 95 % CI under each value as ``[lo–hi]``.
    """
    header = "| Model | " + " | ".join(c for c, _ in _TABLE_COLUMNS) + " |"
    lines = [header, "|---" * (len(_TABLE_COLUMNS) + 1) + "|"]
    for name, m in results.items():
        cells = []
        for _, key in _TABLE_COLUMNS:
            v = m.get(key, math.nan)
            cell = "n/a" if v is None or math.isnan(v) else f"{100 * v:.2f}"
            if with_ci and "ci" in m and key in m["ci"] and not math.isnan(m["ci"][key][0]):
                lo, hi = m["ci"][key]
                cell += f" [{100 * lo:.1f}–{100 * hi:.1f}]"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
