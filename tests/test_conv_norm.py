"""LayerNorm, standard parameterisation and parallel branches in convolutional networks (both
layouts).

Expected values: the naive position-pair recursion of tests/naive.py with every fan-in written
out from the input shape (tests/conv_norm_cases.py), finite networks, and (slow)
neural-tangents 0.6.5 in x64.
"""

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose

import ntk_infinite as nk
from conv_norm_cases import BRANCH_CASES, CASES, architecture, naive_spec
from naive import naive_spatial_kernels
from nt_bridge import run_nt
from tolerances import NAIVE_RTOL, NT_CROSS_RTOL, ROUNDING_RTOL, STAT_Z

SHAPE = (5, 4, 2)


def _images(n, seed):
    return np.random.default_rng(seed).standard_normal((n,) + SHAPE)


@pytest.mark.parametrize("name", list(CASES))
def test_engine_matches_naive_recursion(name):
    kernel = nk.compile(architecture(name))
    assert kernel.layout == ("full" if name.endswith("gap") else "diagonal")
    X1, X2 = _images(3, 1), _images(2, 2)
    for A, B in ((X1, None), (X1, X2)):
        k = kernel(A, B)
        S, T = naive_spatial_kernels(naive_spec(name, SHAPE), A, B)
        assert_allclose(k.nngp, S, rtol=NAIVE_RTOL, atol=NAIVE_RTOL * np.abs(S).max())
        assert_allclose(k.ntk, T, rtol=NAIVE_RTOL, atol=NAIVE_RTOL * np.abs(T).max())
    d = kernel.diag(X1)
    assert_allclose(d.ntk, np.diag(kernel(X1).ntk), rtol=ROUNDING_RTOL)


@pytest.mark.parametrize("name", list(BRANCH_CASES))
def test_branched_engine_matches_naive_recursion(name):
    text, spec = BRANCH_CASES[name]
    kernel = nk.compile(text)
    X1, X2 = _images(3, 1), _images(2, 2)
    for A, B in ((X1, None), (X1, X2)):
        k = kernel(A, B)
        S, T = naive_spatial_kernels(spec, A, B)
        assert_allclose(k.nngp, S, rtol=NAIVE_RTOL, atol=NAIVE_RTOL * np.abs(S).max())
        assert_allclose(k.ntk, T, rtol=NAIVE_RTOL, atol=NAIVE_RTOL * np.abs(T).max())
    assert_allclose(kernel.diag(X1).ntk, np.diag(kernel(X1).ntk), rtol=ROUNDING_RTOL)
    small = kernel(X1, tile=1)
    assert_allclose(small.ntk, kernel(X1).ntk, rtol=ROUNDING_RTOL)


@pytest.mark.parametrize("text, pattern", [
    ("Conv(filter_shape=(3, 3), padding='SAME') > FanOut(2) > [ReLU > Conv(filter_shape=(3, 3)) | Identity] > "
     "FanInSum > ReLU > Flatten > Dense", r"adds branches of different spatial shapes \[\(3, 2\), \(5, 4\)\]"),
])
def test_branch_shape_mismatch_is_refused_at_evaluation(text, pattern):
    with pytest.raises(nk.ArchitectureError, match=pattern):
        nk.compile(text)(_images(2, 3))


@pytest.mark.parametrize("inner", ["AvgPool(window_shape=(2, 2), padding='SAME')", "Flatten"])
def test_pooling_inside_a_branch_is_refused(inner):
    text = (f"Conv(filter_shape=(3, 3), padding='SAME') > FanOut(2) > [ReLU > Conv(filter_shape=(3, 3), "
            f"padding='SAME') > {inner} | Identity] > FanInSum > ReLU > GlobalAvgPool > Dense")
    with pytest.raises(nk.ArchitectureError, match=r"is inside a parallel branch: pooling and readouts"):
        nk.compile(text)


def test_finite_branched_conv_network_agrees_in_the_mean():
    from ntk_infinite.verify.runners import at_width

    text, _ = BRANCH_CASES["resnet-layernorm-flatten"]
    width = 96
    arch = at_width(nk.parse_architecture(text), width)
    X = _images(2, 8)
    mc = nk.empirical.monte_carlo_kernels(arch, X, seeds=6)
    k = nk.compile(arch)(X)
    for key in ("nngp", "ntk"):
        mean, se, exact = getattr(mc, key), mc.standard_error(key), getattr(k, key)
        assert np.all(np.abs(mean - exact) <= STAT_Z * se + 8.0 / width * np.abs(exact).max()), key


def test_layernorm_makes_the_kernel_scale_free_per_position():
    X = _images(3, 3)
    kernel = nk.compile("Conv(filter_shape=(3, 2), padding='SAME', w_std=1.5) > LayerNorm(eps=0.0) > ReLU > "
                        "GlobalAvgPool > Dense(1.2, 0.1)")
    a, b = kernel(X), kernel(X * 1e4)
    assert_allclose(a.ntk, b.ntk, rtol=ROUNDING_RTOL)
    assert_allclose(a.nngp, b.nngp, rtol=ROUNDING_RTOL)


def test_layernorm_on_a_zero_image():
    X = np.concatenate([np.zeros((1,) + SHAPE), _images(2, 4)])
    ok = nk.compile("Conv(filter_shape=(3, 2), padding='SAME', w_std=1.5) > LayerNorm > ReLU > Flatten > "
                    "Dense(1.2, 0.1)")(X)
    assert np.isfinite(ok.ntk).all() and np.isfinite(ok.nngp).all()
    assert_allclose(ok.nngp[0], 0.01, rtol=ROUNDING_RTOL)
    with pytest.raises(nk.InputError, match=r"normalises a position whose variance is exactly 0 with eps = 0"):
        nk.compile("Conv(filter_shape=(3, 2), padding='SAME') > LayerNorm(eps=0.0) > ReLU > Flatten > Dense")(X)


def test_standard_conv_fan_in_is_channels_times_filter():
    """One standard 1×1 Conv (C_in = 2), GlobalAvgPool and a Dense(1, 0) readout:
    Θ = [C_in·GAP(Σ⁰) + 1] + Σ_readout with Σ_readout = 1.5²·GAP(Σ⁰) + 0.1²."""
    X = _images(3, 5)
    k = nk.compile("Conv(filter_shape=(1, 1), w_std=1.5, b_std=0.1, parameterization='standard') > GlobalAvgPool > "
                   "Dense(1.0, 0.0)")(X)
    F = X.reshape(3, -1, 2)
    gap = np.einsum("ipc,jqc->ij", F, F) / 2 / F.shape[1] ** 2
    assert_allclose(k.ntk, (2 * gap + 1.0) + (2.25 * gap + 0.01), rtol=ROUNDING_RTOL)


def test_finite_conv_network_with_layernorm_and_standard_parameterisation():
    arch = nk.serial(nk.Conv(filter_shape=(3, 2), padding="SAME", w_std=1.5, b_std=0.1, parameterization="standard",
                             channels=6), nk.LayerNorm(), nk.ReLU(), nk.Flatten(),
                     nk.Dense(w_std=1.2, b_std=0.1, parameterization="standard"))
    net = nk.empirical.FiniteNetwork(arch, SHAPE)
    theta = net.init(0)
    (W1, _), _ = net.unflatten(theta)
    assert abs(W1.std() - 1.5 / np.sqrt(2 * 6)) < 0.1
    X = _images(3, 6)
    J = net.jacobian(theta, X)
    assert_allclose(net.ntk(theta, X), J @ J.T, rtol=1e-10, atol=1e-10 * np.abs(J @ J.T).max())
    v = np.random.default_rng(1).standard_normal(net.n_params)
    h = 1e-6
    fd = (net.apply(theta + h * v, X) - net.apply(theta - h * v, X)).ravel() / (2 * h)
    assert_allclose(J @ v, fd, rtol=1e-6, atol=1e-7 * np.abs(fd).max())


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "layernorm-flatten" else pytest.mark.slow)
                                  for n in CASES])
def test_monte_carlo_agrees(name):
    """Finite networks of 128 channels: the mean over seeds within STAT_Z standard errors plus
    an O(1/width) bias of the analytic kernels."""
    from ntk_infinite.verify.runners import at_width

    width = 128
    arch = at_width(architecture(name), width)
    X = _images(3, 7)
    mc = nk.empirical.monte_carlo_kernels(arch, X, seeds=6)
    k = nk.compile(arch)(X)
    for key in ("nngp", "ntk"):
        mean, se, exact = getattr(mc, key), mc.standard_error(key), getattr(k, key)
        assert np.all(np.abs(mean - exact) <= STAT_Z * se + 8.0 / width * np.abs(exact).max()), key


_NT_SCRIPT = r'''
import json, sys
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
from neural_tangents import stax


def build(spec):
    out = []
    for item in spec:
        kind = item[0]
        if kind == "conv":
            _, filt, strides, padding, w, b, param, chans = item
            out.append(stax.Conv(chans, tuple(filt), tuple(strides), padding, W_std=w,
                                 b_std=(b if (b or param == "ntk") else None), parameterization=param))
        elif kind == "dense":
            _, w, b, param, width = item
            out.append(stax.Dense(width, W_std=w, b_std=(b if (b or param == "ntk") else None),
                                  parameterization=param))
        elif kind == "relu":
            out.append(stax.Relu())
        elif kind == "erf":
            out.append(stax.Erf())
        elif kind == "layernorm":
            out.append(stax.LayerNorm(eps=item[1]))
        elif kind == "avgpool":
            out.append(stax.AvgPool(tuple(item[1]), tuple(item[2]), item[3]))
        elif kind == "gap":
            out.append(stax.GlobalAvgPool())
        elif kind == "flatten":
            out.append(stax.Flatten())
        elif kind == "conv6":  # the naive reference's items: ("conv6", filter, strides, padding, w, b)
            _, filt, strides, padding, w, b = item
            out.append(stax.Conv(16, tuple(filt), tuple(strides), padding, W_std=w, b_std=b))
        elif kind == "dense3":
            out.append(stax.Dense(16, W_std=item[1], b_std=item[2]))
        elif kind in ("fork_sum", "fork_concat"):
            if kind == "fork_sum":
                branches = [stax.serial(*build(b)) if b else stax.Identity() for b in item[1]]
            else:  # channel shares as widths: 16·w channels in each branch's last Conv
                branches = [stax.serial(*build(b[:-1]), stax.Conv(int(round(16 * wt)), tuple(b[-1][1]),
                                                                   tuple(b[-1][2]), b[-1][3], W_std=b[-1][4],
                                                                   b_std=b[-1][5]))
                            for b, wt in zip(item[1], item[2])]
            out += [stax.FanOut(len(branches)), stax.parallel(*branches),
                    stax.FanInSum() if kind == "fork_sum" else stax.FanInConcat()]
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
    X1, X2 = _images(3, 21), _images(2, 22)
    spec = {name: dict(layers=json.loads(json.dumps(layers)), X1=X1.tolist(), X2=X2.tolist())
            for name, layers in CASES.items()}
    for name, (_, items) in BRANCH_CASES.items():
        spec[name] = dict(layers=_nt_items(items), X1=X1.tolist(), X2=X2.tolist())
    return run_nt(_NT_SCRIPT, spec, tmp_path_factory.mktemp("nt-conv-norm")), X1, X2


def _nt_items(items):
    """The naive reference's items renamed for the neural-tangents script (Conv/Dense of 16 channels)."""
    out = []
    for item in items:
        item = list(item)
        if item[0] == "conv":
            item[0] = "conv6"
        elif item[0] == "dense":
            item[0] = "dense3"
        elif item[0] in ("fork_sum", "fork_concat"):
            item[1] = [_nt_items(branch) for branch in item[1]]
        out.append(item)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES) + list(BRANCH_CASES))
def test_agrees_with_neural_tangents(name, nt_results):
    res, X1, X2 = nt_results
    arch = architecture(name) if name in CASES else nk.parse_architecture(BRANCH_CASES[name][0])
    k = nk.compile(arch)(X1, X2)
    for key in ("nngp", "ntk"):
        theirs = res[f"{name}/{key}"]
        assert_allclose(getattr(k, key), theirs, rtol=NT_CROSS_RTOL, atol=NT_CROSS_RTOL * np.abs(theirs).max())
