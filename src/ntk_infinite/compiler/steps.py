"""The compiled form of every non-activation layer, one step class per layer kind.

A step is what the evaluation needs of a layer: its place in the architecture rules
(``role``), its map of the spatial shape and its index table (``plan``), its per-point map
(``point``), and the symbolic text of its update (``formula``). Activation layers compile to
a :class:`~ntk_infinite.compiler.duals.base.Dual` instead, which plays the same part for
elementwise maps. :func:`compile_step` is the one place that maps a layer kind to its step,
so a new layer kind is one class here plus its description in :mod:`ntk_infinite.describe`.

Roles: ``"affine"`` (Dense, Conv: Gaussian pre-activations out), ``"linear"`` (AvgPool: a
fixed average, Gaussian in, Gaussian out), ``"readout"`` (Flatten, GlobalAvgPool: the
spatial state becomes one number per pair), and ``"activation"`` (duals).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..describe.layers import ActivationLayer, Dense, Identity
from ..describe.spatial import AvgPool, Conv, Flatten, GlobalAvgPool, output_size, pad_low, spatial_output_shape

__all__ = ["Affine", "ConvStep", "PoolStep", "FlattenStep", "GlobalAvgPoolStep", "compile_step", "PositionMap",
           "role_of"]

#: Op codes of the spatial pair pass (activations use codes >= 1).
OP_DENSE, OP_SAME_OFFSET, OP_INDEPENDENT, OP_FLATTEN = 0, -1, -2, -3


@dataclass(frozen=True)
class PositionMap:
    """How a step maps positions: ``table[u, o]`` is the input position (flattened, C order)
    that output position u reads at offset o, −1 for padding; ``divisor`` is |k|.

    ``axes`` factorises a same-offset map over the spatial axes (one ``(n_in, table_d)`` per
    axis, ``table_d[u_d, o_d]`` as above on that axis alone): the full table is their product
    (offsets in C order), which lets the pair pass sum axis by axis."""

    out_shape: tuple
    table: np.ndarray
    divisor: float
    op: int
    axes: tuple = ()


@dataclass(frozen=True)
class Affine:
    """A Dense layer: Σ ← w²Σ + b², Θ ← w²Θ + Σ."""

    w2: float
    b2: float
    layer: Dense | None = None
    role = "affine"
    spatial = False

    def formula_text(self):
        return (r"\Sigma \leftarrow \sigma_w^2 \Sigma + \sigma_b^2",
                r"\Theta \leftarrow \sigma_w^2 \Theta + \Sigma")


def _window_table(shape, window, strides, padding):
    """Index table of a window map on spatial ``shape`` (see :class:`PositionMap`)."""
    strides = strides or (1,) * len(window)
    out = []
    pads = []
    for n, k, s in zip(shape, window, strides):
        out.append(output_size(n, k, s, padding))
        pads.append(pad_low(n, k, s, padding))
    axes = []
    for n, k, s, lo, m in zip(shape, window, strides, pads, out):
        src = np.arange(m)[:, None] * s + np.arange(k)[None, :] - lo
        axes.append((n, src % n if padding == "CIRCULAR" else np.where((src >= 0) & (src < n), src, -1)))
    offsets = list(itertools.product(*(range(k) for k in window)))
    table = np.full((math.prod(out), len(offsets)), -1, dtype=np.int64)
    for u, pos in enumerate(itertools.product(*(range(o) for o in out))):
        for j, off in enumerate(offsets):
            flat = 0
            for ax, (a, o, s, lo, n) in enumerate(zip(pos, off, strides, pads, shape)):
                src = a * s + o - lo
                if padding == "CIRCULAR":
                    src %= n
                elif not 0 <= src < n:
                    flat = -1
                    break
                flat = flat * n + src
            table[u, j] = flat
    return tuple(out), table, float(len(offsets)), tuple(axes)


@dataclass(frozen=True)
class ConvStep:
    """Conv: same-offset sum of the position pairs, then the affine map (docs/DESIGN.md)."""

    layer: Conv
    role = "affine"
    spatial = True

    @property
    def w2(self):
        return self.layer.w_std ** 2

    @property
    def b2(self):
        return self.layer.b_std ** 2

    def plan(self, shape) -> PositionMap:
        spatial_output_shape(self.layer, shape)  # raises for mismatched axes or an empty output
        out, table, k, axes = _window_table(shape, self.layer.filter_shape, self.layer.strides, self.layer.padding)
        return PositionMap(out, table, k, OP_SAME_OFFSET, axes)

    def formula_text(self):
        return (r"\Sigma[a,a'] \leftarrow \frac{\sigma_w^2}{|k|}\sum_o \Sigma[as+o-p,\,a's+o-p] + \sigma_b^2",
                r"\Theta[a,a'] \leftarrow \frac{\sigma_w^2}{|k|}\sum_o \Theta[as+o-p,\,a's+o-p] + \Sigma[a,a']")


@dataclass(frozen=True)
class PoolStep:
    """AvgPool: independent-offset average on both positions, for Σ and Θ."""

    layer: AvgPool
    role = "linear"
    spatial = True
    w2 = 1.0
    b2 = 0.0

    def plan(self, shape) -> PositionMap:
        spatial_output_shape(self.layer, shape)
        out, table, k, axes = _window_table(shape, self.layer.window_shape, self.layer.strides, self.layer.padding)
        return PositionMap(out, table, k, OP_INDEPENDENT, axes)

    def formula_text(self):
        return (r"\Sigma[a,a'] \leftarrow \frac{1}{|w|^2}\sum_{o,o'} \Sigma[as+o-p,\,a's+o'-p]",
                r"\Theta[a,a'] \leftarrow \frac{1}{|w|^2}\sum_{o,o'} \Theta[as+o-p,\,a's+o'-p]")


def _all_positions(shape):
    P = math.prod(shape)
    return np.arange(P, dtype=np.int64)[None, :], float(P)


class _ReadoutStep:
    """A readout: a map over all positions to one number per pair (no affine part)."""

    role = "readout"
    spatial = True
    w2 = 1.0
    b2 = 0.0
    op: int = OP_FLATTEN

    def plan(self, shape) -> PositionMap:
        table, P = _all_positions(shape)
        axes = tuple((n, np.arange(n, dtype=np.int64)[None, :]) for n in shape)
        return PositionMap((), table, P, self.op, axes)


@dataclass(frozen=True)
class FlattenStep(_ReadoutStep):
    """Flatten: the mean of the same-position entries (a same-offset sum over all positions)."""

    layer: Flatten
    op = OP_FLATTEN

    def formula_text(self):
        return (r"\Sigma \leftarrow \frac{1}{P}\sum_p \Sigma[p,p]", r"\Theta \leftarrow \frac{1}{P}\sum_p \Theta[p,p]")


@dataclass(frozen=True)
class GlobalAvgPoolStep(_ReadoutStep):
    """GlobalAvgPool: the mean over all position pairs."""

    layer: GlobalAvgPool
    op = OP_INDEPENDENT

    def formula_text(self):
        return (r"\Sigma \leftarrow \frac{1}{P^2}\sum_{p,p'} \Sigma[p,p']",
                r"\Theta \leftarrow \frac{1}{P^2}\sum_{p,p'} \Theta[p,p']")


_STEPS = {Conv: ConvStep, AvgPool: PoolStep, Flatten: FlattenStep, GlobalAvgPool: GlobalAvgPoolStep}


def compile_step(layer, tol: float):
    """The step of one layer (None for Identity, which compiles to nothing)."""
    if isinstance(layer, Identity):
        return None
    if isinstance(layer, Dense):
        return Affine(layer.w_std ** 2, layer.b_std ** 2, layer)  # finite: Dense bounds both by MAX_STD
    step = _STEPS.get(type(layer))
    if step is not None:
        return step(layer)
    if isinstance(layer, ActivationLayer):
        from .duals import resolve_dual

        return resolve_dual(layer, tol)
    raise TypeError(f"No compiled form for layer {layer!r} of type {type(layer).__name__}.")


def role_of(layer) -> str | None:
    """The architecture role of a layer (None for Identity)."""
    if isinstance(layer, Identity):
        return None
    if isinstance(layer, Dense):
        return "affine"
    step = _STEPS.get(type(layer))
    if step is not None:
        return step.role
    return "activation"
