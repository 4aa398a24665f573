"""Pickling compiled kernels: after use, across processes, and the message for what cannot pickle.

A kernel pickles as its description (architecture and tol) and is compiled again on
unpickling, so the rebuilt kernel runs the same generated code: the Gram matrices must be
bit-identical to those of the original kernel, in this process and in worker processes.
"""

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import sympy as sp

import ntk_infinite as nk

ARCH = "Dense(w_std=1.4, b_std=0.1) > ReLU > Dense(w_std=1.4, b_std=0.1) > Erf > Dense(w_std=1.4, b_std=0.1)"


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(11).standard_normal((9, 4))


def _assert_same(a, b):
    np.testing.assert_array_equal(a.nngp, b.nngp)
    np.testing.assert_array_equal(a.ntk, b.ntk)


def test_a_used_kernel_pickles_and_gives_identical_grams(X):
    kernel = nk.compile(ARCH, tol=1e-9)
    before = kernel(X)  # loads the jitted engine into the program
    again = pickle.loads(pickle.dumps(kernel))
    assert isinstance(again, nk.CompiledKernel)
    assert again.architecture == kernel.architecture and again.tol == kernel.tol
    _assert_same(again(X), before)
    _assert_same(again(X[:4], X[4:]), kernel(X[:4], X[4:]))


def test_a_kernel_with_python_and_sympy_activations_pickles(X):
    x = sp.Symbol("x")
    arch = nk.serial(nk.Dense(w_std=1.3, b_std=0.2), nk.Activation(np.sin), nk.Dense(w_std=1.3, b_std=0.2),
                     nk.Activation(sp.Abs(x) ** 3 / 2, name="half_abs_cubed"), nk.Dense(w_std=1.3, b_std=0.2))
    kernel = nk.compile(arch)
    before = kernel(X)
    again = pickle.loads(pickle.dumps(kernel))
    assert again.architecture == arch
    assert again.architecture[3].kinks == (0.0,)
    _assert_same(again(X), before)


def _local_activation():
    def squash(t):
        return np.tanh(t)

    return squash


@pytest.mark.parametrize("fn, shown", [(lambda t: np.tanh(t), "<lambda>"), (_local_activation(), "squash")])
def test_an_unpicklable_activation_is_named_with_the_fix(fn, shown):
    kernel = nk.compile(nk.serial(nk.Dense(w_std=1.4), nk.Activation(fn), nk.Dense(w_std=1.4)))
    with pytest.raises(nk.NotPicklableError,
                       match=rf"layer 1, Activation\({shown}\), holds an object pickle cannot store .*"
                       r"with 'def' at module level"):
        pickle.dumps(kernel)
    with pytest.raises(pickle.PicklingError):  # also what callers of pickle expect
        pickle.dumps(kernel)


def test_a_predictor_pickles_with_its_kernel(X):
    y = np.sin(X[:, 0])
    pred = nk.predict.gd_mse(nk.compile(ARCH), X, y, ridge=1e-3)
    a = pred.predict(X[:3], t=2.0).mean
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(pred)).predict(X[:3], t=2.0).mean, a)


@pytest.mark.slow  # ~4 s: two fresh interpreters import numba; the fast version is the round trip above
def test_kernels_evaluate_in_spawned_worker_processes(X):
    """Two spawn workers (fresh interpreters) receive the pickled kernel and rebuild it."""
    kernel = nk.compile(ARCH)
    expected = [kernel(X[:5]), kernel(X[5:], X[:5])]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        futures = [pool.submit(kernel, X[:5]), pool.submit(kernel, X[5:], X[:5])]
        results = [f.result(timeout=300) for f in futures]
    for got, want in zip(results, expected):
        _assert_same(got, want)
