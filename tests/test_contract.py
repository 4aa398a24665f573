"""The kernel contract, over every activation (DESIGN.md "Testing layers", 2 and 3).

For random architectures (depth 1–5, random w_std/b_std per layer) and random inputs
(including duplicated, antipodal and zero rows), every compiled kernel must be:
exactly symmetric; K(X) == K(X, X); diag() equal to the diagonal; positive
semi-definite; independent of the tile size; permutation equivariant; and invariant to
a common rotation of all inputs (a dense network's kernel depends on X Xᵀ only).
"""

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.stats import special_ortho_group

import ntk_infinite as nk
from tolerances import PSD_RTOL, ROUNDING_RTOL

CORE_CASES = [("relu", nk.ReLU()), ("identity", nk.Identity()), ("tanh-series", nk.Activation(np.tanh, name="tanh"))]
try:  # the full activation library contributes its own list
    from activation_cases import ACTIVATION_CASES
except ImportError:  # pragma: no cover - until the library lands
    ACTIVATION_CASES = []
CASES = CORE_CASES + [case for case in ACTIVATION_CASES if case[0] not in dict(CORE_CASES)]


@st.composite
def architectures(draw, activation):
    depth = draw(st.integers(1, 5))
    layers = []
    for _ in range(depth):
        layers += [nk.Dense(draw(st.floats(0.2, 2.0)), draw(st.floats(0.0, 1.0))), activation]
    layers.append(nk.Dense(draw(st.floats(0.2, 2.0)), draw(st.floats(0.0, 1.0))))
    return nk.serial(*layers)


@st.composite
def inputs(draw):
    n = draw(st.integers(1, 7))
    d = draw(st.integers(1, 5))
    rows = draw(st.lists(st.lists(st.floats(-3, 3, allow_subnormal=False), min_size=d, max_size=d), min_size=n, max_size=n))
    X = np.array(rows, dtype=float)
    # Special rows that stress the numerics: duplicates, antipodes, near-duplicates, zeros.
    for i in range(1, n):
        kind = draw(st.sampled_from(["keep", "keep", "dup", "neg", "near", "zero"]))
        j = draw(st.integers(0, i - 1))
        if kind == "dup":
            X[i] = X[j]
        elif kind == "neg":
            X[i] = -X[j]
        elif kind == "near":
            X[i] = X[j] * (1 + 1e-9)
        elif kind == "zero":
            X[i] = 0.0
    return X


def _close(a, b, rtol):
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), 1e-300)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


def check_contract(arch, X, seed):
    kernel = nk.compile(arch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nk.AccuracyWarning)
        k = kernel(X)
        k_xx = kernel(X, X)
        d = kernel.diag(X)
        k_tiles = [kernel(X, tile=t) for t in (1, 3)]
        rng = np.random.default_rng(seed)
        perm = rng.permutation(X.shape[0])
        k_perm = kernel(X[perm])
        Q = special_ortho_group.rvs(X.shape[1], random_state=seed) if X.shape[1] > 1 else np.array([[-1.0]])
        k_rot = kernel(X @ Q)
    # Exact routes agree to rounding; numerical ones (series, quadrature) within their
    # reported accuracy, e.g. a 2-D rule that is not symmetric in its two points.
    worst = max(r.error_estimate for r in (k, k_xx, d, *k_tiles, k_perm, k_rot))
    rtol = max(ROUNDING_RTOL, 10 * worst)
    for name in ("nngp", "ntk"):
        K = getattr(k, name)
        assert np.isfinite(K).all(), f"{name} has non-finite entries"
        np.testing.assert_array_equal(K, K.T, err_msg=f"{name} is not exactly symmetric")
        _close(getattr(k_xx, name), K, rtol)
        np.testing.assert_array_equal(getattr(d, name), np.diag(K))
        eig = np.linalg.eigvalsh(K)
        assert eig[0] >= -PSD_RTOL * max(eig[-1], 0.0) - 1e-300, f"{name} not PSD: {eig[0]} vs {eig[-1]}"
        for kt in k_tiles:
            _close(getattr(kt, name), K, rtol)
        _close(getattr(k_perm, name), K[np.ix_(perm, perm)], rtol)
        _close(getattr(k_rot, name), K, max(1e-9, rtol))


@pytest.mark.parametrize("case_id, activation", CASES, ids=[c[0] for c in CASES])
def test_contract(case_id, activation):
    # The core routes get the default example budget; each library activation a smaller one
    # (they share those routes), which keeps the whole suite within CI's budget.
    examples = settings().max_examples if case_id in dict(CORE_CASES) else max(8, settings().max_examples // 3)

    @settings(max_examples=examples)
    @given(arch=architectures(activation), X=inputs(), seed=st.integers(0, 2**16))
    def run(arch, X, seed):
        assume(np.isfinite(X).all())
        check_contract(arch, X, seed)

    run()


def test_contract_mixed_activations():
    """Two different activations in one network share one generated engine."""
    arch = nk.serial(nk.Dense(1.3, 0.2), nk.ReLU(), nk.Dense(0.9, 0.4), nk.Activation(np.tanh, name="tanh"),
                     nk.Dense(1.1, 0.1), nk.ReLU(), nk.Dense(1.0, 0.0))
    X = np.random.default_rng(11).normal(size=(9, 4))
    X[3] = X[1]
    X[4] = -X[2]
    check_contract(arch, X, seed=3)
