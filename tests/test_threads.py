"""One compiled kernel called from several threads at once gives exactly the serial results.

Every route is covered: arc-cosine, sympy-derived Gaussian closed forms, polynomials (Wick),
Hermite series and kink-aware quadrature. Each call uses inputs of a different scale, so the
numerical routes choose a different truncation (or quadrature table) per call: per-call
state kept on the shared duals shows up as results that differ from the serial ones.
The expected values are serial calls of a separately compiled kernel; equality is bit for bit.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import ntk_infinite as nk
from ntk_infinite.compiler import codegen
from ntk_infinite.compiler.duals.base import Dual, PointResult
from ntk_infinite.compiler.duals.quadrature import QuadratureDual
from ntk_infinite.compiler.duals.series import SeriesDual
from ntk_infinite.evaluate.engine import Program

N_THREADS = 4


def _dense():
    return nk.Dense(w_std=1.4, b_std=0.2)


def _arch(*activations):
    layers = []
    for act in activations:
        layers += [_dense(), act]
    return nk.serial(*layers, _dense())


#: route -> (architecture factory, whether the route reports a nonzero error estimate)
ROUTES = {
    "arc-cosine": (lambda: _arch(nk.ReLU(), nk.LeakyReLU(alpha=0.2)), False),
    # One tile kind (Erf at two parameter settings) shares its engine with the other tests;
    # the slow variant adds GELU, Sin and Exp (a mixed engine costs a compilation of its own).
    "gaussian closed forms": (lambda: _arch(nk.Erf(), nk.Erf(a=2.0, b=0.5, c=0.1)), False),
    "polynomials": (lambda: _arch(nk.Polynomial(coef=(0.1, 1.0, -0.3, 0.2)), nk.Monomial(degree=2)), False),
    "hermite series": (lambda: _arch(nk.Tanh(), nk.Activation(lambda v: np.tanh(v) + 0.25 * v, name="tanh_lin")),
                       True),
    "quadrature": (lambda: _arch(nk.ELU()), True),
}


def _rows(rng, n, scale):
    """n rows with input variances |x|²/d in [scale²/2, scale²]."""
    X = rng.standard_normal((n, 3))
    X *= scale * np.sqrt(3.0 * rng.uniform(0.5, 1.0, (n, 1)) / np.einsum("ij,ij->i", X, X)[:, None])
    return X


def _inputs(n_calls: int, n: int, seed: int):
    """Per call (X1, X2 or None), X1 of a different scale each (geometric in [0.2, 1]: the
    series truncations range over about 20 to 400 terms)."""
    rng = np.random.default_rng(seed)
    scales = rng.permutation(np.geomspace(0.2, 1.0, n_calls))
    calls = []
    for i, s in enumerate(scales):
        X2 = None if i % 2 == 0 else _rows(rng, n - 2, rng.uniform(0.2, 1.0))
        calls.append((_rows(rng, n, s), X2))
    return calls


def _evaluate(kernel, X1, X2):
    k = kernel(X1, X2)
    d = kernel.diag(X1)
    return k.nngp, k.ntk, k.error_estimate, d.nngp, d.ntk, d.error_estimate


def _run_threads(kernel, calls, n_threads=N_THREADS):
    """Call i on thread i % n_threads; all threads start together on a barrier."""
    barrier = threading.Barrier(n_threads)
    results = [None] * len(calls)
    failures = []

    def worker(t):
        try:
            barrier.wait()
            for i in range(t, len(calls), n_threads):
                results[i] = _evaluate(kernel, *calls[i])
        except BaseException as exc:  # re-raised on the main thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if failures:
        raise failures[0]
    return results


def _check_threads_match_serial(route, n_calls, n, seed, routes=ROUTES):
    make, numerical = routes[route]
    calls = _inputs(n_calls, n, seed)
    serial = nk.compile(make())
    expected = [_evaluate(serial, *c) for c in calls]
    # A fresh kernel: the threads also race to build its engine.
    got = _run_threads(nk.compile(make()), calls)
    wrong = [i for i, (e, g) in enumerate(zip(expected, got))
             if not all(np.array_equal(a, b) for a, b in zip(e, g))]
    assert not wrong, f"{route}: {len(wrong)} of {n_calls} threaded calls differ from serial ones (calls {wrong[:10]})"
    estimates = {e[2] for e in expected}
    if numerical:
        # different scales give different truncations, hence different per-call estimates
        assert min(estimates) > 0.0 and len(estimates) > 1
    else:
        assert estimates == {0.0}


@pytest.mark.filterwarnings("error::ntk_infinite.AccuracyWarning")
@pytest.mark.parametrize("route", list(ROUTES))
def test_concurrent_calls_equal_serial_calls(route):
    _check_threads_match_serial(route, n_calls=N_THREADS * 25, n=5, seed=1)


ROUTES_HEAVY = {**ROUTES, "all gaussian closed forms": (
    lambda: _arch(nk.Erf(), nk.GELU(), nk.Sin(), nk.Exp(a=1.0, b=0.5)), False)}


@pytest.mark.slow
@pytest.mark.filterwarnings("error::ntk_infinite.AccuracyWarning")
@pytest.mark.parametrize("route", list(ROUTES_HEAVY))
def test_concurrent_calls_equal_serial_calls_heavy(route):
    n = 12 if route == "quadrature" else 40
    _check_threads_match_serial(route, n_calls=N_THREADS * 150, n=n, seed=2, routes=ROUTES_HEAVY)


# ------------------------------------------------------------------------ per-call data
def test_error_estimate_belongs_to_the_call():
    make = ROUTES["hermite series"][0]
    rng = np.random.default_rng(3)
    inputs = [_rows(rng, 5, 0.2), _rows(rng, 5, 1.0)]
    fresh = [nk.compile(make())(X).error_estimate for X in inputs]
    assert fresh[0] != fresh[1]
    high, low = (0, 1) if fresh[0] > fresh[1] else (1, 0)
    kernel = nk.compile(make())
    kernel(inputs[high])
    # the estimate of this call, not the largest so far
    assert kernel(inputs[low]).error_estimate == fresh[low]
    assert kernel.diag(inputs[low]).error_estimate == fresh[low]


@pytest.mark.parametrize("route, cls", [("hermite series", SeriesDual), ("quadrature", QuadratureDual)])
def test_another_call_right_after_point_changes_nothing(route, cls, monkeypatch):
    # Deterministic version of the race above: another call, at smaller variances (a shorter
    # truncation, a narrower table), lands between this call's point pass and its pair pass.
    kernel = nk.compile(ROUTES[route][0]())
    X1, _ = _inputs(1, 5, seed=5)[0]
    expected = _evaluate(kernel, X1, None)
    real_point = cls.point

    def point_then_another(self, q):
        res = real_point(self, q)
        real_point(self, q / 16.0)
        return res

    monkeypatch.setattr(cls, "point", point_then_another)
    got = _evaluate(kernel, X1, None)
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))


@pytest.mark.parametrize("route", list(ROUTES))
def test_evaluation_leaves_every_dual_unchanged(route):
    kernel = nk.compile(ROUTES[route][0]())
    snapshots = [{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(d).items()}
                 for d in kernel.program.duals]
    for X1, X2 in _inputs(4, 4, seed=4):
        _evaluate(kernel, X1, X2)
    for dual, before in zip(kernel.program.duals, snapshots):
        after = vars(dual)
        assert after.keys() == before.keys(), f"{dual!r} gained or lost attributes"
        for k, v in before.items():
            if isinstance(v, np.ndarray):
                assert np.array_equal(after[k], v), f"{dual!r}.{k} was modified in place"
            else:
                assert after[k] is v, f"{dual!r}.{k} was replaced"


def test_a_dual_refuses_new_state_after_construction():
    dual = nk.compile(ROUTES["hermite series"][0]()).program.duals[0]
    with pytest.raises(AttributeError, match=r"SeriesDual is immutable after construction, but something set "
                                              r"'terms'.*PointResult of point\(\)"):
        dual.terms = (3, 3)
    with pytest.raises(AttributeError, match="immutable"):
        del dual.tol

    class Remembering(Dual):
        key = "remembering"

        def __init__(self):
            self.calls = 0  # allowed: still constructing

        def point(self, q):
            self.calls += 1
            return PointResult(q, np.ones_like(q))

        tile_source = T = Tdot = formula = lambda self, *a: None

    user_dual = Remembering()
    with pytest.raises(AttributeError, match=r"Remembering is immutable after construction.*'calls'"):
        user_dual.point(np.ones(2))


def test_point_result_is_immutable():
    res = PointResult(np.ones(2), np.ones(2), params=np.array([3.0, 4.0]), error_estimate=1e-12, terms=(3, 4))
    assert res.terms == (3, 4) and res.error_estimate == 1e-12 and res.data is None
    with pytest.raises(AttributeError, match="immutable"):
        res.params = None


# ------------------------------------------------------------------------ building once
def test_engine_is_built_once_when_first_used_from_several_threads(monkeypatch):
    program = nk.compile(ROUTES["arc-cosine"][0]()).program
    builds = []
    real_build = Program._build

    def slow_build(self):
        builds.append(threading.get_ident())
        time.sleep(0.05)  # widen the window in which another thread could start a second build
        return real_build(self)

    monkeypatch.setattr(Program, "_build", slow_build)
    barrier = threading.Barrier(N_THREADS)
    engines = []

    def first_use():
        barrier.wait()
        engines.append(program.engine)

    threads = [threading.Thread(target=first_use) for _ in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(builds) == 1
    assert len(engines) == N_THREADS and all(e is engines[0] for e in engines)


_SLOW_MODULE = """
import time
time.sleep(0.05)  # a module that takes a while to execute, like one Numba compiles at import
TOKEN = object()
"""


def test_load_module_executes_a_source_once_across_threads():
    barrier = threading.Barrier(N_THREADS)
    modules = []

    def load():
        barrier.wait()
        modules.append(codegen.load_module(_SLOW_MODULE, prefix="test_threads"))

    threads = [threading.Thread(target=load) for _ in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(modules) == N_THREADS
    assert all(m is modules[0] for m in modules) and all(m.TOKEN is modules[0].TOKEN for m in modules)
