"""Cross-library check of the gradient-descent predictor against neural-tangents 0.6.5's
``gradient_descent_mse_ensemble`` (x64, absolute ``diag_reg``): the default ridge model
(``"flow"``) must give its values, means and covariances, NTK and NNGP, finite and infinite
time. neural-tangents' loss is the mean over the n·k training outputs, ours the sum, so its
time is ours times Y.size. Slow: it starts JAX in another virtual environment (see ``nt_bridge``)."""

import textwrap

import numpy as np
import pytest
from numpy.testing import assert_allclose

import ntk_infinite as nk
from nt_bridge import run_nt

ARCH = "Dense(1.4, 0.1) > ReLU > Dense(1.3, 0.2) > Erf > Dense(1.2, 0.05)"
RIDGES = (0.0, 0.25)
TIMES = (0.3, 4.0, np.inf)
#: The two libraries' kernels agree to ~1e-14 away from collinear pairs; the solves lose a
#: few digits more through the training matrix's condition number (~1e4 here).
CROSS_RTOL = 1e-9

_SCRIPT = textwrap.dedent('''
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import neural_tangents as nt
    from neural_tangents import stax

    spec = json.load(open(sys.argv[1]))
    _, _, kernel_fn = stax.serial(stax.Dense(1, W_std=1.4, b_std=0.1), stax.Relu(),
                                  stax.Dense(1, W_std=1.3, b_std=0.2), stax.Erf(),
                                  stax.Dense(1, W_std=1.2, b_std=0.05))
    X, Xs, Y = (np.asarray(spec[k], dtype=np.float64) for k in ("X", "Xs", "Y"))
    out = {}
    for ridge in spec["ridges"]:
        predict = nt.predict.gradient_descent_mse_ensemble(kernel_fn, X, Y, diag_reg=ridge,
                                                           diag_reg_absolute_scale=True)
        for t in spec["times"]:
            res = predict(t=None if t is None else t, x_test=Xs, get=("nngp", "ntk"), compute_cov=True)
            for get in ("nngp", "ntk"):
                g = getattr(res, get)
                out[f"{ridge}/{t}/{get}/mean"] = np.asarray(g.mean)
                out[f"{ridge}/{t}/{get}/cov"] = np.asarray(g.covariance)
    np.savez(sys.argv[2], **out)
''')


def _data():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((12, 4))
    Xs = rng.standard_normal((5, 4))
    Y = np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]], axis=1)
    return X, Xs, Y


@pytest.fixture(scope="module")
def nt_predictions(tmp_path_factory):
    X, Xs, Y = _data()
    spec = dict(X=X.tolist(), Xs=Xs.tolist(), Y=Y.tolist(), ridges=list(RIDGES),
                times=[None if np.isinf(t) else t * Y.size for t in TIMES])
    return run_nt(_SCRIPT, spec, tmp_path_factory.mktemp("nt_predict"))


@pytest.mark.slow
@pytest.mark.parametrize("get", ["ntk", "nngp"])
@pytest.mark.parametrize("ridge", RIDGES)
def test_default_ridge_model_gives_neural_tangents_values(nt_predictions, ridge, get):
    X, Xs, Y = _data()
    pred = nk.predict.gd_mse(ARCH, X, Y, ridge=ridge)
    for t in TIMES:
        ours = pred.predict(Xs, t=t, get=get, cov=True)
        key = f"{ridge}/{None if np.isinf(t) else t * Y.size}/{get}"
        mean, cov = nt_predictions[key + "/mean"], nt_predictions[key + "/cov"]
        scale = np.max(np.abs(cov))
        assert_allclose(ours.mean, mean, rtol=CROSS_RTOL, atol=CROSS_RTOL * np.max(np.abs(mean)), err_msg=key)
        assert_allclose(ours.cov, cov, rtol=CROSS_RTOL, atol=CROSS_RTOL * scale, err_msg=key)


@pytest.mark.slow
def test_offset_model_differs_from_neural_tangents_where_it_should(nt_predictions):
    """The offset model's NTK covariance is not neural-tangents' (so the test above can fail)."""
    X, Xs, Y = _data()
    ours = nk.predict.gd_mse(ARCH, X, Y, ridge=0.25, ridge_model="offset").predict(Xs, t=4.0, cov=True)
    theirs = nt_predictions[f"0.25/{4.0 * Y.size}/ntk/cov"]
    assert np.max(np.abs(ours.cov - theirs)) > 1e-4 * np.max(np.abs(theirs))
