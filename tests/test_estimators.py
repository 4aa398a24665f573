"""scikit-learn estimators: the estimator contract, Pipeline/GridSearchCV over
``arch`` and ``ridge``, and agreement with the predictor they wrap."""

import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

import ntk_infinite as nk
from tolerances import SAME_ATOL, SAME_RTOL

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


def test_real_data_report_quick_mode(tmp_path):
    from ntk_infinite.reports import real_data

    path = real_data.write_table(tmp_path, quick=True)
    text = path.read_text()
    assert path.name == "real_data.md" and "QUICK MODE" in text
    for name in real_data.QUICK.datasets:
        assert f"| {name} (" in text
    assert "**Verdict.**" in text and "nan" not in text.lower()
