"""Paired statistics (DeLong, paired bootstrap of the macro AUC, McNemar, Holm) against independent derivations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, chi2, norm

from spectral3d.metrics import (
    SCALAR_METRICS,
    bootstrap_ci_of_mean,
    classification_metrics,
    delong_test,
    delong_test_ovr,
    holm_adjust,
    mcnemar_test,
    paired_bootstrap_auc,
)


def _delong_quadratic(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """DeLong (1988) from the structural components, the O(m·n) way: psi(X_i, Y_j) for every pair."""
    out = {}
    v10, v01 = [], []
    for name, s in (("a", a), ("b", b)):
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        out[f"auc_{name}"] = psi.mean()
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    m, n = len(v10[0]), len(v01[0])
    s10, s01 = np.cov(np.stack(v10)), np.cov(np.stack(v01))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    out["se"] = np.sqrt(var)
    out["z"] = (out["auc_a"] - out["auc_b"]) / out["se"]
    out["p_value"] = 2 * norm.sf(abs(out["z"]))
    return out


def _correlated_scores(rng: np.random.Generator, y: np.ndarray, shift_b: float = 0.0, decimals: int = 1):
    """Two correlated noisy scores of the same cases; rounding makes ties within and across classes."""
    e = rng.multivariate_normal([0, 0], [[1, 0.6], [0.6, 1]], size=y.shape)
    a = np.round(1.0 * y + e[..., 0], decimals)
    b = np.round((1.0 + shift_b) * y + e[..., 1], decimals)
    return a, b


@pytest.mark.parametrize("seed, n", [(0, 30), (1, 97), (2, 400)])
def test_delong_equals_the_quadratic_structural_components(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    a, b = _correlated_scores(rng, y, shift_b=0.3)
    assert len(np.unique(a)) < n  # ties are there
    got, ref = delong_test(y, a, b), _delong_quadratic(y, a, b)
    for key in ("auc_a", "auc_b", "se", "z", "p_value"):
        assert got[key] == pytest.approx(ref[key], abs=1e-10, rel=0), key
    assert got["difference"] == pytest.approx(ref["auc_a"] - ref["auc_b"], abs=1e-12)
    assert (got["n_positive"], got["n_negative"]) == (int(y.sum()), int((1 - y).sum()))


def test_delong_identical_or_identically_ranked_scores_give_p_one() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 50)
    a = np.round(rng.normal(size=50) + y, 1)
    for b in (a.copy(), 3 * a + 1, np.exp(a)):  # the same ranks, so the same AUC and components
        r = delong_test(y, a, b)
        assert r["difference"] == 0 and r["p_value"] == 1.0 and r["z"] == 0.0


def test_delong_p_values_are_calibrated_under_the_null() -> None:
    """Equal true AUCs (same signal, correlated noise, ties): rejection rate at 0.05 over 2000 draws."""
    rng = np.random.default_rng(2024)
    draws, n = 2000, 120
    y = (rng.random((draws, n)) < 0.5).astype(np.int64)
    a, b = _correlated_scores(rng, y)
    p = np.array([delong_test(y[i], a[i], b[i])["p_value"] for i in range(draws)])
    rate = float((p < 0.05).mean())
    assert 0.03 <= rate <= 0.07, rate
    # and it has power against a real difference
    a1, b1 = _correlated_scores(rng, y[:200], shift_b=1.0)
    assert np.mean([delong_test(y[i], a1[i], b1[i])["p_value"] < 0.05 for i in range(200)]) > 0.8


def test_delong_ovr_is_the_binary_test_per_class() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 90)
    y[:1] = 3  # class 3: one case only
    pa, pb = rng.dirichlet(np.ones(4), 90), rng.dirichlet(np.ones(4), 90)
    r = delong_test_ovr(y, pa, pb, ["a", "b", "c", "d"])
    for c, name in enumerate("abc"):
        ref = delong_test((y == c).astype(int), pa[:, c], pb[:, c])
        assert r[name] == pytest.approx(ref)
    assert np.isnan(r["d"]["p_value"]) and r["d"]["n_positive"] == 1


def test_paired_bootstrap_macro_auc() -> None:
    rng = np.random.default_rng(5)
    for k in (2, 4):
        y = rng.integers(0, k, 150)
        good = np.eye(k)[y] * 1.5 + rng.normal(size=(150, k))
        pa = np.exp(good) / np.exp(good).sum(1, keepdims=True)
        pb = rng.dirichlet(np.ones(k), 150)
        r = paired_bootstrap_auc(y, pa, pb, n_bootstrap=500, seed=1)
        assert r["auc_a"] == pytest.approx(classification_metrics(y, pa, n_bootstrap=0)["auc"], abs=1e-12)
        assert r["auc_b"] == pytest.approx(classification_metrics(y, pb, n_bootstrap=0)["auc"], abs=1e-12)
        assert r["p_value"] < 0.01 and r["ci"][0] > 0 and r["n_bootstrap"] == 500
        assert paired_bootstrap_auc(y, pa, pb, n_bootstrap=500, seed=1) == r  # seeded
        same = paired_bootstrap_auc(y, pa, pa.copy(), n_bootstrap=200)
        assert same["p_value"] == 1.0 and same["difference"] == 0 and same["ci"] == [0.0, 0.0]
    # a class absent from a resample (or from y) drops out of that resample's mean, as in classification_metrics
    y = np.array([0] * 20 + [1] * 20 + [2])
    p = rng.dirichlet(np.ones(3), len(y))
    assert paired_bootstrap_auc(y, p, p[::-1].copy(), n_bootstrap=50)["auc_a"] == pytest.approx(
        classification_metrics(y, p, n_bootstrap=0)["auc"]
    )


def test_bootstrap_ci_of_the_mean_over_seeds() -> None:
    """One model: ``classification_metrics``' CI; two: the percentile of the per-resample mean, resample by resample."""
    rng = np.random.default_rng(8)
    y = rng.integers(0, 3, 40)
    probs = rng.dirichlet(np.ones(3), (2, 40))
    probs[:, :, 0] += 0.3 * (y == 0)
    probs /= probs.sum(2, keepdims=True)
    assert (
        bootstrap_ci_of_mean(y, probs[:1], n_bootstrap=300, seed=4)
        == classification_metrics(y, probs[0], n_bootstrap=300, seed=4)["ci"]
    )
    got = bootstrap_ci_of_mean(y, probs, n_bootstrap=60, seed=2)
    idx = np.random.default_rng(2).integers(0, 40, size=(60, 40))  # the resamples classification_metrics draws
    means = {m: [] for m in SCALAR_METRICS}
    for rows in idx:
        per_seed = [classification_metrics(y[rows], p[rows], n_bootstrap=0) for p in probs]
        for m in SCALAR_METRICS:
            means[m].append(np.mean([r[m] for r in per_seed]))
    for m in SCALAR_METRICS:
        v = np.array(means[m])
        v = v[~np.isnan(v)]
        np.testing.assert_allclose(got[m], np.percentile(v, [2.5, 97.5]), rtol=0, atol=1e-12, err_msg=m)


def test_mcnemar_matches_scipy_binomtest_and_the_chi_square_form() -> None:
    rng = np.random.default_rng(6)
    for n, flip in ((20, 0.2), (40, 0.3), (300, 0.4)):
        y = rng.integers(0, 3, n)
        pa = np.where(rng.random(n) < flip, rng.integers(0, 3, n), y)
        pb = np.where(rng.random(n) < flip + 0.1, rng.integers(0, 3, n), y)
        right_a, right_b = pa == y, pb == y
        b, c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
        exact = mcnemar_test(y, pa, pb, exact=True)
        assert (exact["b"], exact["c"], exact["method"]) == (b, c, "exact")
        assert exact["p_value"] == pytest.approx(binomtest(b, b + c, 0.5).pvalue, abs=1e-12)
        chi = mcnemar_test(y, pa, pb, exact=False)
        assert chi["method"] == "chi2" and chi["p_value"] == pytest.approx(chi2.sf((abs(b - c) - 1) ** 2 / (b + c), 1))
        assert mcnemar_test(y, pa, pb)["method"] == ("exact" if b + c < 25 else "chi2")
        assert exact["accuracy_a"] == pytest.approx(right_a.mean())
    assert mcnemar_test([0, 1, 1], [0, 1, 0], [0, 1, 0])["p_value"] == 1.0  # no discordant case


def test_holm_adjust_is_holms_step_down_procedure() -> None:
    np.testing.assert_allclose(holm_adjust([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(7)
    for _ in range(50):
        p = rng.random(8) ** 3
        adj = holm_adjust(p)
        for alpha in (0.01, 0.05, 0.1):
            # Holm: walk the sorted p-values, reject while p_(j) <= alpha / (m - j + 1)
            rejected = np.zeros(8, bool)
            for j, i in enumerate(np.argsort(p)):
                if p[i] > alpha / (8 - j):
                    break
                rejected[i] = True
            np.testing.assert_array_equal(adj <= alpha, rejected)
    with_nan = holm_adjust([0.02, np.nan, 0.01])
    assert np.isnan(with_nan[1]) and with_nan[[0, 2]].tolist() == [0.02, 0.02]


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: delong_test([0, 1, 1], [0.1, 0.2], [0.1, 0.2, 0.3]), ValueError, r"scores_a: expected shape \(n,\)"),
        (lambda: delong_test([0, 1, 2, 1], [0.1] * 4, [0.2] * 4), ValueError, "y_true: expected binary"),
        (lambda: delong_test([0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], [0.1] * 4), ValueError, "at least 2 positive"),
        (lambda: delong_test([0, 1], [0.1, np.nan], [0.1, 0.2]), ValueError, "scores_a: contains NaN"),
        (lambda: delong_test_ovr([0, 1], np.eye(2), np.eye(3)[:2]), ValueError, "scores_b: expected the shape"),
        (lambda: paired_bootstrap_auc([0, 1], np.eye(2), np.eye(2), n_bootstrap=0), ValueError, "n_bootstrap"),
        (lambda: mcnemar_test([0, 1], [0, 1, 1], [0, 1]), ValueError, r"pred_a: expected shape \(n,\)"),
        (lambda: mcnemar_test([0, 1], [0.5, 1], [0, 1]), TypeError, "pred_a: expected integer"),
        (lambda: holm_adjust([[0.1]]), ValueError, r"p_values: expected shape \(m,\)"),
        (lambda: holm_adjust([1.2]), ValueError, r"p_values: expected values in \[0, 1\]"),
    ],
)
def test_bad_input_names_the_argument(call, err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        call()
