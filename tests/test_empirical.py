"""Finite networks (ntk_infinite.verify.empirical, ntk_infinite.verify.training): exact derivatives, Monte-Carlo
agreement with the analytic kernels at tolerances derived from the sample size, training, messages."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import special, stats

import ntk_infinite as nk
from ntk_infinite.verify.empirical import FiniteNetwork, LinearizedModel, monte_carlo_kernels
from ntk_infinite.verify.training import train
from naive import naive_finite_forward, naive_kernels, naive_linear_gd_outputs
from tolerances import (EXACT_RTOL, FALSE_ALARM, NETWORK_FD_ATOL, NETWORK_FD_RTOL, RK4_ATOL, RK4_RTOL, ROUNDING_ATOL,
                        ROUNDING_RTOL)

#: Central-difference step (NETWORK_FD_RTOL says what it costs).
FD_STEP = 1e-6
#: RK4 step z/(ηλ_max) with z = RK4_Z (RK4_RTOL says what it costs).
RK4_Z = 0.05

RELU2 = "Dense(1.4, 0.1) > ReLU > Dense(1.3, 0.2) > ReLU > Dense(1.2, 0.3)"


def _inputs(n=6, d=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def _architectures():
    erf = nk.Activation(special.erf, lambda x: 2 / np.sqrt(np.pi) * np.exp(-x * x), name="erf")
    return {
        "relu": nk.parse_architecture(RELU2),
        "erf-identity-no-bias": nk.serial(nk.Dense(w_std=1.5, b_std=0.0), erf, nk.Identity(), nk.Dense(w_std=1.1, b_std=0.4), nk.Dense(w_std=0.9, b_std=0.2)),
        "tanh-numerical-derivative": nk.serial(nk.Dense(w_std=1.2, b_std=0.3), nk.Activation(np.tanh), nk.Dense(w_std=1.0, b_std=0.1)),
    }


# ------------------------------------------------------------------------------- derivatives
@pytest.mark.parametrize("name", list(_architectures()))
@pytest.mark.parametrize("k", [1, 3])
def test_jacobian_matches_finite_differences(name, k):
    arch = _architectures()[name]
    X = _inputs()
    net = FiniteNetwork(arch, X.shape[1], width=7, n_outputs=k)
    theta = net.init(1)
    J = net.jacobian(theta, X)
    assert J.shape == (X.shape[0] * k, net.n_params)
    fd = np.empty_like(J)
    for p in range(net.n_params):
        e = np.zeros(net.n_params)
        e[p] = FD_STEP
        fd[:, p] = (net.apply(theta + e, X) - net.apply(theta - e, X)).ravel() / (2 * FD_STEP)
    assert_allclose(J, fd, rtol=NETWORK_FD_RTOL, atol=NETWORK_FD_ATOL)


@pytest.mark.parametrize("name", list(_architectures()))
def test_forward_pass_matches_naive_loops(name):
    arch = _architectures()[name]
    X = _inputs(n=3)
    net = FiniteNetwork(arch, X.shape[1], width=6, n_outputs=2)
    theta = net.init(2)
    expected = np.stack([naive_finite_forward(arch, net.unflatten(theta), x) for x in X])
    assert_allclose(net.apply(theta, X), expected, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)


@pytest.mark.parametrize("k", [1, 2])
def test_contracted_ntk_jvp_vjp_equal_explicit_jacobian_products(k):
    arch = _architectures()["erf-identity-no-bias"]
    X1, X2 = _inputs(n=5, seed=3), _inputs(n=4, seed=4)
    net = FiniteNetwork(arch, X1.shape[1], width=9, n_outputs=k)
    theta = net.init(5)
    J1, J2 = net.jacobian(theta, X1), net.jacobian(theta, X2)
    assert_allclose(net.ntk(theta, X1), J1 @ J1.T, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)
    assert_allclose(net.ntk(theta, X1, X2), J1 @ J2.T, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)
    per_output = sum(J1[a::k] @ J2[a::k].T for a in range(k)) / k
    assert_allclose(net.ntk_per_output(theta, X1, X2), per_output, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)
    rng = np.random.default_rng(6)
    v = rng.standard_normal(net.n_params)
    r = rng.standard_normal((X1.shape[0], k))
    assert_allclose(net.jvp(theta, X1, v).ravel(), J1 @ v, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)
    assert_allclose(net.vjp(theta, X1, r), J1.T @ r.ravel(), rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)


def test_nngp_is_the_readout_covariance_given_the_hidden_layers():
    """σ_w²/n h·h' + σ_b² equals the sample second moment of the outputs over many readout draws
    (hidden layers fixed), within the standard error of that sample (Isserlis: Var(f f') = KK + K²)."""
    arch = nk.parse_architecture(RELU2)
    X = _inputs(n=4)
    net = FiniteNetwork(arch, X.shape[1], width=16)
    theta = net.init(0)
    K = net.nngp(theta, X)
    (w_slice, b_slice) = net.layer_slices()[-1]
    rng = np.random.default_rng(1)
    S = 4000
    draws = theta[None, :].repeat(S, axis=0)
    draws[:, w_slice] = rng.standard_normal((S, w_slice.stop - w_slice.start))
    draws[:, b_slice] = rng.standard_normal((S, 1))
    F = np.stack([net.apply(t, X)[:, 0] for t in draws])
    second = F.T @ F / S
    se = np.sqrt((np.outer(np.diag(K), np.diag(K)) + K**2) / S)
    z_crit = stats.norm.isf(FALSE_ALARM / (2 * K.size))
    assert np.max(np.abs(second - K) / se) <= z_crit


def test_linearized_model_is_first_order_taylor_expansion():
    arch = _architectures()["erf-identity-no-bias"]
    X = _inputs()
    net = FiniteNetwork(arch, X.shape[1], width=8)
    theta0 = net.init(0)
    lin = LinearizedModel(net, theta0)
    v = np.random.default_rng(1).standard_normal(net.n_params)
    gaps = []
    for eps in (1e-2, 5e-3):
        gaps.append(np.linalg.norm(net.apply(theta0 + eps * v, X) - lin.apply(theta0 + eps * v, X)))
    # second-order remainder: halving the step divides the gap by 4 (3.5–4.5 allows the cubic term)
    assert 3.5 <= gaps[0] / gaps[1] <= 4.5
    assert_allclose(lin.ntk(theta0 + v, X), net.ntk(theta0, X), rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)


# ------------------------------------------------------------------------------ Monte Carlo
def _mc_z(samples, K):
    """‖mean − K‖_F / SE_F with SE_F² = Σ entrywise sample variances / S."""
    S = samples.shape[0]
    se = np.sqrt(np.sum(samples.var(axis=0, ddof=1)) / S)
    return np.linalg.norm(samples.mean(axis=0) - K) / se, se


@pytest.mark.parametrize("which", ["relu", "erf"])
def test_empirical_kernels_agree_with_analytic_at_large_width(which):
    """Mean over S networks of width 2048 within t_{S-1} standard errors of the analytic kernels;
    the same test rejects a kernel 10% off (so it can fail)."""
    X = _inputs(n=6)
    if which == "relu":
        arch = nk.parse_architecture(RELU2)
        nngp, ntk = naive_kernels(arch, X)
    else:
        erf = nk.Activation(special.erf, name="erf")
        arch = nk.serial(nk.Dense(w_std=1.5, b_std=0.2), erf, nk.Dense(w_std=1.5, b_std=0.2), erf, nk.Dense(w_std=1.5, b_std=0.2))
        k = nk.compile(arch)(X)
        nngp, ntk = k.nngp, k.ntk
    S = 12
    mc = monte_carlo_kernels(arch, X, width=2048, seeds=S)
    t_crit = stats.t.isf(FALSE_ALARM / 2, S - 1)
    for samples, K in ((mc.nngp_samples, nngp), (mc.ntk_samples, ntk)):
        z, se = _mc_z(samples, K)
        assert z <= t_crit
        resolution = t_crit * se / np.linalg.norm(K)
        assert resolution < 0.1
        assert _mc_z(samples, 1.1 * K)[0] > t_crit
    assert_allclose(mc.standard_error("ntk"), mc.ntk_samples.std(axis=0, ddof=1) / np.sqrt(S), rtol=EXACT_RTOL, atol=0)


def test_monte_carlo_output_covariance_matches_analytic_nngp():
    """The covariance of the raw outputs across whole re-initialisations is the NNGP."""
    arch = nk.parse_architecture("Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1)")
    X = _inputs(n=4)
    K, _ = naive_kernels(arch, X)
    net = FiniteNetwork(arch, X.shape[1], width=256)
    S = 3000
    F = np.stack([net.apply(net.init(s), X)[:, 0] for s in range(S)])
    se = np.sqrt((np.outer(np.diag(K), np.diag(K)) + K**2) / S)
    z_crit = stats.norm.isf(FALSE_ALARM / (2 * K.size))
    assert np.max(np.abs(F.T @ F / S - K) / se) <= z_crit


def test_relative_error_falls_like_inverse_sqrt_width_light():
    """CI version of property 1: three widths, slope −0.5 within 0.1 plus 3.29 standard errors."""
    from ntk_infinite.verify.runners import EXPECTED_SLOPE, SLOPE_TOL, fit_slope

    arch = nk.parse_architecture(RELU2)
    X = _inputs(n=8)
    nngp, ntk = naive_kernels(arch, X)
    widths = (64, 256, 1024)
    errs = np.array([[np.linalg.norm(s - ntk) / np.linalg.norm(ntk) for s in
                      monte_carlo_kernels(arch, X, width=w, seeds=range(100 * w, 100 * w + 10), get="ntk").ntk_samples]
                     for w in widths])
    fit = fit_slope(widths, errs)
    assert abs(fit.slope - EXPECTED_SLOPE) <= SLOPE_TOL + stats.norm.isf(FALSE_ALARM / 2) * fit.stderr
    assert fit.stderr < SLOPE_TOL  # the check has power


@pytest.mark.slow
@pytest.mark.parametrize("act", ["relu", "erf", "tanh", "user"])
def test_relative_error_slope_full_sweep(act):
    """Property 1: widths 64…4096, 16 networks each: slopes −0.5 ± 0.1 for NNGP and NTK."""
    from ntk_infinite.reports.convergence import _arch, activations
    from ntk_infinite.verify.runners import kernel_convergence, sample_data

    layer = dict(zip(("relu", "erf", "tanh", "user"), (layer for _, layer in activations())))[act]
    X, _, Xt, _ = sample_data(20, 10, seed=1)
    res = kernel_convergence(_arch(layer), np.vstack([X, Xt]), samples=16, seed=1)
    for r in res.values():
        assert r.fit.stderr <= 0.05
        assert abs(r.fit.slope + 0.5) <= 0.1
        assert r.z[-1] <= r.z_critical


# ------------------------------------------------------------------------------- training
def test_memory_width_4096_never_forms_the_jacobian():
    """Empirical NTK of 20 inputs at width 4096 (P ≈ 17M, J would be 2.7 GB) within a few
    parameter vectors of memory."""
    arch = nk.parse_architecture(RELU2)
    X = _inputs(n=20, d=10)
    net = FiniteNetwork(arch, X.shape[1], width=4096)
    theta = net.init(0)
    tracemalloc.start()
    try:
        K = net.ntk(theta, X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert K.shape == (20, 20)
    assert peak < 0.25 * theta.nbytes  # features only: O(n·width), not O(n·P)


def test_linearized_model_training_matches_closed_form():
    """Gradient flow (RK4) of the linearised network equals f₀ − Θ̂*Θ̂⁻¹(I − e^{−ηΘ̂t})(f₀ − Y) from
    nk.predict; discrete GD equals explicit iteration of f ← f − ηΘ̂(f − y)."""
    arch = nk.parse_architecture(RELU2)
    X, Xt = _inputs(n=8, seed=1), _inputs(n=3, seed=2)
    Y = np.sin(X[:, :2])
    net = FiniteNetwork(arch, X.shape[1], width=32, n_outputs=2)
    theta0 = net.init(3)
    lin = LinearizedModel(net, theta0)
    XA = np.vstack([X, Xt])
    Th = net.ntk(theta0, XA)  # full (n·k, n·k): a finite network's outputs are coupled
    f0 = net.apply(theta0, XA)
    eta, t = 0.05, 7.0
    n = 2 * X.shape[0]
    assert eta * t * np.linalg.eigvalsh(Th[:n, :n])[-1] < 20  # keeps the RK4 bound below RK4_RTOL
    step = RK4_Z / (eta * np.linalg.eigvalsh(Th[:n, :n])[-1])
    res = train(lin, theta0, X, Y, learning_rate=eta, t=t, X_test=Xt, step_size=step)
    r0 = (Y - f0[:8]).ravel()
    pred = nk.predict.gd_mse_from_gram({"ntk": Th[:n, :n]}, r0).predict({"ntk": Th[n:, :n]}, t=eta * t)
    assert_allclose(res.test_outputs.ravel(), f0[8:].ravel() + pred.mean, rtol=RK4_RTOL, atol=RK4_ATOL)
    steps = 40
    lr = 1.0 / np.linalg.eigvalsh(Th[:n, :n])[-1]
    gd = train(lin, theta0, X, Y, learning_rate=lr, t=steps, method="gd")
    assert gd.n_steps == steps
    expected = naive_linear_gd_outputs(Th[:n, :n], f0[:8].ravel(), Y.ravel(), lr, steps)
    assert_allclose(gd.train_outputs.ravel(), expected, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)


def test_network_gradient_is_gradient_of_the_summed_loss():
    arch = _architectures()["tanh-numerical-derivative"]
    X = _inputs(n=5)
    Y = np.cos(X[:, :1])
    net = FiniteNetwork(arch, X.shape[1], width=6)
    theta = net.init(0)

    def loss(th):
        return 0.5 * np.sum((net.apply(th, X) - Y) ** 2)

    g = net.value_and_vjp(theta, X, lambda out: out - Y)[1]
    fd = np.array([(loss(theta + FD_STEP * e) - loss(theta - FD_STEP * e)) / (2 * FD_STEP) for e in np.eye(net.n_params)])
    assert_allclose(g, fd, rtol=NETWORK_FD_RTOL, atol=NETWORK_FD_ATOL)


def test_training_reduces_loss_and_output_scale_is_centred():
    arch = nk.parse_architecture(RELU2)
    X = _inputs(n=6)
    Y = np.sign(X[:, 0])
    net = FiniteNetwork(arch, X.shape[1], width=64)
    theta0 = net.init(0)
    before = 0.5 * np.sum((net.apply(theta0, X)[:, 0] - Y) ** 2)
    res = train(net, theta0, X, Y, learning_rate=1.0, t=2.0)
    assert 0.5 * np.sum((res.train_outputs[:, 0] - Y) ** 2) < 0.5 * before
    assert np.array_equal(theta0, net.init(0))  # not modified
    zero = train(net, theta0, X, Y, learning_rate=1.0, t=0.0, output_scale=8.0, center=True, X_test=X[:2])
    assert np.all(zero.train_outputs == 0.0) and np.all(zero.test_outputs == 0.0)
    one = train(net, theta0, X, Y, learning_rate=1.0, t=2.0, output_scale=1.0, center=True)
    lazy = train(net, theta0, X, Y, learning_rate=1.0, t=2.0, output_scale=8.0, center=True)
    moved = np.linalg.norm(lazy.theta - theta0) / np.linalg.norm(one.theta - theta0)
    assert 0.08 < moved < 0.17  # parameters move by about 1/α = 0.125


def test_trained_wide_network_matches_analytic_predictor_light():
    """CI version of properties 2–3 on a one-hidden-layer network (cheap at any width)."""
    from ntk_infinite.verify.runners import FAIL, sample_data, training_agreement

    X, y, Xt, _ = sample_data(12, 6, seed=2)
    res = training_agreement("Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1)", X, y, Xt, widths=(64, 256, 1024),
                             samples=4, seed=2)
    rms = np.sqrt(np.mean(res.deviation**2, axis=1))
    assert rms[-1] < rms[0] / 2  # expected factor 4 over a 16-fold width range
    assert res.mean_z[-1] <= res.z_critical
    assert res.agreement_verdict != FAIL and res.lazy_verdict != FAIL
    assert abs(res.fits["param_change"].slope + 0.5) <= 0.1 + 3.29 * res.fits["param_change"].stderr


@pytest.mark.slow
def test_trained_network_property_2_and_3_full():
    from ntk_infinite.verify.runners import PASS, sample_data, training_agreement

    X, y, Xt, _ = sample_data(20, 10, seed=3)
    res = training_agreement(RELU2, X, y, Xt, widths=(64, 128, 256, 512, 1024), samples=6, seed=3)
    assert res.agreement_verdict == PASS
    assert res.lazy_verdict == PASS


def test_output_scale_makes_training_lazy():
    """Chizat et al. 2019: relative parameter and (smooth activation) kernel changes fall like 1/α."""
    from ntk_infinite.verify.runners import output_scale_sweep

    X = _inputs(n=8)
    Y = np.sin(X[:, 0])
    sw = output_scale_sweep(nk.serial(nk.Dense(w_std=1.4, b_std=0.1), nk.Activation(np.tanh), nk.Dense(w_std=1.4, b_std=0.1)), X, Y,
                            width=32, alphas=(2, 8, 32), samples=2, eta_t=1.0)
    assert abs(sw.fits["param_change"].slope + 1) <= 0.05
    assert abs(sw.fits["ntk_change"].slope + 1) <= 0.15


# -------------------------------------------------------------------------------- widths/messages
def test_widths_from_description_and_override():
    arch = nk.serial(nk.Dense(w_std=1.0, b_std=0.1, width=5), nk.ReLU(), nk.Dense(w_std=1.0, b_std=0.1, width=3), nk.ReLU(),
                     nk.Dense(w_std=1.0, b_std=0.0, width=2))
    assert FiniteNetwork(arch, 4).widths == (5, 3, 2)
    assert FiniteNetwork(arch, 4, width=7).widths == (7, 7, 2)
    assert FiniteNetwork(arch, 4, width=[6, 8], n_outputs=1).widths == (6, 8, 1)
    assert FiniteNetwork(arch, 4).n_params == 4 * 5 + 5 + 5 * 3 + 3 + 3 * 2 + 2


def test_messages():
    arch = nk.parse_architecture(RELU2)
    with pytest.raises(nk.ParameterError, match=r"has no width, and no width= argument was given; pass FiniteNetwork"):
        FiniteNetwork(arch, 3)
    with pytest.raises(nk.ParameterError, match=r"width has 3 entries but the architecture has 2 hidden Dense"):
        FiniteNetwork(arch, 3, width=[4, 4, 4])
    with pytest.raises(nk.ParameterError, match=r"The 'width' parameter of FiniteNetwork must be an integer"):
        FiniteNetwork(arch, 3, width=0)
    with pytest.raises(nk.ArchitectureError, match="must end in a Dense readout"):
        FiniteNetwork("Dense(1.0, 0.0) > ReLU", 3, width=4)
    net = FiniteNetwork(arch, 3, width=4)
    theta = net.init(0)
    with pytest.raises(nk.InputError, match=r"X has 2 features but the network was built for in_features=3"):
        net.apply(theta, np.ones((2, 2)))
    with pytest.raises(nk.InputError, match=r"theta must be a float64 vector of shape \(41,\).*net.init\(seed\)"):
        net.apply(theta[:-1], np.ones((2, 3)))
    with pytest.raises(nk.InputError, match=r"cotangent must have the outputs' shape \(2, 1\)"):
        net.vjp(theta, np.ones((2, 3)), np.ones(2))
    with pytest.raises(nk.ParameterError, match=r"explicit Jacobian of 2 inputs would take .* use net.ntk\(\)"):
        net.jacobian(theta, np.ones((2, 3)), max_bytes=100)
    with pytest.raises(nk.ParameterError, match=r"method must be 'flow' \(gradient flow, RK4\) or 'gd'"):
        train(net, theta, np.ones((2, 3)), np.ones(2), learning_rate=1.0, t=1.0, method="adam")
    with pytest.raises(nk.ParameterError, match=r"t is the number of gradient-descent steps and must be a whole"):
        train(net, theta, np.ones((2, 3)), np.ones(2), learning_rate=1.0, t=1.5, method="gd")
    with pytest.raises(nk.InputError, match=r"Y must have shape \(2,\) or \(2, 1\)"):
        train(net, theta, np.ones((2, 3)), np.ones(3), learning_rate=1.0, t=1.0)
    with pytest.raises(nk.ParameterError, match=r"The 'learning_rate' parameter of train must be a float in the range \(0"):
        train(net, theta, np.ones((2, 3)), np.ones(2), learning_rate=0.0, t=1.0)
    with pytest.raises(nk.ParameterError, match="seeds is empty"):
        monte_carlo_kernels(arch, np.ones((2, 3)), width=4, seeds=[])
    mc = monte_carlo_kernels(arch, np.ones((2, 3)), width=4, seeds=1, get="nngp")
    assert mc.ntk is None
    with pytest.raises(KeyError, match=r"'ntk' was not computed; pass get='ntk'"):
        mc.standard_error("ntk")
    with pytest.raises(nk.ParameterError, match="A standard error needs at least 2 seeds"):
        mc.standard_error("nngp")
