"""Paper metrics: properties and independent derivations, plus bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from spectral3d.metrics import classification_metrics, metrics_table


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
