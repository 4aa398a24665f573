"""Predictors and model selection on convolutional kernels (images in, predictions out).

References: the Gram matrices come from tests/naive.py's plain-loop CNN-GP/CNTK
(``naive_spatial_kernels``), never from the engine under test, and the algebra on them from
tests/naive.py too (explicit inverses and scipy.linalg.expm, explicit leave-one-out refits,
scipy.stats' Gaussian log density).
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose

import ntk_infinite as nk
from ntk_infinite.solve import selection as S
from naive import naive_gd_mse, naive_log_marginal, naive_loo, naive_spatial_kernels
from tolerances import ALGEBRA_ATOL, ALGEBRA_RTOL, LOO_ATOL, LOO_RTOL, ML_RTOL

#: (ntk_infinite layers, the same network in tests/naive.py's tuples): 1-D images (6, 2), one
#: layout each (full for GAP, diagonal for Flatten).
GAP = ([nk.Conv(filter_shape=(3,), padding="SAME", w_std=1.5, b_std=0.1), nk.ReLU(), nk.GlobalAvgPool(),
        nk.Dense(w_std=1.2, b_std=0.1)],
       [("conv", (3,), (1,), "SAME", 1.5, 0.1), ("relu",), ("gap",), ("dense", 1.2, 0.1)])
FLATTEN = ([nk.Conv(filter_shape=(2,), w_std=1.4, b_std=0.2), nk.ReLU(), nk.Flatten(), nk.Dense(w_std=1.1)],
           [("conv", (2,), (1,), "VALID", 1.4, 0.2), ("relu",), ("flatten",), ("dense", 1.1, 0.0)])
SHAPE = (6, 2)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(11)
    X, Xs = rng.standard_normal((10,) + SHAPE), rng.standard_normal((4,) + SHAPE)
    Y = np.stack([np.sin(X[:, :, 0].sum(axis=1)), X[:, 2, 1]], axis=1)
    return X, Xs, Y


@pytest.fixture(scope="module")
def naive_grams(images):
    """{name: (train, test-train, test-test) as (nngp, ntk) pairs} from the plain-loop reference."""
    X, Xs, _ = images
    return {name: (naive_spatial_kernels(ref, X), naive_spatial_kernels(ref, Xs, X), naive_spatial_kernels(ref, Xs))
            for name, (_, ref) in (("gap", GAP), ("flatten", FLATTEN))}


def _kernel(name):
    return nk.compile(nk.serial(*{"gap": GAP, "flatten": FLATTEN}[name][0]))


# ------------------------------------------------------------------------- predictors
@pytest.mark.parametrize("name", ["gap", "flatten"])
@pytest.mark.parametrize("get, ridge", [("ntk", 0.0), ("nngp", 0.3), ("ntk", 0.05)])
def test_gd_mse_on_images_matches_naive_algebra_on_naive_grams(images, naive_grams, name, get, ridge):
    X, Xs, Y = images
    (tt_k, tt_t), (st_k, st_t), (ss_k, _) = naive_grams[name]
    times = [0.0, 0.4, 5.0, np.inf]
    pred = nk.predict.gd_mse(_kernel(name), X, Y, ridge=ridge)
    out = pred.predict(Xs, t=times, get=get, cov=True)
    assert out.mean.shape == (len(times), 4, 2) and out.cov.shape == (len(times), 4, 4)
    for i, t in enumerate(times):
        mean, cov = naive_gd_mse(tt_t, st_t, tt_k, st_k, ss_k, Y, t, ridge, get)
        assert_allclose(out.mean[i], mean, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)
        assert_allclose(out.cov[i], cov, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)
    # the training outputs are the same formula at X* = X
    train_mean, _ = naive_gd_mse(tt_t, tt_t, tt_k, tt_k, tt_k, Y, 0.4, ridge, get)
    assert_allclose(pred.predict_train(0.4, get=get).mean, train_mean, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)
    top = np.linalg.eigvalsh((tt_t if get == "ntk" else tt_k) + ridge * np.eye(len(X)))[-1]
    if get == "ntk":
        assert_allclose(pred.max_learning_rate, 2.0 / top, rtol=ALGEBRA_RTOL, atol=0)


def test_gd_mse_from_conv_grams_and_one_dimensional_targets(images, naive_grams):
    X, Xs, Y = images
    (tt_k, tt_t), (st_k, st_t), (ss_k, _) = naive_grams["gap"]
    pred = nk.predict.gd_mse_from_gram({"nngp": tt_k, "ntk": tt_t}, Y[:, 0], ridge=0.01)
    out = pred.predict({"nngp": st_k, "ntk": st_t}, {"nngp": ss_k}, t=2.0, cov=True)
    mean, cov = naive_gd_mse(tt_t, st_t, tt_k, st_k, ss_k, Y[:, 0], 2.0, 0.01, "ntk")
    assert out.mean.shape == (4,)
    assert_allclose(out.mean, mean, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)
    assert_allclose(out.cov, cov, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)


def test_predictor_input_errors_name_the_expected_images(images):
    X, Xs, Y = images
    pred = nk.predict.gd_mse(_kernel("gap"), X, Y)
    with pytest.raises(nk.InputError, match=r"X_test's images have spatial shape \(5,\) but X_train's have \(6,\)"):
        pred.predict(Xs[:, :5])
    with pytest.raises(nk.InputError, match=r"X_test has 1 channels but X_train has 2"):
        pred.predict(Xs[:, :, :1])
    with pytest.raises(nk.InputError, match=r"X_test must be a 3-D array of shape \(n, L, C\) for this 1-D "
                                            r"convolutional architecture; got shape \(4, 12\)\. .*reshape them"):
        pred.predict(Xs.reshape(4, -1))
    with pytest.raises(nk.InputError, match=r"X_train must be a 3-D array of shape \(n, L, C\)"):
        nk.predict.gd_mse(_kernel("gap"), X.reshape(10, -1), Y)


# ------------------------------------------------------------------------- model selection
@pytest.mark.parametrize("name", ["gap", "flatten"])
def test_loo_and_ridge_path_on_conv_grams_match_refits(images, naive_grams, name):
    X, Xs, Y = images
    (_, tt_t), (_, st_t), _ = naive_grams[name]
    K = _kernel(name)(X).ntk
    ridges = [1e-3, 0.1, 2.0]
    res = S.loo_ridge(K, Y, ridges)
    path = S.ridge_path(K, _kernel(name)(Xs, X).ntk, Y, ridges)
    for i, lam in enumerate(ridges):
        resid = naive_loo(tt_t, Y, lam)
        assert_allclose(res.mse[i], np.mean(resid**2), rtol=LOO_RTOL, atol=LOO_ATOL)
        assert_allclose(path[i], st_t @ np.linalg.solve(tt_t + lam * np.eye(len(X)), Y), rtol=LOO_RTOL, atol=LOO_ATOL)


def test_select_over_conv_candidates_matches_refits_and_predicts(images, naive_grams):
    X, Xs, Y = images
    y = Y[:, 0]
    candidates = [nk.serial(*GAP[0]), nk.serial(*FLATTEN[0])]
    names = {candidates[0].to_text(): "gap", candidates[1].to_text(): "flatten"}
    refs = {text: naive_grams[name][0] for text, name in names.items()}
    ridges = [1e-3, 0.1, 1.0]
    sel = nk.select(X, y, candidates, ridges, criterion="loo", get="ntk")
    assert len(sel.results) == 6
    for rec in sel.results:
        K = refs[rec["arch"]][1]
        assert_allclose(rec["score"], -np.mean(naive_loo(K, y, rec["ridge"]) ** 2), rtol=LOO_RTOL, atol=LOO_ATOL)
    best = max(sel.results, key=lambda r: r["score"])
    assert sel.architecture.to_text() == best["arch"] and sel.ridge == best["ridge"]
    tt, st = refs[best["arch"]][1], naive_grams[names[best["arch"]]][1][1]
    expected = st @ np.linalg.solve(tt + sel.ridge * np.eye(len(X)), y)
    assert_allclose(sel.predictor(X, y).predict(Xs).mean, expected, rtol=ALGEBRA_RTOL, atol=ALGEBRA_ATOL)

    sel = nk.select(X, y, candidates, ridges, criterion="ml", get="nngp")
    for rec in sel.results:
        assert_allclose(rec["score"], naive_log_marginal(refs[rec["arch"]][0], y, rec["ridge"]), rtol=ML_RTOL, atol=0)
    labels = np.where(y > 0, "pos", "neg")
    sel = nk.select(X, labels, candidates, ridges, task="classification")
    onehot = np.stack([labels == "neg", labels == "pos"], axis=1).astype(float)
    for rec in sel.results:
        loo_pred = onehot - naive_loo(refs[rec["arch"]][1], onehot, rec["ridge"])
        assert rec["score"] == np.mean(np.argmax(loo_pred, axis=1) == np.argmax(onehot, axis=1))


def test_marginal_likelihood_value_on_images(images, naive_grams):
    """The value with and without gradients (the gradients themselves are checked against
    finite differences in tests/test_spatial_gradients.py)."""
    X, _, Y = images
    (tt_k, tt_t), _, _ = naive_grams["flatten"]
    kernel = _kernel("flatten")
    for get, K in (("nngp", tt_k), ("ntk", tt_t)):
        for grad in (False, True):
            ml = S.log_marginal_likelihood(kernel, X, Y, ridge=0.05, get=get, eval_gradient=grad)
            assert_allclose(ml.value, naive_log_marginal(K, Y, 0.05), rtol=ML_RTOL, atol=0)


def test_select_refuses_candidates_that_read_different_inputs(images):
    X, _, Y = images
    dense = "Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1)"
    with pytest.raises(nk.ArchitectureError, match=r"read different inputs \(0: 1-D convolutional, \(n, S1, C\) images, "
                                                   r"1: dense, \(n, d\) rows\).*X\.reshape\(len\(X\), -1\)"):
        nk.select(X, Y[:, 0], [nk.serial(*GAP[0]), dense], [0.1])
    with pytest.raises(nk.InputError, match=r"X must be a 3-D array of shape \(n, L, C\) for this 1-D convolutional"):
        nk.select(X.reshape(10, -1), Y[:, 0], [nk.serial(*GAP[0])], [0.1])
