"""The benchmark's out-of-core exact regression (Θ from an on-disk store, preconditioned CG)
against a direct dense solve of (Θ + λI)α = y."""

import numpy as np
import pytest

import ntk_infinite as nk
from ntk_infinite.reports import _out_of_core


@pytest.mark.parametrize("n_centers", [1, 40, 300])
def test_store_regression_equals_the_dense_solve(tmp_path, monkeypatch, n_centers):
    monkeypatch.setattr(_out_of_core, "PANEL_BYTES", 8 * 300 * 37)  # 37-row panels: many partial reads
    kernel = nk.compile("2*(Dense(1.4, 0.1) > ReLU) > Dense(1.4, 0.1)")
    rng = np.random.default_rng(5)
    X, Xt = rng.normal(size=(300, 6)), rng.normal(size=(50, 6))
    y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=300)
    ridge = 0.3
    theta = kernel(X, get="ntk").ntk
    expected = kernel(Xt, X, get="ntk").ntk @ np.linalg.solve(theta + ridge * np.eye(300), y)
    pred, info = _out_of_core.store_regression(kernel, X, y, Xt, ridge, tmp_path / "K", n_centers=n_centers,
                                               tol=1e-12)
    assert info["converged"] and info["n_centers"] == n_centers
    np.testing.assert_allclose(pred, expected, rtol=0, atol=1e-9 * np.max(np.abs(expected)))
