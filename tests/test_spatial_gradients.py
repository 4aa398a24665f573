"""Kernel gradients of convolutional architectures (evaluate/spatial_gradients.py) and
marginal-likelihood selection of conv nets.

References, both independent of the code under test: the compiled kernel itself (the jitted
spatial engine, checked against tests/naive.py in test_conv.py) for the values, and central
finite differences of that kernel, rebuilt with w_std ± h or b_std ± h, for every derivative.
With h = 1e-5 the difference quotient is off by h²·|K'''|/6 ~ 1e-11 (truncation) plus
~eps·|K|/h ~ 1e-11 (rounding of the kernel, amplified by 1/h): KERNEL_FD_RTOL = 1e-6 has
orders of magnitude of margin, and a wrong term (a missing 2σ_b, a map not applied to a
tangent) is off by O(1).
"""

import dataclasses

import numpy as np
import pytest
from numpy.testing import assert_allclose

import ntk_infinite as nk
from ntk_infinite.errors import ArchitectureError, InputError
from ntk_infinite.evaluate.gradients import kernel_gradients, parameter_names
from ntk_infinite.solve import selection as S
from naive import naive_log_marginal
from tolerances import KERNEL_FD_RTOL, KERNEL_FD_SERIES_RTOL, ML_RTOL, ROUNDING_RTOL

FD_STEP = 1e-5

# (layers, spatial shape, channels): every padding, strides, pooling and both readouts.
CASES = {
    "1d-same-circular-stride2-pool-gap": (
        [nk.Conv(filter_shape=(3,), padding="SAME", w_std=1.3, b_std=0.2), nk.ReLU(),
         nk.Conv(filter_shape=(2,), strides=(2,), padding="CIRCULAR", w_std=1.1, b_std=0.3), nk.ReLU(),
         nk.AvgPool(window_shape=(2,), padding="SAME"), nk.GlobalAvgPool(), nk.Dense(w_std=0.9, b_std=0.1)],
        (6,), 2),
    "1d-valid-stride2-flatten-dense-hidden": (
        [nk.Conv(filter_shape=(3,), strides=(2,), w_std=1.4, b_std=0.2), nk.Erf(),
         nk.Conv(filter_shape=(2,), padding="SAME", w_std=1.2, b_std=0.1), nk.ReLU(), nk.Flatten(),
         nk.Dense(w_std=1.1, b_std=0.3), nk.ReLU(), nk.Dense(w_std=0.9, b_std=0.2)],
        (9,), 2),
    "2d-same-pool-stride2-circular-gap": (
        [nk.Conv(filter_shape=(2, 2), padding="SAME", w_std=1.5, b_std=0.1), nk.ReLU(),
         nk.AvgPool(window_shape=(2, 2), strides=(2, 2)),
         nk.Conv(filter_shape=(2, 2), padding="CIRCULAR", w_std=1.2, b_std=0.2), nk.ReLU(), nk.GlobalAvgPool(),
         nk.Dense(w_std=1.0, b_std=0.1)],
        (5, 4), 2),
    "2d-same-strides-flatten": (
        [nk.Conv(filter_shape=(3, 2), strides=(2, 1), padding="SAME", w_std=1.3, b_std=0.3), nk.ReLU(),
         nk.Conv(filter_shape=(2, 2), w_std=1.1, b_std=0.2), nk.ReLU(), nk.Flatten(), nk.Dense(w_std=1.2, b_std=0.1)],
        (5, 4), 1),
}


def _images(shape, channels, seed):
    """X1 with a duplicate image, X2 sharing one image with X1 (the per-point route at ρ = 1)."""
    rng = np.random.default_rng(seed)
    X1 = rng.standard_normal((4,) + shape + (channels,))
    X1 = np.concatenate([X1, X1[:1]])
    X2 = np.concatenate([rng.standard_normal((2,) + shape + (channels,)), X1[2:3]])
    return X1, X2


def _with(arch, name, value):
    """The architecture with one parameter, named as in KernelGradients.parameters, set to value."""
    index, attr = int(name[len("layers["):name.index("]")]), name.split(".")[1]
    layers = list(arch)
    layers[index] = dataclasses.replace(layers[index], **{attr: value})
    return nk.serial(*layers)


def _assert_matches_finite_differences(arch, X1, X2, rtol):
    g = kernel_gradients(arch, X1, X2)
    assert g.parameters == parameter_names(arch)
    for i, name in enumerate(g.parameters):
        index, attr = int(name[len("layers["):name.index("]")]), name.split(".")[1]
        v = getattr(arch[index], attr)
        up = nk.compile(_with(arch, name, v + FD_STEP))(X1, X2)
        down = nk.compile(_with(arch, name, v - FD_STEP))(X1, X2)
        for get in ("nngp", "ntk"):
            fd = (getattr(up, get) - getattr(down, get)) / (2 * FD_STEP)
            scale = np.max(np.abs(fd))
            assert scale > 0, f"{get} does not depend on {name}"
            assert_allclose(g.derivative(name, get), fd, rtol=rtol, atol=rtol * scale, err_msg=f"d{get}/d{name}")
    return g


@pytest.mark.parametrize("case", list(CASES))
def test_values_equal_the_kernel(case):
    layers, shape, channels = CASES[case]
    arch = nk.serial(*layers)
    X1, X2 = _images(shape, channels, 1)
    kernel = nk.compile(arch)
    diag = kernel.diag(X1)
    for A, B in ((X1, None), (X1, X2)):
        g = kernel_gradients(kernel, A, B)
        k = kernel(A, B)
        Bv = A if B is None else B
        # Pairs of identical images: Σ(x, x) and Θ(x, x), which the kernel's point pass gives
        # exactly; its pair pass re-derives ρ = 1 from pooled sums there (off by up to ~1e-9
        # after pooling and ReLU), except on the diagonal of K(X).
        for get in ("nngp", "ntk"):
            expected = getattr(k, get).copy()
            for i in range(len(A)):
                for j in range(len(Bv)):
                    if np.array_equal(A[i], Bv[j]):
                        expected[i, j] = getattr(diag, get)[i]
            assert_allclose(getattr(g, get), expected, rtol=ROUNDING_RTOL, atol=0, err_msg=get)
    ntk_only = kernel_gradients(kernel, X1, X2, get="ntk")
    assert ntk_only.nngp is None and ntk_only.d_nngp is None
    np.testing.assert_array_equal(ntk_only.d_ntk, g.d_ntk)


@pytest.mark.parametrize("case", list(CASES))
def test_derivatives_match_finite_differences(case):
    layers, shape, channels = CASES[case]
    X1, X2 = _images(shape, channels, 2)
    g = _assert_matches_finite_differences(nk.serial(*layers), X1, X2, KERNEL_FD_RTOL)
    # the symmetric call (X2 = None, one triangle of tiles mirrored) against the two-set call
    sym = kernel_gradients(nk.serial(*layers), X1)
    two = kernel_gradients(nk.serial(*layers), X1, X1)
    assert_allclose(sym.d_ntk, two.d_ntk, rtol=ROUNDING_RTOL, atol=ROUNDING_RTOL * np.max(np.abs(two.d_ntk)))
    assert g.d_ntk.shape == (len(g.parameters), 5, 3)


def test_parameter_names_follow_the_architecture_indices():
    layers, _, _ = CASES["1d-valid-stride2-flatten-dense-hidden"]
    assert parameter_names(nk.serial(*layers)) == (
        "layers[0].w_std", "layers[0].b_std", "layers[2].w_std", "layers[2].b_std",
        "layers[5].w_std", "layers[5].b_std", "layers[7].w_std", "layers[7].b_std")


def test_series_route_activation_in_a_conv_net():
    arch = nk.serial(nk.Conv(filter_shape=(2,), padding="SAME", w_std=1.2, b_std=0.2), nk.Tanh(),
                     nk.GlobalAvgPool(), nk.Dense(w_std=1.1, b_std=0.1))
    X1, X2 = _images((4,), 2, 3)
    _assert_matches_finite_differences(arch, X1, X2, KERNEL_FD_SERIES_RTOL)


def test_tiles_do_not_change_the_result(monkeypatch):
    from ntk_infinite.evaluate import spatial_gradients

    layers, shape, channels = CASES["2d-same-pool-stride2-circular-gap"]
    X1, X2 = _images(shape, channels, 4)
    whole = kernel_gradients(nk.serial(*layers), X1)
    monkeypatch.setattr(spatial_gradients, "_TILE_ELEMENTS", 1)  # one image pair per tile
    tiled = kernel_gradients(nk.serial(*layers), X1)
    assert_allclose(tiled.d_ntk, whole.d_ntk, rtol=ROUNDING_RTOL, atol=ROUNDING_RTOL * np.max(np.abs(whole.d_ntk)))
    assert_allclose(tiled.nngp, whole.nngp, rtol=ROUNDING_RTOL, atol=0)


def test_error_messages():
    layers, shape, channels = CASES["1d-same-circular-stride2-pool-gap"]
    X1, _ = _images(shape, channels, 5)
    with pytest.raises(InputError, match=r"X1 must be a 3-D array of shape \(n, L, C\) .*got shape \(5, 12\)"):
        kernel_gradients(nk.serial(*layers), X1.reshape(5, -1))
    with pytest.raises(InputError, match="X2 has 3 channels but X1 has 2"):
        kernel_gradients(nk.serial(*layers), X1, np.zeros((2, 6, 3)))
    elu = nk.serial(nk.Conv(filter_shape=(2,), w_std=1.2), nk.ELU(1.0), nk.Flatten(), nk.Dense())
    with pytest.raises(ArchitectureError, match=r"ELU\(alpha=1\.0\) uses the kink-aware quadrature route.*"
                                                r"criterion='loo'"):
        kernel_gradients(elu, X1)


# ------------------------------------------------------------------------- marginal likelihood
def _image_problem():
    """A tiny regression problem on 4x4 single-channel images: y is a smooth function of the
    images' left-right contrast, plus noise."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((10, 4, 4, 1))
    y = np.tanh(X[:, :, :2].mean(axis=(1, 2, 3)) - X[:, :, 2:].mean(axis=(1, 2, 3))) + 0.05 * rng.standard_normal(10)
    return X, y


def _conv_net(w0, b0, w1, b1):
    return nk.serial(nk.Conv(filter_shape=(2, 2), padding="SAME", w_std=w0, b_std=b0), nk.ReLU(),
                     nk.AvgPool(window_shape=(2, 2), strides=(2, 2)), nk.Flatten(), nk.Dense(w_std=w1, b_std=b1))


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_marginal_likelihood_gradient_of_a_conv_net_matches_finite_differences(get):
    X, y = _image_problem()
    params, ridge = [1.4, 0.2, 1.1, 0.3], 0.05
    ml = S.log_marginal_likelihood(_conv_net(*params), X, y, ridge=ridge, get=get, eval_gradient=True)
    assert ml.parameters == ("layers[0].w_std", "layers[0].b_std", "layers[4].w_std", "layers[4].b_std", "ridge")
    K = getattr(nk.compile(_conv_net(*params))(X), get)
    assert_allclose(ml.value, naive_log_marginal(K, y, ridge), rtol=ML_RTOL, atol=0)

    def value(p):
        return S.log_marginal_likelihood(_conv_net(*p[:4]), X, y, ridge=p[4], get=get).value

    full = np.array(params + [ridge])
    fd = []
    for i in range(full.size):
        up, down = full.copy(), full.copy()
        up[i] += FD_STEP
        down[i] -= FD_STEP
        fd.append((value(up) - value(down)) / (2 * FD_STEP))
    fd = np.array(fd)
    assert_allclose(ml.gradient, fd, rtol=KERNEL_FD_RTOL, atol=KERNEL_FD_RTOL * np.max(np.abs(fd)))


def test_marginal_likelihood_selection_of_a_conv_net_end_to_end():
    # Maximise the marginal likelihood over (w_std, b_std) of both layers and the ridge with
    # L-BFGS-B on the exact gradient, then compare candidate architectures with nk.select.
    from scipy.optimize import minimize

    X, y = _image_problem()

    def objective(p):
        ml = S.log_marginal_likelihood(_conv_net(*p[:4]), X, y, ridge=p[4], get="nngp", eval_gradient=True)
        return -ml.value, -ml.gradient

    start = np.array([1.0, 0.5, 1.0, 0.5, 0.5])
    res = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=[(0.05, 3.0)] * 5,
                   options={"maxiter": 15})
    assert res.fun < objective(start)[0] - 1.0  # the fit improved the evidence markedly
    assert np.all(np.isfinite(res.x))
    best = _conv_net(*res.x[:4])
    sel = nk.select(X, y, [best, _conv_net(*start[:4])], [res.x[4]], criterion="ml", get="nngp")
    assert sel.architecture == best
    for rec in sel.results:
        K = nk.compile(rec["arch"])(X).nngp
        assert_allclose(rec["score"], naive_log_marginal(K, y, rec["ridge"]), rtol=ML_RTOL, atol=0)
    assert_allclose(sel.score, -res.fun, rtol=ML_RTOL, atol=0)


def test_a_zero_image_and_a_scaled_copy_without_bias():
    # With b_std = 0 in the first Conv, an image and twice it stay exactly parallel at equal
    # positions (ρ = 1, where ∂Ṫ/∂c is singular), and a zero image keeps zero variance: the
    # derivatives stay finite and match finite differences of every parameter that is not 0
    # (∂/∂b_std at b_std = 0 is exactly 0: b enters as b²).
    arch = nk.serial(nk.Conv(filter_shape=(2,), padding="SAME", w_std=1.3), nk.ReLU(),
                     nk.Conv(filter_shape=(2,), w_std=1.2, b_std=0.1), nk.ReLU(), nk.GlobalAvgPool(),
                     nk.Dense(w_std=1.1, b_std=0.1))
    X = np.random.default_rng(6).standard_normal((3, 5, 2))
    X = np.concatenate([X, 2.0 * X[:1], np.zeros((1, 5, 2))])
    g = kernel_gradients(arch, X)
    assert np.isfinite(g.d_ntk).all() and np.isfinite(g.d_nngp).all()
    assert np.all(g.derivative("layers[0].b_std", "ntk") == 0.0) and np.all(g.derivative("layers[0].b_std", "nngp") == 0.0)
    for name in g.parameters:
        index, attr = int(name[len("layers["):name.index("]")]), name.split(".")[1]
        v = getattr(arch[index], attr)
        if v == 0.0:
            continue
        up = nk.compile(_with(arch, name, v + FD_STEP))(X, X)
        down = nk.compile(_with(arch, name, v - FD_STEP))(X, X)
        for get in ("nngp", "ntk"):
            fd = (getattr(up, get) - getattr(down, get)) / (2 * FD_STEP)
            assert_allclose(g.derivative(name, get), fd, rtol=KERNEL_FD_RTOL, atol=KERNEL_FD_RTOL * np.max(np.abs(fd)),
                            err_msg=f"d{get}/d{name}")
