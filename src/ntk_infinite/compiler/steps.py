"""The compiled form of every non-activation layer, one step class per layer kind.

A step is what the evaluation needs of a layer: its place in the architecture rules
(``role``), its map of the spatial shape and its index table (``plan``), its per-point map
(``point``), and the text and LaTeX of its update (``formula_text``, ``formula_latex``; see
:class:`_Step`). Activation layers compile to
a :class:`~ntk_infinite.compiler.duals.base.Dual` instead, which plays the same part for
elementwise maps. :func:`compile_step` is the one place that maps a layer kind to its step,
so a new layer kind is one class here plus its description in :mod:`ntk_infinite.describe`.

Roles: ``"affine"`` (Dense, Conv: Gaussian pre-activations out), ``"linear"`` (AvgPool: a
fixed average, Gaussian in, Gaussian out), ``"readout"`` (Flatten, GlobalAvgPool: the
spatial state becomes one number per pair), ``"norm"`` (LayerNorm: a per-point rescaling),
``"fork"`` and ``"join"`` (the ends of parallel branches, laid out in data-flow order by
:mod:`ntk_infinite.compiler.structure`), and ``"activation"`` (duals).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..describe.branching import FAN_INS, FanOut, LayerNorm, Parallel
from ..describe.layers import ActivationLayer, Dense, Identity
from ..describe.spatial import AvgPool, Conv, Flatten, GlobalAvgPool, output_size, pad_low, spatial_output_shape
from .notation import X, XP, entry_latex, entry_text, eq_latex, eq_text, number, number_text, offset_set, sigma, theta, \
    window_where

__all__ = ["Affine", "ConvStep", "PoolStep", "FlattenStep", "GlobalAvgPoolStep", "LayerNormStep", "ForkStep",
           "JoinStep", "compile_step", "PositionMap", "role_of", "is_trainable", "FAN_IN_DATA"]

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


class _Step:
    """What every step shares: its compiled form from its layer, whether it has trainable
    ``w_std``/``b_std`` (the parameters :mod:`ntk_infinite.evaluate.gradients` differentiates), and
    the formula contract: ``formula_text(index, spatial)`` and ``formula_latex(index, spatial)``
    give the (Σ, Θ) lines that define layer ``index`` from layer ``index − 1`` (``spatial``: the
    incoming state is per position pair), ``formula_where()`` the geometry in words, and
    ``formula_eqs`` the lines as sympy equations where they are scalar recursions (else None)."""

    trainable = False

    @classmethod
    def from_layer(cls, layer):
        return cls(layer)

    @property
    def route(self) -> str:
        return self.role

    def formula_eqs(self, index: int = 1, spatial: bool = False):
        return None

    def formula_where(self) -> str:
        return ""


class _WindowStep(_Step):
    """A window map (Conv, AvgPool): its text and LaTeX lines come from one ``_lines(index)``."""

    def formula_text(self, index: int = 1, spatial: bool = True):
        return self._lines(index)[0]

    def formula_latex(self, index: int = 1, spatial: bool = True):
        return self._lines(index)[1]


@dataclass(frozen=True)
class Affine(_Step):
    r"""A Dense layer: :math:`\Sigma \leftarrow \sigma_w^2\Sigma + \sigma_b^2`,
    :math:`\Theta \leftarrow \sigma_w^2\Theta + \Sigma` (Jacot et al. 2018; Lee et al. 2019)."""

    w2: float
    b2: float
    layer: Dense | None = None
    #: Standard parameterisation only: the layer's fan-in n_in (FAN_IN_DATA: the data's
    #: feature count, known at evaluation); 0 in NTK parameterisation.
    fan_in: int = 0
    role = "affine"
    spatial = False
    trainable = True

    @classmethod
    def from_layer(cls, layer, fan_in: int = 0):
        # finite: Dense bounds both by MAX_STD
        return cls(layer.w_std ** 2, layer.b_std ** 2, layer, fan_in if _standard(layer) else 0)

    @property
    def standard(self) -> bool:
        return self.layer is not None and _standard(self.layer)

    def ntk_terms(self, n_features: int):
        """(g_w, g_b) of the NTK update Θ ← σw²Θ + g_w Σ_in + g_b: (σw², σb²) in NTK
        parameterisation (then g_w Σ_in + g_b is the new Σ), (n_in, [σb > 0]) in standard
        parameterisation (neural-tangents' ``parameterization="standard"``)."""
        if not self.standard:
            return self.w2, self.b2
        n_in = n_features if self.fan_in == FAN_IN_DATA else self.fan_in
        return float(n_in), 1.0 if self.b2 > 0.0 else 0.0

    @property
    def w_std(self) -> float:
        return self.layer.w_std if self.layer is not None else math.sqrt(self.w2)

    @property
    def b_std(self) -> float:
        return self.layer.b_std if self.layer is not None else math.sqrt(self.b2)

    def formula_eqs(self, index: int = 1, spatial: bool = False):
        """Σ_l = σw² Σ_{l−1} + σb², Θ_l = σw² Θ_{l−1} + Σ_l (a Dense layer sees a scalar state);
        in standard parameterisation Θ_l = n_in Σ_{l−1} + σw² Θ_{l−1} + [σb > 0]."""
        S, Th, S1, Th1 = sigma(index - 1), theta(index - 1), sigma(index), theta(index)
        w2, b2 = number(self.w2), number(self.b2)
        if self.standard:
            n_in = sp.Symbol("d") if self.fan_in == FAN_IN_DATA else sp.Integer(self.fan_in)
            bias = sp.Integer(1 if self.b2 > 0.0 else 0)
            return (sp.Eq(S1(X, XP), w2 * S(X, XP) + b2), sp.Eq(Th1(X, XP), n_in * S(X, XP) + w2 * Th(X, XP) + bias))
        return (sp.Eq(S1(X, XP), w2 * S(X, XP) + b2), sp.Eq(Th1(X, XP), w2 * Th(X, XP) + S1(X, XP)))

    def formula_text(self, index: int = 1, spatial: bool = False):
        return tuple(eq_text(eq) for eq in self.formula_eqs(index, spatial))

    def formula_latex(self, index: int = 1, spatial: bool = False):
        return tuple(eq_latex(eq) for eq in self.formula_eqs(index, spatial))


#: ``Affine.fan_in`` of a standard-parameterisation layer that reads the data (its fan-in is
#: the input's feature count, known only at evaluation).
FAN_IN_DATA = -1


def _standard(layer) -> bool:
    return getattr(layer, "parameterization", "ntk") == "standard"


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


#: Separator of the two (long) source indices of a window map in LaTeX.
_THIN_COMMA = r",\,"


def _window_lines(index, head_text, head_latex, window, paired, theta_adds):
    """The (text, LaTeX) line pairs of a window map: Conv (same offset o on both positions,
    ``paired``) or AvgPool (independent offsets o, o'); ``head_*`` is the factor before the sum."""
    src_text = ["s*p + o - p_lo", "s*p' + o - p_lo" if paired else "s*p' + o' - p_lo"]
    src_latex = [r"s p + o - p_{\mathrm{lo}}", r"s p' + o - p_{\mathrm{lo}}" if paired else r"s p' + o' - p_{\mathrm{lo}}"]
    out = ["p", "p'"]
    over_text = f"o in {offset_set(window)}" if paired else f"o, o' in {offset_set(window)}"
    over_latex = (rf"o \in {offset_set(window, True)}" if paired else rf"o, o' \in {offset_set(window, True)}")
    S0, T0, S1, T1 = sigma(index - 1), theta(index - 1), sigma(index), theta(index)
    text, latex = [], []
    for new, old, add in ((S1, S0, theta_adds[0]), (T1, T0, theta_adds[1])):
        text.append(f"{entry_text(new, out)} = {head_text} * sum_{{{over_text}}} {entry_text(old, src_text)}"
                    + (f" + {add[0]}" if add else ""))
        latex.append(f"{entry_latex(new, out)} &= {head_latex} \\sum_{{{over_latex}}} "
                     f"{entry_latex(old, src_latex, sep=_THIN_COMMA)}"
                     + (f" + {add[1]}" if add else ""))
    return tuple(text), tuple(latex)


@dataclass(frozen=True)
class ConvStep(_WindowStep):
    r"""Conv: same-offset sum of the position pairs, then the affine map (docs/DESIGN.md; Novak
    et al. 2019; Arora et al. 2019),

    .. math::

        \Sigma_l(x, x')_{p,p'} = \frac{\sigma_w^2}{|k|}\sum_{o} \Sigma_{l-1}(x, x')_{sp+o-p_{lo},\,sp'+o-p_{lo}}
            + \sigma_b^2, \qquad
        \Theta_l(x, x')_{p,p'} = \frac{\sigma_w^2}{|k|}\sum_{o} \Theta_{l-1}(x, x')_{sp+o-p_{lo},\,sp'+o-p_{lo}}
            + \Sigma_l(x, x')_{p,p'}.
    """

    layer: Conv
    #: Standard parameterisation only: C_in (FAN_IN_DATA: the data's channels); 0 otherwise.
    fan_in: int = 0
    role = "affine"
    spatial = True
    trainable = True

    @property
    def w2(self):
        return self.layer.w_std ** 2

    @property
    def b2(self):
        return self.layer.b_std ** 2

    @property
    def w_std(self) -> float:
        return self.layer.w_std

    @property
    def b_std(self) -> float:
        return self.layer.b_std

    def plan(self, shape) -> PositionMap:
        spatial_output_shape(self.layer, shape)  # raises for mismatched axes or an empty output
        out, table, k, axes = _window_table(shape, self.layer.filter_shape, self.layer.strides, self.layer.padding)
        return PositionMap(out, table, k, OP_SAME_OFFSET, axes)

    def _lines(self, index):
        k = math.prod(self.layer.filter_shape)
        w2 = number(self.w2)
        b2 = None if self.b2 == 0 else (number_text(self.b2), sp.latex(number(self.b2)))
        S1 = sigma(index)
        add = (entry_text(S1, ["p", "p'"]), entry_latex(S1, ["p", "p'"]))
        return _window_lines(index, f"{number_text(self.w2)}/{k}", rf"\frac{{{sp.latex(w2)}}}{{{k}}}",
                             self.layer.filter_shape, True, (b2, add))

    def formula_where(self) -> str:
        return window_where("filter", "k", self.layer.filter_shape, self.layer.strides, self.layer.padding)


@dataclass(frozen=True)
class PoolStep(_WindowStep):
    r"""AvgPool: independent-offset average on both positions, for Σ and Θ alike (Novak et al. 2019),

    .. math::

        \Sigma_l(x, x')_{p,p'} = \frac{1}{|w|^2}\sum_{o,o'} \Sigma_{l-1}(x, x')_{sp+o-p_{lo},\,sp'+o'-p_{lo}}.
    """

    layer: AvgPool
    role = "linear"
    spatial = True
    w2 = 1.0
    b2 = 0.0

    def plan(self, shape) -> PositionMap:
        spatial_output_shape(self.layer, shape)
        out, table, k, axes = _window_table(shape, self.layer.window_shape, self.layer.strides, self.layer.padding)
        return PositionMap(out, table, k, OP_INDEPENDENT, axes)

    def _lines(self, index):
        k = math.prod(self.layer.window_shape)
        return _window_lines(index, f"1/{k}^2", rf"\frac{{1}}{{{k}^2}}", self.layer.window_shape, False, (None, None))

    def formula_where(self) -> str:
        return window_where("window", "w", self.layer.window_shape, self.layer.strides, self.layer.padding)


def _all_positions(shape):
    P = math.prod(shape)
    return np.arange(P, dtype=np.int64)[None, :], float(P)


class _ReadoutStep(_Step):
    """A readout: a map over all positions to one number per pair (no affine part). ``_pairs``:
    the summed position pairs (text, LaTeX) and ``_power`` the power of P in the divisor."""

    role = "readout"
    spatial = True
    w2 = 1.0
    b2 = 0.0
    op: int = OP_FLATTEN
    _pairs = ("p", "p")
    _power = 1

    def plan(self, shape) -> PositionMap:
        table, P = _all_positions(shape)
        axes = tuple((n, np.arange(n, dtype=np.int64)[None, :]) for n in shape)
        return PositionMap((), table, P, self.op, axes)

    def _lines(self, index):
        i, j = self._pairs
        over = "p" if i == j else f"{i}, {j}"
        div = "P" if self._power == 1 else f"P^{self._power}"
        text, latex = [], []
        for new, old in ((sigma(index), sigma(index - 1)), (theta(index), theta(index - 1))):
            text.append(f"{entry_text(new)} = 1/{div} * sum_{{{over}}} {entry_text(old, [i, j])}")
            latex.append(f"{entry_latex(new)} &= \\frac{{1}}{{{div}}} \\sum_{{{over}}} {entry_latex(old, [i, j])}")
        return tuple(text), tuple(latex)

    def formula_text(self, index: int = 1, spatial: bool = True):
        return self._lines(index)[0]

    def formula_latex(self, index: int = 1, spatial: bool = True):
        return self._lines(index)[1]

    def formula_where(self) -> str:
        return "P = number of positions of the incoming state"


@dataclass(frozen=True)
class FlattenStep(_ReadoutStep):
    r"""Flatten: the mean of the same-position entries, :math:`\frac1P\sum_p K_{p,p}` (a same-offset sum
    over all positions; Novak et al. 2019's CNN-GP without pooling)."""

    layer: Flatten
    op = OP_FLATTEN
    _pairs = ("p", "p")
    _power = 1


@dataclass(frozen=True)
class GlobalAvgPoolStep(_ReadoutStep):
    r"""GlobalAvgPool: the mean over all position pairs, :math:`\frac1{P^2}\sum_{p,p'} K_{p,p'}`
    (Arora et al. 2019's CNTK-GAP)."""

    layer: GlobalAvgPool
    op = OP_INDEPENDENT
    _pairs = ("p", "p'")
    _power = 2


@dataclass(frozen=True)
class LayerNormStep(_Step):
    r"""LayerNorm over the channels: :math:`K(x, x') \leftarrow K(x, x')/\sqrt{(q(x)+\epsilon)(q(x')+\epsilon)}`
    for Σ and Θ (per position pair in a spatial network; neural-tangents' ``LayerNorm(axis=-1)``).
    The correlation of every pair is unchanged: only the per-point scales move."""

    layer: LayerNorm
    role = "norm"
    spatial = False

    @property
    def eps(self) -> float:
        return self.layer.eps

    def formula_eqs(self, index: int = 1, spatial: bool = False):
        """Σ_l = Σ_{l−1}/√((Σ_{l−1}(x,x) + ε)(Σ_{l−1}(x',x') + ε)), Θ_l alike (a dense state)."""
        if spatial:
            return None
        S, Th, S1, Th1 = sigma(index - 1), theta(index - 1), sigma(index), theta(index)
        eps = number(self.eps)
        scale = sp.sqrt((S(X, X) + eps) * (S(XP, XP) + eps))
        return (sp.Eq(S1(X, XP), S(X, XP) / scale), sp.Eq(Th1(X, XP), Th(X, XP) / scale))

    def formula_text(self, index: int = 1, spatial: bool = False):
        eqs = self.formula_eqs(index, spatial)
        if eqs is not None:
            return tuple(eq_text(eq) for eq in eqs)
        eps = number_text(self.eps)
        lines = []
        for f in (sigma, theta):
            new, old = entry_text(f(index), ["p", "p'"]), entry_text(f(index - 1), ["p", "p'"])
            q1, q2 = (entry_text(sigma(index - 1), [p, p], args) for p, args in (("p", (X, X)), ("p'", (XP, XP))))
            lines.append(f"{new} = {old} / sqrt(({q1} + {eps}) * ({q2} + {eps}))")
        return tuple(lines)

    def formula_latex(self, index: int = 1, spatial: bool = False):
        eqs = self.formula_eqs(index, spatial)
        if eqs is not None:
            return tuple(eq_latex(eq) for eq in eqs)
        return tuple(line.replace("*", r"\,") for line in self.formula_text(index, spatial))


@dataclass(frozen=True)
class ForkStep(_Step):
    """FanOut: the state is copied into ``num`` branches (nesting ``level``, from 0)."""

    level: int
    num: int
    role = "fork"
    spatial = False


@dataclass(frozen=True)
class JoinStep(_Step):
    r"""The end of branch ``branch`` of the fork at ``level``: its state joins the running sum,
    :math:`\Sigma = \sum_i w_i \Sigma_i`, :math:`\Theta = \sum_i w_i \Theta_i` (FanInSum: w_i = 1;
    FanInConcat: the channel share :math:`n_i/\sum_j n_j`); then the next branch starts from the
    fork's state, or after the last one the sum is the state."""

    level: int
    branch: int
    num: int
    mode: str  # "sum" or "concat"
    weight: float = 1.0
    role = "join"
    spatial = False

    @property
    def last(self) -> bool:
        return self.branch == self.num - 1


#: The step class of each non-activation layer kind (subclasses of a kind find it by their MRO).
_STEPS = {Dense: Affine, Conv: ConvStep, AvgPool: PoolStep, Flatten: FlattenStep, GlobalAvgPool: GlobalAvgPoolStep,
          LayerNorm: LayerNormStep}


def _step_class(layer):
    for cls in type(layer).__mro__:
        step = _STEPS.get(cls)
        if step is not None:
            return step
    return None


def compile_step(layer, tol: float):
    """The step of one layer (None for Identity, which compiles to nothing)."""
    if isinstance(layer, Identity):
        return None
    step = _step_class(layer)
    if step is not None:
        return step.from_layer(layer)
    if isinstance(layer, ActivationLayer):
        from .duals import resolve_dual

        return resolve_dual(layer, tol)
    raise TypeError(f"No compiled form for layer {layer!r} of type {type(layer).__name__}.")


def role_of(layer) -> str | None:
    """The architecture role of a layer (None for Identity; "branch" for FanOut, parallel
    blocks and fan-ins, which :mod:`ntk_infinite.compiler.structure` lays out)."""
    if isinstance(layer, Identity):
        return None
    if isinstance(layer, (FanOut, Parallel) + FAN_INS):
        return "branch"
    step = _step_class(layer)
    return "activation" if step is None else step.role


def is_trainable(layer) -> bool:
    """True when the layer's step has trainable ``w_std`` and ``b_std`` (Dense and Conv)."""
    step = _step_class(layer)
    return bool(step is not None and step.trainable)
