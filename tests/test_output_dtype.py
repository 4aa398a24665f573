"""Output precision and memory of ``kernel(X, dtype=..., get=...)``.

float32 outputs are the float64 values rounded once (computed in row blocks, never as an
n × n float64 array); ``get="ntk"`` alone holds no NNGP matrix. Reference values: the naive
recursion of tests/naive.py, and the float64 call rounded to float32.
"""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

import ntk_infinite as nk
from naive import naive_kernels

DENSE = "Dense(w_std=1.4, b_std=0.1) > ReLU > Dense(w_std=1.4, b_std=0.1) > Erf > Dense"
CONV = "Conv(filter_shape=(3, 3), padding='SAME', w_std=1.4, b_std=0.1) > ReLU > Flatten > Dense"


@pytest.fixture(scope="module")
def dense():
    return nk.compile(DENSE)


def _peak_bytes(call):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak - base


def test_float32_is_the_naive_recursion_rounded():
    arch = "Dense(w_std=1.4, b_std=0.1) > ReLU > Dense(w_std=1.4, b_std=0.1) > ReLU > Dense"
    X = np.random.default_rng(1).standard_normal((12, 5))
    ref = naive_kernels(nk.parse_architecture(arch), X)
    got = nk.compile(arch)(X, dtype=np.float32)
    for name, expected in zip(("nngp", "ntk"), ref):
        values = getattr(got, name)
        assert values.dtype == np.float32 and values.shape == (12, 12)
        # One rounding to float32 (2^-24 relative) on top of the engine's ~1e-15.
        np.testing.assert_allclose(values, expected, rtol=7e-8, atol=0)


@pytest.mark.parametrize("symmetric", [True, False], ids=["K(X)", "K(X1, X2)"])
def test_float32_blocks_equal_the_float64_call_rounded(dense, symmetric):
    rng = np.random.default_rng(2)
    X1 = rng.standard_normal((700, 6))  # several 256-row blocks, a short last one
    X2 = None if symmetric else rng.standard_normal((300, 6))
    ref = dense(X1, X2)
    got = dense(X1, X2, dtype=np.float32)
    for name in ("nngp", "ntk"):
        expected = getattr(ref, name).astype(np.float32)
        np.testing.assert_array_max_ulp(getattr(got, name), expected, maxulp=1)
    if symmetric:
        assert np.array_equal(got.ntk, got.ntk.T)


def test_float32_of_a_convolutional_network():
    kernel = nk.compile(CONV)
    X = np.random.default_rng(3).standard_normal((300, 4, 4, 2))
    ref = kernel(X, get="ntk")
    got = kernel(X, get="ntk", dtype=np.float32)
    assert got.nngp is None and got.ntk.dtype == np.float32
    np.testing.assert_array_max_ulp(got.ntk, ref.ntk.astype(np.float32), maxulp=1)


def test_float32_halves_the_peak_memory(dense):
    X = np.random.default_rng(4).standard_normal((2000, 8))
    out64 = 2 * X.shape[0] ** 2 * 8
    _, peak64 = _peak_bytes(lambda: dense(X))
    _, peak32 = _peak_bytes(lambda: dense(X, dtype=np.float32))
    assert peak64 >= out64
    # float32 outputs (half of out64), plus one block's float64 values (an eighth of the float32
    # output) and the temporaries of its range check and kernel call.
    assert peak32 < 0.68 * out64, (peak32, out64)


def test_ntk_alone_allocates_no_nngp_matrix(dense):
    X = np.random.default_rng(5).standard_normal((2000, 8))
    one = X.shape[0] ** 2 * 8
    result, peak = _peak_bytes(lambda: dense(X, get="ntk"))
    assert result.nngp is None
    assert peak < 1.25 * one, (peak, one)


def test_float32_overflow_is_an_error_that_names_the_fix():
    relu = nk.compile("Dense > ReLU > Dense")
    X = np.random.default_rng(6).standard_normal((4, 3)) * 1e20  # Σ ~ 1e40: finite in float64 only
    assert np.all(np.isfinite(relu(X).nngp))
    with pytest.raises(nk.KernelOverflowError, match=r"float32's range.*dtype=np\.float64"):
        relu(X, dtype=np.float32)


def test_float32_underflow_warns(dense):
    kernel = nk.compile("Dense(w_std=1.0, b_std=0.0) > ReLU > Dense(w_std=1.0, b_std=0.0)")
    X = np.abs(np.random.default_rng(7).standard_normal((4, 3))) * 1e-21  # Σ ~ 1e-42
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernel(X)
    with pytest.warns(nk.KernelUnderflowWarning, match="float32's normal range"):
        kernel(X, dtype=np.float32)


@pytest.mark.parametrize("dtype", [np.int32, np.float16, "complex128", "not a dtype"])
def test_other_dtypes_are_refused_with_the_choices(dense, dtype):
    with pytest.raises(nk.ParameterError, match=r"np\.float64 \(default\) or np\.float32.*got"):
        dense(np.ones((2, 3)), dtype=dtype)
