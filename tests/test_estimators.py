"""scikit-learn estimators: the estimator contract, Pipeline/GridSearchCV over
``arch`` and ``ridge``, and agreement with the predictor they wrap."""

import pickle
import re
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

import ntk_infinite as nk
from tolerances import SAME_ATOL, SAME_RTOL

#: The Nyström solver (CG to its default tol 1e-8 on a preconditioner that is exact at
#: M = n) against the exact Cholesky solve: far inside the 1e-8 of tests/test_nystrom.py.
NYSTROM_RTOL = 1e-8
NYSTROM_ATOL = 1e-10

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

DEPTH2 = "2*(Dense(1.4142135623730951, 0.1) > ReLU) > Dense(1.4142135623730951, 0.1)"


@pytest.mark.parametrize("cls", ["KernelRegressor", "KernelClassifier"])
def test_check_estimator(cls):
    est = getattr(nk, cls)()
    with warnings.catch_warnings():
        # duplicate integer rows in some checks make the ridge-0 system singular: warned, not failed
        warnings.simplefilter("ignore", nk.IllConditionedWarning)
        results = check_estimator(est, on_fail=None)
    failed = [(r["check_name"], r["exception"]) for r in results if r["status"] == "failed"]
    assert not failed


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 4))
    y = np.sin(X[:, 0]) + X[:, 1] ** 2 / 2
    return X, y


def test_regressor_equals_the_predictor(regression):
    X, y = regression
    for kernel, t, ridge in (("ntk", np.inf, 0.0), ("nngp", np.inf, 0.1), ("ntk", 2.5, 0.01)):
        model = nk.KernelRegressor(arch=DEPTH2, kernel=kernel, t=t, ridge=ridge).fit(X[:30], y[:30])
        ref = nk.predict.gd_mse(DEPTH2, X[:30], y[:30], ridge=ridge).predict(X[30:], t=t, get=kernel).mean
        assert_allclose(model.predict(X[30:]), ref, rtol=SAME_RTOL, atol=SAME_ATOL)
    Y = np.stack([y, -y], axis=1)
    assert nk.KernelRegressor().fit(X, Y).predict(X[:3]).shape == (3, 2)


def test_classifier_is_argmax_of_one_hot_regression():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    tr, te = idx[:100], idx[100:]
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = nk.KernelClassifier(ridge=1e-3).fit(X[tr], names[tr])
    onehot = np.eye(3)[y[tr]]
    out = nk.predict.gd_mse(nk.solve.estimators.DEFAULT_ARCH, X[tr], onehot, ridge=1e-3).predict(X[te]).mean
    assert_allclose(clf.decision_function(X[te]), out, rtol=SAME_RTOL, atol=SAME_ATOL)
    assert np.array_equal(clf.predict(X[te]), np.array(["setosa", "versicolor", "virginica"])[np.argmax(out, axis=1)])
    # binary: the decision function is f1 - f0 and its sign gives the class
    binary = nk.KernelClassifier(ridge=1e-3).fit(X[tr], y[tr] == 2)
    d = binary.decision_function(X[te])
    assert d.shape == (len(te),)
    assert np.array_equal(binary.predict(X[te]), d > 0)


def test_pipeline_and_grid_search_over_arch_and_ridge(regression):
    X, y = regression
    arch_obj = nk.parse_architecture(DEPTH2)
    pipe = make_pipeline(StandardScaler(), nk.KernelRegressor())
    grid = {
        "kernelregressor__arch": [nk.solve.estimators.DEFAULT_ARCH, arch_obj],
        "kernelregressor__ridge": [1e-3, 1e-1],
    }
    search = GridSearchCV(pipe, grid, cv=3).fit(X, y)
    assert set(search.cv_results_["param_kernelregressor__ridge"]) == {1e-3, 1e-1}
    assert search.best_params_["kernelregressor__arch"] in (nk.solve.estimators.DEFAULT_ARCH, arch_obj)
    assert np.isfinite(search.predict(X[:5])).all()
    c = clone(nk.KernelRegressor(arch=arch_obj, ridge=0.5))
    assert c.arch == arch_obj and c.ridge == 0.5


def test_pickle_round_trip(regression):
    X, y = regression
    model = nk.KernelRegressor(t=1.0).fit(X, y)
    again = pickle.loads(pickle.dumps(model))
    assert_allclose(again.predict(X[:5]), model.predict(X[:5]), rtol=0, atol=0)


def test_error_messages(regression):
    X, y = regression
    for est in (nk.KernelRegressor(), nk.KernelClassifier()):
        name = type(est).__name__
        with pytest.raises(nk.InputError, match=f"{name}.fit needs at least one training sample; got X with 0 rows"):
            est.fit(np.zeros((0, X.shape[1])), np.zeros(0))
        with pytest.raises(nk.InputError, match=f"{name}.fit needs at least one training sample"):
            est.fit([], [])
    with pytest.raises(NotFittedError):
        nk.KernelRegressor().predict(X)
    with pytest.raises(ValueError, match="The 'kernel' parameter of KernelRegressor must be 'ntk' .* Got 'rbf' instead"):
        nk.KernelRegressor(kernel="rbf").fit(X, y)
    with pytest.raises(ValueError, match=r"The 'ridge' parameter of KernelClassifier must be a float in the range \[0, inf\)\. Got -1"):
        nk.KernelClassifier(ridge=-1).fit(X, y > 0)
    with pytest.raises(ValueError, match=r"The 't' parameter of KernelRegressor must be a float in the range \[0, inf\]"):
        nk.KernelRegressor(t=-2.0).fit(X, y)
    with pytest.raises(TypeError, match="The 'arch' parameter of KernelRegressor must be an nk.Architecture"):
        nk.KernelRegressor(arch=3).fit(X, y)
    with pytest.raises(ValueError, match="Unknown label type"):
        nk.KernelClassifier().fit(X, y)


def test_nystrom_solver_with_every_point_a_centre_equals_the_exact_one(regression):
    X, y = regression
    Y = np.stack([y, np.cos(X[:, 2])], axis=1)
    for kernel, ridge in (("ntk", 1e-2), ("nngp", 1e-1)):
        exact = nk.KernelRegressor(arch=DEPTH2, kernel=kernel, ridge=ridge, solver="exact").fit(X[:30], Y[:30])
        approx = nk.KernelRegressor(arch=DEPTH2, kernel=kernel, ridge=ridge, solver="nystrom", n_centers=30)
        approx.fit(X[:30], Y[:30])
        assert (exact.solver_, approx.solver_) == ("exact", "nystrom")
        assert_allclose(approx.predict(X[30:]), exact.predict(X[30:]), rtol=NYSTROM_RTOL, atol=NYSTROM_ATOL)
    labels = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    clf = nk.KernelClassifier(ridge=1e-2, solver="exact").fit(X, labels)
    fast = nk.KernelClassifier(ridge=1e-2, solver="nystrom", n_centers=40).fit(X, labels)
    assert_allclose(fast.decision_function(X), clf.decision_function(X), rtol=NYSTROM_RTOL, atol=NYSTROM_ATOL)
    few = nk.KernelRegressor(ridge=1e-2, solver="nystrom", n_centers=10).fit(X, y)
    assert few.predictor_.info.n_centers == 10 and few.predict(X[:3]).shape == (3,)


def test_auto_solver_switches_on_the_memory_of_the_exact_one(regression, monkeypatch):
    X, y = regression
    assert nk.solve.estimators.exact_memory_bytes(40) == 4 * 8 * 40**2
    assert nk.KernelRegressor().fit(X, y).solver_ == "exact"
    monkeypatch.setattr(nk.solve.estimators, "exact_memory_budget", lambda: 4 * 8 * 40**2 - 1)
    assert nk.KernelRegressor().fit(X, y).solver_ == "nystrom"
    assert nk.KernelRegressor(t=3.0).fit(X, y).solver_ == "exact"  # finite t: only the exact solver
    assert nk.KernelRegressor().fit(X[:35], y[:35]).solver_ == "exact"


def test_solver_parameters_follow_the_estimator_contract(regression):
    X, y = regression
    est = nk.KernelRegressor(solver="nystrom", n_centers=12)
    assert {"solver": "nystrom", "n_centers": 12}.items() <= est.get_params().items()
    c = clone(est)
    assert (c.solver, c.n_centers) == ("nystrom", 12) and not hasattr(c, "solver_")
    search = GridSearchCV(nk.KernelRegressor(solver="nystrom", ridge=1e-2), {"n_centers": [5, 20]}, cv=2).fit(X, y)
    assert search.best_params_["n_centers"] in (5, 20)
    with pytest.raises(ValueError, match=r"The 'solver' parameter of KernelRegressor must be 'auto' .*'exact' or "
                                         r"'nystrom'\. Got 'falkon' instead"):
        nk.KernelRegressor(solver="falkon").fit(X, y)
    with pytest.raises(ValueError, match=r"KernelClassifier\(solver='nystrom'\) gives the end of training \(t = inf\) "
                                         r"only; got t=2\.0\. Use solver='exact'"):
        nk.KernelClassifier(solver="nystrom", t=2.0).fit(X, y > 0)
    with pytest.raises(ValueError, match=r"'n_centers' parameter of KernelRegressor must be at most the number of "
                                         r"training samples, 40 .*Got 41 instead"):
        nk.KernelRegressor(solver="nystrom", n_centers=41).fit(X, y)
    with pytest.raises(ValueError, match=r"'n_centers' parameter of KernelRegressor must be an integer in the range "
                                         r"\[1, inf\)\. Got 0 instead"):
        nk.KernelRegressor(solver="nystrom", n_centers=0).fit(X, y)


def test_random_state_seeds_the_nystrom_centres(regression):
    """random_state follows scikit-learn: the same seed gives the same centres and predictions,
    another seed other centres, and a bad value is refused by name whichever solver runs."""
    X, y = regression
    fit = lambda state: nk.KernelRegressor(ridge=1e-2, solver="nystrom", n_centers=8, random_state=state).fit(X, y)
    a, b, c = fit(5), fit(5), fit(6)
    assert np.array_equal(a.predictor_.center_index, b.predictor_.center_index)
    assert np.array_equal(a.predict(X), b.predict(X))
    assert not np.array_equal(np.sort(a.predictor_.center_index), np.sort(c.predictor_.center_index))
    assert fit(np.random.default_rng(1)).predictor_.info.n_centers == 8
    assert fit(np.random.RandomState(1)).predictor_.info.n_centers == 8
    assert fit(None).predictor_.info.n_centers == 8
    est = nk.KernelRegressor(solver="nystrom", random_state=7)
    assert est.get_params()["random_state"] == 7 and clone(est).random_state == 7
    for bad in (-1, 1.5, "seed", True):
        for solver in ("exact", "nystrom"):
            with pytest.raises(nk.ParameterError, match=r"The 'random_state' parameter of KernelRegressor must be None, "
                                                        r"a non-negative integer, a numpy\.random\.Generator or a "
                                                        r"numpy\.random\.RandomState .*Got " + re.escape(repr(bad))):
                nk.KernelRegressor(solver=solver, random_state=bad).fit(X, y)


def test_real_data_report_quick_mode(tmp_path):
    from ntk_infinite.reports import real_data

    path = real_data.write_table(tmp_path, quick=True)
    text = path.read_text()
    assert path.name == "real_data.md" and "QUICK MODE" in text
    for name in real_data.QUICK.datasets:
        assert f"| {name} (" in text
    assert "**Verdict.**" in text and "nan" not in text.lower()
    assert "## Digits as 8×8 images: convolutional kernels" in text
    for method in ("| CNTK (GAP) |", "| CNN-GP (Flatten) |", "| MLP NTK |", "| RBF SVM |"):
        assert method in text
    assert "| GlobalAvgPool | full | 1 |" in text and "| Flatten | diagonal | 1 |" in text


# ------------------------------------------------------------------------- images
CNN = "Conv(filter_shape=(2, 2), padding='SAME', w_std=1.4, b_std=0.1) > ReLU > GlobalAvgPool > Dense(1.2, 0.1)"
IMAGE = (4, 3, 2)  # H, W, C: unequal sizes and two channels, so a wrong reshape order changes the kernel


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((24,) + IMAGE)
    y = X[:, :2, :, 0].mean(axis=(1, 2)) - X[:, 2:, :, 1].mean(axis=(1, 2))
    return X, y


def test_image_estimators_equal_the_predictor_on_reshaped_images(images):
    """Rows (n, H·W·C) with input_shape give the predictor of nk.predict on the images (n, H, W, C)."""
    X, y = images
    rows = X.reshape(len(X), -1)  # C order: what X.reshape(len(X), -1) of NHWC images gives
    tr, te = slice(0, 18), slice(18, None)
    for kernel, t, ridge in (("ntk", np.inf, 1e-3), ("nngp", 3.0, 0.1)):
        model = nk.KernelRegressor(CNN, kernel=kernel, t=t, ridge=ridge, input_shape=IMAGE).fit(rows[tr], y[tr])
        ref = nk.predict.gd_mse(CNN, X[tr], y[tr], ridge=ridge).predict(X[te], t=t, get=kernel).mean
        assert_allclose(model.predict(rows[te]), ref, rtol=SAME_RTOL, atol=SAME_ATOL)
        assert model.n_features_in_ == 24 and model.input_shape_ == IMAGE
        # without input_shape the estimator takes the images themselves
        direct = nk.KernelRegressor(CNN, kernel=kernel, t=t, ridge=ridge).fit(X[tr], y[tr])
        assert_allclose(direct.predict(X[te]), ref, rtol=SAME_RTOL, atol=SAME_ATOL)
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    clf = nk.KernelClassifier(CNN, ridge=1e-3, input_shape=list(IMAGE)).fit(rows[tr], labels[tr])
    out = nk.predict.gd_mse(CNN, X[tr], np.eye(3)[labels[tr]], ridge=1e-3).predict(X[te]).mean
    assert_allclose(clf.decision_function(rows[te]), out, rtol=SAME_RTOL, atol=SAME_ATOL)
    assert np.array_equal(clf.predict(rows[te]), np.argmax(out, axis=1))


def test_image_estimator_clone_and_grid_search(images):
    X, y = images
    rows = X.reshape(len(X), -1)
    est = nk.KernelRegressor(CNN, ridge=0.1, input_shape=IMAGE)
    assert est.get_params()["input_shape"] == IMAGE and clone(est).input_shape == IMAGE
    search = GridSearchCV(est, {"ridge": [1e-3, 1e-1]}, cv=3).fit(rows, y)
    assert search.best_estimator_.input_shape == IMAGE
    ridge = search.best_params_["ridge"]
    ref = nk.predict.gd_mse(CNN, X, y, ridge=ridge).predict(X[:4]).mean
    assert_allclose(search.predict(rows[:4]), ref, rtol=SAME_RTOL, atol=SAME_ATOL)
    again = pickle.loads(pickle.dumps(search.best_estimator_))
    assert_allclose(again.predict(rows[:4]), ref, rtol=SAME_RTOL, atol=SAME_ATOL)


def test_image_estimator_error_messages(images):
    X, y = images
    rows = X.reshape(len(X), -1)
    with pytest.raises(nk.InputError, match=r"KernelRegressor got X with 2 dimensions \(shape \(24, 24\)\), but .* is a "
                                            r"2-D convolutional architecture .* set input_shape to the shape of one image"):
        nk.KernelRegressor(CNN).fit(rows, y)
    with pytest.raises(nk.InputError, match=r"KernelClassifier with input_shape=\(4, 3, 2\) reshapes rows of 24 values "
                                            r"\(4 x 3 x 2, channels last\) into images, but X has 23 columns"):
        nk.KernelClassifier(CNN, input_shape=IMAGE).fit(rows[:, :23], y > 0)
    with pytest.raises(nk.InputError, match=r"input_shape=\(4, 3, 2\) .* but X has an array of shape \(24, 4, 3, 2\)"):
        nk.KernelRegressor(CNN, input_shape=IMAGE).fit(X, y)
    with pytest.raises(nk.ParameterError, match=r"The 'input_shape' parameter of KernelRegressor reshapes flat rows into "
                                                r"images for a convolutional architecture, but .* is dense .* Got "
                                                r"input_shape=\(4, 3, 2\); pass input_shape=None"):
        nk.KernelRegressor(DEPTH2, input_shape=IMAGE).fit(rows, y)
    for bad in ((4, 6), (4, 3, 0), (4.0, 3, 2), "4,3,2"):
        with pytest.raises(nk.ParameterError, match=r"The 'input_shape' parameter of KernelRegressor must be None or the "
                                                    r"shape of one input of this 2-D convolutional architecture, 2 spatial "
                                                    r"sizes then the channels: \(H, W, C\), e.g\. \(8, 8, 1\)\. Got"):
            nk.KernelRegressor(CNN, input_shape=bad).fit(rows, y)
    model = nk.KernelRegressor(CNN, ridge=0.1, input_shape=IMAGE).fit(rows, y)
    with pytest.raises(ValueError, match="X has 23 features, but KernelRegressor is expecting 24 features"):
        model.predict(rows[:, :23])


def test_image_nystrom_solver_with_every_point_a_centre_equals_the_exact_one(images):
    """The Nyström route streams conv-kernel blocks like dense ones: with every training image a
    centre it gives the exact predictor."""
    X, y = images
    rows = X.reshape(len(X), -1)
    tr, te = slice(0, 18), slice(18, None)
    exact = nk.KernelRegressor(CNN, ridge=1e-2, input_shape=IMAGE, solver="exact").fit(rows[tr], y[tr])
    approx = nk.KernelRegressor(CNN, ridge=1e-2, input_shape=IMAGE, solver="nystrom", n_centers=18)
    approx.fit(rows[tr], y[tr])
    assert_allclose(approx.predict(rows[te]), exact.predict(rows[te]), rtol=NYSTROM_RTOL, atol=NYSTROM_ATOL)
