r"""Spatial layers of finite networks: Conv, AvgPool, Flatten and GlobalAvgPool as layer ops.

The ops follow the protocol of :mod:`ntk_infinite.verify.empirical` (one object per layer of a
:class:`~ntk_infinite.verify.empirical.FiniteNetwork`, built for one input shape):

* ``in_shape``, ``out_shape``: per-sample shapes, ``(S₁, …, S_k, C)`` on spatial states
  (channels last) and ``(F,)`` on flat ones;
* ``n_params`` (0 for fixed maps) and, for parametrised ops, ``w_slice``, ``b_slice``;
* ``forward(theta, h)``: ``h`` (N, *in_shape) → (N, *out_shape);
* ``backward(theta, h, delta)``: the sensitivity ``delta`` (n, m, *out_shape) of the ``m``
  propagated rows with respect to this op's outputs → with respect to its inputs ``h``;
* ``tangent(theta, v, h, dh)``: outputs and forward tangents;
* parametrised ops also ``grad`` (vector-Jacobian product into the flat gradient),
  ``jacobian`` (their columns of the explicit Jacobian) and ``ntk`` (their term of J Jᵀ).

Conventions (docs/DESIGN.md, "Spatial layers"; neural-tangents 0.6.5): a ``Conv`` with filter
``k`` on ``C_in`` channels computes

.. math::

    z[a, d] = \frac{\sigma_w}{\sqrt{C_{in}\,|k|}} \sum_{o, c} W[o, c, d]\, h_{pad}[a s + o, c] + \sigma_b b[d],

with ``h_pad`` the input padded as XLA does (``pad_lo = ⌊pad_total/2⌋``; zeros for SAME, wrapped
around for CIRCULAR, none for VALID). ``AvgPool`` divides the window sum by the full window
size, also at SAME-padded edges. ``Flatten`` reshapes (n, P·C) (position-major), so a Dense
after it has fan-in P·C and NNGP :math:`\frac1P\sum_p K[p, p]`; ``GlobalAvgPool`` is the mean over
positions.

Convolutions are im2col (``sliding_window_view`` of the padded input, copied once into a
contiguous (N·P_out, |k|·C_in) matrix) times the filter matrix, processed in sample chunks so
that the im2col buffer stays below :data:`IM2COL_ENTRIES`. The NTK term of a convolution is
contracted from Gram matrices over positions, never from the Jacobian,

.. math::

    \hat\Theta_{(x,a),(x',b)} \mathrel{+}= \sum_{p, p'} \Big(\frac{\sigma_w^2}{C_{in}|k|}
    \sum_o h_{pad}(x)[p s + o]\cdot h_{pad}(x')[p' s + o] + \sigma_b^2\Big)\,
    \delta_a(x)[p]\cdot\delta_b(x')[p'],

in blocks of samples whose Gram matrices stay below :data:`GRAM_ENTRIES`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..describe.spatial import pad_low, spatial_output_shape
from ..errors import InputError

__all__ = ["ConvOp", "PoolOp", "FlattenOp", "GlobalAvgPoolOp", "as_spatial_input",
           "IM2COL_ENTRIES", "GRAM_ENTRIES"]

#: Largest im2col buffer (entries; 8 bytes each) a convolution builds at once: 64 MiB.
IM2COL_ENTRIES = 1 << 23
#: Largest position-pair Gram block (entries) of the NTK contraction: 32 MiB.
GRAM_ENTRIES = 1 << 22
#: Largest set of per-sample weight gradients (entries) the NTK contraction forms: 128 MiB.
GRAD_ENTRIES = 1 << 24
#: Cost of one strided, memory-bound entry update relative to one BLAS flop (measured: ~2 ns
#: against ~80 Gflop/s single-threaded), for choosing the cheaper NTK contraction.
STRIDED_COST = 100


def _chunks(N: int, per_sample: int, budget: int = IM2COL_ENTRIES):
    """Slices of ``range(N)`` with ``len · per_sample <= budget`` (at least one sample each)."""
    step = max(1, budget // max(per_sample, 1))
    for i in range(0, N, step):
        yield slice(i, min(i + step, N))


class _Window:
    """Geometry of a Conv or AvgPool window on one spatial shape: padding, im2col and adjoints."""

    def __init__(self, shape: tuple, window: tuple, strides, padding: str, layer):
        self.shape = tuple(shape)
        self.window = tuple(window)
        self.strides = tuple(strides) if strides is not None else (1,) * len(window)
        self.padding = padding
        self.out = spatial_output_shape(layer, self.shape)
        pads = []
        for n, k, s, o in zip(self.shape, self.window, self.strides, self.out):
            total = 0 if padding == "VALID" else max((o - 1) * s + k - n, 0)
            lo = pad_low(n, k, s, padding)
            pads.append((lo, total - lo))
        self.pads = tuple(pads)
        self.padded = tuple(n + lo + hi for n, (lo, hi) in zip(self.shape, self.pads))
        self.size = math.prod(self.window)
        self.ndim = len(self.shape)
        self.offsets = list(itertools.product(*map(range, self.window)))

    def _reads(self, o) -> tuple:
        """Index of the padded positions read at offset ``o`` by all output positions."""
        return tuple(slice(oi, oi + (m - 1) * s + 1, s) for oi, m, s in zip(o, self.out, self.strides))

    def pad(self, h: np.ndarray) -> np.ndarray:
        """(N, *shape, C) → (N, *padded, C): zeros (SAME) or wrapped around (CIRCULAR)."""
        if self.padding == "VALID" or not any(lo or hi for lo, hi in self.pads):
            return h
        if self.padding == "SAME":
            return np.pad(h, [(0, 0), *self.pads, (0, 0)])
        for ax, (n, (lo, hi)) in enumerate(zip(self.shape, self.pads)):
            h = np.take(h, (np.arange(-lo, n + hi)) % n, axis=1 + ax)
        return h

    def unpad(self, g: np.ndarray) -> np.ndarray:
        """Adjoint of :meth:`pad`: (N, *padded, C) → (N, *shape, C)."""
        if self.padding == "VALID" or not any(lo or hi for lo, hi in self.pads):
            return g
        if self.padding == "SAME":
            return g[(slice(None),) + tuple(slice(lo, lo + n) for n, (lo, _) in zip(self.shape, self.pads))]
        for ax, (n, (lo, _)) in enumerate(zip(self.shape, self.pads)):
            axis = 1 + ax
            L = g.shape[axis]
            out = np.zeros(g.shape[:axis] + (n,) + g.shape[axis + 1:])
            # padded position i holds input position (i − lo) mod n: runs of contiguous positions
            i = 0
            while i < L:
                j = (i - lo) % n
                run = min(n - j, L - i)
                dst = [slice(None)] * g.ndim
                src = [slice(None)] * g.ndim
                dst[axis], src[axis] = slice(j, j + run), slice(i, i + run)
                out[tuple(dst)] += g[tuple(src)]
                i += run
            g = out
        return g

    def patches(self, h: np.ndarray) -> np.ndarray:
        """im2col: (N, *shape, C) → contiguous (N, *out, *window, C)."""
        hp = self.pad(h)
        axes = tuple(range(1, 1 + self.ndim))
        v = np.lib.stride_tricks.sliding_window_view(hp, self.window, axis=axes)  # (N, *, C, *window)
        v = v[(slice(None),) + tuple(slice(0, (m - 1) * s + 1, s) for m, s in zip(self.out, self.strides))]
        return np.ascontiguousarray(np.moveaxis(v, 1 + self.ndim, -1))

    def scatter(self, gp: np.ndarray) -> np.ndarray:
        """Adjoint of :meth:`patches`: (N, *out, *window, C) → (N, *shape, C)."""
        N, C = gp.shape[0], gp.shape[-1]
        g = np.zeros((N, *self.padded, C))
        lead = (slice(None),) * (1 + self.ndim)
        for o in self.offsets:
            g[(slice(None),) + self._reads(o)] += gp[lead + o]
        return self.unpad(g)

    def same_offset_sum(self, H: np.ndarray) -> np.ndarray:
        """Σ_o H[x, a·s + o, x', a'·s + o] for a Gram H (n1, *padded, n2, *padded) → (n1, *out, n2, *out).

        The window is a product of per-axis windows, so the sum is taken one axis at a time
        (Σ k_i strided adds instead of Π k_i)."""
        k = self.ndim
        for ax, (m, s, w) in enumerate(zip(self.out, self.strides, self.window)):
            acc = None
            for o in range(w):
                idx = [slice(None)] * H.ndim
                idx[1 + ax] = idx[2 + k + ax] = slice(o, o + (m - 1) * s + 1, s)
                part = H[tuple(idx)]
                acc = part.copy() if acc is None else acc.__iadd__(part)
            H = acc
        return H

    def window_sum(self, h: np.ndarray) -> np.ndarray:
        """Σ_o h_pad[a·s + o]: (N, *shape, C) → (N, *out, C), without im2col."""
        hp = self.pad(h)
        out = np.zeros((h.shape[0], *self.out, h.shape[-1]))
        for o in self.offsets:
            out += hp[(slice(None),) + self._reads(o)]
        return out

    def window_sum_adjoint(self, g: np.ndarray) -> np.ndarray:
        """Adjoint of :meth:`window_sum`: (N, *out, C) → (N, *shape, C)."""
        gp = np.zeros((g.shape[0], *self.padded, g.shape[-1]))
        for o in self.offsets:
            gp[(slice(None),) + self._reads(o)] += g
        return self.unpad(gp)


class _SpatialOp:
    """Shared plumbing: the leading (n, m) axes of a backpropagated sensitivity."""

    n_params = 0

    @staticmethod
    def _rows(delta, shape):
        n, m = delta.shape[:2]
        return delta.reshape((n * m,) + tuple(shape)), (n, m)


class ConvOp(_SpatialOp):
    """A Conv layer: (n, *S, C_in) → (n, *out, C_out), weights (*filter_shape, C_in, C_out)."""

    def __init__(self, index: int, in_shape: tuple, layer, c_out: int, offset: int):
        self.index = index
        self.layer = layer
        self.in_shape = tuple(in_shape)
        spatial, self.c_in = self.in_shape[:-1], self.in_shape[-1]
        self.geom = _Window(spatial, layer.filter_shape, layer.strides, layer.padding, layer)
        self.c_out = c_out
        self.out_shape = (*self.geom.out, c_out)
        self.w_std, self.b_std = layer.w_std, layer.b_std
        self.fan_in = self.c_in * self.geom.size
        if getattr(layer, "parameterization", "ntk") == "standard":
            # The weights themselves are trained, W ~ N(0, σw²/(C_in|k|)), b ~ N(0, σb²); b_std = 0: no bias.
            self.scale, self.bias_scale = 1.0, (1.0 if self.b_std > 0 else 0.0)
            self.init_scales = (self.w_std / math.sqrt(self.fan_in), self.b_std)
        else:
            self.scale, self.bias_scale = self.w_std / math.sqrt(self.fan_in), self.b_std
            self.init_scales = (1.0, 1.0)
        self.w_shape = (*self.geom.window, self.c_in, c_out)
        self.w_slice = slice(offset, offset + self.fan_in * c_out)
        self.b_slice = slice(self.w_slice.stop, self.w_slice.stop + c_out)
        self.n_params = self.b_slice.stop - offset
        self.n_out = c_out
        self._p_out = math.prod(self.geom.out)

    def weights(self, theta):
        """W as (*filter, C_in, C_out), a view into theta."""
        return theta[self.w_slice].reshape(self.w_shape)

    def _matrix(self, theta):
        return theta[self.w_slice].reshape(self.fan_in, self.c_out)

    def _conv(self, h, Wm):
        """conv(h, W) without scale or bias: (N, *in) → (N, *out, C_out), im2col in chunks."""
        N = h.shape[0]
        z = np.empty((N, self._p_out, self.c_out))
        for sl in _chunks(N, self._p_out * self.fan_in):
            cols = self.geom.patches(h[sl]).reshape(-1, self.fan_in)
            z[sl] = (cols @ Wm).reshape(-1, self._p_out, self.c_out)
        return z.reshape((N, *self.out_shape))

    def forward(self, theta, h):
        z = self._conv(h, self._matrix(theta))
        z *= self.scale
        if self.bias_scale:
            z += self.bias_scale * theta[self.b_slice]
        return z

    def backward(self, theta, h, delta):
        d, (n, m) = self._rows(delta, self.out_shape)
        Wm = self._matrix(theta)
        out = np.empty((n * m, *self.in_shape))
        for sl in _chunks(n * m, self._p_out * self.fan_in):
            gp = d[sl].reshape(-1, self.c_out) @ Wm.T
            out[sl] = self.geom.scatter(gp.reshape(-1, *self.geom.out, *self.geom.window, self.c_in))
        out *= self.scale
        return out.reshape((n, m, *self.in_shape))

    def tangent(self, theta, v, h, dh):
        z = self.forward(theta, h)
        dz = self.scale * (self._conv(h, v[self.w_slice].reshape(self.fan_in, self.c_out))
                           + self._conv(dh, self._matrix(theta)))
        if self.bias_scale:
            dz += self.bias_scale * v[self.b_slice]
        return z, dz

    def grad(self, h, delta, out):
        """Add this layer's part of Jᵀr (delta: (n, 1, *out_shape)) into ``out`` (P,)."""
        d = delta.reshape(delta.shape[0], self._p_out, self.c_out)
        gW = out[self.w_slice].reshape(self.fan_in, self.c_out)  # written in place: no temporaries
        for i, sl in enumerate(_chunks(h.shape[0], self._p_out * self.fan_in)):
            cols = self.geom.patches(h[sl]).reshape(-1, self.fan_in)
            ds = self.scale * d[sl].reshape(-1, self.c_out)
            if i == 0:
                np.matmul(cols.T, ds, out=gW)
            else:
                gW += cols.T @ ds
        out[self.b_slice] = self.bias_scale * d.sum(axis=(0, 1))

    def _weight_grads(self, h, delta, out=None):
        """Per-sample weight gradients (n, k, fan_in·C_out): scale Σ_p patch[p, o, c] δ_a[p, d]."""
        n, k = delta.shape[:2]
        d = delta.reshape(n, k, self._p_out, self.c_out).transpose(0, 2, 1, 3).reshape(n, self._p_out, k * self.c_out)
        if out is None:
            out = np.empty((n, k, self.fan_in * self.c_out))
        for sl in _chunks(n, self._p_out * self.fan_in):
            cols = self.geom.patches(h[sl]).reshape(-1, self._p_out, self.fan_in)
            G = np.matmul(cols.transpose(0, 2, 1), d[sl])  # (b, fan_in, k·C_out)
            G *= self.scale
            out[sl] = G.reshape(-1, self.fan_in, k, self.c_out).transpose(0, 2, 1, 3).reshape(-1, k, out.shape[-1])
        return out

    def jacobian(self, h, delta, J):
        """Fill this layer's columns of J (n, k, P): ∂f_a/∂W[o, c, d] = scale Σ_p patch[p, o, c] δ_a[p, d]."""
        n, k = delta.shape[:2]
        J[:, :, self.w_slice] = self._weight_grads(h, delta)
        J[:, :, self.b_slice] = self.bias_scale * delta.reshape(n, k, self._p_out, self.c_out).sum(axis=2)

    def _gradient_route(self, n1, n2, k) -> bool:
        """Contract by per-sample weight gradients (G Gᵀ) rather than position-pair Grams when that
        is cheaper and the gradients fit in GRAD_ENTRIES. Cost in BLAS flops; the Grams' strided
        window sums are memory-bound, counted at STRIDED_COST flops per entry."""
        F, P, Pp = self.fan_in * self.c_out, self._p_out, math.prod(self.geom.padded)
        if (n1 + n2) * k * F > GRAD_ENTRIES:
            return False
        grads = 2 * (n1 + n2) * k * P * F + 2 * n1 * n2 * k * k * F
        grams = (2 * n1 * n2 * (Pp * Pp * self.c_in + k * k * P * P * self.c_out)
                 + STRIDED_COST * n1 * n2 * Pp * Pp * sum(self.geom.window))
        return grads < grams

    def ntk(self, h1, d1, h2, d2):
        r"""This layer's term of :math:`J(X_1)J(X_2)^\top`, (n1·k, n2·k), by whichever of two exact
        contractions is cheaper: per-sample weight gradients, or position-pair Gram matrices."""
        n1, k = d1.shape[:2]
        n2 = d2.shape[0]
        P = self._p_out
        if self._gradient_route(n1, n2, k):
            G1 = self._weight_grads(h1, d1).reshape(n1 * k, -1)
            G2 = G1 if d2 is d1 else self._weight_grads(h2, d2).reshape(n2 * k, -1)
            out = G1 @ G2.T
            if self.bias_scale:
                s1 = d1.reshape(n1 * k, P, self.c_out).sum(axis=1)
                s2 = d2.reshape(n2 * k, P, self.c_out).sum(axis=1)
                out += self.bias_scale**2 * (s1 @ s2.T)
            return out
        return self._ntk_by_grams(h1, d1, h2, d2)

    def _ntk_by_grams(self, h1, d1, h2, d2):
        g = self.geom
        n1, k = d1.shape[:2]
        n2 = d2.shape[0]
        P, Pp = self._p_out, math.prod(g.padded)
        hp1 = g.pad(h1).reshape(n1, Pp, self.c_in)
        hp2 = hp1 if h2 is h1 else g.pad(h2).reshape(n2, Pp, self.c_in)
        e1 = d1.reshape(n1, k * P, self.c_out)
        e2 = d2.reshape(n2, k * P, self.c_out)
        out = np.empty((n1, k, n2, k))
        b = max(1, int(math.isqrt(GRAM_ENTRIES) // max(Pp, k * P)))
        for I in range(0, n1, b):
            bi = min(b, n1 - I)
            for J0 in range(0, n2, b):
                bj = min(b, n2 - J0)
                H = (hp1[I:I + bi].reshape(bi * Pp, -1) @ hp2[J0:J0 + bj].reshape(bj * Pp, -1).T)
                A = g.same_offset_sum(H.reshape(bi, *g.padded, bj, *g.padded)).reshape(bi, P, bj, P)
                A *= self.scale**2
                A += self.bias_scale**2
                D = (e1[I:I + bi].reshape(bi * k * P, -1) @ e2[J0:J0 + bj].reshape(bj * k * P, -1).T)
                out[I:I + bi, :, J0:J0 + bj, :] = np.einsum("ipjq,iapjbq->iajb", A, D.reshape(bi, k, P, bj, k, P))
        return out.reshape(n1 * k, n2 * k)


class PoolOp(_SpatialOp):
    """AvgPool: the window mean, divisor |w| also at SAME-padded edges."""

    def __init__(self, index: int, in_shape: tuple, layer):
        self.index = index
        self.in_shape = tuple(in_shape)
        self.geom = _Window(self.in_shape[:-1], layer.window_shape, layer.strides, layer.padding, layer)
        self.out_shape = (*self.geom.out, self.in_shape[-1])

    def forward(self, theta, h):
        return self.geom.window_sum(h) / self.geom.size

    def backward(self, theta, h, delta):
        d, (n, m) = self._rows(delta, self.out_shape)
        return (self.geom.window_sum_adjoint(d) / self.geom.size).reshape((n, m, *self.in_shape))

    def tangent(self, theta, v, h, dh):
        return self.forward(theta, h), self.forward(theta, dh)


class FlattenOp(_SpatialOp):
    """Flatten: (n, *S, C) → (n, P·C), position-major."""

    def __init__(self, index: int, in_shape: tuple):
        self.index = index
        self.in_shape = tuple(in_shape)
        self.out_shape = (math.prod(self.in_shape),)

    def forward(self, theta, h):
        return h.reshape(h.shape[0], -1)

    def backward(self, theta, h, delta):
        return delta.reshape(delta.shape[:2] + self.in_shape)

    def tangent(self, theta, v, h, dh):
        return self.forward(theta, h), self.forward(theta, dh)


class GlobalAvgPoolOp(_SpatialOp):
    """GlobalAvgPool: the mean over positions, (n, *S, C) → (n, C)."""

    def __init__(self, index: int, in_shape: tuple):
        self.index = index
        self.in_shape = tuple(in_shape)
        self.out_shape = (self.in_shape[-1],)
        self._axes = tuple(range(1, len(self.in_shape)))
        self._P = math.prod(self.in_shape[:-1])

    def forward(self, theta, h):
        return h.mean(axis=self._axes)

    def backward(self, theta, h, delta):
        n, m, C = delta.shape
        shape = (n, m) + (1,) * (len(self.in_shape) - 1) + (C,)
        return np.broadcast_to(delta.reshape(shape) / self._P, (n, m, *self.in_shape)).copy()

    def tangent(self, theta, v, h, dh):
        return self.forward(theta, h), self.forward(theta, dh)


# ---------------------------------------------------------------------- checks
def as_spatial_input(X, name: str, shape: tuple) -> np.ndarray:
    """Coerce ``X`` to a C-contiguous, finite float64 array of shape (n, *shape) or raise."""
    shape = tuple(shape)
    if X is None:
        raise TypeError(f"{name} must be an array of shape (n, {', '.join(map(str, shape))}); got None.")
    arr = np.asarray(X)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must contain real numbers; got dtype {arr.dtype}. Convert it with "
                        f"np.asarray({name}, dtype=float).")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real; got complex dtype {arr.dtype}. Pass the real part explicitly.")
    expected = (f"(n, {', '.join(map(str, shape))}): n samples of spatial shape {shape[:-1]} with {shape[-1]} "
                "channel(s), channels last")
    if arr.ndim != 1 + len(shape):
        raise InputError(
            f"{name} must have shape {expected}; got an array with {arr.ndim} dimension(s) and shape {arr.shape}. "
            f"Reshape it (e.g. add a trailing channel axis with {name}[..., None]) or build the network for this "
            "shape with in_features=X.shape[1:]."
        )
    if arr.shape[-1] != shape[-1]:
        raise InputError(
            f"{name} has {arr.shape[-1]} channel(s) (last axis) but the network was built for {shape[-1]}; "
            f"expected shape {expected}, got {arr.shape}. Pass channels-last arrays with {shape[-1]} channel(s)."
        )
    if arr.shape[1:] != shape:
        raise InputError(
            f"{name} has spatial shape {arr.shape[1:-1]} but the network was built for {shape[:-1]}; expected "
            f"shape {expected}, got {arr.shape}. Build the network with in_features={arr.shape[1:]}."
        )
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if arr.size and not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise InputError(f"{name} contains NaN or infinite values (first at index {bad}: {float(arr[bad])!r}); the "
                         "networks need finite inputs. Remove or impute them first.")
    return arr
