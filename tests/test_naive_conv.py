"""Checks of the naive convolutional reference (tests/naive.py, "spatial" section).

The reference is what the fast CNN-GP/CNTK engine will be compared with, so it is checked
three independent ways before that engine exists:

* Monte Carlo: finite NumPy CNNs (256 channels) in the NTK parameterisation; their output
  covariance over independent seeds must match the reference NNGP within a bound set by the
  standard error of the sample.
* Symmetries: circular padding makes a GAP network invariant to a cyclic shift of one input
  and a Flatten network invariant to a common shift of both; a 1×1 convolution on 1×1 images
  is a Dense layer (against the dense references of tests/naive.py).
* Cross-library (slow): neural-tangents 0.6.5's kernel_fn (x64) in a subprocess, for 1-D and
  2-D architectures with every padding, strides, pooling, both readouts, ReLU and Erf.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats

import ntk_infinite as nk
from nt_bridge import run_nt
from naive import mp_kernels, naive_conv_empirical_nngp, naive_kernels, naive_spatial_kernels
from tolerances import (CONV_SHIFT_MIN_CHANGE, FALSE_ALARM, NAIVE_RTOL, NETWORK_RTOL, NT_CROSS_RTOL, ROUNDING_ATOL,
                        ROUNDING_RTOL)


def _inputs(shape, n, seed):
    return np.random.default_rng(seed).standard_normal((n,) + tuple(shape))


# ---------------------------------------------------------------- Monte Carlo
# 1-D, length 6, two input channels. Filters 4 and strides 2 make SAME's pad_total odd, so
# the pad placement (pad_lo = ⌊pad_total/2⌋) matters; the edges make the divisor matter.
MC_FAST = {
    "gap-same": [("conv", (3,), (1,), "SAME", 1.5, 0.1), ("relu",), ("conv", (4,), (1,), "SAME", 1.4, 0.2),
                 ("relu",), ("gap",), ("dense", 1.2, 0.1)],
    "gap-valid": [("conv", (3,), (1,), "VALID", 1.5, 0.1), ("relu",), ("conv", (2,), (2,), "VALID", 1.3, 0.0),
                  ("relu",), ("gap",), ("dense", 1.0, 0.0)],
    "flatten-same": [("conv", (3,), (1,), "SAME", 1.6, 0.0), ("erf",), ("conv", (4,), (2,), "SAME", 1.5, 0.1),
                     ("relu",), ("flatten",), ("dense", 1.1, 0.0)],
    "flatten-valid": [("conv", (3,), (1,), "VALID", 1.4, 0.2), ("relu",), ("conv", (3,), (1,), "VALID", 1.5, 0.0),
                      ("relu",), ("flatten",), ("dense", 1.0, 0.1)],
}
# 2-D, 5×5 images, three channels; with an AvgPool and a Dense layer after the readout.
MC_SLOW = {
    "gap-same-2d": [("conv", (3, 3), (1, 1), "SAME", 1.5, 0.1), ("relu",), ("conv", (2, 2), (2, 1), "SAME", 1.4, 0.2),
                    ("relu",), ("avgpool", (2, 2), (1, 1), "SAME"), ("gap",), ("dense", 1.2, 0.1)],
    "gap-valid-2d": [("conv", (3, 3), (1, 1), "VALID", 1.5, 0.1), ("erf",), ("conv", (2, 2), (1, 1), "VALID", 1.3, 0.0),
                     ("relu",), ("gap",), ("dense", 1.0, 0.0)],
    "flatten-same-2d": [("conv", (3, 3), (1, 1), "SAME", 1.6, 0.0), ("relu",), ("conv", (4, 3), (2, 2), "SAME", 1.5, 0.1),
                        ("relu",), ("flatten",), ("dense", 1.4, 0.0), ("relu",), ("dense", 1.1, 0.1)],
    "flatten-valid-2d": [("conv", (2, 3), (1, 1), "VALID", 1.4, 0.2), ("relu",), ("conv", (3, 2), (1, 1), "VALID", 1.5, 0.0),
                         ("relu",), ("flatten",), ("dense", 1.0, 0.1)],
}
MC_WIDTH = 256
MC_OUT = 256  # readout units per network: their average is the per-seed estimate


def _mc_check(layers, X, n_seeds, seed):
    """|empirical − reference| <= t_crit · SE on every unique entry; t_crit Bonferroni-corrected
    for the number of entries at the overall false-alarm rate FALSE_ALARM (two-sided), with the
    Student t for the standard error estimated from the same n_seeds draws.

    The finite-width bias is O(1/width); with 256 channels it is far below the standard error
    (measured: at 32 channels, 800 seeds, it was still within one standard error)."""
    ref, _ = naive_spatial_kernels(layers, X)
    emp, se = naive_conv_empirical_nngp(layers, X, X, MC_WIDTH, n_seeds, seed=seed, n_out=MC_OUT)
    iu = np.triu_indices(len(X))
    t_crit = stats.t.isf(FALSE_ALARM / (2 * len(iu[0])), n_seeds - 1)
    z = np.abs(emp - ref)[iu] / se[iu]
    assert np.all(z <= t_crit), f"max |emp − ref|/SE = {z.max():.2f} > {t_crit:.2f}; ref {ref[iu]}, emp {emp[iu]}"
    return z.max(), np.max(se[iu] / np.abs(ref[iu]))


@pytest.mark.parametrize("name", list(MC_FAST))
def test_monte_carlo_fast(name):
    _mc_check(MC_FAST[name], _inputs((6, 2), 3, seed=0), n_seeds=150, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MC_SLOW))
def test_monte_carlo_slow(name):
    _mc_check(MC_SLOW[name], _inputs((5, 5, 3), 4, seed=2), n_seeds=1000, seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MC_FAST))
def test_monte_carlo_fast_architectures_many_seeds(name):
    _mc_check(MC_FAST[name], _inputs((6, 2), 5, seed=4), n_seeds=2000, seed=5)


# ---------------------------------------------------------------- symmetries
CIRCULAR_GAP = [("conv", (3, 2), (1, 1), "CIRCULAR", 1.5, 0.1), ("relu",), ("conv", (2, 3), (1, 1), "CIRCULAR", 1.3, 0.2),
                ("erf",), ("avgpool", (2, 2), (1, 1), "CIRCULAR"), ("gap",), ("dense", 1.2, 0.1)]
CIRCULAR_FLATTEN = [("conv", (3, 2), (1, 1), "CIRCULAR", 1.5, 0.1), ("relu",), ("conv", (4, 3), (1, 1), "CIRCULAR", 1.3, 0.2),
                    ("relu",), ("flatten",), ("dense", 1.2, 0.1)]
CIRCULAR_GAP_1D = [("conv", (4,), (1,), "CIRCULAR", 1.5, 0.1), ("relu",), ("conv", (3,), (1,), "CIRCULAR", 1.4, 0.0),
                   ("relu",), ("gap",), ("dense", 1.0, 0.0)]


def _shift(X, shift):
    return np.roll(X, shift, axis=tuple(range(1, 1 + len(shift))))


@pytest.mark.parametrize("layers, shape, shift", [(CIRCULAR_GAP, (4, 5, 2), (1, 3)), (CIRCULAR_GAP_1D, (7, 2), (3,))],
                         ids=["2d", "1d"])
def test_circular_gap_invariant_to_shifting_one_input(layers, shape, shift):
    X1, X2 = _inputs(shape, 2, seed=10), _inputs(shape, 2, seed=11)
    nngp, ntk = naive_spatial_kernels(layers, X1, X2)
    nngp_s, ntk_s = naive_spatial_kernels(layers, X1, _shift(X2, shift))
    assert_allclose(nngp_s, nngp, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)
    assert_allclose(ntk_s, ntk, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)


def test_circular_flatten_invariant_to_a_common_shift_only():
    X1, X2 = _inputs((4, 5, 2), 2, seed=12), _inputs((4, 5, 2), 2, seed=13)
    nngp, ntk = naive_spatial_kernels(CIRCULAR_FLATTEN, X1, X2)
    nngp_s, ntk_s = naive_spatial_kernels(CIRCULAR_FLATTEN, _shift(X1, (1, 3)), _shift(X2, (1, 3)))
    assert_allclose(nngp_s, nngp, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)
    assert_allclose(ntk_s, ntk, rtol=ROUNDING_RTOL, atol=ROUNDING_ATOL)
    # a shift of one input alone moves the cross kernel: Flatten pairs position p with p only
    nngp_1, ntk_1 = naive_spatial_kernels(CIRCULAR_FLATTEN, X1, _shift(X2, (1, 3)))
    assert np.max(np.abs(nngp_1 - nngp) / np.abs(nngp)) > CONV_SHIFT_MIN_CHANGE
    assert np.max(np.abs(ntk_1 - ntk) / np.abs(ntk)) > CONV_SHIFT_MIN_CHANGE


def test_same_padding_is_not_shift_invariant():
    """Control: with SAME (zero) padding the GAP kernel does change under a shift of one input."""
    layers = [layer[:3] + ("SAME",) + layer[4:] if layer[0] == "conv" else layer for layer in CIRCULAR_GAP_1D]
    X1, X2 = _inputs((7, 2), 2, seed=10), _inputs((7, 2), 2, seed=11)
    nngp, _ = naive_spatial_kernels(layers, X1, X2)
    nngp_s, _ = naive_spatial_kernels(layers, X1, _shift(X2, (3,)))
    assert np.max(np.abs(nngp_s - nngp) / np.abs(nngp)) > CONV_SHIFT_MIN_CHANGE


@pytest.mark.parametrize("padding", ["VALID", "SAME", "CIRCULAR"])
@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_one_by_one_conv_on_one_pixel_is_dense_relu(padding, readout):
    layers = [("conv", (1, 1), (1, 1), padding, 1.5, 0.3), ("relu",), ("conv", (1, 1), (1, 1), padding, 1.2, 0.1),
              ("relu",), (readout,), ("dense", 0.9, 0.2)]
    arch = nk.serial(nk.Dense(w_std=1.5, b_std=0.3), nk.ReLU(), nk.Dense(w_std=1.2, b_std=0.1), nk.ReLU(),
                     nk.Dense(w_std=0.9, b_std=0.2))
    X1, X2 = _inputs((4,), 3, seed=20), _inputs((4,), 2, seed=21)
    nngp, ntk = naive_spatial_kernels(layers, X1[:, None, None, :], X2[:, None, None, :])
    nngp_d, ntk_d = naive_kernels(arch, X1, X2)
    assert_allclose(nngp, nngp_d, rtol=NAIVE_RTOL, atol=0)
    assert_allclose(ntk, ntk_d, rtol=NAIVE_RTOL, atol=0)


def test_one_by_one_conv_on_one_pixel_is_dense_erf():
    """Erf through the 1-D 1×1 path against the mpmath quadrature recursion (no erf closed form)."""
    layers = [("conv", (1,), (1,), "SAME", 1.3, 0.2), ("erf",), ("dense", 1.4, 0.1), ("erf",), ("gap",),
              ("dense", 1.1, 0.3)]
    arch = nk.serial(nk.Dense(w_std=1.3, b_std=0.2), nk.Erf(), nk.Dense(w_std=1.4, b_std=0.1), nk.Erf(),
                     nk.Dense(w_std=1.1, b_std=0.3))
    X1, X2 = _inputs((3,), 2, seed=22), _inputs((3,), 1, seed=23)
    nngp, ntk = naive_spatial_kernels(layers, X1[:, None, :], X2[:, None, :])
    for i in range(2):
        for j in range(1):
            S, T = mp_kernels(arch, X1[i], X2[j])
            assert_allclose([nngp[i, j], ntk[i, j]], [float(S), float(T)], rtol=NETWORK_RTOL, atol=0)


@pytest.mark.parametrize("padding", ["VALID", "SAME", "CIRCULAR"])
def test_avgpool_over_the_whole_image_then_flatten_is_gap(padding):
    """A VALID AvgPool window as large as the image leaves one position: Flatten of it is the
    (1/P²) Σ K[p, p'] of GlobalAvgPool, with Θ alike."""
    body = [("conv", (2, 3), (1, 1), padding, 1.5, 0.1), ("relu",), ("conv", (3, 2), (1, 1), padding, 1.2, 0.2),
            ("erf",)]
    head = [("dense", 1.3, 0.1)]
    X1, X2 = _inputs((4, 5, 2), 2, seed=40), _inputs((4, 5, 2), 2, seed=41)
    shape = (4, 5) if padding != "VALID" else (1, 2)  # (4, 5) → (3, 3) → (1, 2)
    pooled = naive_spatial_kernels(body + [("avgpool", shape, (1, 1), "VALID"), ("flatten",)] + head, X1, X2)
    gap = naive_spatial_kernels(body + [("gap",)] + head, X1, X2)
    assert_allclose(pooled, gap, rtol=ROUNDING_RTOL, atol=0)


def test_cross_kernel_is_the_transpose():
    X1, X2 = _inputs((4, 5, 2), 3, seed=30), _inputs((4, 5, 2), 2, seed=31)
    layers = MC_SLOW["flatten-same-2d"]
    a, b = naive_spatial_kernels(layers, X1, X2), naive_spatial_kernels(layers, X2, X1)
    assert_allclose(a[0], b[0].T, rtol=ROUNDING_RTOL, atol=0)
    assert_allclose(a[1], b[1].T, rtol=ROUNDING_RTOL, atol=0)


# ---------------------------------------------------------------- neural-tangents
# (shape, layers): inputs (n, *shape); every padding, strides 2, AvgPool, both readouts, both
# activations, 1-D and 2-D; even filters and strides make SAME's pad_total odd.
NT_CASES = {
    "1d-valid-relu-flatten": ((9, 2), [("conv", (3,), (1,), "VALID", 1.5, 0.1), ("relu",),
                                       ("conv", (2,), (2,), "VALID", 1.3, 0.2), ("relu",), ("flatten",),
                                       ("dense", 1.2, 0.1)]),
    "1d-same-erf-gap": ((7, 3), [("conv", (4,), (1,), "SAME", 1.4, 0.2), ("erf",),
                                 ("conv", (3,), (2,), "SAME", 1.6, 0.0), ("erf",), ("gap",), ("dense", 1.0, 0.0)]),
    "1d-circular-s2-relu-pool-flatten": ((8, 2), [("conv", (3,), (2,), "CIRCULAR", 1.5, 0.3), ("relu",),
                                                  ("avgpool", (2,), (1,), "CIRCULAR"),
                                                  ("conv", (2,), (1,), "CIRCULAR", 1.2, 0.1), ("relu",),
                                                  ("flatten",), ("dense", 1.3, 0.2)]),
    "2d-valid-s2-relu-pool-gap": ((7, 6, 2), [("conv", (3, 2), (2, 1), "VALID", 1.5, 0.1), ("relu",),
                                              ("avgpool", (2, 2), (1, 1), "VALID"),
                                              ("conv", (2, 2), (1, 1), "VALID", 1.4, 0.2), ("relu",), ("gap",),
                                              ("dense", 1.1, 0.0)]),
    "2d-same-erf-pool-flatten": ((5, 4, 3), [("conv", (2, 3), (1, 1), "SAME", 1.3, 0.2), ("erf",),
                                             ("avgpool", (3, 2), (2, 2), "SAME"),
                                             ("conv", (2, 2), (1, 2), "SAME", 1.5, 0.1), ("relu",), ("flatten",),
                                             ("dense", 1.2, 0.1)]),
    "2d-same-s2-relu-flatten-dense": ((6, 6, 2), [("conv", (4, 4), (2, 2), "SAME", 1.6, 0.0), ("relu",),
                                                  ("conv", (3, 3), (1, 1), "SAME", 1.4, 0.1), ("relu",),
                                                  ("flatten",), ("dense", 1.5, 0.2), ("relu",),
                                                  ("dense", 1.0, 0.1)]),
    "2d-circular-relu-erf-gap": ((4, 5, 2), CIRCULAR_GAP),
    "2d-circular-s2-relu-pool-gap": ((6, 5, 2), [("conv", (3, 3), (2, 2), "CIRCULAR", 1.5, 0.2), ("relu",),
                                                 ("avgpool", (2, 2), (2, 1), "CIRCULAR"), ("gap",),
                                                 ("dense", 1.3, 0.1), ("erf",), ("dense", 1.0, 0.0)]),
}

_NT_SCRIPT = textwrap.dedent('''
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from neural_tangents import stax

    def build(layers):
        out = []
        for layer in layers:
            kind = layer[0]
            if kind == "conv":
                _, filt, strides, padding, w, b = layer
                out.append(stax.Conv(1, tuple(filt), tuple(strides), padding, W_std=w, b_std=b))
            elif kind == "dense":
                out.append(stax.Dense(1, W_std=layer[1], b_std=layer[2]))
            elif kind == "relu":
                out.append(stax.Relu())
            elif kind == "erf":
                out.append(stax.Erf())
            elif kind == "avgpool":
                _, window, strides, padding = layer
                out.append(stax.AvgPool(tuple(window), tuple(strides), padding))
            elif kind == "flatten":
                out.append(stax.Flatten())
            elif kind == "gap":
                out.append(stax.GlobalAvgPool())
            else:
                raise ValueError(layer)
        return stax.serial(*out)

    spec = json.load(open(sys.argv[1]))
    res = {}
    for name, case in spec.items():
        kernel_fn = build(case["layers"])[2]
        X1 = np.asarray(case["X1"], dtype=np.float64)
        X2 = np.asarray(case["X2"], dtype=np.float64)
        k = kernel_fn(X1, X2, ("nngp", "ntk"))
        res[name + "/nngp"] = np.asarray(k.nngp, dtype=np.float64)
        res[name + "/ntk"] = np.asarray(k.ntk, dtype=np.float64)
    np.savez(sys.argv[2], **res)
''')


def _nt_inputs(name, shape):
    seed = sum(map(ord, name))
    return _inputs(shape, 3, seed), _inputs(shape, 2, seed + 1)


@pytest.fixture(scope="module")
def nt_results(tmp_path_factory):
    spec = {}
    for name, (shape, layers) in NT_CASES.items():
        X1, X2 = _nt_inputs(name, shape)
        spec[name] = dict(layers=layers, X1=X1.tolist(), X2=X2.tolist())
    return run_nt(_NT_SCRIPT, spec, tmp_path_factory.mktemp("nt"))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NT_CASES))
def test_agrees_with_neural_tangents(name, nt_results):
    """Distinct random inputs (no collinear pairs), relative to each entry; the absolute floor
    is NT_CROSS_RTOL of the largest entry, for entries that happen to be small."""
    shape, layers = NT_CASES[name]
    X1, X2 = _nt_inputs(name, shape)
    nngp, ntk = naive_spatial_kernels(layers, X1, X2)
    for ours, key in ((nngp, "nngp"), (ntk, "ntk")):
        theirs = nt_results[f"{name}/{key}"]
        assert theirs.shape == ours.shape
        assert_allclose(ours, theirs, rtol=NT_CROSS_RTOL, atol=NT_CROSS_RTOL * np.max(np.abs(theirs)), err_msg=key)
