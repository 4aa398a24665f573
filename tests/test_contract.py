"""The kernel contract, over every activation (docs/DESIGN.md, "Testing layers", 2 and 3).

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
from tolerances import CONTRACT_RTOL, PSD_RTOL, ROTATION_RTOL

CORE_CASES = [("relu", nk.ReLU()), ("identity", nk.Identity()), ("tanh-series", nk.Activation(np.tanh, name="tanh"))]
try:  # the full activation library contributes its own list
    from activation_cases import ACTIVATION_CASES, CASE_ROUTES
except ImportError:  # pragma: no cover - until the library lands
    ACTIVATION_CASES, CASE_ROUTES = [], {}
#: The route of each case (declared here, not read from the compiled kernel), keying its tolerance.
#: compile drops Identity layers, leaving the Dense layers' exact affine maps.
CASE_ROUTES = {"relu": "closed form", "identity": "closed form", "tanh-series": "series", **CASE_ROUTES}
CASES = CORE_CASES + [case for case in ACTIVATION_CASES if case[0] not in dict(CORE_CASES)]
#: One case per route and family runs by default (each compiles an engine of its own); the
#: other activations' contracts are in the slow run.
DEFAULT_CASES = {"relu", "identity", "tanh-series", "leaky_relu", "step", "polynomial", "erf", "sympy_closed_form",
                 "silu", "elu", "kinked_callable"}
CONTRACT_PARAMS = [pytest.param(*case, id=case[0], marks=() if case[0] in DEFAULT_CASES else pytest.mark.slow)
                   for case in CASES]


@st.composite
def architectures(draw, activation):
    depth = draw(st.integers(1, 5))
    layers = []
    for _ in range(depth):
        layers += [nk.Dense(w_std=draw(st.floats(0.2, 2.0)), b_std=draw(st.floats(0.0, 1.0))), activation]
    layers.append(nk.Dense(w_std=draw(st.floats(0.2, 2.0)), b_std=draw(st.floats(0.0, 1.0))))
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


def _close(a, b, rtol, what):
    """|a - b| <= rtol · max|entry|: the contract's comparisons are relative to the matrix scale."""
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), 1e-300)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=what)


def _rotation_well_posed(X):
    """Pairs whose kernel a rounded rotation X @ Q cannot change by more than rounding.

    X @ Q moves every row by ~1e-16 of its norm in a random direction. For two rows at an
    angle θ of that order (x and x·(1 + 1e-9)), this changes θ by O(1) relative, and kernels
    with a √θ-type dependence (Step, Sign, and their compositions) change far more than the
    rounding level: that is the inputs' conditioning, not an error of the kernel. Exact
    duplicates, antipodes and zero rows stay exact under the rotation.
    """
    norms = np.linalg.norm(X, axis=1)
    U = X / np.where(norms > 0, norms, 1.0)[:, None]
    cos = np.clip(U @ U.T, -1.0, 1.0)
    exact = (X[:, None, :] == X[None, :, :]).all(-1) | (X[:, None, :] == -X[None, :, :]).all(-1)
    zero = (norms == 0)[:, None] | (norms == 0)[None, :]
    return exact | zero | (1.0 - np.abs(cos) > 1e-6)


def check_contract(arch, X, seed, route):
    """The contract, with the fixed tolerances of ``route`` (a key of CONTRACT_RTOL)."""
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
        cols, signs = rng.permutation(X.shape[1]), rng.choice([-1.0, 1.0], size=X.shape[1])
        k_signed = kernel(X[:, cols] * signs)  # an orthogonal map that float64 applies exactly
    well_posed = _rotation_well_posed(X)
    # Fixed per route, never widened by the kernel's own error report: a kernel that
    # misreports its accuracy must not loosen its own test.
    rtol = CONTRACT_RTOL[route]
    rot_rtol = max(rtol, ROTATION_RTOL)
    for name in ("nngp", "ntk"):
        K = getattr(k, name)
        assert np.isfinite(K).all(), f"{name} has non-finite entries"
        np.testing.assert_array_equal(K, K.T, err_msg=f"{name} is not exactly symmetric")
        _close(getattr(k_xx, name), K, rtol, f"{name}: K(X, X) != K(X)")
        np.testing.assert_array_equal(getattr(d, name), np.diag(K))
        eig = np.linalg.eigvalsh(K)
        assert eig[0] >= -PSD_RTOL * max(eig[-1], 0.0) - 1e-300, f"{name} not PSD: {eig[0]} vs {eig[-1]}"
        for t, kt in zip((1, 3), k_tiles):
            _close(getattr(kt, name), K, rtol, f"{name}: tile={t} differs")
        _close(getattr(k_perm, name), K[np.ix_(perm, perm)], rtol, f"{name}: not permutation equivariant")
        _close(getattr(k_signed, name), K, rtol, f"{name}: not invariant to a signed permutation of features")
        _close(np.where(well_posed, getattr(k_rot, name), K), K, rot_rtol, f"{name}: not rotation invariant")


@pytest.mark.parametrize("case_id, activation", CONTRACT_PARAMS)
def test_contract(case_id, activation):
    # The core routes get the default example budget; each library activation a smaller one
    # (they share those routes), which keeps the whole suite within CI's budget.
    examples = settings().max_examples if case_id in dict(CORE_CASES) else max(8, settings().max_examples // 3)

    @settings(max_examples=examples)
    @given(arch=architectures(activation), X=inputs(), seed=st.integers(0, 2**16))
    def run(arch, X, seed):
        assume(np.isfinite(X).all())
        check_contract(arch, X, seed, route)

    route = CASE_ROUTES.get(case_id)
    if route is None:
        pytest.fail(f"activation case {case_id!r} has no route in activation_cases.CASE_ROUTES; add it "
                    f"(one of {sorted(CONTRACT_RTOL)}) so the contract knows its tolerance.")
    run()


def test_contract_mixed_activations():
    """Two different activations in one network share one generated engine."""
    arch = nk.serial(nk.Dense(w_std=1.3, b_std=0.2), nk.ReLU(), nk.Dense(w_std=0.9, b_std=0.4), nk.Activation(np.tanh, name="tanh"),
                     nk.Dense(w_std=1.1, b_std=0.1), nk.ReLU(), nk.Dense(w_std=1.0, b_std=0.0))
    X = np.random.default_rng(11).normal(size=(9, 4))
    X[3] = X[1]
    X[4] = -X[2]
    check_contract(arch, X, seed=3, route="series")  # ReLU (closed form) and tanh (series)
