"""Finite convolutional networks (ntk_infinite.verify.empirical with verify/spatial_ops.py).

* Forward passes equal tests/naive.py's finite CNN (same weights, drawn in its order) and a
  plain-loop convolution typed here from docs/DESIGN.md's index rule a·s + o − pad_lo.
* Jacobians equal central differences of ``apply``; the contracted NTK (both of its
  contraction routes), ``jvp`` and ``vjp`` equal products with the explicit Jacobian.
* Readouts with no random layer before them are exact: their empirical kernels equal the
  naive analytic recursion to rounding (Flatten's fan-in P·C gives (1/P) Σ_p K[p, p]).
* Monte Carlo: the mean over seeds of the empirical NNGP and NTK of wide CNNs (256 channels)
  is within a Student-t bound of the naive CNN-GP/CNTK (tests/naive.py), entry by entry,
  Bonferroni-corrected; the same check rejects a kernel CONV_MC_POWER_RTOL off.
* The verify runners accept spatial inputs; messages for wrong shapes and architectures.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats

import ntk_infinite as nk
from ntk_infinite.results import Kernels
from ntk_infinite.verify import spatial_ops
from ntk_infinite.verify.empirical import FiniteNetwork, LinearizedModel, monte_carlo_kernels
from ntk_infinite.verify.training import train
from naive import naive_conv_network, naive_linear_gd_outputs, naive_spatial_kernels
from test_naive_conv import MC_FAST, MC_SLOW
from tolerances import (CONV_MC_POWER_RTOL, FALSE_ALARM, NETWORK_FD_ATOL, NETWORK_FD_RTOL, ROUNDING_ATOL,
                        ROUNDING_RTOL)

#: Central-difference step (NETWORK_FD_RTOL says what it costs).
FD_STEP = 1e-6


def _inputs(shape, n, seed):
    return np.random.default_rng(seed).standard_normal((n,) + tuple(shape))


def _arch(layers):
    """The nk architecture of a tests/naive.py layer list."""
    out = []
    for layer in layers:
        kind = layer[0]
        if kind == "conv":
            _, filt, strides, padding, w, b = layer
            out.append(nk.Conv(filter_shape=filt, strides=strides, padding=padding, w_std=w, b_std=b))
        elif kind == "dense":
            out.append(nk.Dense(w_std=layer[1], b_std=layer[2]))
        elif kind == "relu":
            out.append(nk.ReLU())
        elif kind == "erf":
            out.append(nk.Erf())
        elif kind == "avgpool":
            _, window, strides, padding = layer
            out.append(nk.AvgPool(window_shape=window, strides=strides, padding=padding))
        elif kind == "flatten":
            out.append(nk.Flatten())
        elif kind == "gap":
            out.append(nk.GlobalAvgPool())
        else:
            raise ValueError(layer)
    return nk.serial(*out)


def _theta_in_naive_order(net, rng):
    """theta holding the draws naive_conv_network makes from ``rng``: per layer W then b, a conv
    W as (*filter, C_in, C_out), a Dense W as (C_in, C_out) (ours is (C_out, C_in))."""
    theta = np.empty(net.n_params)
    for W, b in net.unflatten(theta):
        if W.ndim == 2:
            W[...] = rng.standard_normal(W.shape[::-1]).T
        else:
            W[...] = rng.standard_normal(W.shape)
        b[...] = rng.standard_normal(b.shape)
    return theta


# Every padding, strides, even filters (odd SAME pad_total), AvgPool, a 1×1 convolution, both
# readouts, a head with a hidden Dense, 1-D and 2-D.
FORWARD_CASES = {
    "1d-same-s2-pool-circular-flatten": ((7, 2), [
        ("conv", (4,), (2,), "SAME", 1.5, 0.1), ("relu",), ("avgpool", (3,), (2,), "SAME"),
        ("conv", (3,), (1,), "CIRCULAR", 1.3, 0.2), ("erf",), ("flatten",), ("dense", 1.2, 0.3)]),
    "2d-circular-1x1-gap-head": ((5, 6, 3), [
        ("conv", (3, 2), (2, 1), "CIRCULAR", 1.5, 0.1), ("relu",), ("conv", (1, 1), (1, 1), "VALID", 1.1, 0.2), ("relu",),
        ("avgpool", (2, 2), (1, 2), "CIRCULAR"), ("conv", (4, 3), (1, 1), "SAME", 1.3, 0.2), ("relu",), ("gap",),
        ("dense", 1.2, 0.3), ("erf",), ("dense", 1.0, 0.1)]),
    "2d-valid-pool-flatten": ((6, 5, 2), [
        ("conv", (3, 2), (1, 1), "VALID", 1.5, 0.1), ("relu",), ("avgpool", (2, 2), (2, 1), "VALID"),
        ("conv", (2, 2), (1, 1), "VALID", 1.3, 0.2), ("relu",), ("flatten",), ("dense", 1.2, 0.3)]),
    "1d-circular-filter-wider-than-input": ((2, 3), [
        ("conv", (7,), (1,), "CIRCULAR", 1.5, 0.1), ("relu",), ("gap",), ("dense", 1.2, 0.3)]),
}


@pytest.mark.parametrize("name", list(FORWARD_CASES))
def test_forward_matches_naive_conv_network(name):
    shape, layers = FORWARD_CASES[name]
    X = _inputs(shape, 3, seed=1)
    net = FiniteNetwork(_arch(layers), shape, width=5, n_outputs=2)
    theta = _theta_in_naive_order(net, np.random.default_rng(7))
    expected = naive_conv_network(layers, X, 5, np.random.default_rng(7), n_out=2)
    assert_allclose(net.apply(theta, X), expected, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)


def _loop_conv(x, W, strides, padding):
    """z[a, d] = Σ_{o, c} W[o, c, d] x[a·s + o − pad_lo, c] by loops over positions and offsets
    (docs/DESIGN.md); outside entries are 0 (SAME) or wrapped around (CIRCULAR)."""
    shape, filt = x.shape[:-1], W.shape[:-2]
    outs, pads = [], []
    for n, k, s in zip(shape, filt, strides):
        if padding == "VALID":
            outs.append((n - k) // s + 1)
            pads.append(0)
        else:
            o = -(-n // s)
            outs.append(o)
            pads.append(max((o - 1) * s + k - n, 0) // 2)
    z = np.zeros(tuple(outs) + (W.shape[-1],))
    for a in np.ndindex(*outs):
        for o in np.ndindex(*filt):
            src = [ai * s + oi - p for ai, oi, s, p in zip(a, o, strides, pads)]
            if padding == "CIRCULAR":
                src = [i % n for i, n in zip(src, shape)]
            elif any(not 0 <= i < n for i, n in zip(src, shape)):
                continue
            z[a] += x[tuple(src)] @ W[o]
    return z


@pytest.mark.parametrize("padding", ["VALID", "SAME", "CIRCULAR"])
@pytest.mark.parametrize("shape, filt, strides", [((7, 2), (4,), (2,)), ((5, 4, 3), (2, 3), (2, 1))], ids=["1d", "2d"])
def test_conv_forward_matches_loop_convolution(padding, shape, filt, strides):
    """Conv > Flatten > Dense against loops: z = σ_w/√(C_in|k|) conv + σ_b b, then the readout
    with fan-in P·C."""
    conv = nk.Conv(filter_shape=filt, strides=strides, padding=padding, w_std=1.3, b_std=0.4)
    net = FiniteNetwork(nk.serial(conv, nk.Flatten(), nk.Dense(w_std=0.9, b_std=0.2)), shape, width=4)
    theta = net.init(3)
    (W1, b1), (W2, b2) = net.unflatten(theta)
    X = _inputs(shape, 2, seed=4)
    for x, f in zip(X, net.apply(theta, X)):
        z = 1.3 / math.sqrt(shape[-1] * math.prod(filt)) * _loop_conv(x, W1, strides, padding) + 0.4 * b1
        feat = z.reshape(-1)
        assert_allclose(f, 0.9 / math.sqrt(feat.size) * W2 @ feat + 0.2 * b2, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)


# ------------------------------------------------------------------------------- derivatives
DERIVATIVE_CASES = {name: FORWARD_CASES[name] for name in
                    ("1d-same-s2-pool-circular-flatten", "2d-circular-1x1-gap-head")}


@pytest.mark.parametrize("name", list(DERIVATIVE_CASES))
@pytest.mark.parametrize("k", [1, 2])
def test_jacobian_matches_finite_differences(name, k):
    shape, layers = DERIVATIVE_CASES[name]
    X = _inputs(shape, 3, seed=5)
    net = FiniteNetwork(_arch(layers), shape, width=3, n_outputs=k)
    theta = net.init(6)
    J = net.jacobian(theta, X)
    assert J.shape == (3 * k, net.n_params)
    fd = np.empty_like(J)
    for p in range(net.n_params):
        e = np.zeros(net.n_params)
        e[p] = FD_STEP
        fd[:, p] = (net.apply(theta + e, X) - net.apply(theta - e, X)).ravel() / (2 * FD_STEP)
    assert_allclose(J, fd, rtol=NETWORK_FD_RTOL, atol=NETWORK_FD_ATOL)


@pytest.mark.parametrize("route", ["gradients", "grams"])
@pytest.mark.parametrize("name", list(DERIVATIVE_CASES))
def test_contracted_ntk_jvp_vjp_equal_explicit_jacobian_products(monkeypatch, name, route):
    """Both exact contractions of a convolution's NTK term (per-sample weight gradients, or
    position-pair Grams with the same-offset window sum) equal J Jᵀ."""
    monkeypatch.setattr(spatial_ops.ConvOp, "_gradient_route", lambda self, n1, n2, k: route == "gradients")
    shape, layers = DERIVATIVE_CASES[name]
    X1, X2 = _inputs(shape, 4, seed=7), _inputs(shape, 3, seed=8)
    net = FiniteNetwork(_arch(layers), shape, width=5, n_outputs=2)
    theta = net.init(9)
    J1, J2 = net.jacobian(theta, X1), net.jacobian(theta, X2)
    assert_allclose(net.ntk(theta, X1), J1 @ J1.T, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)
    assert_allclose(net.ntk(theta, X1, X2), J1 @ J2.T, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)
    per_output = (J1[0::2] @ J2[0::2].T + J1[1::2] @ J2[1::2].T) / 2
    assert_allclose(net.ntk_per_output(theta, X1, X2), per_output, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)
    rng = np.random.default_rng(10)
    v, r = rng.standard_normal(net.n_params), rng.standard_normal((4, 2))
    assert_allclose(net.jvp(theta, X1, v).ravel(), J1 @ v, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)
    assert_allclose(net.vjp(theta, X1, r), J1.T @ r.ravel(), rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)


def test_gram_route_is_chosen_when_gradients_do_not_fit():
    conv = nk.Conv(filter_shape=(3, 3), padding="SAME")
    net = FiniteNetwork(nk.serial(conv, nk.ReLU(), conv, nk.GlobalAvgPool(), nk.Dense()), (8, 8, 3), width=512)
    op = net._params[1]
    assert not op._gradient_route(20, 20, 1)  # 40 · 9·512·512 entries > GRAD_ENTRIES
    assert FiniteNetwork(nk.serial(conv, nk.ReLU(), conv, nk.GlobalAvgPool(), nk.Dense()), (8, 8, 3),
                         width=64)._params[1]._gradient_route(20, 20, 1)


def test_memory_wide_cnn_ntk_never_forms_the_jacobian():
    """NTK of 20 images at 512 channels: J would take 380 MB; the contraction stays far below."""
    conv = nk.Conv(filter_shape=(3, 3), padding="SAME", w_std=1.5, b_std=0.1)
    net = FiniteNetwork(nk.serial(conv, nk.ReLU(), conv, nk.ReLU(), nk.Flatten(), nk.Dense(w_std=1.2)), (8, 8, 3),
                        width=512)
    X = _inputs((8, 8, 3), 20, seed=11)
    theta = net.init(0)
    tracemalloc.start()
    try:
        K = net.ntk(theta, X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert K.shape == (20, 20)
    assert peak < 0.25 * 20 * net.n_params * 8


# ------------------------------------------------------------------------- exact readouts
@pytest.mark.parametrize("head", [
    [("flatten",), ("dense", 1.3, 0.2)],
    [("gap",), ("dense", 1.3, 0.2)],
    [("avgpool", (2, 3), (1, 2), "SAME"), ("flatten",), ("dense", 1.3, 0.2)],
    [("avgpool", (3, 2), (2, 1), "CIRCULAR"), ("gap",), ("dense", 0.7, 0.0)],
], ids=["flatten", "gap", "pool-flatten", "pool-gap"])
def test_readout_of_the_input_is_exact(head):
    """With no random layer before the readout, the empirical NNGP (and NTK, = NNGP for one
    Dense) equals the analytic one for every seed: a Dense after Flatten with fan-in P·C gives
    (1/P) Σ_p Σ⁰[p, p], after GlobalAvgPool (1/P²) Σ_{p,p'} Σ⁰[p, p']."""
    X1, X2 = _inputs((4, 5, 3), 3, seed=12), _inputs((4, 5, 3), 2, seed=13)
    nngp, ntk = naive_spatial_kernels(head, X1, X2)
    net = FiniteNetwork(_arch(head), (4, 5, 3))
    theta = net.init(0)
    assert_allclose(net.nngp(theta, X1, X2), nngp, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)
    assert_allclose(net.ntk(theta, X1, X2), ntk, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)


# ------------------------------------------------------------------------------ Monte Carlo
MC_WIDTH = 256


def _mc_check(layers, X, seeds):
    """|mean − reference| <= t_crit · SE on every unique entry of both kernels; t_crit is the
    Student t for the standard error estimated from the same S draws, Bonferroni-corrected for
    the 2 × n(n+1)/2 entries at the overall false-alarm rate FALSE_ALARM (two-sided).

    The finite-width bias is O(1/width); at 256 channels it is far below the standard error of
    these sample sizes (measured at 2000 seeds on the 1-D cases: within 1.9 standard errors,
    i.e. below 0.7% relative). Returns the largest z and the largest z of the reference scaled
    by 1 + CONV_MC_POWER_RTOL (which must fail)."""
    ref = naive_spatial_kernels(layers, X)
    mc = monte_carlo_kernels(_arch(layers), X, width=MC_WIDTH, seeds=seeds)
    iu = np.triu_indices(len(X))
    S = len(mc.seeds)
    t_crit = stats.t.isf(FALSE_ALARM / (2 * 2 * len(iu[0])), S - 1)
    z_max, z_off = 0.0, np.inf
    for K, name in zip(ref, ("nngp", "ntk")):
        mean, se = getattr(mc, name)[iu], mc.standard_error(name)[iu]
        z = np.abs(mean - K[iu]) / se
        assert np.all(z <= t_crit), f"{name}: max |emp − ref|/SE = {z.max():.2f} > {t_crit:.2f}; ref {K[iu]}, emp {mean}"
        z_max = max(z_max, z.max())
        z_off = min(z_off, np.max(np.abs(mean - (1 + CONV_MC_POWER_RTOL) * K[iu]) / se))
    assert z_off > t_crit, f"a kernel {CONV_MC_POWER_RTOL:.0%} off passes (z = {z_off:.2f}): the check has no power"
    return z_max


@pytest.mark.parametrize("name", list(MC_FAST))
def test_monte_carlo_kernels_agree_with_naive_cnn_kernels(name):
    """1-D, length 6, two channels, n = 3: CNN-GAP and CNN-Flatten, SAME and VALID (filters 4,
    strides 2: odd SAME pad_total, so the pad placement matters)."""
    _mc_check(MC_FAST[name], _inputs((6, 2), 3, seed=0), seeds=range(150))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MC_SLOW))
def test_monte_carlo_kernels_agree_with_naive_cnn_kernels_2d(name):
    """2-D, 5×5 images, three channels, n = 4; AvgPool and a hidden Dense head included."""
    _mc_check(MC_SLOW[name], _inputs((5, 5, 3), 4, seed=2), seeds=range(1000, 1300))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MC_FAST))
def test_monte_carlo_kernels_agree_many_seeds(name):
    _mc_check(MC_FAST[name], _inputs((6, 2), 5, seed=4), seeds=range(2000, 3000))


# ------------------------------------------------------------------------------ runners
def test_kernel_convergence_on_images():
    """Property 1 for a CNN-GAP on spatial inputs, through verify's default path (the analytic
    kernels from nk.compile on the images): slope −0.5 ± 0.1 (within FALSE_ALARM standard
    errors) and the mean at the largest width within z_critical."""
    from ntk_infinite.verify.runners import EXPECTED_SLOPE, SLOPE_TOL, kernel_convergence

    layers = MC_FAST["gap-same"]
    X = _inputs((6, 2), 8, seed=20)
    res = kernel_convergence(_arch(layers), X, widths=(64, 256, 1024), samples=12, seed=1)
    for r in res.values():
        assert abs(r.fit.slope - EXPECTED_SLOPE) <= SLOPE_TOL + stats.norm.isf(FALSE_ALARM / 2) * r.fit.stderr
        assert r.z[-1] <= r.z_critical


def test_training_agreement_on_images():
    """Properties 2–3 for a small CNN: trained networks approach the analytic predictor.

    Four networks per width: the deviation falls with width, and no verdict (slopes with their
    bootstrap standard errors, the ensemble mean within its Bonferroni bound) fails. Measured
    slopes over seeds 2–7: −0.35 … −0.72 (deviation), −1.0 (NTK change), −0.5 (parameters)."""
    from ntk_infinite.verify.runners import FAIL, training_agreement

    layers = [("conv", (3,), (1,), "SAME", 1.5, 0.1), ("relu",), ("gap",), ("dense", 1.2, 0.1)]
    rng = np.random.default_rng(21)
    X, Xt = rng.standard_normal((6, 5, 2)), rng.standard_normal((3, 5, 2))
    y = np.sign(X[:, :, 0].sum(axis=1))
    nngp, ntk = naive_spatial_kernels(layers, np.concatenate([X, Xt]))
    res = training_agreement(_arch(layers), X, y, Xt, widths=(32, 128, 512), samples=4,
                             analytic=Kernels(nngp=nngp, ntk=ntk), seed=2)
    rms = np.sqrt(np.mean(res.deviation**2, axis=1))
    assert np.all(np.diff(rms) < 0)
    assert res.mean_z[-1] <= res.z_critical
    assert res.agreement_verdict != FAIL and res.lazy_verdict != FAIL


def test_linearized_cnn_gradient_descent_matches_explicit_iteration():
    """train() on spatial inputs: discrete GD of the linearised CNN equals f ← f − ηΘ̂(f − y)."""
    shape, layers = FORWARD_CASES["2d-valid-pool-flatten"]
    X = _inputs(shape, 5, seed=22)
    Y = np.cos(X[:, 0, 0, :1])
    net = FiniteNetwork(_arch(layers), shape, width=6)
    theta0 = net.init(1)
    Th = net.ntk(theta0, X)
    lr, steps = 1.0 / np.linalg.eigvalsh(Th)[-1], 30
    gd = train(LinearizedModel(net, theta0), theta0, X, Y, learning_rate=lr, t=steps, method="gd", X_test=X[:2])
    expected = naive_linear_gd_outputs(Th, net.apply(theta0, X).ravel(), Y.ravel(), lr, steps)
    assert_allclose(gd.train_outputs.ravel(), expected, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)
    assert_allclose(gd.test_outputs.ravel(), expected[:2], rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)


# -------------------------------------------------------------------------------- widths/messages
def test_widths_channels_and_parameters():
    conv = nk.Conv(filter_shape=(3, 2), w_std=1.5, channels=4)
    arch = nk.serial(conv, nk.ReLU(), nk.Conv(filter_shape=(2, 2), channels=6), nk.ReLU(), nk.Flatten(),
                     nk.Dense(width=5), nk.ReLU(), nk.Dense())
    net = FiniteNetwork(arch, (6, 5, 3))
    assert net.widths == (4, 6, 5, 1)
    assert net.in_features == (6, 5, 3) and net.input_shape == (6, 5, 3)
    # VALID: (6, 5) → (4, 4) → (3, 3); Flatten: 9·6 features
    assert net.n_params == 3 * 2 * 3 * 4 + 4 + 2 * 2 * 4 * 6 + 6 + 54 * 5 + 5 + 5 * 1 + 1
    assert [W.shape for W, _ in net.unflatten(net.init(0))] == [(3, 2, 3, 4), (2, 2, 4, 6), (5, 54), (1, 5)]
    assert FiniteNetwork(arch, (6, 5, 3), width=7).widths == (7, 7, 7, 1)  # width= overrides channels
    assert FiniteNetwork(arch, (6, 5, 3), width=[2, 3, 4]).widths == (2, 3, 4, 1)
    dense = FiniteNetwork("Dense(1.0, 0.0) > ReLU > Dense(1.0, 0.0)", (4,), width=3)
    assert dense.in_features == 4 and dense.input_shape == (4,)


def test_messages():
    conv = nk.Conv(filter_shape=(3, 3), padding="SAME")
    cnn = nk.serial(conv, nk.ReLU(), nk.GlobalAvgPool(), nk.Dense())
    with pytest.raises(nk.ArchitectureError, match=r"acts on spatial inputs .* flat inputs of 12 features .* "
                                                   r"pass in_features=\(S1, \.\.\., Sk, C\)"):
        FiniteNetwork(cnn, 12, width=4)
    with pytest.raises(nk.ArchitectureError, match=r"has 2 spatial axes but its input has 1"):
        FiniteNetwork(cnn, (8, 3), width=4)
    with pytest.raises(nk.ArchitectureError, match=r"gives an empty output .* VALID window"):
        FiniteNetwork(nk.serial(nk.Conv(filter_shape=(5, 5)), nk.ReLU(), nk.Flatten(), nk.Dense()), (4, 4, 1), width=2)
    # the architecture rules are compile's (kernel.as_architecture), for finite networks too
    with pytest.raises(nk.ArchitectureError, match=r"Dense at position 2 is applied to a spatial state"):
        FiniteNetwork(nk.serial(conv, nk.ReLU(), nk.Dense()), (8, 8, 3), width=4)
    with pytest.raises(nk.ArchitectureError, match=r"comes after the readout Flatten\(\)"):
        FiniteNetwork(nk.serial(nk.Flatten(), nk.Dense(), nk.ReLU(), conv, nk.Dense()), (8, 8, 3), width=4)
    with pytest.raises(nk.ArchitectureError, match=r"at position 0 comes at the start, but an activation needs an "
                                                   r"affine layer \(Conv or Dense\)"):
        FiniteNetwork(nk.serial(nk.ReLU(), conv, nk.Flatten(), nk.Dense()), (8, 8, 3), width=4)
    with pytest.raises(nk.ArchitectureError, match=r"in_features=\(8, 8, 3\) describes spatial inputs .* no Flatten or "
                                                   r"GlobalAvgPool\. Pass in_features=192 with X.reshape"):
        FiniteNetwork("Dense(1.0, 0.0) > ReLU > Dense(1.0, 0.0)", (8, 8, 3), width=4)
    with pytest.raises(nk.ParameterError, match=r"hidden layer Conv\(.*\) has no channels, and no width= argument"):
        FiniteNetwork(cnn, (8, 8, 3))
    with pytest.raises(nk.ParameterError, match=r"width has 2 entries but the architecture has 1 hidden Conv/Dense"):
        FiniteNetwork(cnn, (8, 8, 3), width=[4, 4])
    with pytest.raises(nk.ParameterError, match=r"The 'in_features' parameter of FiniteNetwork must be an integer"):
        FiniteNetwork(cnn, (8, 0, 3), width=4)
    net = FiniteNetwork(cnn, (8, 8, 3), width=4)
    theta = net.init(0)
    with pytest.raises(nk.InputError, match=r"X must have shape \(n, 8, 8, 3\): n samples of spatial shape \(8, 8\) "
                                            r"with 3 channel\(s\), channels last; got an array with 3 dimension"):
        net.apply(theta, np.ones((2, 8, 8)))
    with pytest.raises(nk.InputError, match=r"X has 1 channel\(s\) \(last axis\) but the network was built for 3"):
        net.apply(theta, np.ones((2, 8, 8, 1)))
    with pytest.raises(nk.InputError, match=r"X1 has spatial shape \(7, 8\) but the network was built for \(8, 8\).*"
                                            r"in_features=\(7, 8, 3\)"):
        net.ntk(theta, np.ones((2, 7, 8, 3)))
    bad = np.ones((2, 8, 8, 3))
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(nk.InputError, match=r"X contains NaN or infinite values \(first at index \(1, 2, 3, 0\)"):
        net.apply(theta, bad)
    with pytest.raises(TypeError, match=r"X must be real; got complex"):
        net.apply(theta, np.ones((2, 8, 8, 3), dtype=complex))
    with pytest.raises(nk.ArchitectureError, match=r"acts on spatial inputs"):
        monte_carlo_kernels(cnn, np.ones((2, 12)), width=4, seeds=1)
    from ntk_infinite.verify.runners import training_agreement

    with pytest.raises(nk.InputError, match=r"X_test has \(8, 8, 2\) per-sample shape but X has \(8, 8, 3\)"):
        training_agreement(cnn, np.ones((3, 8, 8, 3)), np.ones(3), np.ones((2, 8, 8, 2)), widths=(4, 8),
                           analytic=Kernels(nngp=np.eye(5), ntk=np.eye(5)))
