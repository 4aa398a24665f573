"""Model selection: closed-form LOO, GP marginal likelihood and its gradient
through the recursion, nk.select, and the scikit-learn GP kernels.

References: explicit refits and scipy.stats (tests/naive.py); central finite differences
of the engine's Gram matrices (an independent code path) for every derivative.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose

import ntk_infinite as nk
from ntk_infinite.solve import selection as S
from ntk_infinite.evaluate.gradients import kernel_gradients
from ntk_infinite.solve.predict import SingularKernelError
from naive import naive_log_marginal, naive_loo
from tolerances import (EXACT_ATOL, EXACT_RTOL, KERNEL_FD_RTOL, KERNEL_FD_SERIES_RTOL, LOO_ATOL, LOO_RTOL, ML_RTOL,
                        ROUNDING_ATOL, ROUNDING_RTOL)

#: Central-difference step (KERNEL_FD_RTOL says what it costs).
FD_STEP = 1e-5

RELU = "Dense(w_std=1.4142135623730951, b_std=0.1) > ReLU > Dense(w_std=1.4142135623730951, b_std=0.1)"


def _arch(params, act):
    layers = []
    for i in range(len(params) // 2):
        if i:
            layers.append(act)
        layers.append(nk.Dense(w_std=params[2 * i], b_std=params[2 * i + 1]))
    return nk.serial(*layers)


def _fd(f, params, i):
    up, down = np.array(params, float), np.array(params, float)
    up[i] += FD_STEP
    down[i] -= FD_STEP
    return (f(up) - f(down)) / (2 * FD_STEP)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((12, 3))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(12)
    return X, y


# ------------------------------------------------------------------------- LOO
@pytest.mark.parametrize("multi", [False, True])
def test_loo_matches_explicit_refits(data, multi):
    X, y = data
    K = nk.compile(RELU)(X).ntk
    Y = np.stack([y, X[:, 1]], axis=1) if multi else y
    ridges = [1e-4, 0.03, 1.0, 20.0]
    res = S.loo_ridge(K, Y, ridges)
    for i, lam in enumerate(ridges):
        resid = naive_loo(K, Y, lam)
        assert_allclose(res.mse[i], np.mean(resid**2), rtol=LOO_RTOL, atol=LOO_ATOL)
        expected = np.asarray(Y).reshape(12, -1) - resid
        assert_allclose(res.predictions[i].reshape(12, -1), expected, rtol=LOO_RTOL, atol=LOO_ATOL)
    assert res.best_ridge == ridges[int(np.argmin(res.mse))]


def test_loo_singular_ridge_is_worst_with_warning(data):
    X, y = data
    Xd = np.vstack([X, X[:2]])
    yd = np.concatenate([y, y[:2] + 1.0])
    K = nk.compile(RELU)(Xd).ntk
    with pytest.warns(nk.IllConditionedWarning, match=r"singular to working precision for the ridge\(s\) \[0\.\].*Use ridges >="):
        res = S.loo_ridge(K, yd, [0.0, 0.1])
    assert res.mse[0] == np.inf and np.isfinite(res.mse[1])
    assert not np.isnan(res.predictions).any()


def test_ridge_path_matches_solves(data):
    X, y = data
    k = nk.compile(RELU)
    K, Ks = k(X[:8]).ntk, k(X[8:], X[:8]).ntk
    out = S.ridge_path(K, Ks, y[:8], [0.01, 1.0])
    for i, lam in enumerate([0.01, 1.0]):
        assert_allclose(out[i], Ks @ np.linalg.solve(K + lam * np.eye(8), y[:8]), rtol=LOO_RTOL, atol=LOO_ATOL)


# ------------------------------------------------------------------------- marginal likelihood
@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_marginal_likelihood_value_matches_scipy(data, get):
    X, y = data
    Y = np.stack([y, np.cos(X[:, 2])], axis=1)
    k = nk.compile(RELU)
    K = getattr(k(X), get)
    ml = S.log_marginal_likelihood(k, X, Y, ridge=0.05, get=get)
    assert_allclose(ml.value, naive_log_marginal(K, Y, 0.05), rtol=ML_RTOL, atol=0)
    path = S.log_marginal_likelihood_path(K, Y, [0.05, 0.5])
    assert_allclose(path, [naive_log_marginal(K, Y, r) for r in (0.05, 0.5)], rtol=ML_RTOL, atol=0)


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_marginal_likelihood_gradient_matches_finite_differences(data, get):
    X, y = data
    X = np.vstack([X, X[:1]])  # a duplicate input: the per-point route of ∂Ṫ/∂c
    y = np.concatenate([y, y[:1]])
    act = nk.ReLU()
    params = [1.3, 0.2, 1.1, 0.3, 0.9, 0.25]
    ridge = 0.05
    ml = S.log_marginal_likelihood(_arch(params, act), X, y, ridge=ridge, get=get, eval_gradient=True)
    assert ml.parameters == ("layers[0].w_std", "layers[0].b_std", "layers[2].w_std", "layers[2].b_std",
                             "layers[4].w_std", "layers[4].b_std", "ridge")

    def value(p):
        return S.log_marginal_likelihood(_arch(p[:-1], act), X, y, ridge=p[-1], get=get).value

    full = params + [ridge]
    fd = np.array([_fd(value, full, i) for i in range(len(full))])
    assert_allclose(ml.gradient, fd, rtol=KERNEL_FD_RTOL, atol=KERNEL_FD_RTOL * np.max(np.abs(fd)))
    assert ml.as_dict()["ridge"] == ml.gradient[-1]


def test_marginal_likelihood_singular_error_message(data):
    X, y = data
    Xd = np.vstack([X, X[:1]])
    with pytest.raises(SingularKernelError, match=r"not positive definite .*condition.*Pass ridge >= [0-9.e+-]+"):
        S.log_marginal_likelihood(RELU, Xd, np.append(y, 0.0), ridge=0.0)
    with pytest.raises(ValueError, match="get must be 'nngp' or 'ntk'; got 'gp'"):
        S.log_marginal_likelihood(RELU, X, y, get="gp")


# ------------------------------------------------------------------------- kernel derivatives
def _grads_vs_fd(params, act, X1, X2, rtol):
    g = kernel_gradients(_arch(params, act), X1, X2)
    k = nk.compile(_arch(params, act))(X1, X2)
    assert_allclose(g.nngp, k.nngp, rtol=rtol, atol=rtol)
    assert_allclose(g.ntk, k.ntk, rtol=rtol, atol=rtol)
    for i in range(len(params)):
        for name in ("nngp", "ntk"):
            fd = _fd(lambda p: getattr(nk.compile(_arch(p, act))(X1, X2), name), params, i)
            scale = max(np.max(np.abs(fd)), 1.0)
            assert_allclose(getattr(g, f"d_{name}")[i], fd, rtol=rtol, atol=rtol * scale,
                            err_msg=f"{name} wrt {g.parameters[i]}")


def test_relu_gradients_with_duplicates_zero_inputs_and_two_sets(data):
    X, _ = data
    X1 = np.vstack([X[:5], np.zeros((1, 3)), X[:1]])  # a zero input and a duplicate row
    X2 = np.vstack([X[5:9], X[2:3], np.zeros((1, 3))])  # shares a row and the zero input with X1
    params = [1.3, 0.2, 1.1, 0.3, 0.9, 0.4]
    _grads_vs_fd(params, nk.ReLU(), X1, None, KERNEL_FD_RTOL)
    _grads_vs_fd(params, nk.ReLU(), X1, X2, KERNEL_FD_RTOL)


def test_series_gradients_tanh(data):
    X, _ = data
    X1 = np.vstack([X[:6], X[:1]])
    _grads_vs_fd([1.2, 0.3, 1.5, 0.2, 0.8, 0.1], nk.Activation(np.tanh, name="tanh"), X1, X[6:10], KERNEL_FD_SERIES_RTOL)


def test_parallel_inputs_without_bias_use_the_restricted_derivative():
    # x and 2x with b = 0 in the first layer stay exactly parallel (ρ = 1), where ∂Ṫ/∂c is singular.
    X = np.array([[1.0, -0.5, 2.0], [2.0, -1.0, 4.0], [0.3, 1.0, -1.0]])
    g = kernel_gradients(_arch([1.3, 0.0, 1.1, 0.3], nk.ReLU()), X)
    assert np.isfinite(g.d_ntk).all() and np.isfinite(g.d_nngp).all()
    assert np.all(g.d_nngp[1] == 0.0) and np.all(g.d_ntk[1] == 0.0)  # ∂/∂b at b = 0 (b enters as b²)
    for i in (0, 2, 3):
        for name in ("nngp", "ntk"):
            def f(p):
                return getattr(nk.compile(_arch([p[0], 0.0, p[1], p[2]], nk.ReLU()))(X), name)

            fd = _fd(f, [1.3, 1.1, 0.3], {0: 0, 2: 1, 3: 2}[i])
            assert_allclose(getattr(g, f"d_{name}")[i], fd, rtol=KERNEL_FD_RTOL, atol=KERNEL_FD_RTOL * np.max(np.abs(fd)))


# ------------------------------------------------------------------------- select
def test_select_loo_records_match_refits_and_best_is_the_argmax(data):
    X, y = data
    archs = S.relu_architectures(depths=(1, 2), w_std=(1.4,), b_std=(0.1,))
    ridges = [1e-3, 0.1, 1.0]
    sel = nk.select(X, y, archs, ridges, criterion="loo", get="ntk")
    assert len(sel.results) == 6
    for rec in sel.results:
        K = nk.compile(rec["arch"])(X).ntk
        assert_allclose(rec["score"], -np.mean(naive_loo(K, y, rec["ridge"]) ** 2), rtol=LOO_RTOL, atol=LOO_ATOL)
    best = max(sel.results, key=lambda r: r["score"])
    assert sel.ridge == best["ridge"] and sel.architecture.to_text() == best["arch"] and sel.score == best["score"]
    pred = sel.predictor(X, y).predict(X[:2])
    assert np.isfinite(pred.mean).all()


def test_select_marginal_likelihood_and_classification(data):
    X, y = data
    archs = [RELU, "2*(Dense(1.4, 0.1) > ReLU) > Dense(1.4, 0.1)"]
    sel = nk.select(X, y, archs, [0.01, 0.1], criterion="ml", get="nngp")
    for rec in sel.results:
        K = nk.compile(rec["arch"])(X).nngp
        assert_allclose(rec["score"], naive_log_marginal(K, y, rec["ridge"]), rtol=ML_RTOL, atol=0)
    labels = np.where(y > 0, "pos", "neg")
    sel = nk.select(X, labels, archs, [0.01, 0.1], task="classification")
    onehot = np.stack([labels == "neg", labels == "pos"], axis=1).astype(float)
    for rec in sel.results:
        K = nk.compile(rec["arch"])(X).ntk
        loo_pred = onehot - naive_loo(K, onehot, rec["ridge"])
        assert rec["score"] == np.mean(np.argmax(loo_pred, axis=1) == np.argmax(onehot, axis=1))


def test_select_error_messages(data):
    X, y = data
    with pytest.raises(ValueError, match="criterion must be 'loo' .* or 'ml' .*; got 'aic'"):
        nk.select(X, y, [RELU], criterion="aic")
    with pytest.raises(ValueError, match="ridges must be a non-empty 1-D sequence of finite numbers >= 0"):
        nk.select(X, y, [RELU], ridges=[-1.0])
    with pytest.raises(ValueError, match="archs is empty"):
        nk.select(X, y, [])
    with pytest.raises(ValueError, match="task must be 'regression' or 'classification'"):
        nk.select(X, y, [RELU], task="ranking")


# ------------------------------------------------------------------------- sklearn GP kernels
@pytest.mark.parametrize("name", ["NNGPKernel", "NTKKernel"])
def test_sklearn_kernels_gradient_and_gp_fit(data, name):
    pytest.importorskip("sklearn")
    from sklearn.gaussian_process import GaussianProcessRegressor

    X, y = data
    cls = getattr(nk.sklearn, name)
    kern = cls(depth=2, w_std=1.3, b_std=0.2)
    K, dK = kern(X, eval_gradient=True)
    get = "nngp" if name == "NNGPKernel" else "ntk"
    assert_allclose(K, getattr(nk.compile(kern.architecture_text())(X), get), rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)
    assert_allclose(kern.diag(X), np.diag(K), rtol=ROUNDING_RTOL, atol=0)
    theta = kern.theta
    for i in range(theta.size):
        fd = _fd(lambda th: kern.clone_with_theta(th)(X), theta, i)
        assert_allclose(dK[..., i], fd, rtol=KERNEL_FD_RTOL, atol=KERNEL_FD_RTOL * np.max(np.abs(fd)))
    gp = GaussianProcessRegressor(kern, alpha=1e-2, optimizer=None).fit(X, y)
    fitted = GaussianProcessRegressor(kern, alpha=1e-2, random_state=0).fit(X, y)
    assert fitted.log_marginal_likelihood_value_ >= gp.log_marginal_likelihood_value_
    with pytest.raises(ValueError, match="gradient can only be evaluated when Y is None"):
        kern(X, X, eval_gradient=True)
    with pytest.raises(ValueError, match="'activation' parameter of .* must be the name of a layer"):
        cls(activation="Swish")(X)


@pytest.mark.parametrize("order", [0, 1])
def test_closed_form_partials_match_finite_differences_of_the_dual(order):
    # The sympy-derived partials of an arc-cosine dual (step function for order 0, ReLU for 1)
    # against central differences of the dual's own NumPy references T and Ṫ.
    from ntk_infinite.compiler.duals.arccos import rectified_monomial_dual
    from ntk_infinite.compiler.duals.partials import dual_partials

    dual = rectified_monomial_dual(order)
    partials = dual_partials(dual)
    rng = np.random.default_rng(order)
    q1, q2 = rng.uniform(0.5, 2.0, 4), rng.uniform(0.5, 2.0, 3)
    c = rng.uniform(-0.9, 0.9, (4, 3)) * np.sqrt(q1[:, None] * q2[None, :])
    pp = partials.pair(dual, q1, q2, c, np.zeros((4, 3), bool))
    Q1, Q2 = q1[:, None], q2[None, :]
    for name, f in (("T", dual.T), ("Td", dual.Tdot)):
        assert_allclose(getattr(pp, name), f(Q1, Q2, c), rtol=EXACT_RTOL, atol=EXACT_ATOL)
        h = FD_STEP
        fds = {
            "q1": (f(Q1 + h, Q2, c) - f(Q1 - h, Q2, c)) / (2 * h),
            "q2": (f(Q1, Q2 + h, c) - f(Q1, Q2 - h, c)) / (2 * h),
            "c": (f(Q1, Q2, c + h) - f(Q1, Q2, c - h)) / (2 * h),
        }
        for var, fd in fds.items():
            assert_allclose(getattr(pp, f"{name}_{var}"), fd, rtol=KERNEL_FD_RTOL, atol=KERNEL_FD_RTOL)
    point = partials.point(q1)
    h = FD_STEP
    assert_allclose(point.dV, (dual.T(q1 + h, q1 + h, q1 + h) - dual.T(q1 - h, q1 - h, q1 - h)) / (2 * h),
                    rtol=KERNEL_FD_RTOL, atol=KERNEL_FD_RTOL)
    assert_allclose(point.dVd, (dual.Tdot(q1 + h, q1 + h, q1 + h) - dual.Tdot(q1 - h, q1 - h, q1 - h)) / (2 * h),
                    rtol=KERNEL_FD_RTOL, atol=KERNEL_FD_RTOL)


def test_gradients_of_a_quadrature_route_activation_say_what_to_do_instead(data):
    from ntk_infinite.errors import ArchitectureError

    X = data[0]
    kernel = nk.compile(nk.serial(nk.Dense(w_std=1.4, b_std=0.1), nk.ELU(1.0), nk.Dense(w_std=1.4, b_std=0.1)))
    with pytest.raises(ArchitectureError, match=r"ELU\(alpha=1\.0\) uses the kink-aware quadrature route.*"
                                                r"without eval_gradient.*criterion='loo'"):
        kernel_gradients(kernel, X[:5])
