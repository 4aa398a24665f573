"""Extreme input and weight scales: finite correct values, or a clear error / warning.

The references are the mpmath recursion of tests/naive.py (arbitrary exponent range, so
it has the true values at any scale) and exact power-of-two scaling arguments.
"""

import sys
import warnings
from pathlib import Path

import mpmath as mp
import numpy as np
import pytest
from hypothesis import example, given, strategies as st

import ntk_infinite as nk
from ntk_infinite.errors import KernelOverflowError, KernelUnderflowWarning

sys.path.insert(0, str(Path(__file__).parent))
from naive import mp_kernels, mp_relu_dual  # noqa: E402
from tolerances import MIXED_SCALE_RTOL, ROUNDING_RTOL, SCALE_RTOL, SUBNORMAL_ATOL  # noqa: E402

FMAX = np.finfo(np.float64).max
TINY = np.finfo(np.float64).tiny
DECIMAL_SCALES = (1e-160, 1e-155, 1e-100, 1.0, 1e100, 1e150, 1e160, 1e-200, 1e200)
SCALES = st.one_of(st.sampled_from(DECIMAL_SCALES), st.integers(-560, 560).map(lambda j: 2.0**j))
RELU_ARCHS = ("Dense(1.5, 0) > ReLU > Dense(1.5, 0) > ReLU > Dense(0.7, 0)", "Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)")
_KERNELS = {}


def kernel(arch):
    if arch not in _KERNELS:
        _KERNELS[arch] = nk.compile(arch)
    return _KERNELS[arch]


def inputs(seed=0, n=4, d=3):
    return np.random.default_rng(seed).standard_normal((n, d))


def mp_reference(arch, X1, X2, dual=mp_relu_dual):
    """(Σ, Θ) as mpf matrices, the whole recursion in 40-digit mpmath."""
    layers = nk.parse_architecture(arch)
    pairs = [[mp_kernels(layers, x1, x2, dps=40, dual=dual) for x2 in X2] for x1 in X1]
    return [[p[0] for p in row] for row in pairs], [[p[1] for p in row] for row in pairs]


def assert_matches(got, ref):
    """Finite everywhere; relative agreement where the true value is normal, a few subnormal
    units where it is below float64's normal range (0 where it is below 2^-1074)."""
    assert np.isfinite(got).all()
    expected = np.array([[float(v) for v in row] for row in ref])
    normal = np.abs(expected) >= TINY
    np.testing.assert_allclose(got[normal], expected[normal], rtol=SCALE_RTOL, atol=0)
    np.testing.assert_allclose(got[~normal], expected[~normal], rtol=0, atol=SUBNORMAL_ATOL)


def evaluate(k, X1, X2, get):
    """K(X1) or K(X1, X2), and diag(X1), recording warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = k(X1, X2, get=get)
        diag = k.diag(X1, get=get)
    return res, diag, [w for w in caught if issubclass(w.category, KernelUnderflowWarning)]


def _wanted(get):
    return {"nngp": (0,), "ntk": (1,)}.get(get, (0, 1)) if isinstance(get, str) else (0, 1)


@pytest.mark.parametrize("arch", RELU_ARCHS)
@given(scale=SCALES, symmetric=st.booleans(), get=st.sampled_from(["nngp", "ntk", ("nngp", "ntk")]))
@example(scale=1e160, symmetric=True, get=("nngp", "ntk"))
@example(scale=1e160, symmetric=False, get="ntk")
@example(scale=1e155, symmetric=True, get="nngp")
@example(scale=1e-155, symmetric=True, get=("nngp", "ntk"))
@example(scale=1e-160, symmetric=False, get=("nngp", "ntk"))
@example(scale=2.0**-560, symmetric=True, get="ntk")
def test_relu_kernel_at_any_scale(arch, scale, symmetric, get):
    """K(sX) and diag(sX) equal the mpmath recursion where representable; beyond float64 they
    raise KernelOverflowError, below its normal range they warn (subnormals or exact zeros)."""
    X1 = scale * inputs()
    X2 = None if symmetric else scale * inputs(seed=1, n=2)
    own = mp_reference(arch, X1, X1)
    ref = own if symmetric else mp_reference(arch, X1, X2)
    wanted = _wanted(get)
    diagonals = [abs(own[w][i][i]) for w in wanted for i in range(len(X1))]
    if max(diagonals) > FMAX:
        with pytest.raises(KernelOverflowError, match="kernel values exceed float64.*Rescale the inputs"):
            kernel(arch)(X1, X2, get=get)
        with pytest.raises(KernelOverflowError, match="kernel values exceed float64"):
            kernel(arch).diag(X1, get=get)
        return
    res, diag, underflow = evaluate(kernel(arch), X1, X2, get)
    for w in wanted:
        name = ("nngp", "ntk")[w]
        assert_matches(getattr(res, name), ref[w])
        assert_matches(getattr(diag, name)[None, :], [[own[w][i][i] for i in range(len(X1))]])
    if min(diagonals) < TINY:
        assert underflow and "below float64's normal range" in str(underflow[0].message)
    else:
        assert not underflow


DEEP_TINY = "30*(Dense(1e-6, 0) > ReLU) > Dense(1e-6, 0)"
DEEP_SMALL = "20*(Dense(1e-6, 0) > ReLU) > Dense(1, 0)"


@pytest.mark.parametrize("get", ["nngp", "ntk", ("nngp", "ntk")])
def test_deep_tiny_weights_give_exact_zeros_with_a_warning(get):
    """True values ~1e-370 are below float64's range: exact zeros and a warning, no NaN."""
    X1, X2 = inputs(), inputs(seed=1, n=2)
    S, T = mp_reference(DEEP_TINY, X1[:2], X1[:2])
    assert max(abs(v) for row in S + T for v in row) < mp.mpf(2) ** -1075  # the premise: below every float64
    for other in (None, X2):
        res, diag, underflow = evaluate(kernel(DEEP_TINY), X1, other, get)
        for w in _wanted(get):
            name = ("nngp", "ntk")[w]
            assert np.all(getattr(res, name) == 0.0) and np.all(getattr(diag, name) == 0.0)
        assert underflow and "exact zeros" in str(underflow[0].message)


def test_deep_small_weights_scale_homogeneously():
    """Values ~1e-250 (intermediate variances down to 1e-250): the mpmath recursion, to rounding."""
    X1 = inputs()
    S, T = mp_reference(DEEP_SMALL, X1, X1)
    res, diag, underflow = evaluate(kernel(DEEP_SMALL), X1, None, ("nngp", "ntk"))
    assert_matches(res.nngp, S)
    assert_matches(res.ntk, T)
    assert not underflow


def mp_erf_dual(layer, q1, q2, c, dps=40):
    """(T, Ṫ) of φ = erf in mpmath, typed from Williams (1997):
    T = (2/π) asin(2c/√((1+2q₁)(1+2q₂))), Ṫ = (4/π) / √((1+2q₁)(1+2q₂) − 4c²), the last
    radicand written 1 + 2q₁ + 2q₂ + 4(q₁q₂ − c²) (exact at c² = q₁q₂)."""
    assert isinstance(layer, nk.Erf) and (layer.a, layer.b, layer.c) == (1.0, 1.0, 0.0)
    with mp.workdps(dps):
        q1, q2, c = mp.mpf(q1), mp.mpf(q2), mp.mpf(c)
        prod = (1 + 2 * q1) * (1 + 2 * q2)
        return 2 / mp.pi * mp.asin(2 * c / mp.sqrt(prod)), 4 / mp.pi / mp.sqrt(1 + 2 * q1 + 2 * q2 + 4 * (q1 * q2 - c * c))


@pytest.mark.parametrize("w_std", [1e-150, 1e-100, 1e50, 1e75])
def test_erf_at_extreme_variances(w_std):
    """The Erf dual gets actual variances from ~1e-300 to ~1e150 and returns the mpmath values."""
    arch = f"Dense({w_std!r}, 0) > Erf > Dense(1, 0)"
    X1, X2 = inputs(), inputs(seed=1, n=2)
    for other in (None, X2):
        S, T = mp_reference(arch, X1, X1 if other is None else other, dual=mp_erf_dual)
        res, _, underflow = evaluate(kernel(arch), X1, other, ("nngp", "ntk"))
        assert_matches(res.nngp, S)
        assert_matches(res.ntk, T)


@pytest.mark.parametrize("act", ["Erf", "Tanh"])
@given(j=st.integers(-500, 500))
@example(j=500)
@example(j=-500)
@example(j=300)
def test_non_homogeneous_activation_exact_rescaling(act, j):
    """Inputs 2^{2j}·X through Dense(w_std=2^-j) twice give exactly the Σ and Θ of X through
    Dense(w_std=1) twice (powers of two), so the kernels agree to rounding at any j, although
    x·x' itself overflows float64 for j > 255 and leaves its normal range for j < -255."""
    X1, X2 = inputs(), inputs(seed=1, n=2)
    w = 2.0**-j
    scaled = kernel(f"Dense({w!r}, 0) > Dense({w!r}, 0.5) > {act} > Dense(1, 0)")
    plain = kernel(f"Dense(1, 0) > Dense(1, 0.5) > {act} > Dense(1, 0)")
    for other in (None, X2):
        got = scaled(np.ldexp(X1, 2 * j), None if other is None else np.ldexp(other, 2 * j))
        want = plain(X1, other)
        for name in ("nngp", "ntk"):
            assert np.isfinite(getattr(got, name)).all()
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=ROUNDING_RTOL, atol=0)
    np.testing.assert_allclose(scaled.diag(np.ldexp(X1, 2 * j)).ntk, plain.diag(X1).ntk, rtol=ROUNDING_RTOL, atol=0)


@pytest.mark.parametrize("scale", [1e100, 1e160])
def test_variance_beyond_float64_before_erf_is_an_error(scale):
    """An activation that needs actual variances cannot take one whose square overflows: a
    clear error (1e100: q ~ 1e200; 1e160: q ~ 1e320, beyond float64 itself)."""
    k = kernel("Dense(1, 0.1) > Erf > Dense(1, 0)")
    X = scale * inputs()
    for call in (lambda: k(X), lambda: k(X, X[:2]), lambda: k(X, get="ntk"), lambda: k.diag(X)):
        with pytest.raises(KernelOverflowError, match=r"variance entering Erf.*exceeds float64.*Rescale the inputs"):
            call()


def test_dense_parameter_whose_square_overflows_is_an_error():
    with pytest.raises(nk.ParameterError, match=r"'w_std' parameter of Dense must be a float in the range \[0, 1e\+154\]"):
        nk.compile(nk.serial(nk.Dense(w_std=2.0**512, b_std=0.0), nk.ReLU(), nk.Dense(w_std=1.0, b_std=0.0)))


# ------------------------------------------------------------------ rows of very different scales
def test_rows_differing_by_more_than_float64_range_give_no_nan():
    """Rows 1 and 1e-156 in one call: the pair (tiny, tiny) has |K| <= 2.5e-312, below float64's
    normal range, and comes out as 0 with a warning; the mixed pairs keep their digits
    (ReLU with b_std = 0 is positively homogeneous: K(x, s·y) = s·K(x, y))."""
    k = kernel("Dense(1.5, 0) > ReLU > Dense(1.5, 0) > ReLU > Dense(1.5, 0)")
    x, y = np.array([1.0, 0.3]), np.array([-0.2, 1.0])
    X = np.stack([x, 1e-156 * y])
    reference = k(np.stack([x, y])).nngp
    with pytest.warns(KernelUnderflowWarning):
        got = k(X, X)
    for K in (got.nngp, got.ntk):
        assert np.isfinite(K).all()
        assert K[1, 1] == 0.0
    np.testing.assert_allclose(got.nngp[0, 1], 1e-156 * reference[0, 1], rtol=MIXED_SCALE_RTOL, atol=0)
    np.testing.assert_allclose(got.nngp[1, 0], 1e-156 * reference[1, 0], rtol=MIXED_SCALE_RTOL, atol=0)


def test_subnormal_variance_entering_erf_gives_zeros_with_a_warning():
    """A variance of ~1e-312 entering Erf: the cross kernel is below float64's normal range."""
    k = kernel("Dense(1.5, 0) > Erf > Dense(1.5, 0)")
    a = np.array([[-1e-156]])
    with pytest.warns(KernelUnderflowWarning):
        got = k(a, a)
    assert np.isfinite(got.nngp).all() and np.isfinite(got.ntk).all()
    assert abs(got.nngp[0, 0]) < np.finfo(np.float64).tiny
