"""Paper metrics: properties and independent derivations, scikit-learn as the reference, plus bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn import metrics as skm
from sklearn.metrics import roc_auc_score

from spectral3d.metrics import (
    SCALAR_METRICS,
    _bootstrap_indices,
    binary_auc,
    classification_metrics,
    metrics_table,
    midranks,
)


def _random_case(n: int = 60, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


def test_weighted_sensitivity_equals_accuracy_as_in_the_paper() -> None:
    y, p = _random_case()
    m = classification_metrics(y, p, n_bootstrap=0)
    assert m["sensitivity"] == pytest.approx(m["accuracy"])
    assert m["sensitivity_macro"] != pytest.approx(m["accuracy"])  # unbalanced supports differ


def test_specificity_from_the_confusion_matrix_by_hand() -> None:
    y, p = _random_case(seed=1)
    m = classification_metrics(y, p, n_bootstrap=0)
    cm = np.array(m["confusion_matrix"])
    total = cm.sum()
    spec = []
    for c in range(cm.shape[0]):
        fp = cm[:, c].sum() - cm[c, c]
        tn = total - cm[c, :].sum() - fp
        spec.append(tn / (tn + fp))
    support = cm.sum(1)
    assert m["specificity"] == pytest.approx(float((np.array(spec) * support).sum() / support.sum()))
    assert m["specificity_macro"] == pytest.approx(float(np.mean(spec)))


def test_auc_matches_sklearn_ovr_macro_and_binary() -> None:
    y, p = _random_case(seed=2)
    m = classification_metrics(y, p, n_bootstrap=0)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    yb, pb = _random_case(k=2, seed=3)
    mb = classification_metrics(yb, pb, n_bootstrap=0)
    assert mb["auc"] == pytest.approx(roc_auc_score(yb, pb[:, 1]))


def test_topk_and_absent_class() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    m = classification_metrics(y, p, class_names=["a", "b", "c"], n_bootstrap=0)
    assert m["accuracy"] == pytest.approx(0.25)
    assert m["top2_accuracy"] == pytest.approx(0.75)
    assert m["top3_accuracy"] == pytest.approx(1.0)
    assert m["absent_classes"] == ["c"] and np.isnan(m["per_class_auc"]["c"])


def test_bootstrap_ci_brackets_the_estimate_and_is_seeded() -> None:
    y, p = _random_case(n=80, seed=4)
    a = classification_metrics(y, p, n_bootstrap=100, seed=7)
    b = classification_metrics(y, p, n_bootstrap=100, seed=7)
    assert a["ci"] == b["ci"]
    for key in ("accuracy", "auc", "f1"):
        lo, hi = a["ci"][key]
        assert lo <= a[key] <= hi and hi - lo > 0


def test_table_has_paper_columns() -> None:
    y, p = _random_case(seed=5)
    table = metrics_table({"DeSamba": classification_metrics(y, p, n_bootstrap=20)}, with_ci=True)
    assert table.splitlines()[0].startswith("| Model | ACC | Spe | Sen | P | F1 | AUC")
    assert "DeSamba" in table and "[" in table


@pytest.mark.parametrize(
    ("y", "p", "err", "match"),
    [
        (np.array([0, 1]), np.array([[0.5, 0.5]]), ValueError, "probs: expected shape"),
        (np.array([0.0, 1.0]), np.array([[0.5, 0.5], [0.5, 0.5]]), TypeError, "integer class indices"),
        (np.array([0, 2]), np.array([[0.5, 0.5], [0.5, 0.5]]), ValueError, r"\[0, 2\)"),
        (np.array([0, 1]), np.array([[2.0, -1.0], [0.5, 0.2]]), ValueError, "sum to 1"),
    ],
)
def test_bad_input(y: np.ndarray, p: np.ndarray, err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        classification_metrics(y, p, n_bootstrap=0)


def _tied_case(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities drawn from a palette of 5 rows: many exact ties in every column."""
    rng = np.random.default_rng(seed)
    palette = rng.dirichlet(np.ones(k), size=5)
    palette[0] = palette[1][::-1]
    palette[2] = 1.0 / k  # a row tied across all classes: argmax and top-k tie rules
    return rng.integers(0, k, n), palette[rng.integers(0, 5, n)]


def _sklearn_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The scalar metrics from scikit-learn (the reference the NumPy code is checked against)."""
    k = p.shape[1]
    labels = np.arange(k)
    pred = p.argmax(1)
    ref = {"accuracy": skm.accuracy_score(y, pred)}
    for avg, suffix in (("weighted", ""), ("macro", "_macro")):
        prec, rec, f1, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=avg, zero_division=0)
        ref.update({f"precision{suffix}": prec, f"sensitivity{suffix}": rec, f"f1{suffix}": f1})
    mcm = skm.multilabel_confusion_matrix(y, pred, labels=labels)
    spec = np.array([tn / (tn + fp) if tn + fp else 0.0 for (tn, fp), _ in mcm])
    support = np.bincount(y, minlength=k)
    ref["specificity"] = (spec * support).sum() / support.sum()
    ref["specificity_macro"] = spec.mean()
    aucs = [skm.roc_auc_score(y == c, p[:, c]) for c in labels if 0 < (y == c).sum() < len(y)]
    ref["auc"] = skm.roc_auc_score(y, p[:, 1]) if k == 2 else float(np.mean(aucs))
    for top in (2, 3):
        ref[f"top{top}_accuracy"] = skm.top_k_accuracy_score(y, p, k=top, labels=labels) if top < k else 1.0
    return ref


@pytest.mark.parametrize(("n", "k", "seed"), [(40, 2, 0), (57, 3, 1), (90, 6, 2), (12, 6, 3)])
def test_every_scalar_matches_sklearn_with_ties(n: int, k: int, seed: int) -> None:
    y, p = _tied_case(n, k, seed)
    m = classification_metrics(y, p, n_bootstrap=0)
    ref = _sklearn_metrics(y, p)
    for name in SCALAR_METRICS:
        assert m[name] == pytest.approx(ref[name], abs=1e-12), name
    assert m["confusion_matrix"] == skm.confusion_matrix(y, p.argmax(1), labels=np.arange(k)).tolist()


def test_binary_auc_and_midranks_match_sklearn_and_scipy_with_ties() -> None:
    rng = np.random.default_rng(5)
    for n in (2, 7, 300):
        score = rng.integers(0, 4, n).astype(float)  # heavy ties
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        np.testing.assert_array_equal(midranks(score), rankdata(score))
        assert binary_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert math.isnan(binary_auc([1, 1], [0.2, 0.3]))
    with pytest.raises(ValueError, match="score"):
        binary_auc([0, 1], [0.1, 0.2, 0.3])


def test_vectorised_bootstrap_equals_the_loop_over_resamples() -> None:
    """The reference: each resample's metrics computed on its own, then the same percentiles."""
    y, p = _tied_case(30, 3, seed=6)
    n_boot = 60
    fast = classification_metrics(y, p, n_bootstrap=n_boot, seed=11)["ci"]
    samples: dict[str, list[float]] = {m: [] for m in SCALAR_METRICS}
    for idx in _bootstrap_indices(len(y), n_boot, 11):
        ref = classification_metrics(y[idx], p[idx], n_bootstrap=0)
        for m in SCALAR_METRICS:
            if not math.isnan(ref[m]):
                samples[m].append(ref[m])
    for m in SCALAR_METRICS:
        expected = [np.percentile(samples[m], 2.5), np.percentile(samples[m], 97.5)]
        assert fast[m] == pytest.approx(expected, abs=1e-12), m


def test_bootstrap_ci_of_a_metric_undefined_in_every_resample_is_nan() -> None:
    y = np.array([0, 0, 0])
    p = np.array([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8]])
    m = classification_metrics(y, p, n_bootstrap=10)
    assert math.isnan(m["auc"]) and all(math.isnan(v) for v in m["ci"]["auc"])
    assert m["ci"]["accuracy"][0] <= m["accuracy"] <= m["ci"]["accuracy"][1]
