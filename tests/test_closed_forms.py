"""Duals of the activations against independent high-precision references.

* Closed forms (arc-cosine, Wick polynomials, sympy-derived erf/GELU/sinusoid/Gaussian/exp):
  the generated tile functions on a grid of (q₁, q₂, ρ) that includes ρ = ±1 and
  ρ = ±(1 − 1e-12), against :func:`naive.mp_dual` (mpmath, 20 digits); then whole networks
  of depth >= 2 against :func:`naive.mp_kernels`.
* The Hermite series against adaptive 2-D quadrature, its truncation and its warning.
* The kink-aware quadrature against closed forms and mpmath.
* Activations given as sympy expressions.
"""

import math
import warnings

import mpmath as mp
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import ntk_infinite as nk
from naive import dblquad_T, dblquad_Tdot, mp_dual, mp_dual_fast, mp_kernels
from ntk_infinite.compiler.engine_source import tile_module
from ntk_infinite.compiler.duals import resolve_dual
from ntk_infinite.compiler.duals.series import SeriesDual
from tolerances import (CLOSED_FORM_RTOL, EXACT_ATOL, EXACT_RTOL, NEAR_PARALLEL_RTOL, NETWORK_RTOL, PSD_ATOL,
                        QUADRATURE_RTOL, ROUNDING_FLOOR, ROUNDING_RTOL, SERIES_RTOL, ULP_RTOL)

x = sp.Symbol("x")

CLOSED_FORMS = [
    ("relu", nk.ReLU()),
    ("leaky_relu", nk.LeakyReLU(0.2)),
    ("abrelu", nk.ABReLU(-0.5, 1.5)),
    ("abs", nk.Abs()),
    ("step", nk.Step()),
    ("sign", nk.Sign()),
    ("rectified_monomial_2", nk.RectifiedMonomial(2)),
    ("rectified_monomial_3", nk.RectifiedMonomial(3)),
    ("monomial_3", nk.Monomial(3)),
    ("polynomial", nk.Polynomial((0.3, -1.0, 0.5, 0.2))),
    ("erf", nk.Erf(1.2, 1.5, 0.2)),
    ("gelu", nk.GELU()),
    ("sin", nk.Sin(0.8, 1.3, 0.4)),
    ("cos", nk.Cos(1.1, 0.7, 0.2)),
    ("rbf", nk.RBF(0.6)),
    ("gaussian", nk.Gaussian(1.3, -0.7)),
    ("exp", nk.Exp(0.9, 0.4)),
]

#: The grid test of CI (the slow test runs every case on a larger grid): order 3 needs the
#: slow quadrature reference.
QUICK = [case for case in CLOSED_FORMS if case[0] != "rectified_monomial_3"]



def run_tile(dual, sa, sb, rho, sn2):
    """The dual's generated tile function on one row of pairs (√q₁ = sa; √q₂, ρ, sin²θ per
    column), exactly as the engine calls it. Returns (T, Ṫ, ρ', sin²θ')."""
    name = "tile_" + dual.key.replace("-", "_")
    fn = getattr(tile_module(dual.tile_source(name), name), name)  # the module the engines import
    sb = np.asarray(sb, dtype=float)
    q = np.concatenate([[sa * sa], sb * sb])
    res = dual.point(q)
    so = np.sqrt(res.q_out)
    data = res.data if res.data is not None else np.zeros((1, q.size))
    prm = np.asarray(dual.params if res.params is None else res.params, dtype=float)
    r = np.array([rho], dtype=float)
    s = np.array([sn2], dtype=float)
    t = np.ones_like(r)
    fn(r, s, t, 0, 0, np.array([sa]), sb, so[:1], so[1:], np.ascontiguousarray(data[:, :1]),
       np.ascontiguousarray(data[:, 1:]), prm if prm.size else np.zeros(1), True)
    return r[0] * so[0] * so[1:], t[0], r[0], s[0]


def grid_state(thetas):
    """(ρ, sin²θ) as the engine carries them, from exact angles."""
    with mp.workdps(30):
        return (np.array([float(mp.cos(th)) for th in thetas]), np.array([float(mp.sin(th) ** 2) for th in thetas]))


def diagonal_scales(layer, sa, sb):
    """√(T₁₁T₂₂) and √(Ṫ₁₁Ṫ₂₂) in mpmath (the scales of the absolute rounding floor)."""
    (A, dA), (B, dB) = (mp_dual_fast(layer, v * v, v * v, v * v) for v in (sa, sb))
    return float(mp.sqrt(A * B)), float(mp.sqrt(abs(dA * dB)))


def reference_at(layer, sa, sb, rho, sn2):
    """mpmath (T, Ṫ) at the pair state the engine sees (θ from its ρ and sin²θ)."""
    with mp.workdps(30):
        q1, q2 = mp.mpf(sa) ** 2, mp.mpf(sb) ** 2
        th = mp.atan2(mp.sqrt(mp.mpf(sn2)), mp.mpf(rho))
        T, Td = mp_dual_fast(layer, q1, q2, mp.cos(th) * mp.sqrt(q1 * q2))
        return float(T), float(Td)


def assert_close_to_reference(value, ref, scale, rtol, what):
    assert abs(value - ref) <= rtol * abs(ref) + ROUNDING_FLOOR * scale, (
        f"{what}: {value!r} vs reference {ref!r} (relative {abs(value - ref) / max(abs(ref), 1e-300):.2e})")


EXTREME = math.acos(1 - 1e-12)
QUICK_THETAS = [0.0, EXTREME, math.acos(0.6), math.acos(-0.6), math.pi - EXTREME, math.pi]
FULL_THETAS = QUICK_THETAS + [1e-9, 1e-4, 0.31, math.pi / 2, math.pi - 0.31, math.pi - 1e-4]


def check_grid(layer, sa, sbs, thetas):
    dual = resolve_dual(layer, 1e-10)
    for sb in sbs:
        rho, sn2 = grid_state(thetas)
        T, Td, _, _ = run_tile(dual, sa, np.full(len(thetas), sb), rho, sn2)
        assert np.isfinite(T).all() and np.isfinite(Td).all()
        scale, dscale = diagonal_scales(layer, sa, sb)
        for j in range(len(thetas)):
            ref, refd = reference_at(layer, sa, sb, rho[j], sn2[j])
            assert_close_to_reference(T[j], ref, scale, CLOSED_FORM_RTOL, f"T at theta={thetas[j]!r}, sb={sb}")
            assert_close_to_reference(Td[j], refd, dscale, CLOSED_FORM_RTOL, f"Tdot at theta={thetas[j]!r}, sb={sb}")


@pytest.mark.parametrize("case_id, layer", QUICK, ids=[c[0] for c in QUICK])
def test_closed_form_matches_mpmath_on_the_grid(case_id, layer):
    check_grid(layer, 0.8, [1.3], QUICK_THETAS)


@pytest.mark.slow
@pytest.mark.parametrize("case_id, layer", CLOSED_FORMS, ids=[c[0] for c in CLOSED_FORMS])
def test_closed_form_matches_mpmath_on_the_full_grid(case_id, layer):
    check_grid(layer, 0.5, [0.5, 1.0, 2.5], FULL_THETAS)
    check_grid(layer, 1.7, [0.3, 1.7], FULL_THETAS)


families = st.one_of(
    st.builds(nk.Erf, st.floats(-2, 2), st.floats(0.2, 3), st.floats(-1, 1)),
    st.builds(nk.Sin, st.floats(-2, 2), st.floats(0.2, 2.5), st.floats(-3, 3)),
    st.builds(nk.Cos, st.floats(-2, 2), st.floats(0.2, 2.5), st.floats(-3, 3)),
    st.builds(nk.Gaussian, st.floats(0.2, 2), st.floats(-2, -0.05)),
    st.builds(nk.Exp, st.floats(0.2, 2), st.floats(-1, 1)),
    st.builds(nk.LeakyReLU, st.floats(-2, 2)),
    st.builds(nk.ABReLU, st.floats(-2, 2), st.floats(0.1, 2)),
    st.builds(nk.RectifiedMonomial, st.integers(0, 2)),
    st.builds(nk.Polynomial, st.lists(st.floats(-2, 2), min_size=2, max_size=5).filter(lambda c: any(c[1:]))),
)


@settings(max_examples=20)
@given(layer=families, sa=st.floats(0.3, 2.0), sb=st.floats(0.3, 2.0), theta=st.floats(0.0, math.pi))
def test_closed_forms_with_drawn_parameters(layer, sa, sb, theta):
    dual = resolve_dual(layer, 1e-10)
    rho, sn2 = grid_state([theta])
    T, Td, _, _ = run_tile(dual, sa, [sb], rho, sn2)
    ref, refd = reference_at(layer, sa, sb, rho[0], sn2[0])
    scale, dscale = diagonal_scales(layer, sa, sb)
    assert_close_to_reference(T[0], ref, scale, CLOSED_FORM_RTOL, f"T of {layer!r}")
    assert_close_to_reference(Td[0], refd, dscale, CLOSED_FORM_RTOL, f"Tdot of {layer!r}")


@pytest.mark.parametrize("layer", [nk.Erf(1.0, 2.0, 0.3), nk.GELU(), nk.Sin(1.0, 1.0, 0.5), nk.Gaussian(1.0, -0.5),
                                   nk.Exp(1.0, 0.5), nk.Polynomial((0.2, 1.0, 0.4)), nk.RectifiedMonomial(2)],
                         ids=lambda layer: type(layer).__name__)
def test_one_minus_rho_keeps_its_digits_for_nearly_parallel_pairs(layer):
    # sin²θ' = (1 - ρ')(1 + ρ') must be relatively accurate when ρ' -> 1, or the angle of the
    # next layer loses half its digits. Equal variances (the gap term vanishes exactly).
    dual = resolve_dual(layer, 1e-10)
    sa = 1.1
    thetas = [1e-7, 1e-5, 1e-3]
    rho, sn2 = grid_state(thetas)
    _, _, rn, s2 = run_tile(dual, sa, np.full(3, sa), rho, sn2)
    with mp.workdps(40):
        q = mp.mpf(sa) ** 2
        var = mp_dual(layer, q, q, q, dps=40)[0]
        for j in range(3):
            th = mp.atan2(mp.sqrt(mp.mpf(sn2[j])), mp.mpf(rho[j]))
            rp = mp_dual(layer, q, q, mp.cos(th) * q, dps=40)[0] / var
            ref = float((1 - rp) * (1 + rp))
            assert abs(s2[j] - ref) <= NEAR_PARALLEL_RTOL * ref, (thetas[j], s2[j], ref)


def test_identical_inputs_stay_exactly_parallel_through_depth():
    # Erf and GELU only: the engine is shared with the erf_gelu network below (a new set of
    # tile kinds costs a compilation); Sin's pairs are held to mpmath in sin_leaky_step.
    arch = nk.serial(nk.Dense(w_std=1.2, b_std=0.3), nk.Erf(1.0, 2.0, 0.1), nk.Dense(w_std=1.1, b_std=0.2), nk.GELU(),
                     nk.Dense(w_std=1.0, b_std=0.1), nk.Erf(1.0, 0.9, 0.2), nk.Dense(w_std=1.0, b_std=0.0))
    X = np.random.default_rng(3).normal(size=(4, 5))
    X[2] = X[0]
    kernel = nk.compile(arch)
    k, kxx, d = kernel(X), kernel(X, X), kernel.diag(X)
    for name in ("nngp", "ntk"):
        K, Kxx = getattr(k, name), getattr(kxx, name)
        np.testing.assert_array_equal(np.diag(K), getattr(d, name))
        np.testing.assert_allclose(Kxx, K, rtol=EXACT_RTOL, atol=0)
        np.testing.assert_allclose(K[0, 2], K[0, 0], rtol=EXACT_RTOL, atol=0)


# ------------------------------------------------------------------ whole networks
NETWORKS = [
    ("erf_gelu", nk.serial(nk.Dense(w_std=1.3, b_std=0.2), nk.Erf(1.0, 1.5, 0.1), nk.Dense(w_std=0.9, b_std=0.3), nk.GELU(),
                           nk.Dense(w_std=1.1, b_std=0.1))),
    ("sin_leaky_step", nk.serial(nk.Dense(w_std=1.2, b_std=0.1), nk.Sin(1.0, 1.2, 0.3), nk.Dense(w_std=1.4, b_std=0.2), nk.LeakyReLU(0.1),
                                 nk.Dense(w_std=1.0, b_std=0.1), nk.Step(), nk.Dense(w_std=1.0, b_std=0.0))),
    ("poly_gauss", nk.serial(nk.Dense(w_std=0.8, b_std=0.2), nk.Polynomial((0.1, 1.0, 0.3)), nk.Dense(w_std=0.7, b_std=0.1),
                             nk.Gaussian(1.0, -0.5), nk.Dense(w_std=1.0, b_std=0.2))),
]


@pytest.mark.parametrize("net_id, arch", NETWORKS, ids=[n[0] for n in NETWORKS])
def test_networks_of_depth_two_and_more_match_mpmath(net_id, arch):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(4, 3))
    X[1] = X[0] * (1 + 1e-9)  # nearly parallel
    X[2] = -X[0]  # antipodal
    k = nk.compile(arch)(X)
    for i, j in [(0, 3), (0, 1), (0, 2), (3, 3)]:
        S, Th = mp_kernels(arch, X[i], X[j], dual=mp_dual_fast)
        np.testing.assert_allclose(k.nngp[i, j], float(S), rtol=NETWORK_RTOL, atol=ROUNDING_FLOOR * k.nngp[i, i])
        np.testing.assert_allclose(k.ntk[i, j], float(Th), rtol=NETWORK_RTOL, atol=ROUNDING_FLOOR * k.ntk[i, i])


def test_zero_variance_inputs_keep_step_and_sign_kernels_psd():
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    for act in (nk.Step(), nk.Sign()):
        K = nk.compile(nk.serial(nk.Dense(w_std=1.0, b_std=0.0), act, nk.Dense(w_std=1.0, b_std=0.0)))(X).nngp
        assert np.isfinite(K).all() and np.linalg.eigvalsh(K)[0] >= -PSD_ATOL
        # E[φ(u)φ(v)] of a vanishing-variance u (independent of v) and a standard v.
        expected = {"Step": 0.25, "Sign": 0.0}[type(act).__name__]
        np.testing.assert_allclose(K[0, 1], expected, rtol=0, atol=EXACT_ATOL)


# ------------------------------------------------------------------ Hermite series
def one_pair(q1, q2, rho):
    """Inputs whose Σ⁰ is [[q1, c], [c, q2]] (d = 2)."""
    return (np.array([[math.sqrt(2 * q1), 0.0]]),
            np.array([[math.sqrt(2 * q2) * rho, math.sqrt(2 * q2) * math.sqrt(1 - rho * rho)]]))


@pytest.mark.parametrize("layer", [nk.Tanh(), nk.Sigmoid(), nk.Softplus(), nk.SiLU(), nk.Mish()],
                         ids=lambda layer: type(layer).__name__)
def test_series_route_meets_the_tolerance(layer):
    kernel = nk.compile(nk.serial(nk.Dense(w_std=1.0, b_std=0.0), layer, nk.Dense(w_std=1.0, b_std=0.0)))
    X1, X2 = one_pair(1.4, 0.6, 0.55)
    k = kernel(X1, X2)
    q1, q2 = float(X1[0] @ X1[0]) / 2, float(X2[0] @ X2[0]) / 2
    c = float(X1[0] @ X2[0]) / 2
    T = dblquad_T(layer.fn, q1, q2, c, epsrel=1e-13)
    Td = dblquad_Tdot(layer.dfn, q1, q2, c, epsrel=1e-13)
    assert 0 < k.error_estimate <= 1e-10
    np.testing.assert_allclose(k.nngp[0, 0], T, rtol=SERIES_RTOL, atol=0)
    np.testing.assert_allclose(k.ntk[0, 0] - k.nngp[0, 0], Td * c, rtol=SERIES_RTOL, atol=0)


def test_series_truncation_follows_the_requested_tolerance():
    q = np.array([0.5, 2.0, 4.0])
    terms, errors = [], []
    for tol in (1e-6, 1e-10, 1e-12):
        res = SeriesDual(nk.Tanh(), tol=tol).point(q)
        terms.append(res.terms)
        errors.append(res.error_estimate)
        assert res.error_estimate <= tol
        np.testing.assert_array_equal(res.params, res.terms)  # the tile reads the truncation from params
    assert terms[0][0] < terms[1][0] < terms[2][0] and terms[0][1] < terms[1][1] < terms[2][1]
    # The estimate bounds the actual error: a looser series against a tighter one.
    loose, tight = SeriesDual(nk.Tanh(), tol=1e-6), SeriesDual(nk.Tanh(), tol=1e-12)
    q1, q2, c = np.array([4.0]), np.array([2.0]), np.array([2.2])
    scale = math.sqrt(float(tight.T(q1, q1, q1)[0] * tight.T(q2, q2, q2)[0]))
    assert abs(loose.T(q1, q2, c)[0] - tight.T(q1, q2, c)[0]) <= 1e-6 * scale


def test_series_warns_when_the_tolerance_cannot_be_met():
    kernel = nk.compile(nk.serial(nk.Dense(w_std=40.0, b_std=0.0), nk.Tanh(), nk.Dense(w_std=1.0, b_std=0.0)))
    with pytest.warns(nk.AccuracyWarning, match=r"Hermite series of Tanh\(\) reached a relative error of about "
                                                r".* with 1024 terms .* above the requested 1e-10"):
        k = kernel(np.eye(2))
    assert k.error_estimate > 1e-10


def test_sympy_smooth_activation_uses_its_sympy_derivative():
    k_sym = nk.compile(nk.serial(nk.Dense(w_std=1.2, b_std=0.1), nk.Activation(sp.tanh(x)), nk.Dense()))
    k_ref = nk.compile(nk.serial(nk.Dense(w_std=1.2, b_std=0.1), nk.Tanh(), nk.Dense()))
    X = np.random.default_rng(1).normal(size=(5, 3))
    a, b = k_sym(X), k_ref(X)
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=ROUNDING_RTOL, atol=0)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=ROUNDING_RTOL, atol=0)


# ------------------------------------------------------------------ kink-aware quadrature
KINKED_X = np.array([[1.0, 0.2, -0.4], [0.3, -1.1, 0.8], [-0.9, 0.5, 0.1], [1.0, 0.2, -0.4], [0.3, -1.1, 0.8001]])


def test_quadrature_route_on_a_relu_callable_matches_the_closed_form():
    relu_fn = nk.Activation(lambda v: np.maximum(v, 0.0), dfn=lambda v: (v > 0) * 1.0, kinks=(0.0,), name="relu_fn")
    arch_q = nk.serial(nk.Dense(w_std=1.3, b_std=0.2), relu_fn, nk.Dense(w_std=1.1, b_std=0.1), relu_fn, nk.Dense(w_std=1.0, b_std=0.1))
    arch_c = nk.serial(*(nk.ReLU() if layer is relu_fn else layer for layer in arch_q))
    kq, kc = nk.compile(arch_q), nk.compile(arch_c)
    a, b = kq(KINKED_X), kc(KINKED_X)
    assert a.error_estimate <= 1e-10 and b.error_estimate == 0.0
    for name in ("nngp", "ntk"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=QUADRATURE_RTOL, atol=0)


def test_elu_matches_mpmath():
    layer = nk.ELU(0.7)
    dual = resolve_dual(layer, 1e-10)
    thetas = [0.0, EXTREME, 1.0, 2.5, math.pi]
    rho, sn2 = grid_state(thetas)
    T, Td, _, _ = run_tile(dual, 0.9, np.full(len(thetas), 1.4), rho, sn2)
    for j in range(len(thetas)):
        ref, refd = reference_at(layer, 0.9, 1.4, rho[j], sn2[j])
        scale, _ = diagonal_scales(layer, 0.9, 1.4)
        assert abs(T[j] - ref) <= QUADRATURE_RTOL * scale and abs(Td[j] - refd) <= QUADRATURE_RTOL * abs(refd)


def test_quadrature_route_with_a_kink_away_from_zero():
    layer = nk.Activation(sp.Max(x - 0.5, 0) + sp.Rational(1, 10) * sp.Abs(x + 1))
    assert layer.kinks == (-1.0, 0.5)
    kernel = nk.compile(nk.serial(nk.Dense(w_std=1.0, b_std=0.0), layer, nk.Dense(w_std=1.0, b_std=0.0)))
    X1, X2 = one_pair(1.5, 0.8, -0.35)
    with warnings.catch_warnings():
        warnings.simplefilter("error", nk.AccuracyWarning)
        k = kernel(X1, X2)
    q1, q2 = float(X1[0] @ X1[0]) / 2, float(X2[0] @ X2[0]) / 2
    c = float(X1[0] @ X2[0]) / 2
    T = dblquad_T(layer.fn, q1, q2, c, splits=layer.kinks, epsrel=1e-13)
    Td = dblquad_Tdot(layer.dfn, q1, q2, c, splits=layer.kinks, epsrel=1e-13)
    np.testing.assert_allclose(k.nngp[0, 0], T, rtol=QUADRATURE_RTOL, atol=0)
    np.testing.assert_allclose(k.ntk[0, 0] - k.nngp[0, 0], Td * c, rtol=QUADRATURE_RTOL, atol=0)


# ------------------------------------------------------------------ sympy activations
@pytest.mark.parametrize("expr, layer", [
    (sp.Max(x, 0), nk.ReLU()),
    (sp.Piecewise((0.2 * x, x < 0), (x, True)), nk.LeakyReLU(0.2)),
    (sp.Heaviside(x), nk.Step()),
    (x**3 - x + 0.5, nk.Polynomial((0.5, -1.0, 0.0, 1.0))),
], ids=["max", "piecewise", "heaviside", "polynomial"])
def test_sympy_piecewise_linear_and_polynomials_get_the_exact_closed_form(expr, layer):
    arch_s = nk.serial(nk.Dense(w_std=1.2, b_std=0.1), nk.Activation(expr), nk.Dense(w_std=0.9, b_std=0.2), nk.Activation(expr), nk.Dense())
    arch_l = nk.serial(nk.Dense(w_std=1.2, b_std=0.1), layer, nk.Dense(w_std=0.9, b_std=0.2), layer, nk.Dense())
    X = np.random.default_rng(5).normal(size=(4, 3))
    a, b = nk.compile(arch_s)(X), nk.compile(arch_l)(X)
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=ULP_RTOL, atol=0)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=ULP_RTOL, atol=0)


@pytest.mark.parametrize("layer", [nk.ReLU(), nk.LeakyReLU(0.1), nk.Abs(), nk.RectifiedMonomial(2), nk.Erf()],
                         ids=["relu", "leaky_relu", "abs", "rectified_monomial_2", "erf"])
def test_tiles_that_claim_no_per_point_reads_ignore_them(layer):
    """The diagonal spatial driver gives a dual with ``tile_reads_points`` false no per-point
    arrays (it maps all positions of a tile in one call), so its tile must not depend on them:
    every output is the same with the true √q and with arbitrary ones. Duals that read them
    must say so (their outputs do change)."""
    dual = nk.compile(nk.serial(nk.Dense(), layer, nk.Dense())).program.steps[1]
    rho, sn2 = grid_state(np.linspace(0.0, np.pi, 41))
    sb = np.linspace(0.6, 1.7, rho.size)
    base = run_tile(dual, 1.1, sb, rho, sn2)
    other = run_tile(dual, 0.3, sb[::-1] * 2.5, rho, sn2)
    same = all(np.array_equal(a, b) for a, b in zip(base[1:], other[1:]))
    assert same == (not dual.tile_reads_points)
