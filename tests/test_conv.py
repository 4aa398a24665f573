"""Convolutional kernels (CNN-GP / CNTK) against the plain-loop reference of tests/naive.py,
the kernel contract on spatial inputs, the symmetries convolutions must have, and the
errors for misuse. ReLU architectures in the default run share one generated module."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import ntk_infinite as nk
from naive import naive_kernels, naive_spatial_kernels
from tolerances import NAIVE_RTOL, PSD_RTOL, ROUNDING_RTOL

# (ntk_infinite layers, the same network in the naive reference's tuples, input shape)
CASES = {
    "1d-flatten-same": (
        [nk.Conv(filter_shape=(3,), padding="SAME", w_std=1.5, b_std=0.1), nk.ReLU(),
         nk.Conv(filter_shape=(4,), strides=(2,), padding="SAME", w_std=1.4, b_std=0.2), nk.ReLU(), nk.Flatten(),
         nk.Dense(w_std=1.2, b_std=0.1)],
        [("conv", (3,), (1,), "SAME", 1.5, 0.1), ("relu",), ("conv", (4,), (2,), "SAME", 1.4, 0.2), ("relu",),
         ("flatten",), ("dense", 1.2, 0.1)], (6, 2)),
    "1d-gap-valid-circular": (
        [nk.Conv(filter_shape=(3,), w_std=1.5, b_std=0.1), nk.ReLU(),
         nk.Conv(filter_shape=(2,), strides=(2,), padding="CIRCULAR", w_std=1.3), nk.ReLU(), nk.GlobalAvgPool(),
         nk.Dense()],
        [("conv", (3,), (1,), "VALID", 1.5, 0.1), ("relu",), ("conv", (2,), (2,), "CIRCULAR", 1.3, 0.0), ("relu",),
         ("gap",), ("dense", 1.0, 0.0)], (7, 2)),
    "2d-pool-gap-dense": (
        [nk.Conv(filter_shape=(3, 3), padding="SAME", w_std=1.5, b_std=0.1), nk.ReLU(),
         nk.AvgPool(window_shape=(2, 2), padding="SAME"),
         nk.Conv(filter_shape=(2, 2), strides=(2, 1), padding="SAME", w_std=1.4, b_std=0.2), nk.ReLU(),
         nk.GlobalAvgPool(), nk.Dense(w_std=1.2, b_std=0.1), nk.ReLU(), nk.Dense(b_std=0.1)],
        [("conv", (3, 3), (1, 1), "SAME", 1.5, 0.1), ("relu",), ("avgpool", (2, 2), (1, 1), "SAME"),
         ("conv", (2, 2), (2, 1), "SAME", 1.4, 0.2), ("relu",), ("gap",), ("dense", 1.2, 0.1), ("relu",),
         ("dense", 1.0, 0.1)], (5, 4, 3)),
    # Five offsets on the last axis (two groups of the grouped shift sums), an even SAME filter
    # (unequal padding), several images per tile row: the full layout's shifted-row paths.
    "2d-wide-gap": (
        [nk.Conv(filter_shape=(1, 4), padding="SAME", w_std=1.5, b_std=0.1), nk.ReLU(),
         nk.Conv(filter_shape=(3, 5), padding="SAME", w_std=1.3, b_std=0.2), nk.ReLU(), nk.GlobalAvgPool(),
         nk.Dense(w_std=1.1)],
        [("conv", (1, 4), (1, 1), "SAME", 1.5, 0.1), ("relu",), ("conv", (3, 5), (1, 1), "SAME", 1.3, 0.2),
         ("relu",), ("gap",), ("dense", 1.1, 0.0)], (3, 6, 2)),
    "2d-pool-flatten": (
        [nk.Conv(filter_shape=(2, 3), w_std=1.4, b_std=0.2), nk.ReLU(),
         nk.AvgPool(window_shape=(2, 2), strides=(1, 2)), nk.Flatten(), nk.Dense(w_std=1.1)],
        [("conv", (2, 3), (1, 1), "VALID", 1.4, 0.2), ("relu",), ("avgpool", (2, 2), (1, 2), "VALID"),
         ("flatten",), ("dense", 1.1, 0.0)], (5, 6, 2)),
}


def _images(shape, n, seed):
    return np.random.default_rng(seed).standard_normal((n,) + tuple(shape))


@pytest.mark.parametrize("name", list(CASES))
def test_matches_naive_reference(name):
    layers, ref, shape = CASES[name]
    kernel = nk.compile(nk.serial(*layers))
    X1, X2 = _images(shape, 4, 1), _images(shape, 3, 2)
    for args in ((X1,), (X1, X2)):
        got = kernel(*args)
        nngp, ntk = naive_spatial_kernels(ref, *args)
        assert_allclose(got.nngp, nngp, rtol=NAIVE_RTOL, atol=NAIVE_RTOL * np.abs(nngp).max())
        assert_allclose(got.ntk, ntk, rtol=NAIVE_RTOL, atol=NAIVE_RTOL * np.abs(ntk).max())
    d = kernel.diag(X1)
    nngp, ntk = naive_spatial_kernels(ref, X1)
    assert_allclose(d.nngp, np.diag(nngp), rtol=NAIVE_RTOL, atol=0)
    assert_allclose(d.ntk, np.diag(ntk), rtol=NAIVE_RTOL, atol=0)


def test_layout_is_chosen_and_reported():
    flat = nk.compile(nk.serial(*CASES["1d-flatten-same"][0]))
    gap = nk.compile(nk.serial(*CASES["1d-gap-valid-circular"][0]))
    pooled_flat = nk.compile(nk.serial(*CASES["2d-pool-flatten"][0]))
    assert (flat.layout, gap.layout, pooled_flat.layout) == ("diagonal", "full", "full")
    assert "layout='diagonal'" in repr(flat)
    assert nk.compile("Dense > ReLU > Dense").layout == "dense"


@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(list(CASES)), n=st.integers(1, 5), seed=st.integers(0, 2**16), tile=st.integers(1, 4))
def test_contract_on_spatial_inputs(name, n, seed, tile):
    layers, _, shape = CASES[name]
    kernel = nk.compile(nk.serial(*layers))
    X = _images(shape, n, seed)
    # Near duplicates and antipodes, except where an activation follows pooling: pooled sums
    # keep sin²θ only to rounding of ρ (the documented limit), so such pairs agree to ~1e-8.
    if n > 2 and name != "2d-pool-gap-dense":
        X[1] = X[0] * (1 + 1e-9)
        X[2] = -X[0]
    k = kernel(X)
    k2 = kernel(X, X)
    kt = kernel(X, tile=tile)
    for a, b, c in ((k.nngp, k2.nngp, kt.nngp), (k.ntk, k2.ntk, kt.ntk)):
        assert np.array_equal(a, a.T)
        scale = np.abs(a).max()
        assert_allclose(b, a, rtol=ROUNDING_RTOL, atol=ROUNDING_RTOL * scale)
        assert_allclose(c, a, rtol=ROUNDING_RTOL, atol=ROUNDING_RTOL * scale)
        assert np.linalg.eigvalsh(a).min() >= -PSD_RTOL * scale
    perm = np.random.default_rng(seed).permutation(n)
    kp = kernel(X[perm])
    assert_allclose(kp.ntk, k.ntk[np.ix_(perm, perm)], rtol=ROUNDING_RTOL, atol=ROUNDING_RTOL * np.abs(k.ntk).max())
    d = kernel.diag(X)
    assert_allclose(d.ntk, np.diag(k.ntk), rtol=ROUNDING_RTOL, atol=0)


def test_circular_gap_is_invariant_to_a_cyclic_shift_of_one_input():
    arch = nk.serial(nk.Conv(filter_shape=(3, 3), padding="CIRCULAR", w_std=1.5, b_std=0.1), nk.ReLU(),
                     nk.Conv(filter_shape=(3, 3), padding="CIRCULAR", w_std=1.4, b_std=0.2), nk.ReLU(),
                     nk.GlobalAvgPool(), nk.Dense(w_std=1.1))
    kernel = nk.compile(arch)
    X, Y = _images((5, 4, 2), 3, 3), _images((5, 4, 2), 2, 4)
    base = kernel(X, Y)
    shifted = kernel(np.roll(X, (2, 1), axis=(1, 2)), Y)
    assert_allclose(shifted.nngp, base.nngp, rtol=ROUNDING_RTOL, atol=0)
    assert_allclose(shifted.ntk, base.ntk, rtol=ROUNDING_RTOL, atol=0)
    # SAME padding breaks the symmetry: the test can fail.
    same = nk.compile(arch.to_text().replace("CIRCULAR", "SAME"))
    assert not np.allclose(same(np.roll(X, (2, 1), axis=(1, 2)), Y).ntk, same(X, Y).ntk, rtol=1e-6)


def test_circular_flatten_is_invariant_to_a_common_shift():
    kernel = nk.compile(nk.serial(nk.Conv(filter_shape=(3,), padding="CIRCULAR", w_std=1.5, b_std=0.1), nk.ReLU(),
                                  nk.Flatten(), nk.Dense(w_std=1.1)))
    X, Y = _images((6, 2), 3, 5), _images((6, 2), 2, 6)
    base = kernel(X, Y)
    both = kernel(np.roll(X, 2, axis=1), np.roll(Y, 2, axis=1))
    assert_allclose(both.ntk, base.ntk, rtol=ROUNDING_RTOL, atol=0)
    one = kernel(np.roll(X, 2, axis=1), Y)
    assert not np.allclose(one.ntk, base.ntk, rtol=1e-6)


@pytest.mark.parametrize("readout", [nk.Flatten(), nk.GlobalAvgPool()])
def test_one_by_one_conv_on_one_pixel_is_dense(readout):
    conv = nk.compile(nk.serial(nk.Conv(filter_shape=(1, 1), w_std=1.5, b_std=0.1), nk.ReLU(),
                                nk.Conv(filter_shape=(1, 1), w_std=1.3, b_std=0.2), nk.ReLU(), readout,
                                nk.Dense(w_std=1.1, b_std=0.1)))
    X = np.random.default_rng(7).standard_normal((5, 4))
    dense_arch = nk.serial(nk.Dense(w_std=1.5, b_std=0.1), nk.ReLU(), nk.Dense(w_std=1.3, b_std=0.2), nk.ReLU(),
                           nk.Dense(w_std=1.1, b_std=0.1))
    nngp, ntk = naive_kernels(dense_arch, X)
    got = conv(X.reshape(5, 1, 1, 4))
    assert_allclose(got.nngp, nngp, rtol=NAIVE_RTOL, atol=0)
    assert_allclose(got.ntk, ntk, rtol=NAIVE_RTOL, atol=0)


@pytest.mark.parametrize("perturb", ["scale 1e-9", "noise 1e-6", "noise 1e-3", "noise 3e-2"])
def test_near_duplicate_images_keep_the_angle(perturb):
    """x and a near copy through convolutions and Flatten: Ṫ of ReLU is first order in θ, so a
    lost angle would show at ~1e-10 relative; the reference is mpmath at 40 digits. The sizes
    cover both sides of the switch between the Gram-determinant sin²θ and the
    cancellation-free sums (summed sin²θ near NEAR_COLLINEAR = 1e-3)."""
    import mpmath as mp

    layers, _, shape = CASES["1d-flatten-same"]
    kernel = nk.compile(nk.serial(*layers))
    x = _images(shape, 1, 8)
    kind, size = perturb.split()
    if kind == "scale":
        x2 = x * (1 + float(size))
    else:
        x2 = x + float(size) * _images(shape, 1, 9)
    got = kernel(np.concatenate([x, x2])).ntk[1, 0]
    assert abs(got - _mp_flatten_ntk(x[0], x2[0], mp)) <= 1e-11 * abs(got)


def _mp_flatten_ntk(x1, x2, mp):
    """Θ of CASES['1d-flatten-same'] for one pair, diagonal layout, in mpmath (40 digits)."""
    with mp.workdps(40):
        def conv(v, k, s, w, b):  # SAME padding, same-offset sum of a per-position vector
            n = len(v)
            out = -(-n // s)
            lo = max((out - 1) * s + k - n, 0) // 2
            res = []
            for a in range(out):
                acc = mp.mpf(0)
                for o in range(k):
                    p = a * s + o - lo
                    if 0 <= p < n:
                        acc += v[p]
                res.append(w * w * acc / k + b * b)
            return res

        def relu(q1, q2, c):
            th = mp.acos(max(min(c / mp.sqrt(q1 * q2), 1), -1))
            return (mp.sqrt(q1 * q2) * (mp.sin(th) + (mp.pi - th) * mp.cos(th)) / (2 * mp.pi),
                    (mp.pi - th) / (2 * mp.pi))

        f = lambda a, b: [sum(mp.mpf(float(a[p, c])) * mp.mpf(float(b[p, c])) for c in range(a.shape[1])) / a.shape[1]
                          for p in range(a.shape[0])]  # noqa: E731
        c, q1, q2 = f(x1, x2), f(x1, x1), f(x2, x2)
        t = [mp.mpf(0)] * len(c)
        for k, s, w, b in ((3, 1, mp.mpf(1.5), mp.mpf(0.1)), (4, 2, mp.mpf(1.4), mp.mpf(0.2))):
            w2 = w * w
            c_new, q1n, q2n = conv(c, k, s, w, b), conv(q1, k, s, w, b), conv(q2, k, s, w, b)
            t = [w2 * v for v in conv(t, k, s, 1, 0)]
            t = [tv + cv for tv, cv in zip(t, c_new)]
            c, q1, q2 = c_new, q1n, q2n
            pairs = [relu(a, bq, cc) for a, bq, cc in zip(q1, q2, c)]
            t = [tv * p[1] for tv, p in zip(t, pairs)]
            c = [p[0] for p in pairs]
            q1 = [a / 2 for a in q1]
            q2 = [a / 2 for a in q2]
        theta = sum(t) / len(t)
        sigma = sum(c) / len(c)
        w2 = mp.mpf(1.2) ** 2
        return float(w2 * theta + w2 * sigma + mp.mpf(0.1) ** 2)


# ---------------------------------------------------------------- errors
def test_flat_rows_for_a_conv_architecture_name_the_fix():
    kernel = nk.compile(nk.serial(*CASES["2d-pool-gap-dense"][0]))
    with pytest.raises(nk.InputError, match=r"4-D array of shape \(n, H, W, C\).*reshape"):
        kernel(np.zeros((3, 12)))


def test_channel_mismatch_is_an_error():
    kernel = nk.compile(nk.serial(*CASES["2d-pool-gap-dense"][0]))
    with pytest.raises(nk.InputError, match="X2 has 2 channels but X1 has 3"):
        kernel(np.ones((2, 5, 4, 3)), np.ones((2, 5, 4, 2)))


def test_image_smaller_than_a_valid_filter_is_an_error():
    kernel = nk.compile("Conv(filter_shape=(5, 5)) > ReLU > Flatten > Dense")
    with pytest.raises(nk.ArchitectureError, match="empty output.*padding='SAME'"):
        kernel(np.ones((2, 3, 3, 1)))


@pytest.mark.parametrize("text, match", [
    ("Conv(filter_shape=(3, 3), strides=(0, 1)) > ReLU > Flatten > Dense", "at least 1"),
    ("Conv(filter_shape=(0,)) > ReLU > Flatten > Dense", "at least 1"),
    ("Conv((3,)) > ReLU > Flatten > Conv((3,)) > Dense", "after the readout"),
    ("Conv((3,)) > ReLU > GlobalAvgPool > AvgPool((2,)) > Dense", "after the readout"),
    ("Conv((3,)) > ReLU > Dense", "spatial state.*Flatten"),
    ("Conv((3,)) > ReLU > Dense > Flatten > Dense", "spatial state"),
    ("Conv((3,)) > ReLU > Conv((3, 3)) > Flatten > Dense", "spatial axes"),
    ("Conv((3,)) > ReLU > Conv(padding='wrap') > Flatten > Dense", "padding"),
])
def test_bad_architectures_name_the_fix(text, match):
    with pytest.raises((nk.ArchitectureError, nk.ParameterError), match=match):
        nk.compile(text)


def test_images_for_a_dense_architecture_name_the_fix():
    with pytest.raises(nk.InputError, match=r"reshape\(len\(X1\), -1\)"):
        nk.compile("Dense > ReLU > Dense")(np.ones((2, 3, 3, 1)))


def test_explain_names_the_layout_the_reason_and_the_positions():
    gap = nk.compile("Conv(filter_shape=(3, 3), padding='SAME') > ReLU > AvgPool(window_shape=(2, 2), strides=(2, 2))"
                     " > Conv(filter_shape=(3, 3)) > ReLU > GlobalAvgPool > Dense")
    text = gap.explain((16, 16, 3))
    assert "Layout: full" in text and "pooling" in text
    # 16 -> 16 (SAME), -> 8 (2x2 window, stride 2), -> 6 (3x3 VALID): P x P entries per pair.
    assert "(16, 16) → (8, 8), 4 offsets; 65536 entries" in text
    assert "(8, 8) → (6, 6), 9 offsets; 4096 entries" in text
    assert "ReLU(): activation on every position pair, closed form" in text
    flat = nk.compile("Conv(filter_shape=(3, 3)) > ReLU > Flatten > Dense")
    assert "Layout: diagonal" in flat.explain() and "input_shape" in flat.explain()
    assert "(8, 8) → (6, 6), 9 offsets; 64 entries" in flat.explain((8, 8, 1))
    assert "Layout: dense" in nk.compile("Dense > ReLU > Dense").explain()


def test_repeated_images_get_the_exact_self_entries():
    """Rows that repeat an image: their pair is the image with itself, which the point pass
    knows exactly (ρ = 1 at equal positions); the pooled pair sums are only within rounding of
    it, amplified by the ReLU after pooling."""
    layers, _, shape = CASES["2d-pool-gap-dense"]
    kernel = nk.compile(nk.serial(*layers))
    a, b = _images(shape, 2, 3)
    diag = kernel.diag(np.stack([a]))
    k = kernel(np.stack([a, b, a]))
    assert k.ntk[0, 2] == k.ntk[2, 0] == k.ntk[0, 0] == diag.ntk[0]
    assert k.nngp[0, 2] == k.nngp[0, 0] == diag.nngp[0]
    k12 = kernel(np.stack([a, a, b]), np.stack([b, a]))
    assert k12.ntk[0, 1] == k12.ntk[1, 1] == diag.ntk[0]
