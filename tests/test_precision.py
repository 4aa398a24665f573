"""Precision and robustness of the ReLU engine against exact references."""

import numpy as np
import pytest

import ntk_infinite as nk
from naive import mp_relu_kernels, naive_kernels
from tolerances import COLLINEAR_RTOL, DEEP_DIAG_RTOL, DIAG_RTOL, NAIVE_RTOL, ULP_RTOL

ARCH = nk.serial(nk.Dense(w_std=1.5, b_std=0.1), nk.ReLU(), nk.Dense(w_std=1.5, b_std=0.1), nk.ReLU(), nk.Dense(w_std=1.5, b_std=0.1))
KERNEL = nk.compile(ARCH)


def exact_relu_diagonal(arch, X):
    """The diagonal recursion written out: for ReLU, T(q, q, q) = q/2 and Ṫ(q, q, q) = 1/2."""
    q = np.einsum("ij,ij->i", X, X) / X.shape[1]
    t = np.zeros_like(q)
    for layer in arch:
        if isinstance(layer, nk.Dense):
            q = layer.w_std**2 * q + layer.b_std**2
            t = layer.w_std**2 * t + q
        elif isinstance(layer, nk.ReLU):
            q, t = q / 2, t / 2
    return q, t


@pytest.fixture(scope="module")
def X():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 7)) * rng.uniform(0.1, 10, size=(40, 1))


def test_diagonal_symmetric_call_is_exact(X):
    q, t = exact_relu_diagonal(ARCH, X)
    k = KERNEL(X)
    np.testing.assert_allclose(np.diag(k.nngp), q, rtol=DIAG_RTOL, atol=0)
    np.testing.assert_allclose(np.diag(k.ntk), t, rtol=DIAG_RTOL, atol=0)
    d = KERNEL.diag(X)
    np.testing.assert_allclose(d.nngp, q, rtol=DIAG_RTOL, atol=0)
    np.testing.assert_allclose(d.ntk, t, rtol=DIAG_RTOL, atol=0)


def test_diagonal_identical_rows_as_x2_is_exact(X):
    q, t = exact_relu_diagonal(ARCH, X)
    k = KERNEL(X, X.copy())
    np.testing.assert_allclose(np.diag(k.nngp), q, rtol=DIAG_RTOL, atol=0)
    np.testing.assert_allclose(np.diag(k.ntk), t, rtol=DIAG_RTOL, atol=0)


def test_matches_naive_recursion(X):
    S, T = naive_kernels(ARCH, X[:12], X[20:31])
    k = KERNEL(X[:12], X[20:31])
    np.testing.assert_allclose(k.nngp, S, rtol=NAIVE_RTOL, atol=0)
    np.testing.assert_allclose(k.ntk, T, rtol=NAIVE_RTOL, atol=0)


@pytest.mark.parametrize("kind", ["near-duplicate", "antipodal", "identical", "scaled"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_collinear_pairs_match_mpmath(kind, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=9)
    x2 = {"near-duplicate": x * (1 + 1e-9), "antipodal": -x, "identical": x.copy(), "scaled": 3.0 * x}[kind]
    for arch in (ARCH, nk.serial(nk.Dense(w_std=2.0**0.5, b_std=0.0), nk.ReLU(), nk.Dense(w_std=1.0, b_std=0.3), nk.ReLU(), nk.Dense(w_std=1.0, b_std=0.3))):
        k = nk.compile(arch)(x[None, :], x2[None, :])
        s_ref, t_ref = mp_relu_kernels(arch, x, x2)
        np.testing.assert_allclose(k.nngp[0, 0], s_ref, rtol=COLLINEAR_RTOL, atol=1e-300)
        np.testing.assert_allclose(k.ntk[0, 0], t_ref, rtol=COLLINEAR_RTOL, atol=1e-300)


def test_near_duplicates_need_the_stable_path():
    """The naive float recursion (arccos of a rounded ρ) misses the bound the engine meets."""
    rng = np.random.default_rng(5)
    worst_naive = 0.0
    for _ in range(5):
        x = rng.normal(size=9)
        x2 = x * (1 + 1e-9)
        _, t_naive = naive_kernels(ARCH, x[None], x2[None])
        _, t_ref = mp_relu_kernels(ARCH, x, x2)
        worst_naive = max(worst_naive, abs(t_naive[0, 0] - t_ref) / abs(t_ref))
    assert worst_naive > COLLINEAR_RTOL  # so the mpmath test above can fail


def test_zero_input_without_bias_is_finite():
    arch = nk.serial(nk.Dense(w_std=1.5, b_std=0.0), nk.ReLU(), nk.Dense(w_std=1.5, b_std=0.0), nk.ReLU(), nk.Dense(w_std=1.5, b_std=0.0))
    X = np.array([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    k = nk.compile(arch)(X)
    assert np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all()
    # The limit: a zero input stays exactly zero through bias-free layers.
    np.testing.assert_array_equal(k.nngp[0], 0.0)
    np.testing.assert_array_equal(k.ntk[0], 0.0)
    S, T = naive_kernels(arch, X)
    np.testing.assert_allclose(k.nngp, S, rtol=NAIVE_RTOL, atol=0)
    np.testing.assert_allclose(k.ntk, T, rtol=NAIVE_RTOL, atol=0)


def test_depth_500_is_finite_with_exact_diagonal():
    depth = 500
    arch = nk.serial(*[nk.Dense(w_std=2.0**0.5, b_std=0.0), nk.ReLU()] * depth, nk.Dense(w_std=2.0**0.5, b_std=0.0))
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6, 5))
    X[5] = X[0] * (1 + 1e-9)
    k = nk.compile(arch)(X)
    assert np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all()
    q, t = exact_relu_diagonal(arch, X)
    np.testing.assert_allclose(np.diag(k.nngp), q, rtol=DIAG_RTOL, atol=0)
    np.testing.assert_allclose(np.diag(k.ntk), t, rtol=DIAG_RTOL, atol=0)
    # With w² = 2 and no bias the NTK diagonal grows linearly: Θ_L(x, x) = (L + 1) q0.
    q0 = np.einsum("ij,ij->i", X, X) / 5
    np.testing.assert_allclose(np.diag(k.ntk), (depth + 1) * q0 * 2.0, rtol=DEEP_DIAG_RTOL, atol=0)
    # Deep ReLU networks map every pair towards perfect correlation, never beyond.
    corr = k.nngp / np.sqrt(np.outer(np.diag(k.nngp), np.diag(k.nngp)))
    assert np.all(corr <= 1 + ULP_RTOL)


def test_huge_scales_do_not_overflow_intermediates():
    arch = nk.serial(*[nk.Dense(w_std=3.0, b_std=0.5), nk.ReLU()] * 60, nk.Dense(w_std=3.0, b_std=0.5))
    X = np.random.default_rng(4).normal(size=(5, 3))
    k = nk.compile(arch)(X)
    assert np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all()
    q, t = exact_relu_diagonal(arch, X)
    np.testing.assert_allclose(np.diag(k.nngp), q, rtol=DIAG_RTOL, atol=0)
