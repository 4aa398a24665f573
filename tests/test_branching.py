"""Branches (FanOut, parallel, FanInSum, FanInConcat, Residual), LayerNorm and standard
parameterisation in dense networks.

Expected values come from the naive tree recursion of tests/naive.py (plain floats, layer by
layer), from mpmath for nearly parallel and antiparallel pairs, from finite networks built from
the same description, and (slow) from neural-tangents 0.6.5 in x64.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import ntk_infinite as nk
from branch_cases import CASES, architecture
from naive import erf_T, erf_Tdot, mp_relu_dual, mp_tree_kernels, naive_tree_kernels, relu_T, relu_Tdot
from nt_bridge import run_nt
from tolerances import COLLINEAR_RTOL, NAIVE_RTOL, NT_CROSS_RTOL, PSD_RTOL, ROUNDING_RTOL, STAT_Z

RESNET = "Dense(1.4, 0.1) > 2*(Residual(ReLU > Dense(1.3, 0.05) > ReLU > Dense(1.2))) > ReLU > Dense(1.5, 0.1)"


def _data(n=6, d=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def closed_forms(layer, q1, q2, c):
    """(T, Ṫ) of ReLU (Cho & Saul 2009) and Erf (Williams 1997), typed from the papers."""
    if isinstance(layer, nk.ReLU):
        return relu_T(q1, q2, c), relu_Tdot(q1, q2, c)
    if isinstance(layer, nk.Erf) and (layer.a, layer.b, layer.c) == (1.0, 1.0, 0.0):
        return erf_T(q1, q2, c), erf_Tdot(q1, q2, c)
    raise TypeError(f"no closed form here for {layer!r}")


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ---------------------------------------------------------------- description and text form
def test_residual_is_fanout_parallel_faninsum():
    block = (nk.ReLU(), nk.Dense(w_std=1.3))
    expected = nk.serial(nk.FanOut(2), nk.parallel(nk.serial(*block), nk.Identity()), nk.FanInSum())
    assert nk.Residual(*block) == expected
    assert hash(nk.Residual(*block)) == hash(expected)
    assert nk.Residual(*block).to_text() == "FanOut > [ReLU > Dense(w_std=1.3) | Identity] > FanInSum"


@pytest.mark.parametrize("text", [
    RESNET,
    "Dense > FanOut(3) > [Dense(2.0) | ReLU > Dense(1.0, 0.1, 30) | Identity] > FanInConcat > Dense",
    "Dense(1.5, 0.1, 64, 'standard') > LayerNorm(eps=0.5) > Residual(Residual(ReLU > Dense)) > Dense",
])
def test_text_form_round_trips(text):
    arch = nk.parse_architecture(text)
    again = nk.parse_architecture(arch.to_text())
    assert again == arch and hash(again) == hash(arch)


def test_residual_text_expands_and_counts_layers():
    arch = nk.parse_architecture("Dense > 3*(Residual(ReLU > Dense)) > Dense")
    assert len(list(arch.walk())) == 2 + 3 * 5  # per block: FanOut, ReLU, Dense, the identity branch, FanInSum
    assert arch.depth == 3


@pytest.mark.parametrize("text, pattern", [
    ("Dense > [ReLU | ] > FanInSum > Dense", r"an empty branch; write Identity"),
    ("Dense > FanOut(2) > [ReLU > Dense | Identity", r"missing '\]' to close a parallel block"),
    ("Dense > Residual > Dense", r"Residual needs its block in parentheses"),
    ("Dense > Residual() > Dense", r"Residual\(\) needs at least one layer"),
    ("Dense ] > Dense", r"unmatched '\]'"),
    ("Dense > [Dense) | Identity] > FanInSum > Dense", r"unmatched '\)'"),
])
def test_text_form_errors(text, pattern):
    with pytest.raises(nk.ArchitectureError, match=pattern):
        nk.parse_architecture(text)


def test_parallel_and_fanout_argument_errors():
    with pytest.raises(TypeError, match=r"parallel\(\) takes layers, lists of layers or architectures; branch 1 is int"):
        nk.parallel(nk.Dense(), 3)
    with pytest.raises(nk.ArchitectureError, match=r"parallel\(\) needs at least one branch"):
        nk.parallel()
    with pytest.raises(nk.ParameterError, match=r"'num' parameter of FanOut must be an integer in the range \[1, 64\]"):
        nk.FanOut(0)
    with pytest.raises(nk.ParameterError, match=r"'eps' parameter of LayerNorm must be a float in the range \[0, "):
        nk.LayerNorm(eps=-1.0)
    with pytest.raises(nk.ParameterError, match=r"'parameterization' parameter of Dense must be one of \('ntk', "
                                                r"'standard'\)\. Got 'mup'"):
        nk.Dense(parameterization="mup")


# ---------------------------------------------------------------- architecture rules
@pytest.mark.parametrize("text, pattern", [
    ("Dense > FanOut(2) > [Identity | Identity] > FanInSum > Dense",
     r"sums branches \[0, 1\], which have no Dense or Conv of their own since the FanOut: they carry the same "
     r"pre-activations.*Put a Dense/Conv at the end of each branch but one"),
    ("Dense > FanOut(2) > [Dense > ReLU | Identity] > FanInSum > Dense",
     r"FanInSum at position 3 sums branch 0, whose output is not a zero-mean Gaussian pre-activation \(it ends "
     r"after ReLU\(\)\).*End every branch with a Dense"),
    ("Dense > FanOut(2) > Dense", r"FanOut\(num=2\) at position 1 must be followed by a parallel block and a fan-in"),
    ("Dense > [Dense | Identity] > FanInSum > Dense", r"at position 1 has no FanOut before it"),
    ("Dense > FanOut(3) > [Dense | Identity] > FanInSum > Dense", r"makes 3 copies but the parallel block after it has 2"),
    ("Dense > ReLU > Dense(parameterization='standard')",
     r"uses standard parameterisation, whose NTK depends on the layer's fan-in, but the width of its input is not "
     r"declared \(it comes after ReLU\(\)\)\. Give the previous Dense a width"),
    ("Dense > FanOut(2) > [Dense | ReLU > Dense] > FanInConcat > ReLU > Dense",
     r"ReLU\(\) at position 4 comes right after a FanInConcat.*Insert a Dense after FanInConcat"),
    ("Dense > ReLU > LayerNorm > Dense", r"LayerNorm needs an affine layer \(Dense\) before it"),
    ("Dense(1, 0, 8) > FanOut(2) > [Dense(1, 0, 8) | Dense(1, 0, 16)] > FanInSum > Dense",
     r"adds branches of different declared widths \[8, 16\]"),
    ("Dense > FanOut(2) > [Dense(1, 0, 8) | ReLU > Dense(1, 0, 16)] > FanInConcat > Dense > "
     "FanOut(2) > [Dense(1, 0, 8) | Dense] > FanInConcat > Dense",
     r"FanInConcat at position 7 joins branches of widths \[8, None\]"),
    ("Dense > FanOut(2) > [ReLU > Dense | Identity] > FanInSum", r"must end in a Dense readout"),
    ("Dense > FanOut(2) > [ReLU > Dense(1, 0, 4) > FanOut(2) > [Identity | Identity] > FanInSum | Identity] > "
     "FanInSum > Dense", r"FanInSum at branch 0 at position 2, position 4 sums branches \[0, 1\]"),
])
def test_architecture_rules(text, pattern):
    with pytest.raises(nk.ArchitectureError, match=pattern):
        nk.compile(text)


def test_nested_residual_in_fresh_branch_is_accepted():
    # The inner identity carries the outer branch's own Dense output: independent of the outer identity.
    nk.compile("Dense > Residual(ReLU > Dense > Residual(ReLU > Dense)) > Dense")


# ---------------------------------------------------------------- values
@pytest.mark.parametrize("name", list(CASES))
def test_engine_matches_naive_tree_recursion(name):
    arch = architecture(name)
    X1, X2 = _data(6, 5, 1), _data(4, 5, 2)
    for A, B in ((X1, None), (X1, X2)):
        k = nk.compile(arch)(A, B)
        S, T = naive_tree_kernels(arch, A, B, expectation=closed_forms)
        assert_allclose(k.nngp, S, rtol=NAIVE_RTOL, atol=NAIVE_RTOL * np.abs(S).max())
        assert_allclose(k.ntk, T, rtol=NAIVE_RTOL, atol=NAIVE_RTOL * np.abs(T).max())


def test_standard_parameterisation_ntk_and_bias_term():
    """Θ = n_in Σ_in + σw² Θ_in + [σb > 0]: a one-layer network on x gives d·x·x'/d + 1."""
    X = _data(4, 3, 5)
    with_bias = nk.compile("Dense(2.0, 0.5, parameterization='standard')")(X).ntk
    without = nk.compile("Dense(2.0, 0.0, parameterization='standard')")(X).ntk
    assert_allclose(with_bias, X @ X.T + 1.0, rtol=ROUNDING_RTOL)
    assert_allclose(without, X @ X.T, rtol=ROUNDING_RTOL)


COLLINEAR_ARCH = ("Dense(1.4, 0.1) > 3*(Residual(ReLU > Dense(1.3, 0.05) > ReLU > Dense(1.2))) > LayerNorm > "
                  "FanOut(2) > [Dense(0.8, 0.1) | ReLU > Dense(1.1)] > FanInSum > ReLU > Dense(1.5, 0.1)")


@pytest.mark.parametrize("kind", ["scaled", "negated", "near", "near-negated", "same"])
def test_nearly_parallel_pairs_through_branches_match_mpmath(kind):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(6)
    y = {"scaled": x * (1 + 1e-9), "negated": -x, "near": x + 1e-8 * rng.standard_normal(6),
         "near-negated": -x * (1 + 1e-7), "same": x.copy()}[kind]
    arch = nk.parse_architecture(COLLINEAR_ARCH)
    k = nk.compile(arch)(np.stack([x, y]))
    S, T = mp_tree_kernels(arch, x, y, dps=50, dual=mp_relu_dual)
    assert_allclose(k.nngp[0, 1], S, rtol=COLLINEAR_RTOL)
    assert_allclose(k.ntk[0, 1], T, rtol=COLLINEAR_RTOL)


def test_layernorm_zero_input_gives_the_limit_and_eps_zero_refuses():
    X = np.vstack([np.zeros(4), _data(2, 4, 3)])
    k = nk.compile("Dense(1.5) > LayerNorm > ReLU > Dense(1.2, 0.1)")(X)
    assert np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all()
    # The zero row stays zero through the bias-free Dense and LayerNorm (0/√ε = 0): only the readout's bias is left.
    assert_allclose(k.nngp[0], 0.01, rtol=ROUNDING_RTOL)
    with pytest.raises(nk.InputError, match=r"variance is exactly 0 with eps = 0: x/\|x\| has no limit at x = 0\. "
                                            r"Give LayerNorm a positive eps"):
        nk.compile("Dense(1.5) > LayerNorm(eps=0.0) > ReLU > Dense")(X)


def test_layernorm_removes_the_input_scale():
    X = _data(5, 4, 4)
    kernel = nk.compile("Dense(1.5) > LayerNorm(eps=0.0) > ReLU > Dense(1.2, 0.1)")
    a, b = kernel(X), kernel(X * 1e3)
    assert_allclose(a.nngp, b.nngp, rtol=ROUNDING_RTOL)
    assert_allclose(a.ntk, b.ntk, rtol=ROUNDING_RTOL)  # Θ and q before LayerNorm scale alike: ε = 0 removes it


def test_extreme_input_scales_through_branches():
    """A bias-free ReLU ResNet is homogeneous of degree 2: K(cX) = c²K(X), also for c = 2^±300,
    where the engine carries the variances in units of 4^e (its units meet at every FanInSum)."""
    X = _data(5, 4, 6)
    kernel = nk.compile("Dense(1.4) > 2*(Residual(ReLU > Dense(1.3) > ReLU > Dense(1.2))) > ReLU > Dense(1.5)")
    base = kernel(X)
    for c in (2.0**300, 2.0**-300):
        big = kernel(X * c)
        assert_allclose(big.nngp, base.nngp * c * c, rtol=ROUNDING_RTOL)
        assert_allclose(big.ntk, base.ntk * c * c, rtol=ROUNDING_RTOL)


# ---------------------------------------------------------------- the contract and symmetries
@st.composite
def branched_architectures(draw):
    """Random pre-activation ResNets, parallel blocks (sum or concat), LayerNorm and standard-
    parameterisation layers over ReLU/Erf."""
    acts = [nk.ReLU(), nk.Erf()]

    def dense(parameterization="ntk"):
        return nk.Dense(w_std=draw(st.floats(0.3, 1.8)), b_std=draw(st.floats(0.0, 0.8)), width=16,
                        parameterization=parameterization)

    layers = [dense(draw(st.sampled_from(["ntk", "standard"])))]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["residual", "sum", "concat", "norm", "standard"]))
        act = draw(st.sampled_from(acts))
        if kind == "residual":
            layers += list(nk.Residual(act, dense()).layers)
        elif kind == "sum":
            layers += [nk.FanOut(3), nk.parallel(dense(), nk.serial(act, dense()), nk.Identity()), nk.FanInSum()]
        elif kind == "concat":
            layers += [nk.FanOut(2), nk.parallel(dense(), nk.serial(act, dense())), nk.FanInConcat(), dense()]
        elif kind == "standard":
            layers += [act, dense("standard")]
        else:
            layers += [nk.LayerNorm(eps=draw(st.floats(0.0, 0.5)))]
    layers += [draw(st.sampled_from(acts)), dense()]
    return nk.serial(*layers)


@st.composite
def inputs(draw):
    n, d = draw(st.integers(2, 6)), draw(st.integers(1, 4))
    X = np.array(draw(st.lists(st.lists(st.floats(-3, 3), min_size=d, max_size=d), min_size=n, max_size=n)))
    X[0] = X[0] + 0.5  # at least one non-zero row (LayerNorm with ε = 0 refuses zero rows)
    X[X[:, :].any(axis=1) == 0] = 1.0
    if n > 2:
        X[2] = -X[1]  # an antipodal pair
    return X


@settings(deadline=None, max_examples=12)
@given(arch=branched_architectures(), X=inputs(), seed=st.integers(0, 2**16))
def test_contract_on_branched_networks(arch, X, seed):
    kernel = nk.compile(arch)
    k = kernel(X)
    assert np.array_equal(k.nngp, k.nngp.T) and np.array_equal(k.ntk, k.ntk.T)
    k2 = kernel(X, X)
    for a, b in ((k.nngp, k2.nngp), (k.ntk, k2.ntk)):
        assert_allclose(a, b, rtol=ROUNDING_RTOL, atol=ROUNDING_RTOL * np.abs(b).max())
    d = kernel.diag(X)
    assert_allclose(np.diag(k.ntk), d.ntk, rtol=ROUNDING_RTOL)
    for K in (k.nngp, k.ntk):
        lam = np.linalg.eigvalsh(K)
        assert lam.min() >= -PSD_RTOL * max(lam.max(), 1e-300)
    small = kernel(X, tile=2)
    assert_allclose(small.ntk, k.ntk, rtol=ROUNDING_RTOL, atol=ROUNDING_RTOL * np.abs(k.ntk).max())
    perm = np.random.default_rng(seed).permutation(len(X))
    kp = kernel(X[perm])
    assert_allclose(kp.ntk, k.ntk[np.ix_(perm, perm)], rtol=ROUNDING_RTOL, atol=ROUNDING_RTOL * np.abs(k.ntk).max())


def test_branch_order_does_not_matter_for_a_sum():
    X = _data(6, 4, 8)
    a = nk.compile("Dense(1.2, 0.1) > FanOut(3) > [Dense(0.7) | ReLU > Dense(1.3, 0.2) | Identity] > FanInSum > "
                   "ReLU > Dense")(X)
    b = nk.compile("Dense(1.2, 0.1) > FanOut(3) > [Identity | ReLU > Dense(1.3, 0.2) | Dense(0.7)] > FanInSum > "
                   "ReLU > Dense")(X)
    assert_allclose(a.ntk, b.ntk, rtol=ROUNDING_RTOL)
    assert_allclose(a.nngp, b.nngp, rtol=ROUNDING_RTOL)


def test_a_zero_block_leaves_the_identity():
    """A residual block whose last Dense has zero weights and bias adds nothing to Σ (its NTK
    contribution is the block's own Σ_in at that layer, from the weights' gradient)."""
    X = _data(5, 3, 9)
    plain = nk.compile("Dense(1.3, 0.1) > ReLU > Dense(1.1)")(X)
    res = nk.compile("Dense(1.3, 0.1) > Residual(ReLU > Dense(0.0, 0.0)) > ReLU > Dense(1.1)")(X)
    assert_allclose(res.nngp, plain.nngp, rtol=ROUNDING_RTOL)


def test_concat_of_equal_branches_is_one_branch():
    """Concatenating two copies of a branch doubles its channels: the Dense after it sees the
    same covariance (each copy's weight is 1/2)."""
    X = _data(5, 3, 10)
    one = nk.compile("Dense(1.3, 0.1) > ReLU > Dense(1.1, 0.2) > Dense(0.9, 0.3) > ReLU > Dense")(X)
    two = nk.compile("Dense(1.3, 0.1) > FanOut(2) > [ReLU > Dense(1.1, 0.2) | ReLU > Dense(1.1, 0.2)] > "
                     "FanInConcat > Dense(0.9, 0.3) > ReLU > Dense")(X)
    assert_allclose(two.nngp, one.nngp, rtol=ROUNDING_RTOL)
    assert_allclose(two.ntk, one.ntk, rtol=ROUNDING_RTOL)


# ---------------------------------------------------------------- finite networks
@pytest.mark.parametrize("name", list(CASES))
def test_finite_network_ntk_is_jacobian_product(name):
    net = nk.empirical.FiniteNetwork(architecture(name), 5)
    theta = net.init(3)
    X = _data(4, 5, 11)
    J = net.jacobian(theta, X)
    assert_allclose(net.ntk(theta, X), J @ J.T, rtol=1e-10, atol=1e-10 * np.abs(J @ J.T).max())
    v = np.random.default_rng(0).standard_normal(net.n_params)
    assert_allclose(net.jvp(theta, X, v).ravel(), J @ v, rtol=1e-10, atol=1e-10 * np.abs(J @ v).max())
    r = np.random.default_rng(1).standard_normal((4, net.n_outputs))
    assert_allclose(net.vjp(theta, X, r), J.T @ r.ravel(), rtol=1e-10, atol=1e-10 * np.abs(J.T @ r.ravel()).max())


@pytest.mark.parametrize("name", ["resnet", "layernorm", "concat"])
def test_finite_network_jacobian_matches_finite_differences(name):
    net = nk.empirical.FiniteNetwork(architecture(name), 5)
    theta = net.init(4)
    X = _data(3, 5, 12)
    J = net.jacobian(theta, X)
    rng = np.random.default_rng(2)
    v = rng.standard_normal(net.n_params)
    h = 1e-6
    fd = (net.apply(theta + h * v, X) - net.apply(theta - h * v, X)).ravel() / (2 * h)
    assert_allclose(J @ v, fd, rtol=1e-6, atol=1e-7 * np.abs(fd).max())


def test_standard_parameterisation_initialisation_scales():
    net = nk.empirical.FiniteNetwork("Dense(2.0, 0.5, 400, 'standard') > ReLU > Dense(1.0, 0.0, 1, 'standard')", 100)
    theta = net.init(0)
    (W1, b1), (W2, b2) = net.unflatten(theta)
    assert abs(W1.std() - 2.0 / 10.0) < 0.01 and abs(b1.std() - 0.5) < 0.05
    assert abs(W2.std() - 1.0 / 20.0) < 0.005 and not b2.any()


def test_finite_sum_of_unequal_widths_is_refused():
    with pytest.raises(nk.ArchitectureError, match=r"adds branch outputs of different shapes \[\(16,\), \(8,\)\]"):
        nk.empirical.FiniteNetwork("Dense > Residual(ReLU > Dense) > Dense", 5, width=(8, 16))


@pytest.mark.parametrize("name", [pytest.param(name, marks=() if name == "resnet-layernorm-standard" else pytest.mark.slow)
                                  for name in CASES])
def test_monte_carlo_kernels_agree_within_their_standard_error(name):
    """Wide networks: the mean over seeds is within STAT_Z standard errors plus the O(1/width)
    bias of the analytic kernel, entry by entry."""
    width = 512
    arch = _at_width(architecture(name), width)
    X = _data(4, 5, 13)
    mc = nk.empirical.monte_carlo_kernels(arch, X, seeds=6)
    k = nk.compile(arch)(X)
    for key in ("nngp", "ntk"):
        mean, se, exact = getattr(mc, key), mc.standard_error(key), getattr(k, key)
        bias = 8.0 / width * np.abs(exact).max()
        assert np.all(np.abs(mean - exact) <= STAT_Z * se + bias), (key, _rel(mean, exact))


def _at_width(arch, width):
    from ntk_infinite.verify.runners import at_width

    return at_width(arch, width)


@pytest.mark.slow
@pytest.mark.parametrize("text", [RESNET, "Dense(1.5, 0.1) > LayerNorm > ReLU > Dense(1.2, 0.3) > LayerNorm(eps=0.3) > "
                                          "Erf > Dense(0.9, 0.1)",
                                  "Dense(1.5, 0.1, 512, 'standard') > ReLU > Dense(1.2, 0.0, 512, 'standard') > ReLU > "
                                  "Dense(1.0, 0.2, parameterization='standard')"])
def test_verify_passes(text):
    from ntk_infinite.verify.runners import kernel_convergence

    X = _data(8, 5, 14)
    res = kernel_convergence(text, X, widths=(128, 256, 512, 1024, 2048), samples=8)
    assert res["nngp"].verdict == "PASS" and res["ntk"].verdict == "PASS"


# ---------------------------------------------------------------- neural-tangents
_NT_SCRIPT = r'''
import json, sys
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
from neural_tangents import stax


def build(layers):
    out = []
    for spec in layers:
        kind = spec[0]
        if kind == "dense":
            _, w, b, width, param = spec
            # b_std = 0 means no bias here; in standard parameterisation neural-tangents' b_std=None.
            out.append(stax.Dense(width or 512, W_std=w, b_std=(b if (b or param == "ntk") else None),
                                  parameterization=param))
        elif kind == "relu":
            out.append(stax.Relu())
        elif kind == "erf":
            out.append(stax.Erf())
        elif kind == "identity":
            out.append(stax.Identity())
        elif kind == "layernorm":
            out.append(stax.LayerNorm(eps=spec[1]))
        elif kind == "fanout":
            out.append(stax.FanOut(spec[1]))
        elif kind == "parallel":
            out.append(stax.parallel(*(stax.serial(*build(b)) for b in spec[1])))
        elif kind == "faninsum":
            out.append(stax.FanInSum())
        elif kind == "faninconcat":
            out.append(stax.FanInConcat())
        else:
            raise ValueError(kind)
    return out


spec = json.load(open(sys.argv[1]))
res = {}
for name, case in spec.items():
    _, _, kernel_fn = stax.serial(*build(case["layers"]))
    fn = jax.jit(kernel_fn, static_argnames="get")
    k = fn(np.array(case["X1"]), np.array(case["X2"]), get=("nngp", "ntk"))
    res[f"{name}/nngp"] = np.asarray(k.nngp)
    res[f"{name}/ntk"] = np.asarray(k.ntk)
np.savez(sys.argv[2], **res)
'''


@pytest.fixture(scope="module")
def nt_results(tmp_path_factory):
    X1, X2 = _data(6, 5, 21), _data(4, 5, 22)
    spec = {name: dict(layers=layers, X1=X1.tolist(), X2=X2.tolist()) for name, layers in CASES.items()}
    return run_nt(_NT_SCRIPT, spec, tmp_path_factory.mktemp("nt-branches")), X1, X2


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_agrees_with_neural_tangents(name, nt_results):
    """Distinct random inputs (no collinear pairs): neural-tangents is accurate there."""
    res, X1, X2 = nt_results
    k = nk.compile(architecture(name))(X1, X2)
    for key in ("nngp", "ntk"):
        theirs = res[f"{name}/{key}"]
        assert_allclose(getattr(k, key), theirs, rtol=NT_CROSS_RTOL, atol=NT_CROSS_RTOL * np.abs(theirs).max())
