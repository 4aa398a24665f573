"""Gradient-descent predictors: nk.predict.gd_mse and gd_mse_from_gram.

Expected values come from tests/naive.py: explicit inverses and scipy.linalg.expm
(naive_gd_mse), and discrete gradient descent on an explicit linear model whose tangent
kernel is the NTK (linear_model_gd).
"""

import math
import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

import ntk_infinite as nk
from ntk_infinite.solve.predict import SingularKernelError
from naive import linear_model_gd, naive_gd_mse
from tolerances import (ALGEBRA_ATOL, ALGEBRA_RTOL, LARGE_T_RTOL, PSD_RTOL, RIDGE_LIMIT_RTOL, ROUNDING_RTOL,
                        ULP_RTOL)

#: A ridge this small changes a kernel with smallest eigenvalue ~1e-2 by ~1e-8 relative.
TINY_RIDGE = 1e-10
#: t·λ_min ≥ 60 makes e^{-Θt} below e^{-60} ≈ 1e-26 relative.
LARGE_T_EXPONENT = 60.0

ARCH = "Dense(w_std=1.4142135623730951, b_std=0.1) > ReLU > Dense(w_std=1.4142135623730951, b_std=0.1)"


@pytest.fixture(scope="module")
def kernel():
    return nk.compile(ARCH)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((14, 3))
    Xs = rng.standard_normal((6, 3))
    Y = np.stack([np.sin(X[:, 0]), np.cos(X[:, 1]) + X[:, 2]], axis=1)
    return X, Xs, Y


def _grams(kernel, X, Xs):
    tt = kernel(X)
    st = kernel(Xs, X)
    ss = kernel(Xs)
    return tt, st, ss


@pytest.mark.parametrize("ridge_model", ["flow", "offset"])
@pytest.mark.parametrize("get", ["ntk", "nngp"])
@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_matches_naive_dense_algebra(kernel, data, get, ridge, ridge_model):
    X, Xs, Y = data
    tt, st, ss = _grams(kernel, X, Xs)
    times = [0.0, 0.05, 0.7, 9.0, np.inf]
    pred = nk.predict.gd_mse(kernel, X, Y, ridge=ridge, ridge_model=ridge_model)
    out = pred.predict(Xs, t=times, get=get, cov=True)
    assert out.mean.shape == (len(times), 6, 2) and out.cov.shape == (len(times), 6, 6)
    for i, t in enumerate(times):
        mean, cov = naive_gd_mse(tt.ntk, st.ntk, tt.nngp, st.nngp, ss.nngp, Y, t, ridge, get, ridge_model)
        assert_allclose(out.mean[i], mean, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)
        assert_allclose(out.cov[i], cov, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)


def test_one_dimensional_targets_and_scalar_time(kernel, data):
    X, Xs, Y = data
    tt, st, ss = _grams(kernel, X, Xs)
    out = nk.predict.gd_mse(kernel, X, Y[:, 0], ridge=0.1).predict(Xs, t=2.0)
    assert out.mean.shape == (6,) and out.cov is None and out.t == 2.0 and out.get == "ntk"
    mean, _ = naive_gd_mse(tt.ntk, st.ntk, tt.nngp, st.nngp, ss.nngp, Y[:, :1], 2.0, 0.1)
    assert_allclose(out.mean, mean[:, 0], rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)


def test_from_gram_equals_from_kernel(kernel, data):
    X, Xs, Y = data
    tt, st, ss = _grams(kernel, X, Xs)
    a = nk.predict.gd_mse(kernel, X, Y, ridge=0.2).predict(Xs, t=[0.5, np.inf], cov=True)
    b = nk.predict.gd_mse_from_gram(tt, Y, ridge=0.2).predict(st, ss, t=[0.5, np.inf], cov=True)
    c = nk.predict.gd_mse_from_gram({"ntk": tt.ntk, "nngp": tt.nngp}, Y, ridge=0.2).predict(
        {"ntk": st.ntk, "nngp": st.nngp}, {"nngp": ss.nngp}, t=[0.5, np.inf], cov=True)
    for other in (b, c):
        assert_allclose(other.mean, a.mean, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)
        assert_allclose(other.cov, a.cov, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)


def test_time_zero_is_the_prior(kernel, data):
    X, Xs, Y = data
    ss = kernel(Xs)
    for get in ("ntk", "nngp"):
        out = nk.predict.gd_mse(kernel, X, Y, ridge=0.1).predict(Xs, t=0.0, get=get, cov=True)
        assert np.all(out.mean == 0.0)
        assert_allclose(out.cov, ss.nngp, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)


def test_large_time_approaches_infinity(kernel, data):
    X, Xs, Y = data
    pred = nk.predict.gd_mse(kernel, X, Y)
    lam_min = np.linalg.eigvalsh(kernel(X).ntk)[0]
    t_large = LARGE_T_EXPONENT / lam_min
    a = pred.predict(Xs, t=t_large, cov=True)
    b = pred.predict(Xs, t=np.inf, cov=True)
    assert_allclose(a.mean, b.mean, rtol=LARGE_T_RTOL, atol=LARGE_T_RTOL)
    assert_allclose(a.cov, b.cov, rtol=LARGE_T_RTOL, atol=LARGE_T_RTOL)


@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_finite_time_equals_discrete_gradient_descent(kernel, data, ridge):
    X, Xs, Y = data
    joint = kernel(np.vstack([X, Xs])).ntk
    s, V = np.linalg.eigh(joint)
    Phi = V * np.sqrt(np.maximum(s, 0.0))  # explicit features: Phi Phiᵀ = Θ on train + test
    n = X.shape[0]
    t = 0.8
    steps = 2**22
    lr = t / steps
    f_gd = linear_model_gd(Phi[:n], Phi[n:], Y, lr, steps, ridge=ridge)
    out = nk.predict.gd_mse(kernel, X, Y, ridge=ridge).predict(Xs, t=t)
    # Euler vs flow, per eigenvalue s of Θ+λI with k·lr = t: |(1 - lr s)^k - e^{-st}| <= k (lr s)²/2
    # (|a^k - b^k| <= k|a - b| for a, b in [0, 1]), so the factor (1 - ·)/s differs by at most
    # t·lr·s/2; through Θ*(·)Y the mean differs by at most t·lr·λ_max/2·‖Θ*‖₂‖Y‖_F.
    lam_max = np.linalg.eigvalsh(kernel(X).ntk + ridge * np.eye(n))[-1]
    bound = t * lr * lam_max / 2 * np.linalg.norm(kernel(Xs, X).ntk, 2) * np.linalg.norm(Y)
    assert np.max(np.abs(out.mean - f_gd)) <= bound + ALGEBRA_ATOL
    # and the discrete dynamics really moved away from both ends
    assert np.max(np.abs(f_gd)) > 0.1 and np.max(np.abs(f_gd - pred_inf(kernel, X, Xs, Y, ridge))) > 1e-2


def pred_inf(kernel, X, Xs, Y, ridge):
    return nk.predict.gd_mse(kernel, X, Y, ridge=ridge).predict(Xs).mean


@pytest.mark.parametrize("get", ["ntk", "nngp"])
@pytest.mark.parametrize("ridge", [0.0, 0.2])
@pytest.mark.parametrize("ridge_model", ["flow", "offset"])
def test_covariance_is_positive_semidefinite(kernel, data, get, ridge, ridge_model):
    X, Xs, Y = data
    Xt = np.vstack([Xs, X[:3]])  # include training points: posterior variance ~ 0 there
    pred = nk.predict.gd_mse(kernel, X, Y, ridge=ridge, ridge_model=ridge_model)
    out = pred.predict(Xt, t=[0.0, 0.3, 4.0, np.inf], get=get, cov=True)
    for C in out.cov:
        assert_allclose(C, C.T, rtol=0, atol=0)
        assert np.linalg.eigvalsh(C)[0] >= -PSD_RTOL * np.max(np.abs(C))


def test_ridge_to_zero_limit(kernel, data):
    X, Xs, Y = data
    for t in (0.4, np.inf):
        a = nk.predict.gd_mse(kernel, X, Y, ridge=0.0).predict(Xs, t=t, cov=True)
        b = nk.predict.gd_mse(kernel, X, Y, ridge=TINY_RIDGE).predict(Xs, t=t, cov=True)
        assert_allclose(b.mean, a.mean, rtol=RIDGE_LIMIT_RTOL, atol=RIDGE_LIMIT_RTOL)
        assert_allclose(b.cov, a.cov, rtol=RIDGE_LIMIT_RTOL, atol=RIDGE_LIMIT_RTOL)


def test_nngp_at_infinity_is_the_gp_posterior(kernel, data):
    X, Xs, Y = data
    tt, st, ss = _grams(kernel, X, Xs)
    out = nk.predict.gd_mse(kernel, X, Y, ridge=0.05).predict(Xs, get="nngp", cov=True)
    A = tt.nngp + 0.05 * np.eye(X.shape[0])
    assert_allclose(out.mean, st.nngp @ np.linalg.solve(A, Y), rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)
    assert_allclose(out.cov, ss.nngp - st.nngp @ np.linalg.solve(A, st.nngp.T), rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)


def test_predict_train_is_predict_at_training_inputs(kernel, data):
    X, _, Y = data
    pred = nk.predict.gd_mse(kernel, X, Y, ridge=0.1)
    for t in (0.3, np.inf):
        a = pred.predict_train(t, cov=True)
        b = pred.predict(X, t=t, cov=True)
        assert_allclose(a.mean, b.mean, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)
        assert_allclose(a.cov, b.cov, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)
    # without ridge the flow interpolates the training targets
    assert_allclose(nk.predict.gd_mse(kernel, X, Y).predict_train(np.inf).mean, Y, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)


def test_max_learning_rate(kernel, data):
    X, _, Y = data
    pred = nk.predict.gd_mse(kernel, X, Y, ridge=0.1)
    lam_max = np.linalg.eigvalsh(kernel(X).ntk + 0.1 * np.eye(X.shape[0]))[-1]
    assert_allclose(pred.max_learning_rate, 2.0 / lam_max, rtol=ROUNDING_RTOL, atol=0)


def test_duplicate_points_warn_and_give_the_pseudo_inverse_limit(kernel, data):
    X, Xs, Y = data
    Xd = np.vstack([X, X[:4]])
    Yd = np.vstack([Y, Y[:4]])  # consistent duplicates: same minimum-norm interpolant
    with pytest.warns(nk.IllConditionedWarning, match=r"singular to working precision.*Pass ridge >= [0-9.e+-]+"):
        out = nk.predict.gd_mse(kernel, Xd, Yd).predict(Xs, cov=True)
    ref = nk.predict.gd_mse(kernel, X, Y).predict(Xs, cov=True)
    assert np.isfinite(out.mean).all() and np.isfinite(out.cov).all()
    assert_allclose(out.mean, ref.mean, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)
    assert_allclose(out.cov, ref.cov, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)
    # finite t stays finite and needs no pseudo-inverse
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(nk.predict.gd_mse(kernel, Xd, Yd).predict(Xs, t=3.0).mean).all()


def test_near_singular_kernel_warns_never_nan():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((8, 8))
    Q, _ = np.linalg.qr(B)
    s = np.array([1e-15, 1e-3, 0.1, 0.5, 1, 2, 3, 4])
    K = (Q * s) @ Q.T
    K = 0.5 * (K + K.T)
    Ks = rng.standard_normal((3, 8))
    with pytest.warns(nk.IllConditionedWarning, match=r"condition number ~[0-9.e+]+"):
        out = nk.predict.gd_mse_from_gram(K, np.ones(8)).predict(Ks)
    assert np.isfinite(out.mean).all()


def test_not_positive_semidefinite_kernel_errors_or_warns_never_nan():
    K = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3, -1
    pred = nk.predict.gd_mse_from_gram(K, np.array([1.0, -1.0]))
    with pytest.raises(SingularKernelError, match=r"negative eigenvalue -1\.000e\+00.*not positive semi-definite.*ridge >="):
        pred.predict(K)
    with pytest.warns(nk.IllConditionedWarning, match="not positive semi-definite"):
        out = pred.predict(K, t=2.0)
    assert np.isfinite(out.mean).all()
    with pytest.raises(SingularKernelError, match="overflows; use a smaller t"):
        pred.predict(K, t=1e4)
    # a positive ridge large enough makes it a valid kernel again
    assert np.isfinite(nk.predict.gd_mse_from_gram(K, np.array([1.0, -1.0]), ridge=1.5).predict(K).mean).all()


def test_error_messages(kernel, data):
    X, Xs, Y = data
    pred = nk.predict.gd_mse(kernel, X, Y)
    with pytest.raises(ValueError, match="get must be 'ntk'.*or 'nngp'.*got 'gp'"):
        pred.predict(Xs, get="gp")
    with pytest.raises(ValueError, match=r"t must be >= 0 .*learning rate times the training time.*got -1"):
        pred.predict(Xs, t=-1.0)
    with pytest.raises(ValueError, match="t must be >= 0"):
        pred.predict(Xs, t=[1.0, np.nan])
    with pytest.raises(ValueError, match="X_test has 2 features but X_train has 3"):
        pred.predict(Xs[:, :2])
    with pytest.raises(ValueError, match="y_train has 5 rows but there are 14 training points"):
        nk.predict.gd_mse(kernel, X, Y[:5])
    with pytest.raises(ValueError, match="y_train contains NaN"):
        nk.predict.gd_mse(kernel, X, np.full(14, np.nan))
    with pytest.raises(ValueError, match=r"The 'ridge' parameter of gd_mse must be a float in the range \[0, inf\)\. Got -1\.0"):
        nk.predict.gd_mse(kernel, X, Y, ridge=-1.0)
    tt, st, _ = _grams(kernel, X, Xs)
    with pytest.raises(ValueError, match="is not symmetric.*Pass kernel\\(X\\) for the training inputs"):
        nk.predict.gd_mse_from_gram(st.ntk[:, :6], Y[:6])
    g = nk.predict.gd_mse_from_gram({"ntk": tt.ntk}, Y)
    with pytest.raises(ValueError, match="cov=True needs the NNGP blocks"):
        g.predict({"ntk": st.ntk}, cov=True)
    with pytest.raises(ValueError, match="The 'nngp' training Gram matrix was not given"):
        g.predict({"nngp": st.nngp}, get="nngp")
    with pytest.raises(ValueError, match="has 5 columns but there are 14 training points"):
        g.predict({"ntk": st.ntk[:, :5]})


def test_pickle_round_trip(kernel, data):
    X, Xs, Y = data
    pred = nk.predict.gd_mse(kernel, X, Y, ridge=0.1)
    a = pred.predict(Xs, t=1.0)
    b = pickle.loads(pickle.dumps(pred)).predict(Xs, t=1.0)
    assert_allclose(b.mean, a.mean, rtol=0, atol=0)


def test_zero_training_rows_are_rejected_with_the_fix(kernel):
    with pytest.raises(nk.InputError, match=r"gd_mse needs at least one training point; got X_train of shape "
                       r"\(0, 3\) with 0 rows\. Pass the training inputs"):
        nk.predict.gd_mse(kernel, np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(nk.InputError, match=r"gd_mse_from_gram needs at least one training point; .* Pass the "
                       r"Gram matrices kernel\(X_train\)"):
        nk.predict.gd_mse_from_gram(np.zeros((0, 0)), np.zeros(0))
    with pytest.raises(nk.InputError, match="gd_mse_from_gram needs at least one training point"):
        nk.predict.gd_mse_from_gram({"nngp": np.zeros((0, 0)), "ntk": np.zeros((0, 0))}, np.zeros((0, 2)))


def test_time_array_shape_and_monotone_training_loss(kernel, data):
    X, _, Y = data
    times = np.geomspace(1e-3, 1e3, 9)
    out = nk.predict.gd_mse(kernel, X, Y).predict_train(times)
    assert out.mean.shape == (9,) + Y.shape
    loss = 0.5 * np.sum((out.mean - Y) ** 2, axis=(1, 2))
    assert np.all(np.diff(loss) < 0)  # gradient flow decreases the loss
    assert math.isclose(out.t[-1], 1e3, rel_tol=ULP_RTOL)


def test_ridge_models_share_the_mean_and_differ_in_the_ntk_covariance(kernel, data):
    X, Xs, Y = data
    flow = nk.predict.gd_mse(kernel, X, Y, ridge=0.4).predict(Xs, t=[1.0, np.inf], cov=True)
    offset = nk.predict.gd_mse(kernel, X, Y, ridge=0.4, ridge_model="offset").predict(Xs, t=[1.0, np.inf], cov=True)
    assert_allclose(flow.mean, offset.mean, rtol=0, atol=0)
    # the offset model adds λ·GᵀG (G = E_t(Θ+λI)⁻¹Θ*ᵀ) to the covariance: larger, never smaller
    gap = offset.cov - flow.cov
    assert np.min(np.linalg.eigvalsh(gap)) > -1e-12 and np.max(np.abs(gap)) > 1e-3


def test_unknown_ridge_model_is_refused(kernel, data):
    X, _, Y = data
    with pytest.raises(nk.ParameterError, match=r"ridge_model must be one of \('flow', 'offset'\); got 'gp'.*Use 'flow'"):
        nk.predict.gd_mse(kernel, X, Y, ridge=0.1, ridge_model="gp")
    with pytest.raises(nk.ParameterError, match="ridge_model must be one of"):
        nk.predict.gd_mse_from_gram(kernel(X), Y, ridge=0.1, ridge_model=None)
