"""Hostile input arrays for CompiledKernel.__call__ / .diag, gd_mse and the estimators.

The contract: a ValueError/TypeError subclass whose message names what was expected, or
finite results equal to an independent reference (the mpmath Dense/ReLU recursion of
tests/naive.py, exact at any input scale); +inf only where the true value overflows, and
then with a warning; never NaN, never a hang.
"""

import threading
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ntk_infinite as nk
from hostile_strategies import (  # noqa: F401 - hang_guard is an autouse fixture
    assert_documented_error,
    assert_kernels_match,
    assert_no_hang_or_crash,
    extreme_arrays,
    hang_guard,
    is_documented_error,
    relu_reference,
    representable,
    run_here,
)
from naive import naive_kernels
from tolerances import EXTREME_SCALE_RTOL, MIXED_SCALE_RTOL, NAIVE_RTOL, ROUNDING_RTOL

# One architecture family, compiled once: every kernel shares the arc-cosine engine.
ARCHS = {
    (b, depth): nk.serial(*[nk.Dense(w_std=1.5, b_std=b), nk.ReLU()] * depth, nk.Dense(w_std=1.5, b_std=b))
    for b in (0.0, 0.1)
    for depth in (1, 2)
}
KERNELS = {key: nk.compile(arch) for key, arch in ARCHS.items()}
ARCH, KERNEL = ARCHS[(0.1, 1)], KERNELS[(0.1, 1)]


def _documented_rtol(X1, X2=None):
    """The engine carries one scale per layer: when the rows of one call have variances more
    than 2^1022 apart, the small ones are subnormal in the call's units and keep 52 − k bits,
    k the binary orders beyond that range (documented, with a KernelUnderflowWarning)."""
    rows = np.concatenate([X1, X2]) if X2 is not None else X1
    top = np.max(np.abs(rows), axis=1)
    top = top[top > 0]
    if not top.size:
        return EXTREME_SCALE_RTOL
    lost = 2 * (np.log2(top.max()) - np.log2(top.min())) + 2 * np.log2(rows.shape[1]) - 1022
    return min(max(EXTREME_SCALE_RTOL, MIXED_SCALE_RTOL * 2.0 ** max(lost - 14, 0)), 1.0)


def _floored(scale, rtol):
    """Entries that a mixed-range call may return as 0 (documented: below 2^-1000 of the
    largest diagonal) are held to that bound instead of their own scale."""
    if rtol == EXTREME_SCALE_RTOL or not np.isfinite(scale).any():
        return scale
    return np.maximum(scale, 2.0**-1000 * np.max(scale[np.isfinite(scale)]) / rtol)


def _some_diagonal_overflows(arch, X1, X2):
    """Whether, in a cross call, some row of X1 or X2 has K(x, x) beyond float64: the engine carries each point's
    variance through every layer, so a cross call with such a point is refused (documented in
    ``check_range``) even where the cross entries themselves would fit."""
    if X2 is None:
        return False
    _, _, _, _, dS, dT = relu_reference(arch, np.concatenate([X1, X2]))
    return not (np.isfinite(dS).all() and np.isfinite(dT).all())


def _check_call(key, X1, X2=None):
    """Run kernel(X1, X2) and kernel.diag(X1) and hold them to the contract."""
    arch, kernel = ARCHS[key], KERNELS[key]
    S, T, sS, sT, dS, dT = relu_reference(arch, X1, X2)
    out = run_here(kernel, X1, X2)
    assert_no_hang_or_crash(out)
    if out.kind == "raised":
        # Refusing is allowed only where the true kernel is not representable in float64, or
        # (documented for cross calls) where some input's own kernel K(x, x) overflows it.
        assert is_documented_error(out), out.describe()
        assert not representable(S, T) or _some_diagonal_overflows(arch, X1, X2), \
            f"representable kernel refused: {out.describe()}"
    else:
        warned = out.warned(UserWarning)
        rtol = _documented_rtol(X1, X2)
        assert_kernels_match(out.value.nngp, S, _floored(sS, rtol), rtol, warned, "nngp")
        assert_kernels_match(out.value.ntk, T, _floored(sT, rtol), rtol, warned, "ntk")
    diag = run_here(kernel.diag, X1)
    assert_no_hang_or_crash(diag)
    if diag.kind == "raised":
        assert is_documented_error(diag) and not representable(dS, dT), diag.describe()
    else:
        rtol = _documented_rtol(X1)
        assert_kernels_match(diag.value.nngp, dS, np.abs(dS), rtol, diag.warned(UserWarning), "diag nngp")
        assert_kernels_match(diag.value.ntk, dT, np.abs(dT), rtol, diag.warned(UserWarning), "diag ntk")


# ----------------------------------------------------------------------------- extreme scales
@pytest.mark.parametrize("scale", [1e160, 1e-155, 1e300, 1e-300, 1e150, 1e-150])
@pytest.mark.parametrize("b_std", [0.0, 0.1])
def test_uniform_extreme_scale(scale, b_std):
    X = np.random.default_rng(0).normal(size=(4, 3)) * scale
    _check_call((b_std, 2), X)


def test_mixed_row_scales_one_call():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(6, 3)) * np.array([1e-300, 1e-155, 1.0, 1e100, 1e150, 1e160])[:, None]
    _check_call((0.0, 1), X)
    _check_call((0.1, 1), X, X[::-1].copy())


@settings(max_examples=12)
@given(data=st.data(), b_std=st.sampled_from([0.0, 0.1]), depth=st.sampled_from([1, 2]), cross=st.booleans())
def test_extreme_scales_fuzz(data, b_std, depth, cross):
    X1 = data.draw(extreme_arrays(), label="X1")
    X2 = None
    if cross:
        X2 = data.draw(extreme_arrays(d_max=X1.shape[1]).filter(lambda a: a.shape[1] == X1.shape[1]), label="X2")
    _check_call((b_std, depth), X1, X2)


@pytest.mark.slow
@settings(max_examples=200)
@given(data=st.data(), b_std=st.sampled_from([0.0, 0.1]), depth=st.sampled_from([1, 2]))
def test_extreme_scales_fuzz_thorough(data, b_std, depth):
    X1 = data.draw(extreme_arrays(n_max=6, d_max=5), label="X1")
    _check_call((b_std, depth), X1)


# ----------------------------------------------------------------------------- dtypes and layouts
_BASE = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0], [2.0, 2.0, 2.0]])

ACCEPTED = {
    "int8": _BASE.astype(np.int8),
    "uint64": np.array([[2**63 + 5, 7, 1], [0, 2**40, 3], [1, 1, 1]], dtype=np.uint64),
    "float16": _BASE.astype(np.float16),
    "float32": (_BASE / 3).astype(np.float32),
    "bool": _BASE > 0,
    "longdouble": (_BASE / 7).astype(np.longdouble),
    "list": (_BASE / 3).tolist(),
    "tuple": tuple(map(tuple, _BASE)),
    "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4) - 5),
    "strided": (np.arange(60.0).reshape(6, 10) - 30)[::2, ::3],
    "negative_strides": (np.arange(12.0).reshape(3, 4) - 5)[::-1, ::-1],
    "broadcast_zero_stride": np.broadcast_to(np.array([1.0, -2.0, 3.0]), (3, 3)),
    "read_only": np.array(_BASE, copy=True).view(),
    "one_feature": np.array([[1.0], [-2.0], [0.0]]),
}
ACCEPTED["read_only"].flags.writeable = False


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_accepted_dtypes_and_layouts(name):
    X = ACCEPTED[name]
    ref = np.array(X, dtype=np.float64)
    S, T, sS, sT, _, _ = relu_reference(ARCH, ref)
    out = run_here(KERNEL, X)
    assert out.kind == "ok", out.describe()
    for got, r, s, what in ((out.value.nngp, S, sS, "nngp"), (out.value.ntk, T, sT, "ntk")):
        assert got.dtype == np.float64 and got.flags.c_contiguous, (got.dtype, got.flags)
        assert_kernels_match(got, r, s, NAIVE_RTOL, False, f"{name} {what}")
    # the caller's array is never written to
    np.testing.assert_array_equal(np.array(X, dtype=np.float64), ref)


REJECTED = {
    "complex": (np.ones((2, 3)) * 1j, r"real|complex"),
    "complex_zero_imag": (np.ones((2, 3), dtype=complex), r"real|complex"),
    "strings": (np.array([["1", "2"], ["3", "4"]]), r"number|real|dtype"),
    "bytes": (np.array([[b"a", b"b"]]), r"number|real|dtype"),
    "object_none": (np.array([[1.0, None]], dtype=object), r"number|real|dtype|object"),
    "ragged": ([[1.0, 2.0], [3.0]], r"array|shape|number|sequence"),
    "datetime": (np.array([["2020-01-01"]], dtype="datetime64[D]"), r"number|real|dtype"),
    "scalar_0d": (np.float64(3.0), r"2-D|dimension"),
    "vector_1d": (np.ones(3), r"2-D.*reshape"),
    "tensor_3d": (np.ones((2, 2, 2)), r"2-D|dimension"),
    "zero_columns": (np.ones((3, 0)), r"feature"),
    "none": (None, r"2-D|array"),
    "dict": ({"a": 1}, r"array|number|real|dtype"),
    "longdouble_overflow": (
        np.array([[1.0, 2.0]], dtype=np.longdouble) * np.longdouble("1e400"),
        r"finite|inf|large|range",
    ),
}


@pytest.mark.parametrize("name", list(REJECTED))
def test_rejected_inputs(name):
    X, pattern = REJECTED[name]
    assert_documented_error(run_here(KERNEL, X), pattern)
    assert_documented_error(run_here(KERNEL.diag, X), pattern)
    good = np.ones((2, 3))
    if not isinstance(X, np.ndarray) or X.ndim == 2 and X.shape[1] not in (0, 3):
        return
    assert_documented_error(run_here(KERNEL, good, X), pattern.replace("X1", "X2"))


def test_object_array_of_numbers():
    """An object array holding plain numbers may be converted or refused, but clearly."""
    X = np.array([[1, 2.5], [3, -1]], dtype=object)
    out = run_here(KERNEL, X)
    if out.kind == "raised":
        assert_documented_error(out, r"number|real|dtype|object")
    else:
        S, T, sS, sT, _, _ = relu_reference(ARCH, X.astype(float))
        assert_kernels_match(out.value.ntk, T, sT, NAIVE_RTOL, False, "ntk")


@settings(max_examples=15)
@given(
    n=st.integers(1, 4),
    d=st.integers(1, 4),
    where=st.data(),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    which=st.sampled_from(["X1", "X2", "diag"]),
)
def test_nonfinite_entries_rejected(n, d, where, bad, which):
    X = np.random.default_rng(n * 10 + d).normal(size=(n, d))
    i = where.draw(st.integers(0, n - 1), label="row")
    j = where.draw(st.integers(0, d - 1), label="col")
    X[i, j] = bad
    good = np.ones((2, d))
    call = {"X1": lambda: KERNEL(X, good), "X2": lambda: KERNEL(good, X), "diag": lambda: KERNEL.diag(X)}[which]
    name = {"X1": "X1", "X2": "X2", "diag": "X"}[which]
    assert_documented_error(run_here(call), rf"{name}.*(NaN|infinite).*row {i}, column {j}")


@pytest.mark.parametrize("d1, d2", [(3, 5), (1, 2), (4, 1)])
def test_x2_feature_mismatch(d1, d2):
    assert_documented_error(run_here(KERNEL, np.ones((2, d1)), np.ones((3, d2))), rf"{d2} features.*{d1}")


@pytest.mark.parametrize("n1, n2", [(0, 0), (0, 3), (3, 0)])
def test_zero_rows(n1, n2):
    X1, X2 = np.ones((n1, 4)), np.ones((n2, 4))
    out = run_here(KERNEL, X1, X2 if n2 != n1 or n1 else None)
    assert out.kind == "ok", out.describe()
    expected = (n1, n2 if n2 != n1 or n1 else n1)
    assert out.value.nngp.shape == out.value.ntk.shape == expected
    d = run_here(KERNEL.diag, X1)
    assert d.kind == "ok" and d.value.nngp.shape == (n1,), d.describe()


def test_huge_d_tiny_n():
    """2·10⁶ features, 2 samples: the 1/d normalisation must not lose accuracy or blow memory."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2, 2_000_000))
    X[1] = 0.6 * X[0] + 0.8 * X[1]
    S, T = naive_kernels(ARCH, X)
    out = run_here(KERNEL, X)
    assert out.kind == "ok", out.describe()
    np.testing.assert_allclose(out.value.nngp, S, rtol=NAIVE_RTOL)
    np.testing.assert_allclose(out.value.ntk, T, rtol=NAIVE_RTOL)


# ----------------------------------------------------------------------------- threads
def _threads_equal_serial(kernel, scales, calls, n=2):
    """Each of len(scales) threads calls ``kernel`` ``calls`` times back to back on its own
    inputs; every result must equal the serial call on the same inputs."""
    inputs = [np.random.default_rng(i).normal(size=(n, 3)) * s for i, s in enumerate(scales)]
    serial = [kernel(X) for X in inputs]
    mismatches, errors = [], []
    barrier = threading.Barrier(len(inputs))

    def work(i):
        try:
            barrier.wait(timeout=30)
            for c in range(calls):
                k = kernel(inputs[i])
                for name in ("nngp", "ntk"):
                    ref = getattr(serial[i], name)
                    if not np.allclose(getattr(k, name), ref, rtol=ROUNDING_RTOL, atol=0):
                        mismatches.append((i, c, name, getattr(k, name), ref))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to expose races
    try:
        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(inputs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
            assert not t.is_alive(), "a kernel call from a thread did not finish within 120 s"
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors
    assert not mismatches, (
        f"{len(mismatches)} of {calls * len(inputs)} threaded calls differ from the serial ones; first: "
        f"thread {mismatches[0][0]} (scale {scales[mismatches[0][0]]}), call {mismatches[0][1]}, "
        f"{mismatches[0][2]}:\n{mismatches[0][3]}\nvs\n{mismatches[0][4]}"
    )


#: Input scales whose variances need very different series truncations (8 ... ~250 terms).
SCALES = (1e-3, 0.1, 0.5, 1.0)
SERIES_KERNEL = nk.compile(nk.serial(nk.Dense(w_std=1.0, b_std=0.1), nk.Tanh(), nk.Dense(w_std=1.0, b_std=0.1)))


def test_threads_relu_equal_serial():
    _threads_equal_serial(KERNEL, (1e-3, 1.0, 1e3, 1e5), calls=50)


def test_threads_series_dual_equal_serial():
    """Hermite-series duals choose their truncation per call from the input variances:
    four threads on different scales must not see each other's truncation."""
    _threads_equal_serial(SERIES_KERNEL, SCALES, calls=150)


@pytest.mark.slow
def test_threads_series_dual_equal_serial_long():
    _threads_equal_serial(SERIES_KERNEL, SCALES, calls=1500)


# ----------------------------------------------------------------------------- predict and estimators
def _train():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(8, 3))
    return X, np.sin(X[:, 0])


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"y_train": np.full(8, np.nan)}, r"y_train.*(NaN|infinite)"),
        ({"y_train": np.ones(7)}, r"y_train.*7.*8"),
        ({"y_train": np.array(["a"] * 8)}, r"y_train.*(number|dtype)"),
        ({"y_train": np.ones((8, 2, 2))}, r"y_train.*shape"),
        ({"y_train": None}, r"y_train"),
        ({"ridge": -1.0}, r"ridge"),
        ({"ridge": np.nan}, r"ridge"),
        ({"ridge": "big"}, r"ridge"),
        ({"X_train": np.ones((8, 3)) * np.inf}, r"X_train.*(NaN|infinite)"),
        ({"X_train": np.ones((8, 3, 1))}, r"X_train.*2-D"),
        ({"X_train": np.ones((8, 3), dtype=complex)}, r"X_train.*(real|complex)"),
        ({"kernel": 42}, r"architecture|kernel"),
        ({"kernel": "Dense > Sigmoid6 > Dense"}, r"Unknown layer 'Sigmoid6'"),
    ],
)
def test_gd_mse_rejects(kwargs, pattern):
    X, y = _train()
    args = {"kernel": KERNEL, "X_train": X, "y_train": y, "ridge": 1e-6} | kwargs
    out = run_here(lambda: nk.predict.gd_mse(args["kernel"], args["X_train"], args["y_train"], ridge=args["ridge"]))
    assert_documented_error(out, pattern)


@pytest.mark.parametrize(
    "X_test, t, pattern",
    [
        (np.ones((2, 4)), np.inf, r"4 features.*3"),
        (np.ones((2, 3)) * np.nan, np.inf, r"X_test.*NaN"),
        (np.ones((2, 3)), -1.0, r"\bt\b.*>= 0"),
        (np.ones((2, 3)), np.nan, r"\bt\b"),
        (np.ones((2, 3)), "soon", r"\bt\b"),
        (np.ones((2, 3)), np.ones((2, 2)), r"\bt\b"),
    ],
)
def test_gd_mse_predict_rejects(X_test, t, pattern):
    X, y = _train()
    pred = nk.predict.gd_mse(KERNEL, X, y, ridge=1e-6)
    assert_documented_error(run_here(pred.predict, X_test, t=t), pattern)


@pytest.mark.parametrize("scale", [1e-300, 1e-155, 1e150, 1e300])
def test_gd_mse_extreme_scale_never_silently_nonfinite(scale):
    """Training on inputs at extreme scales: a finite prediction, or a clear error/warning."""
    X, y = _train()
    out = run_here(lambda: nk.predict.gd_mse(KERNEL, X * scale, y, ridge=1e-6).predict(X * scale, t=np.inf).mean)
    assert_no_hang_or_crash(out)
    if out.kind == "raised":
        assert is_documented_error(out), out.describe()
    else:
        assert np.isfinite(out.value).all() or out.warned(UserWarning), f"silent non-finite prediction: {out.value}"


@pytest.mark.parametrize(
    "params, pattern",
    [
        ({"arch": "Dense > Foo > Dense"}, r"Unknown layer 'Foo'"),
        ({"arch": 3.5}, r"arch"),
        ({"kernel": "gp"}, r"kernel"),
        ({"ridge": -2.0}, r"ridge"),
        ({"t": -1.0}, r"'t'"),
        ({"t": "later"}, r"'t'"),
    ],
)
def test_estimator_rejects_params(params, pattern):
    X, y = _train()
    out = run_here(lambda: nk.KernelRegressor(**params).fit(X, y))
    assert_documented_error(out, pattern)


@pytest.mark.parametrize("X_bad", [np.full((8, 3), np.nan), np.ones((8, 3)) * 1j, np.array([["x"] * 3] * 8)])
def test_estimator_rejects_data(X_bad):
    _, y = _train()
    out = run_here(lambda: nk.KernelRegressor(arch=ARCH).fit(X_bad, y))
    assert_documented_error(out)
    out = run_here(lambda: nk.KernelClassifier(arch=ARCH).fit(X_bad, (y > 0).astype(int)))
    assert_documented_error(out)


def test_cross_call_with_an_overflowing_point_is_refused_by_name():
    # K(x', x') ≈ 2.3e308 overflows although the cross entry (≈ 2.5e154) would fit: refused
    # with the documented error rather than returned from an overflowed variance.
    with pytest.raises(nk.KernelOverflowError, match="exceed float64.*Rescale the inputs"):
        KERNELS[(0.0, 1)](np.array([[-1.0]]), np.array([[-1e154]]))
