"""Input validation of kernel evaluation: every message says what to do."""

import numpy as np
import pytest

import ntk_infinite as nk
from ntk_infinite.errors import InputError
from tolerances import ULP_RTOL

KERNEL = nk.compile("Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)")


@pytest.mark.parametrize(
    "X, exc, pattern",
    [
        (np.array([[1.0, np.nan]]), InputError, r"X1 contains NaN or infinite values \(first at row 0, column 1: nan\).*impute"),
        (np.array([[1.0], [np.inf]]), InputError, r"X1 contains NaN or infinite values \(first at row 1, column 0: inf\)"),
        (np.ones(3), InputError, r"X1 must be a 2-D array .* got an array with 1 dimension\(s\) and shape \(3,\)\. Use X1\.reshape\(-1, 1\)"),
        (np.ones((2, 2, 2)), InputError, r"X1 must be a 2-D array .* 3 dimension\(s\)"),
        (np.array([["a", "b"]]), TypeError, r"X1 must contain real numbers; got dtype <U1"),
        (np.ones((2, 2)) * 1j, TypeError, r"X1 must be real; got complex"),
        (None, TypeError, r"X1 must be a 2-D array .* got None"),
        (np.ones((3, 0)), InputError, r"at least one feature"),
    ],
)
def test_bad_x1(X, exc, pattern):
    with pytest.raises(exc, match=pattern):
        KERNEL(X)


def test_mismatched_features():
    with pytest.raises(InputError, match=r"X2 has 5 features but X1 has 3; pass arrays with the same number of columns"):
        KERNEL(np.ones((2, 3)), np.ones((4, 5)))


def test_bad_x2_values():
    with pytest.raises(InputError, match=r"X2 contains NaN"):
        KERNEL(np.ones((2, 3)), np.array([[1.0, 2.0, np.nan]]))


def test_bad_get():
    with pytest.raises(ValueError, match=r"get must be 'nngp', 'ntk' or a tuple of them; got 'ntkk'"):
        KERNEL(np.ones((2, 3)), get="ntkk")
    with pytest.raises(TypeError, match=r"get must be 'nngp', 'ntk' or a tuple of them; got 3 of type int"):
        KERNEL(np.ones((2, 3)), get=3)
    with pytest.raises(ValueError, match=r"got \('ntk', None\)"):
        KERNEL(np.ones((2, 3)), get=("ntk", None))


def test_bad_tile():
    with pytest.raises(ValueError, match=r"'tile' parameter of kernel must be an integer in the range \[1, inf\)"):
        KERNEL(np.ones((2, 3)), tile=0)


def test_empty_inputs_give_empty_matrices():
    k = KERNEL(np.empty((0, 3)))
    assert k.nngp.shape == (0, 0) and k.ntk.shape == (0, 0)
    k = KERNEL(np.empty((0, 3)), np.ones((4, 3)))
    assert k.nngp.shape == (0, 4) and k.ntk.shape == (0, 4)
    k = KERNEL(np.ones((2, 3)), np.empty((0, 3)))
    assert k.nngp.shape == (2, 0)
    d = KERNEL.diag(np.empty((0, 3)))
    assert d.nngp.shape == (0,) and d.ntk.shape == (0,)


def test_get_skips_work_and_result_access():
    X = np.random.default_rng(0).normal(size=(5, 3))
    both = KERNEL(X)
    only = KERNEL(X, get="nngp")
    assert only.ntk is None
    np.testing.assert_array_equal(only.nngp, both.nngp)
    only_ntk = KERNEL(X, get="ntk")
    assert only_ntk.nngp is None
    np.testing.assert_array_equal(only_ntk.ntk, both.ntk)
    with pytest.raises(KeyError, match=r"'ntk' was not computed; pass get='ntk'"):
        only["ntk"]
    np.testing.assert_array_equal(both["nngp"], both.nngp)
    with pytest.raises(AttributeError):
        both.nngp = None


def test_integer_and_list_inputs_are_coerced():
    k1 = KERNEL([[1, 2, 3], [0, 1, 0]])
    k2 = KERNEL(np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]))
    np.testing.assert_array_equal(k1.ntk, k2.ntk)
    assert k1.ntk.dtype == np.float64
    # Non-contiguous views are fine.
    X = np.random.default_rng(1).normal(size=(6, 8))
    np.testing.assert_allclose(KERNEL(X[:, ::2]).ntk, KERNEL(np.ascontiguousarray(X[:, ::2])).ntk, rtol=ULP_RTOL, atol=0)
