"""User activations (``nk.Activation(fn, dfn, kinks)``): they never hang, never give a silent
NaN, and reach the accuracy of their route.

* compile-time probe: fn/dfn that are not finite, not real, not shape-preserving or not
  elementwise raise ActivationError saying what and where;
* evaluation time: non-finite values at the quadrature nodes used for a variance, and
  activations that are not square-integrable under that variance's Gaussian, raise
  ActivationError in bounded time (each such test runs under a deadline that aborts the
  process with a traceback instead of hanging the suite);
* declared kinks: Activation(np.abs, kinks=(0,)), a leaky ReLU and a shifted hinge agree with
  the mpmath references of tests/naive.py to USER_KINK_RTOL, with and without dfn.
"""

import contextlib
import faulthandler
import functools
import math
import warnings

import numpy as np
import pytest

import ntk_infinite as nk
from naive import mp_arccos_dual, mp_dual, mp_hinge_parts, mp_kernels
from tolerances import NUMERICAL_DERIVATIVE_RTOL, USER_KINK_RTOL

#: Seconds before a hanging call aborts the run (the calls below take milliseconds).
DEADLINE = 120


@contextlib.contextmanager
def deadline(seconds=DEADLINE):
    """Abort the process with every thread's traceback if the block runs past ``seconds``."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def one_layer(act, w_std=1.0, b_std=0.0):
    return nk.serial(nk.Dense(w_std=w_std, b_std=b_std), act, nk.Dense(w_std=1.0, b_std=0.1))


X = np.array([[1.0, 0.0], [0.6, 0.8], [-0.3, 0.5]])


def tanh_with(value, beyond, name):
    return nk.Activation(lambda v: np.where(np.abs(v) > beyond, value, np.tanh(v)), name=name)


# ------------------------------------------------------------------ compile-time probe
@pytest.mark.parametrize("make, match", [
    (lambda: nk.Activation(lambda v: np.where(v > 2, np.nan, np.tanh(v)), name="f"),
     r"Activation\(f\): fn\(x\) is nan at x = 2\.25 \(24 non-finite of 65 values checked\).*must be finite "
     r"at every real x: guard the singular points"),
    (lambda: nk.Activation(lambda v: 1.0 / v, name="recip"),
     r"fn\(x\) is inf at x = 0 .*np\.where"),
    (lambda: nk.Activation(np.tanh, dfn=lambda v: np.log(v), name="f"),
     r"dfn\(x\) is nan at x = -8 "),
    (lambda: nk.Activation(lambda v: np.tanh(v) + 0j * v, name="f"),
     r"fn\(x\) returned complex values \(dtype complex128, with all imaginary parts zero\).*np\.real"),
    (lambda: nk.Activation(lambda v: np.sqrt(v.astype(complex)), name="f"),
     r"returned complex values .* e\.g\. fn\(-8\) = 2\.828\d*j\)"),
    (lambda: nk.Activation(lambda v: np.tanh(v).sum(), name="f"),
     r"fn\(x\) returned shape \(\) for an input of shape \(65,\).*np\.full_like"),
    (lambda: nk.Activation(math.tanh, name="f"),
     r"fn\(x\) raised TypeError: .*\(np\.tanh, not math\.tanh\)"),
    (lambda: nk.Activation(lambda v: np.exp(v) / np.sum(np.exp(v)), name="softmax"),
     r"fn is not elementwise: at x = -8, .* called on that element alone gives 1\.0.*no sums, means"),
    (lambda: nk.Activation(np.sort, name="sort"),
     r"fn is not elementwise: at x = .* called on a permuted array"),
    (lambda: nk.Activation(lambda v: v.ravel()[::-1].reshape(v.shape) if v.ndim > 1 else v, name="f2d"),
     r"fn is not elementwise: .* called on a 2-D array"),
    (lambda: nk.Activation(np.tanh, dfn=lambda v: 1 - np.tanh(v) ** 2 + np.mean(v), name="f"),
     r"dfn is not elementwise"),
])
def test_probe_rejects_bad_callables_at_compile_time(make, match):
    layer = make()
    with pytest.raises(nk.ActivationError, match=match):
        nk.compile(one_layer(layer))


def test_probe_covers_user_activation_subclasses():
    class Bad(nk.describe.layers.ActivationLayer):
        def fn(self, x):
            return np.where(x < -1, np.nan, x)

        def dfn(self, x):
            return np.ones_like(x)

    with pytest.raises(nk.ActivationError, match=r"fn\(x\) is nan at x = -8 "):
        nk.compile(one_layer(Bad()))


def test_activation_error_is_a_value_error():
    assert issubclass(nk.ActivationError, ValueError)


# ------------------------------------------------------------------ evaluation time
@pytest.mark.parametrize("kinks, w_std", [((), 1.0), ((0.0,), 3.0)], ids=["series", "quadrature"])
def test_nan_beyond_the_probe_grid_at_a_used_node_is_an_error(kinks, w_std):
    # NaN only for |x| > 10, outside the probe grid: the series' Gauss-Hermite nodes reach it
    # at q = 0.5, the quadrature's |z| <= 8 nodes at q = 4.5 (w_std = 3).
    layer = nk.Activation(lambda v: np.where(np.abs(v) > 10, np.nan, np.abs(v)), kinks=kinks, name="f")
    with deadline(), pytest.raises(nk.ActivationError,
                                   match=r"fn\(x\) is nan at x = -?1\d\.\d+, a quadrature node for the input "
                                         r"variance q = \d\.\d+ reaching this layer"):
        nk.compile(one_layer(layer, w_std=w_std))(X)


@pytest.mark.parametrize("kinks", [(), (0.0,)], ids=["series", "quadrature"])
def test_inf_in_the_gaussian_tail_is_an_error_not_a_hang(kinks):
    layer = nk.Activation(lambda v: np.where(np.abs(v) > 12, np.inf, np.abs(v)), kinks=kinks, name="f")
    with deadline(), pytest.raises(nk.ActivationError,
                                   match=r"fn\(x\) is inf at x = -14\.43\d*, 35 standard deviations into the "
                                         r"tail of the Gaussian of the input variance q = 0\.17"):
        nk.compile(one_layer(layer))(X)


@pytest.mark.parametrize("kinks", [(), (0.0,)], ids=["series", "quadrature"])
def test_exp_x_squared_is_not_square_integrable_error_not_hang(kinks):
    # E[exp(2u²)] = ∞ for u ~ N(0, q) with q >= 1/4; the inputs give q = 0.17 .. 0.5.
    layer = nk.Activation(lambda v: np.exp(v * v) + np.abs(v), kinks=kinks, name="f")
    with deadline(), pytest.raises(nk.ActivationError,
                                   match=r"not square-integrable under the Gaussian N\(0, 0\.5\).*Reduce the "
                                         r"variance"):
        nk.compile(one_layer(layer))(X)


@pytest.mark.parametrize("b, w_std, ok", [(0.2, 1.0, True), (0.3, 1.0, True), (0.3, 1.4, False)])
def test_square_integrability_boundary_is_exact(b, w_std, ok):
    # exp(b x²) under N(0, q) is square-integrable iff 4bq < 1; q = w_std² |x|²/d + b_std² with
    # |x|²/d = 0.5 for the first input: w_std = 1.4 gives 4·0.3·0.98 > 1, w_std = 1 gives 0.6 < 1.
    layer = nk.Activation(lambda v: np.exp(b * v * v), name="g")
    arch = one_layer(layer, w_std=w_std)
    if not ok:
        with deadline(), pytest.raises(nk.ActivationError, match="not square-integrable"):
            nk.compile(arch)(X)
        return
    x1 = X[:1]
    with deadline():
        got = nk.compile(arch)(x1).nngp[0, 0]
    # E[exp(2bu²)] = (1 − 4bq)^(-1/2) (Gaussian integral), then the readout Dense(1, 0.1).
    q = w_std**2 * 0.5
    assert got == pytest.approx(1.0 / math.sqrt(1 - 4 * b * q) + 0.01, rel=1e-8)


# ------------------------------------------------------------------ declared kinks
def test_numerical_derivative_never_crosses_a_declared_kink():
    layer = nk.Activation(lambda v: np.abs(v - 0.5) + np.abs(v - 0.5001) + np.exp(v), kinks=(0.5, 0.5001))
    x = np.array([-1.0, 0.4995, 0.49995, 0.5, 0.50005, 0.5001, 0.5003, 0.501, 2.0])
    exact = np.sign(x - 0.5) + np.sign(x - 0.5001) + np.exp(x)
    np.testing.assert_allclose(layer.dfn(x), exact, rtol=NUMERICAL_DERIVATIVE_RTOL, atol=NUMERICAL_DERIVATIVE_RTOL)
    a = nk.Activation(np.abs, kinks=(0.0,))
    x = np.array([-2.0, -3e-3, -1e-3, -1e-9, 0.0, 1e-9, 2e-3, 0.7])
    np.testing.assert_allclose(a.dfn(x), np.sign(x), rtol=0, atol=NUMERICAL_DERIVATIVE_RTOL)


_REFERENCES = {}


def _mp_reference(name, dual, x1, x2, arch):
    """(Σ, Θ) of one pair in mpmath, computed once per case (the same for both dfn variants)."""
    key = (name, x1.tobytes(), x2.tobytes())
    if key not in _REFERENCES:
        _REFERENCES[key] = tuple(float(v) for v in mp_kernels(arch, x1, x2, dps=20, dual=dual))
    return _REFERENCES[key]


def _arccos_as(layer):
    return lambda _layer, q1, q2, c, dps: mp_arccos_dual(layer, q1, q2, c, dps=max(dps, 30))


def _hinge(a_neg, b_pos, kink):
    return functools.partial(mp_dual, parts=mp_hinge_parts(a_neg, b_pos, kink))


# Written with np.abs so that the complex step cannot rescue a derivative that straddles the kink.
KINKED = [
    ("abs", lambda: np.abs, np.sign, (0.0,), _arccos_as(nk.Abs())),
    ("leaky_relu", lambda: (lambda v: 0.55 * v + 0.45 * np.abs(v)), lambda v: np.where(v > 0, 1.0, 0.1), (0.0,),
     _arccos_as(nk.LeakyReLU(0.1))),
    ("shifted_hinge", lambda: (lambda v: 0.9 * np.abs(v - 0.4) + 0.6 * (v - 0.4)),
     lambda v: np.where(v > 0.4, 1.5, -0.3), (0.4,), _hinge(0.3, 1.5, 0.4)),
]


#: diagonal, generic, near-parallel, antiparallel pairs of the inputs below
ALL_PAIRS = [(0, 0), (1, 2), (0, 3), (1, 4)]


@pytest.mark.parametrize("with_dfn", [False, True], ids=["numerical-dfn", "given-dfn"])
@pytest.mark.parametrize("case", KINKED, ids=[c[0] for c in KINKED])
def test_declared_kinks_reach_the_route_accuracy(case, with_dfn):
    # the mpmath hinge reference takes seconds per pair: one pair here, all in the slow test
    _check_kinked(case, with_dfn, ALL_PAIRS if case[0] != "shifted_hinge" else [(1, 4)])


@pytest.mark.slow
@pytest.mark.parametrize("with_dfn", [False, True], ids=["numerical-dfn", "given-dfn"])
def test_shifted_hinge_on_every_pair_kind(with_dfn):
    _check_kinked(KINKED[2], with_dfn, ALL_PAIRS)


def _check_kinked(case, with_dfn, pairs):
    name, fn, dfn, kinks, ref = case
    layer = nk.Activation(fn(), dfn=dfn if with_dfn else None, kinks=kinks, name=name)
    arch = one_layer(layer, w_std=1.3, b_std=0.2)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 3))
    x = np.vstack([x, x[0] + 1e-7, -x[1]])  # a near-duplicate and an antipodal pair
    with warnings.catch_warnings():
        warnings.simplefilter("error", nk.AccuracyWarning)
        k = nk.compile(arch)(x)
    for i, j in pairs:
        S, T = _mp_reference(name, ref, x[i], x[j], arch)
        assert k.nngp[i, j] == pytest.approx(S, rel=USER_KINK_RTOL, abs=USER_KINK_RTOL), (i, j)
        assert k.ntk[i, j] == pytest.approx(T, rel=USER_KINK_RTOL, abs=USER_KINK_RTOL), (i, j)
