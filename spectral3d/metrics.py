"""Classification metrics as the DeSamba paper reports them (Tables 1–3), and paired tests, in NumPy.

The paper's accuracy, specificity, sensitivity, precision and F1 are weighted by class support (its sensitivity
equals accuracy); beside them: macro averages, one-vs-rest AUC, Top-2/3 accuracy, per-class AUC, the confusion
matrix and percentile-bootstrap CIs. Choices *(ours)*:

- Specificity of class k: ``TN_k / (TN_k + FP_k)``, support-weighted; precision, recall and F1 as scikit-learn's
  (``zero_division=0``).
- AUC: the mean of the one-vs-rest AUCs of the classes present in ``y_true`` (an absent class: ``nan``, listed in
  ``absent_classes``); for K = 2 the binary AUC of class 1. Mann–Whitney over mid-ranks, O(n log n).
- Bootstrap: seeded resamples of the cases, each a row of case multiplicities (no loop over resamples); the CI is
  the ``100·(1 ∓ ci)/2`` percentile pair; a resample lacking a class keeps the metrics that are defined for it.

Shapes: ``y_true`` ``(n,)`` class indices in ``[0, K)``; ``probs`` ``(n, K)``, rows summing to 1 (softmax first).
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
    """1-based ranks of ``x``, ties given the mean of the ranks they span (O(n log n)).

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
    """ROC AUC (Mann–Whitney): ``(Σ_{i positive} r_i - n₁(n₁ + 1)/2) / (n₁ n₀)``, ``r`` = :func:`midranks` of ``score``.
    P(positive scores above negative), ties ½ (scikit-learn's); ``nan`` if either class is empty. Example::

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
    """One-vs-rest AUC per class for each row of case weights ``(B, n) -> (B, K)``, ``nan`` if a class is empty.
    Per tie group ``g`` in score order: ``Σ_g P_g (N_<g + N_g / 2) / (P N)``, ``P_g``/``N_g`` the weights of the
    group's positives/negatives, ``N_<g`` of the negatives below it (:func:`binary_auc` for unit weights).
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


def _macro_auc(auc: np.ndarray) -> np.ndarray:
    """``(B, K)`` per-class AUCs -> ``(B,)``: class 1's for K = 2, else the mean of the defined ones."""
    if auc.shape[1] == 2:
        return auc[:, 1]
    valid = ~np.isnan(auc)
    return np.where(valid.any(1), _safe_div(np.nansum(auc, 1), valid.sum(1)), np.nan)


def _bootstrap_counts(idx: np.ndarray) -> np.ndarray:
    """Resampled case indices ``(B, n)`` -> case multiplicities ``(B, n)`` (float64)."""
    b, n = idx.shape
    rows = np.arange(b)[:, None] * n
    return np.bincount((rows + idx).ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def _weighted_metrics(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """``{metric: (B,)}`` and ``per_class_auc: (B, K)`` for each row of case weights ``(B, n)`` (ones: the point)."""
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
    out["auc"] = _macro_auc(auc)
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
    """Percentile CIs of every scalar metric; ``p`` ``(n, K)``, or ``(S, n, K)`` for the mean over S models."""
    probs = p[None] if p.ndim == 2 else p
    n = len(y)
    idx = _bootstrap_indices(n, n_bootstrap, seed)
    chunk = max(1, 2_000_000 // n)  # resamples per chunk: bounded memory whatever n
    samples: dict[str, list[np.ndarray]] = {m: [] for m in SCALAR_METRICS}
    for start in range(0, n_bootstrap, chunk):
        counts = _bootstrap_counts(idx[start : start + chunk])
        per_model = [_weighted_metrics(y, q, counts) for q in probs]
        for m in SCALAR_METRICS:
            samples[m].append(np.mean([v[m] for v in per_model], axis=0))
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
    """The paper's metrics, their macro versions, per-class AUC, confusion matrix and bootstrap CIs.
    ``class_names``: K, column order (default ``"0".."K-1"``); ``n_bootstrap``, ``seed``, ``ci``: resamples (0: no CI),
    their seed, the CI level. Returns a JSON-ready dict: each of ``SCALAR_METRICS`` (in [0, 1]), ``per_class_auc``,
    ``confusion_matrix`` (K×K, rows = true), ``class_names``, ``support``, ``n``, ``absent_classes``; ``ci`` if B > 0.

    Example::

        >>> y = np.array([0, 1, 2, 1, 0, 2]); p = np.eye(3)[[0, 1, 1, 1, 0, 2]] * 0.8 + 0.2 / 3
        >>> m = classification_metrics(y, p, class_names=["a", "b", "c"], n_bootstrap=0)
        >>> round(m["accuracy"], 4), m["confusion_matrix"][2]
        (0.8333, [0, 1, 1])
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
    ``results``: model name → :func:`classification_metrics` dict; ``with_ci``: add each 95 % CI as ``[lo–hi]``.
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


# --------------------------------------------------------------------------------------------
# Paired comparisons of two models on the same cases (paper Tables 1–3, "P" column)
# --------------------------------------------------------------------------------------------
# DeLong et al. (1988) for correlated AUCs, computed with the mid-rank algorithm of Sun & Xu (2014,
# IEEE SPL 21(11)): O(n log n) instead of the O(m·n) placement matrix. With m positives X, n negatives Y
# and psi(x, y) = 1[x > y] + ½·1[x = y]:
#     AUC = mean_ij psi(X_i, Y_j);  V10_i = mean_j psi(X_i, Y_j);  V01_j = mean_i psi(X_i, Y_j)
#     Var(AUC_a − AUC_b) = w (S10 / m + S01 / n) wᵀ,  w = (1, −1),  S10 / S01 the 2×2 sample covariances
# (ddof 1) of the models' V10 / V01; z = (AUC_a − AUC_b) / sqrt(Var), two-sided normal p-value.
# Mid-ranks give the components directly: V10_i = (T_Z(X_i) − T_X(X_i)) / n and
# V01_j = 1 − (T_Z(Y_j) − T_Y(Y_j)) / m, T the mid-rank within the pooled sample Z or within X or Y.

__all__ += [
    "TABLE_COLUMNS",
    "bootstrap_ci_of_mean",
    "delong_test",
    "delong_test_ovr",
    "holm_adjust",
    "mcnemar_test",
    "paired_bootstrap_auc",
]

#: The columns of :func:`metrics_table` as ``(header, metric key)`` (for tables that add columns of their own).
TABLE_COLUMNS = _TABLE_COLUMNS

#: McNemar: the exact binomial test is used below this many discordant pairs, the chi-square form from it on.
MCNEMAR_EXACT_BELOW = 25


def _paired_scores(y_true: Any, scores_a: Any, scores_b: Any, ndim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    shape = "(n,)" if ndim == 1 else "(n, K)"
    if y.ndim != 1:
        raise ValueError(f"y_true: expected shape (n,), got {y.shape}")
    for name, s in (("scores_a", a), ("scores_b", b)):
        if s.ndim != ndim or s.shape[0] != y.shape[0]:
            raise ValueError(f"{name}: expected shape {shape} with n = {y.shape[0]} (as y_true), got {s.shape}")
        if not np.isfinite(s).all():
            raise ValueError(f"{name}: contains NaN or Inf")
    if a.shape != b.shape:
        raise ValueError(f"scores_b: expected the shape of scores_a {a.shape}, got {b.shape}")
    if y.dtype != np.bool_ and not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y_true: expected integer or boolean labels, got dtype {y.dtype}")
    return y, a, b


def _delong_core(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs ``(k,)`` and the covariance ``(k, k)`` of k models' AUCs from scores ``(k, m)`` and ``(k, n)``."""
    m, n = positives.shape[1], negatives.shape[1]
    tz = np.stack([midranks(row) for row in np.concatenate([positives, negatives], axis=1)])
    tx, ty = np.stack([midranks(row) for row in positives]), np.stack([midranks(row) for row in negatives])
    auc = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return auc, cov


def _delong_result(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    from scipy.stats import norm

    pos = y.astype(bool)
    m, n = int(pos.sum()), int((~pos).sum())
    out: dict[str, Any] = {"n_positive": m, "n_negative": n}
    if m < 2 or n < 2:
        nan = math.nan
        return {**out, "auc_a": nan, "auc_b": nan, "difference": nan, "se": nan, "z": nan, "p_value": nan}
    scores = np.stack([a, b])
    auc, cov = _delong_core(scores[:, pos], scores[:, ~pos])
    diff = float(auc[0] - auc[1])
    var = max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0)
    se = math.sqrt(var)
    if diff == 0.0:
        z, p = 0.0, 1.0
    elif se == 0.0:  # a difference with no estimated variance
        z, p = math.copysign(math.inf, diff), 0.0
    else:
        z = diff / se
        p = float(2 * norm.sf(abs(z)))
    return {**out, "auc_a": float(auc[0]), "auc_b": float(auc[1]), "difference": diff, "se": se, "z": z, "p_value": p}


def delong_test(y_true: Any, scores_a: Any, scores_b: Any) -> dict[str, Any]:
    """DeLong's test of two correlated binary AUCs on the same cases (mid-rank algorithm, O(n log n)).

    ``z = (AUC_a − AUC_b) / SE`` (variance: section comment above), two-sided normal p-value; ties count ½.
    Equal AUCs give ``p = 1``; a non-zero difference with zero variance ``p = 0``.
    ``y_true``: ``(n,)`` 1/True = positive, ≥ 2 of each; ``scores_a``, ``scores_b``: ``(n,)``, higher = more positive.
    Returns ``auc_a``, ``auc_b``, ``difference`` (a − b), ``se``, ``z``, ``p_value``, ``n_positive``, ``n_negative``.

    Example::

        >>> y = [0, 0, 1, 1, 0, 1, 0, 1]
        >>> r = delong_test(y, [0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.3, 0.6], [0.3, 0.2, 0.6, 0.7, 0.5, 0.4, 0.6, 0.3])
        >>> r["auc_a"], r["auc_b"], round(r["p_value"], 4)
        (0.9375, 0.6875, 0.3545)
    """
    y, a, b = _paired_scores(y_true, scores_a, scores_b, ndim=1)
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true: expected binary labels 0/1, got values {np.unique(y)[:6].tolist()}")
    r = _delong_result(y, a, b)
    if math.isnan(r["p_value"]):
        raise ValueError(
            f"y_true: DeLong's variance needs at least 2 positive and 2 negative cases, got "
            f"{r['n_positive']} and {r['n_negative']}"
        )
    return r


def delong_test_ovr(
    y_true: Any, probs_a: Any, probs_b: Any, class_names: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """:func:`delong_test` per class, one-vs-rest, on the class columns of two models' probabilities.
    ``probs_a``, ``probs_b``: ``(n, K)`` (any scores); ``class_names``: K names (default ``"0".."K-1"``). Returns
    class name → the :func:`delong_test` dict (NaN values with fewer than 2 cases in or out of the class).

    Example::

        >>> y = [0, 1, 2, 0, 1, 2, 0, 1]
        >>> pa = np.eye(3)[[0, 1, 2, 0, 2, 2, 1, 1]] * 0.7 + 0.1
        >>> r = delong_test_ovr(y, pa, np.full((8, 3), 1 / 3), ["a", "b", "c"])
        >>> round(r["a"]["auc_a"], 3), r["a"]["auc_b"]
        (0.833, 0.5)
    """
    y, a, b = _paired_scores(y_true, probs_a, probs_b, ndim=2)
    k = a.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"class_names: expected {k} names (one per column of the probabilities), got {len(names)}")
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"y_true: class indices must lie in [0, {k}), got range [{y.min()}, {y.max()}]")
    return {name: _delong_result(y == c, a[:, c], b[:, c]) for c, name in enumerate(names)}


def paired_bootstrap_auc(
    y_true: Any, probs_a: Any, probs_b: Any, n_bootstrap: int = 2000, seed: int = 0, ci: float = 0.95
) -> dict[str, Any]:
    """Paired bootstrap test of two models' macro one-vs-rest AUCs (as :func:`classification_metrics`).

    Both are scored on the same resamples (those of :func:`classification_metrics` for the seed): ``d* = AUC*_a −
    AUC*_b``; percentile CI of the difference; *(ours: Hall & Wilson's shifted null)* two-sided
    ``p = (1 + #{|d* − d| ≥ |d|}) / (B + 1)`` over the resamples where both are defined (identical models: 1).
    ``probs_a``, ``probs_b``: ``(n, K)``; ``n_bootstrap``, ``seed``, ``ci``: resamples B ≥ 1, their seed, the CI level.
    Returns ``auc_a``, ``auc_b``, ``difference``, ``ci`` (of the difference), ``p_value``, ``n_bootstrap`` (used).

    Example::

        >>> rng = np.random.default_rng(0); y = rng.integers(0, 3, 80)
        >>> pa = np.eye(3)[y] * 0.6 + rng.uniform(0, 0.4, (80, 3)); pa /= pa.sum(1, keepdims=True)
        >>> r = paired_bootstrap_auc(y, pa, np.full((80, 3), 1 / 3), n_bootstrap=200)
        >>> r["auc_b"], r["p_value"] < 0.01
        (0.5, True)
    """
    y, a, b = _paired_scores(y_true, probs_a, probs_b, ndim=2)
    k = a.shape[1]
    if k < 2:
        raise ValueError(f"probs_a: expected at least 2 classes on axis 1, got {k}")
    if y.size == 0 or y.min() < 0 or y.max() >= k:
        raise ValueError(f"y_true: expected class indices in [0, {k}) for n ≥ 1 cases")
    if not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap: expected an int ≥ 1, got {n_bootstrap!r}")
    ones = np.ones((1, len(y)))
    point = [float(_macro_auc(_weighted_ovr_auc(y, q, ones))[0]) for q in (a, b)]
    idx = _bootstrap_indices(len(y), n_bootstrap, seed)
    chunk = max(1, 2_000_000 // len(y))
    diffs = []
    for start in range(0, n_bootstrap, chunk):
        counts = _bootstrap_counts(idx[start : start + chunk])
        diffs.append(_macro_auc(_weighted_ovr_auc(y, a, counts)) - _macro_auc(_weighted_ovr_auc(y, b, counts)))
    d_star = np.concatenate(diffs)
    d_star = d_star[~np.isnan(d_star)]
    d = float(point[0] - point[1])
    lo, hi = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    if d_star.size == 0 or math.isnan(d):
        interval, p = [math.nan, math.nan], math.nan
    else:
        interval = [float(np.percentile(d_star, lo)), float(np.percentile(d_star, hi))]
        p = float((1 + np.count_nonzero(np.abs(d_star - d) >= abs(d))) / (d_star.size + 1))
    return {
        "auc_a": float(point[0]),
        "auc_b": float(point[1]),
        "difference": d,
        "ci": interval,
        "p_value": p,
        "n_bootstrap": int(d_star.size),
    }


def bootstrap_ci_of_mean(
    y_true: Any, probs: Any, n_bootstrap: int = 1000, seed: int = 0, ci: float = 0.95
) -> dict[str, list[float]]:
    """``{metric: [low, high]}``: percentile bootstrap CIs of the mean over S models (e.g. seeds) of each scalar metric.

    Each resample (those of :func:`classification_metrics` for the seed) is scored for every model and averaged
    (S = 1: ``classification_metrics(...)["ci"]``); a resample where a metric is undefined is left out for it.
    ``probs``: ``(S, n, K)``, S models on the same cases; ``n_bootstrap``, ``seed``, ``ci`` as above. Example::

        >>> rng = np.random.default_rng(0); y = rng.integers(0, 3, 40)
        >>> p = rng.dirichlet(np.ones(3), (2, 40))
        >>> lo, hi = bootstrap_ci_of_mean(y, p, n_bootstrap=200)["accuracy"]
        >>> bool(lo <= np.mean([(q.argmax(1) == y).mean() for q in p]) <= hi)
        True
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 3:
        raise ValueError(f"probs: expected shape (S, n, K), got {p.shape}")
    if not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap: expected an int ≥ 1, got {n_bootstrap!r}")
    y = _validate(y_true, p[0], None)[0]
    for q in p[1:]:
        _validate(y, q, None)
    return _bootstrap_ci(y, p, n_bootstrap, seed, ci)


def mcnemar_test(y_true: Any, pred_a: Any, pred_b: Any, exact: bool | None = None) -> dict[str, Any]:
    """McNemar's test of two models' accuracies on the same cases.

    ``b`` = cases a gets right and b wrong, ``c`` the reverse. Exact: ``p = min(1, 2·P[X ≤ min(b, c)])``,
    ``X ~ Bin(b + c, ½)``; chi-square (continuity-corrected): ``(|b − c| − 1)² / (b + c)``, 1 dof. *(ours)* Exact
    while ``b + c < MCNEMAR_EXACT_BELOW`` (25). No discordant pair: ``p = 1``.
    ``pred_a``, ``pred_b``: ``(n,)`` predicted classes; ``exact``: force exact (True) / chi-square (False), ``None`` as
    above. Returns ``accuracy_a``, ``accuracy_b``, ``b``, ``c``, ``statistic`` (b or χ²), ``p_value``, ``method``.

    Example::

        >>> r = mcnemar_test([0, 1, 1, 0, 1, 0, 1, 1], [0, 1, 1, 0, 1, 0, 0, 1], [1, 0, 1, 0, 0, 1, 0, 1])
        >>> r["b"], r["c"], r["method"], round(r["p_value"], 4)
        (4, 0, 'exact', 0.125)
    """
    from scipy.stats import binom, chi2

    y, a, b_pred = (np.asarray(v) for v in (y_true, pred_a, pred_b))
    for name, v in (("y_true", y), ("pred_a", a), ("pred_b", b_pred)):
        if v.ndim != 1 or v.shape[0] != y.shape[0]:
            raise ValueError(f"{name}: expected shape (n,) with n = {y.shape[0]} (as y_true), got {v.shape}")
        if v.dtype != np.bool_ and not np.issubdtype(v.dtype, np.integer):
            raise TypeError(f"{name}: expected integer class indices, got dtype {v.dtype}")
    if y.shape[0] == 0:
        raise ValueError("y_true: no cases (n = 0)")
    right_a, right_b = a == y, b_pred == y
    b, c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    use_exact = (b + c < MCNEMAR_EXACT_BELOW) if exact is None else bool(exact)
    if b + c == 0:
        stat, p = 0.0, 1.0
    elif use_exact:
        stat, p = float(b), float(min(1.0, 2 * binom.cdf(min(b, c), b + c, 0.5)))
    else:
        stat = (abs(b - c) - 1) ** 2 / (b + c)
        p = float(chi2.sf(stat, 1))
    return {
        "accuracy_a": float(right_a.mean()),
        "accuracy_b": float(right_b.mean()),
        "b": b,
        "c": c,
        "statistic": float(stat),
        "p_value": p,
        "method": "exact" if use_exact else "chi2",
    }


def holm_adjust(p_values: Any) -> np.ndarray:
    """Holm's step-down adjustment, in input order: ``p̃_(i) = min(1, max_{j ≤ i} (m − j + 1)·p_(j))``.

    ``p_(1) ≤ … ≤ p_(m)``: the defined p-values (NaN stays NaN, not counted in m); ``p̃ ≤ α`` controls the FWER at α.

    Args:
        p_values: ``(m,)`` p-values in [0, 1] (NaN allowed).

    Example::

        >>> holm_adjust([0.01, 0.04, 0.03, 0.005]).tolist()
        [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values: expected shape (m,), got {p.shape}")
    valid = ~np.isnan(p)
    if ((p[valid] < 0) | (p[valid] > 1)).any():
        raise ValueError(f"p_values: expected values in [0, 1], got range [{p[valid].min()}, {p[valid].max()}]")
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(valid)
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


__all__ += ["peak_hit_rates"]


def peak_hit_rates(maps: Any, masks: Any) -> dict[str, float]:
    """How often a map's maximum falls inside its own case's mask, against two baselines.

    Args:
        maps: ``(N, D, H, W)`` saliency maps, arrays or CPU tensors (e.g. one name's
            :attr:`spectral3d.gradcam.CAMResult.maps`), ``N >= 2``.
        masks: ``(N, D, H, W)`` booleans, the region that counts as a hit for each case (e.g. the
            lesion ROI, dilated by the tolerance you allow).

    Returns:
        ``{"hit": ..., "other_cases": ..., "random": ...}``: the share of cases whose map maximum
        lies in their own mask; the share of (case, other case) pairs whose maximum lies in the
        *other* case's mask — what any fixed spatial bias of the maps (towards the centre, the
        border, an organ) scores, so only maps that follow each case's lesion beat it; and the
        mean mask volume fraction — what a uniformly random maximum scores.

    Example::

        >>> masks = np.zeros((2, 4, 4, 4), dtype=bool)
        >>> masks[0, :2], masks[1, 2:] = True, True
        >>> maps = masks + 0.1 * np.random.default_rng(0).random((2, 4, 4, 4))
        >>> peak_hit_rates(maps, masks)
        {'hit': 1.0, 'other_cases': 0.0, 'random': 0.5}
    """
    maps_np, masks_np = np.asarray(maps), np.asarray(masks)
    if maps_np.ndim != 4 or masks_np.shape != maps_np.shape:
        raise ValueError(
            f"maps, masks: expected two arrays of one shape (N, D, H, W), got {maps_np.shape} and {masks_np.shape}"
        )
    if masks_np.dtype != np.bool_:
        raise TypeError(f"masks: expected booleans, got dtype {masks_np.dtype}")
    n = len(maps_np)
    if n < 2:
        raise ValueError(f"maps: expected at least 2 cases (the second baseline pairs cases), got {n}")
    peaks = [np.unravel_index(int(np.argmax(m)), m.shape) for m in maps_np]
    hits = np.array([[bool(masks_np[j][peaks[i]]) for j in range(n)] for i in range(n)])
    return {
        "hit": float(np.diag(hits).mean()),
        "other_cases": float(hits[~np.eye(n, dtype=bool)].mean()),
        "random": float(masks_np.reshape(n, -1).mean(1).mean()),
    }
