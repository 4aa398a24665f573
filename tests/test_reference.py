"""The engine against adaptive 2-D quadrature (scipy.integrate) of the defining expectations."""

import math
import warnings

import numpy as np
import pytest

import ntk_infinite as nk
from naive import dblquad_T, dblquad_Tdot, naive_kernels
from tolerances import DBLQUAD_ATOL, DBLQUAD_RTOL, ROUTE_TOL, SERIES_NETWORK_RTOL

# (q1, q2, rho): unequal variances, both signs, near the ends.
GRID = [(1.0, 1.0, 0.3), (0.5, 2.0, -0.7), (3.0, 0.2, 0.95), (1.2, 1.2, -0.999), (0.7, 1.9, 0.0), (2.0, 0.5, 0.9999)]


def inputs_for(q1, q2, rho):
    """Two 2-D inputs with Σ⁰ = [[q1, c], [c, q2]], c = ρ√(q1 q2) (Σ⁰ = x·x'/d, d = 2)."""
    x1 = math.sqrt(2 * q1) * np.array([1.0, 0.0])
    x2 = math.sqrt(2 * q2) * np.array([rho, math.sqrt(1 - rho * rho)])
    return x1[None, :], x2[None, :]


def one_layer(activation):
    """Dense(1, 0) > φ > Dense(1, 0): Σ = T(Σ⁰), Θ = Ṫ(Σ⁰)·Σ⁰ + T(Σ⁰)."""
    return nk.compile(nk.serial(nk.Dense(w_std=1.0, b_std=0.0), activation, nk.Dense(w_std=1.0, b_std=0.0)))


@pytest.mark.parametrize("q1, q2, rho", GRID)
def test_relu_closed_form_vs_dblquad(q1, q2, rho):
    relu = nk.ReLU()
    k = one_layer(relu)(*inputs_for(q1, q2, rho))
    c = rho * math.sqrt(q1 * q2)
    T = dblquad_T(relu.fn, q1, q2, c)
    Td = dblquad_Tdot(relu.dfn, q1, q2, c)
    np.testing.assert_allclose(k.nngp[0, 0], T, rtol=DBLQUAD_RTOL, atol=DBLQUAD_ATOL)
    np.testing.assert_allclose(k.ntk[0, 0], Td * c + T, rtol=DBLQUAD_RTOL, atol=DBLQUAD_ATOL)


@pytest.fixture(scope="module")
def tanh_kernel():
    return one_layer(nk.Activation(np.tanh, name="tanh"))


@pytest.mark.parametrize("q1, q2, rho", GRID[:4])
def test_generic_route_tanh_within_reported_accuracy(tanh_kernel, q1, q2, rho):
    k = tanh_kernel(*inputs_for(q1, q2, rho))
    est = k.error_estimate
    assert 0 < est <= tanh_kernel.tol  # smooth activation: the requested 1e-10 is met
    c = rho * math.sqrt(q1 * q2)
    T = dblquad_T(np.tanh, q1, q2, c)
    Td = dblquad_Tdot(lambda x: 1 / np.cosh(x) ** 2, q1, q2, c)
    scale_T = math.sqrt(dblquad_T(np.tanh, q1, q1, q1) * dblquad_T(np.tanh, q2, q2, q2))
    # The estimate bounds the relative truncation error of each series (Cauchy–Schwarz);
    # dblquad contributes ~1e-12.
    assert abs(k.nngp[0, 0] - T) <= est * scale_T + DBLQUAD_ATOL
    assert abs((k.ntk[0, 0] - k.nngp[0, 0]) / c - Td) <= est * 2 + DBLQUAD_ATOL


def test_generic_route_on_relu_reports_its_accuracy():
    relu_callable = nk.Activation(lambda x: np.maximum(x, 0.0), name="relu_fn")
    kernel = one_layer(relu_callable)
    X1, X2 = inputs_for(1.0, 2.0, 0.6)
    with pytest.warns(nk.AccuracyWarning, match=r"reached a relative error of about .* above the requested 1e-10"):
        k = kernel(X1, X2)
    est = k.error_estimate
    assert 1e-10 < est < 0.1  # a kink makes the series converge algebraically
    c = 0.6 * math.sqrt(2.0)
    T = dblquad_T(nk.ReLU().fn, 1.0, 2.0, c)
    Td = dblquad_Tdot(nk.ReLU().dfn, 1.0, 2.0, c)
    assert abs(k.nngp[0, 0] - T) <= est * math.sqrt(0.5 * 1.0) + 1e-11
    assert abs((k.ntk[0, 0] - k.nngp[0, 0]) / c - Td) <= 2 * est


@pytest.mark.slow  # one layer of the same route against dblquad: test_generic_route_tanh_within_reported_accuracy
def test_generic_tanh_network_matches_naive_dblquad_recursion():
    arch = nk.serial(nk.Dense(w_std=1.3, b_std=0.2), nk.Activation(np.tanh, name="tanh"), nk.Dense(w_std=1.3, b_std=0.2),
                     nk.Activation(np.tanh, name="tanh"), nk.Dense(w_std=1.3, b_std=0.2))
    X = np.random.default_rng(7).normal(size=(2, 4))
    kernel = nk.compile(arch)
    k = kernel(X[:1], X[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        S, T = naive_kernels(arch, X[:1], X[1:])
    np.testing.assert_allclose(k.nngp, S, rtol=SERIES_NETWORK_RTOL, atol=DBLQUAD_ATOL)
    np.testing.assert_allclose(k.ntk, T, rtol=SERIES_NETWORK_RTOL, atol=DBLQUAD_ATOL)


def _sech2(x):
    return 1 / np.cosh(x) ** 2


def _cos_cos(q1, q2, c):
    """E[cos u cos v] = ½(E cos(u−v) + E cos(u+v)) = e^{−(q1+q2)/2} cosh c, as E cos w = e^{−Var w/2}."""
    return math.exp(-0.5 * (q1 + q2)) * math.cosh(c)


@pytest.mark.parametrize("q1, q2, rho", GRID[:3])
def test_explicit_derivative_is_used(q1, q2, rho):
    # dfn = cos is deliberately not tanh's derivative, nor a multiple of it (the series
    # rescales Ṫ's coefficients to E[dfn²], which would hide a constant factor): a kernel
    # that derived Ṫ from fn (Stein's lemma) instead of the given dfn gives a different Θ.
    kernel = one_layer(nk.Activation(np.tanh, dfn=np.cos, name="tanh_with_cos_dfn"))
    k = kernel(*inputs_for(q1, q2, rho))
    c = rho * math.sqrt(q1 * q2)
    T = dblquad_T(np.tanh, q1, q2, c)
    Td_given = _cos_cos(q1, q2, c)
    Td_true = dblquad_Tdot(_sech2, q1, q2, c)
    # The route's promise: each series within ROUTE_TOL of √(T₁₁T₂₂) (resp. √(Ṫ₁₁Ṫ₂₂)).
    scale_T = math.sqrt(dblquad_T(np.tanh, q1, q1, q1) * dblquad_T(np.tanh, q2, q2, q2))
    scale_Td = math.sqrt(_cos_cos(q1, q1, q1) * _cos_cos(q2, q2, q2))
    atol = ROUTE_TOL * (scale_T + abs(c) * scale_Td) + DBLQUAD_ATOL
    assert abs(Td_given - Td_true) * abs(c) > 1e3 * atol  # the case tells the two derivatives apart
    assert abs(k.ntk[0, 0] - (Td_given * c + T)) <= atol
    assert abs(k.nngp[0, 0] - T) <= ROUTE_TOL * scale_T + DBLQUAD_ATOL
