"""Classification metrics as the DeSamba paper reports them (Tables 1–3), in NumPy alone.

The paper's tables give accuracy, specificity, sensitivity, precision and F1 *weighted by class
support* — which is why their sensitivity column equals accuracy in every row (support-weighted
recall is accuracy) — and a one-vs-rest AUC, plus Top-2/Top-3 accuracy. ``classification_metrics``
returns those, the macro averages beside them, the per-class AUCs, the confusion matrix and
percentile-bootstrap 95 % confidence intervals.

Choices *(ours)*:
- Specificity of class k is ``TN_k / (TN_k + FP_k)``; its weighted average uses the class supports
  (the weights of the other weighted scores). Precision, recall and F1 follow scikit-learn's
  definitions with ``zero_division=0``; the tests compare every value with scikit-learn.
- AUC: macro average of one-vs-rest AUCs over the classes present in ``y_true`` (a class absent from
  the labels has no ROC curve; its per-class AUC is ``nan`` and it is listed in ``absent_classes``).
  For two classes it is the ordinary binary AUC of the positive class's probability. AUCs are
  Mann–Whitney statistics over mid-ranks (:func:`binary_auc`; ties count one half), O(n log n).
- Bootstrap: ``n_bootstrap`` resamples of the cases with replacement (seeded); a resample that lacks a
  class still yields the metrics that are defined for it. The CI is the 2.5/97.5 percentile. Every
  resample is a row of case multiplicities, so all resamples are computed as matrix operations
  (no loop over resamples).

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

__all__ = ["SCALAR_METRICS", "binary_auc", "classification_metrics", "confusion_matrix", "metrics_table", "midranks"]

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


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class (scikit-learn's layout).

    Example::

        >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2).tolist()
        [[1, 0], [1, 1]]
    """
    codes = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(codes, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given the mean of the ranks they span (O(n log n)).

    Example::

        >>> midranks(np.array([0.3, 0.1, 0.3, 0.2])).tolist()
        [3.5, 1.0, 3.5, 2.0]
    """
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]  # tie group g spans sorted positions [starts[g], ends[g])
    group_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def binary_auc(y_true_binary: Any, score: Any) -> float:
    """ROC AUC of ``score`` for the positives of ``y_true_binary``, by the Mann–Whitney statistic.

    ``AUC = (Σ_{i positive} r_i - n₁(n₁ + 1)/2) / (n₁ n₀)`` with ``r`` the :func:`midranks` of
    ``score``: the probability that a random positive scores above a random negative, ties
    counting one half (the trapezoidal ROC area scikit-learn computes). ``nan`` when either class
    is empty.

    Example::

        >>> binary_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    pos = np.asarray(y_true_binary).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    if pos.shape != s.shape or pos.ndim != 1:
        raise ValueError(f"score: expected shape {pos.shape} (one score per case), got {s.shape}")
    n1 = int(pos.sum())
    n0 = len(pos) - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    return float((midranks(s)[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _weighted_ovr_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC of every class for every row of case weights: ``(B, n) -> (B, K)``.

    Case ``i`` counts ``weights[b, i]`` times in resample ``b`` (a bootstrap resample is its
    multiplicities). Per class, one sort of the scores, then per tie group ``g`` (in score order)
    ``Σ_g P_g (N_<g + N_g / 2) / (P N)`` with ``P_g``/``N_g`` the weight of positives/negatives in
    the group and ``N_<g`` of negatives below it: :func:`binary_auc` for unit weights, O(B·n) per
    class. ``nan`` where a resample has no positive or no negative.
    """
    out = np.full((weights.shape[0], p.shape[1]), np.nan)
    for c in range(p.shape[1]):
        order = np.argsort(p[:, c], kind="mergesort")
        s = p[order, c]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        w = weights[:, order]
        is_pos = y[order] == c
        pos_g = np.add.reduceat(w * is_pos, starts, axis=1)
        neg_g = np.add.reduceat(w * ~is_pos, starts, axis=1)
        neg_below = np.cumsum(neg_g, axis=1) - neg_g
        n_pos, n_neg = pos_g.sum(1), neg_g.sum(1)
        valid = (n_pos > 0) & (n_neg > 0)
        num = (pos_g * (neg_below + neg_g / 2)).sum(1)
        out[valid, c] = num[valid] / (n_pos[valid] * n_neg[valid])
    return out


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, 0 where ``den == 0`` (scikit-learn's ``zero_division=0``)."""
    return np.divide(num, den, out=np.zeros(np.broadcast_shapes(num.shape, den.shape)), where=den > 0)


def _weighted_metrics(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every scalar metric (and the per-class AUCs) for each row of case weights ``(B, n)``.

    Unit weights give the point estimate; bootstrap multiplicities give each resample's metrics,
    all at once. Returns ``{metric: (B,)}`` and ``per_class_auc: (B, K)``.
    """
    k = p.shape[1]
    pred = p.argmax(axis=1)
    onehot = np.zeros((len(y), k * k))
    onehot[np.arange(len(y)), y * k + pred] = 1.0
    cm = (weights @ onehot).reshape(-1, k, k)  # (B, K, K), rows = true
    total = weights.sum(1)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(2), cm.sum(1)
    fp, fn = predicted - tp, support - tp
    tn = total[:, None] - support - fp
    per_class = {
        "precision": _safe_div(tp, predicted),
        "sensitivity": _safe_div(tp, support),
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        "specificity": _safe_div(tn, tn + fp),
    }
    out: dict[str, np.ndarray] = {"accuracy": tp.sum(1) / total}
    for name, values in per_class.items():
        out[name] = (values * support).sum(1) / total  # support-weighted, as the paper
        out[f"{name}_macro"] = values.mean(1)
    auc = _weighted_ovr_auc(y, p, weights)
    if k == 2:
        out["auc"] = auc[:, 1]  # nan unless both classes are present
    else:
        valid = ~np.isnan(auc)
        out["auc"] = np.where(valid.any(1), _safe_div(np.nansum(auc, 1), valid.sum(1)), np.nan)
    out["per_class_auc"] = auc
    ranked = np.argsort(p, axis=1, kind="mergesort")[:, ::-1]  # ties: as scikit-learn's top_k_accuracy_score
    for top in (2, 3):
        hits = (ranked[:, :top] == y[:, None]).any(1) if top < k else np.ones(len(y), bool)
        out[f"top{top}_accuracy"] = weights @ hits / total
    return out


def _bootstrap_indices(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """``(n_bootstrap, n)`` case indices drawn with replacement (seeded)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))


def _bootstrap_ci(y: np.ndarray, p: np.ndarray, n_bootstrap: int, seed: int, ci: float) -> dict[str, list[float]]:
    """Percentile CIs of every scalar metric over ``n_bootstrap`` resamples, computed in chunks of
    resamples (each a matrix of multiplicities: no Python loop over resamples)."""
    n = len(y)
    idx = _bootstrap_indices(n, n_bootstrap, seed)
    chunk = max(1, 2_000_000 // n)  # resamples per chunk: bounded memory whatever n
    samples: dict[str, list[np.ndarray]] = {m: [] for m in SCALAR_METRICS}
    for start in range(0, n_bootstrap, chunk):
        part = idx[start : start + chunk]
        rows = np.arange(len(part))[:, None] * n
        counts = np.bincount((rows + part).ravel(), minlength=len(part) * n).reshape(len(part), n).astype(np.float64)
        values = _weighted_metrics(y, p, counts)
        for m in SCALAR_METRICS:
            samples[m].append(values[m])
    lo, hi = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    out = {}
    for m in SCALAR_METRICS:
        v = np.concatenate(samples[m])
        v = v[~np.isnan(v)]
        out[m] = [float(np.percentile(v, lo)), float(np.percentile(v, hi))] if v.size else [math.nan, math.nan]
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
    k = p.shape[1]
    point = _weighted_metrics(y, p, np.ones((1, len(y))))
    out: dict[str, Any] = {m: float(point[m][0]) for m in SCALAR_METRICS}
    out["per_class_auc"] = dict(zip(names, point["per_class_auc"][0].tolist()))
    out["confusion_matrix"] = confusion_matrix(y, p.argmax(axis=1), k).tolist()
    out["class_names"] = names
    support = np.bincount(y, minlength=k)
    out["support"] = dict(zip(names, support.tolist()))
    out["absent_classes"] = [n for n, s in zip(names, support) if s == 0]
    out["n"] = int(len(y))
    if n_bootstrap > 0:
        out["ci"] = _bootstrap_ci(y, p, n_bootstrap, seed, ci)
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
