r"""Signal propagation layer by layer through a dense architecture, and the depth at which the
NTK of distinct inputs degenerates.

**Layer by layer.** Two inputs with variance q and correlation c pass each layer as

.. math::

    \text{Dense}(\sigma_w, \sigma_b):\ q' = \sigma_w^2 q + \sigma_b^2,\ c' = \frac{\sigma_w^2 c q + \sigma_b^2}{q'};
    \qquad \varphi:\ q' = T(q, q, q),\ c' = \frac{T(q, q, c q)}{q'},

with slopes dc'/dc = σ_w² q/q' and q Ṫ(q, q, cq)/q' (Price's theorem). At the fixed point of a
repeated ``Dense > φ`` block the product of the two slopes at c = 1 is χ₁ (Schoenholz et al. 2017).

**NTK degeneracy.** With depth L the NTK Gram matrix of distinct inputs, normalised to unit
diagonal, tends to a matrix of rank one in the ordered phase (all correlations → 1) and to
(1 − c̄)I + c̄·11ᵀ in the chaotic phase (Xiao et al. 2020, "Disentangling trainability and
generalization in deep neural networks"); its condition number tracks how much information
about the inputs survives. :func:`ntk_condition` reports it depth by depth.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..compiler.duals import resolve_dual
from ..describe.layers import ActivationLayer, Architecture, Dense, serial
from ..describe.textform import parse_architecture
from ..errors import ArchitectureError, ParameterError, check_param
from .meanfield import _checked

__all__ = ["LayerwiseSignal", "layerwise", "NTKConditioning", "ntk_condition"]


@dataclasses.dataclass(frozen=True)
class LayerwiseSignal:
    """Variance, correlation and correlation-map slope after each layer.

    ``q[0]``, ``c[0]`` are the inputs; ``q[l + 1]``, ``c[l + 1]`` follow ``layers[l]``, whose
    correlation map has slope ``slope[l]`` at the input correlation and ``slope_at_1[l]`` at c = 1.
    """

    layers: tuple
    q: np.ndarray
    c: np.ndarray
    slope: np.ndarray
    slope_at_1: np.ndarray

    def __str__(self) -> str:
        lines = [f"{'layer':<34} {'q':>14} {'c':>14} {'dc/dc_in':>12} {'at c=1':>12}",
                 f"{'input':<34} {self.q[0]:>14.8g} {self.c[0]:>14.10f}"]
        for k, name in enumerate(self.layers):
            lines.append(f"{name[:34]:<34} {self.q[k + 1]:>14.8g} {self.c[k + 1]:>14.10f} "
                         f"{self.slope[k]:>12.8g} {self.slope_at_1[k]:>12.8g}")
        return "\n".join(lines)


def _architecture(arch) -> Architecture:
    if isinstance(arch, str):
        return parse_architecture(arch)
    arch = getattr(arch, "architecture", arch)  # a CompiledKernel
    if not isinstance(arch, Architecture):
        raise TypeError(f"layerwise expects an architecture (nk.serial(...), its text form, or a compiled kernel); "
                        f"got {type(arch).__name__}.")
    return arch


def layerwise(arch, q: float = 1.0, c: float = 0.5, *, tol: float = 1e-10) -> LayerwiseSignal:
    """Propagate a pair of inputs (variance ``q``, correlation ``c``) through a dense architecture.

    >>> import ntk_infinite as nk
    >>> s = nk.signal.layerwise("Dense(1.4142135623730951) > ReLU > Dense(1.4142135623730951)", q=1.0, c=0.0)
    >>> round(float(s.q[-1]), 12), round(float(s.c[-1]), 12)  # ReLU: T(q, q, 0)/T(q, q, q) = 1/π
    (2.0, 0.318309886184)
    """
    arch = _architecture(arch)
    q = check_param("layerwise", "q", q, low=0.0, low_open=True)
    c = check_param("layerwise", "c", c, low=-1.0, high=1.0)
    qs, cs, slopes, slopes1, names = [q], [c], [], [], []
    for layer in arch:
        if isinstance(layer, Dense):
            w2, b2 = layer.w_std ** 2, layer.b_std ** 2
            q_out = w2 * q + b2
            c_out, slope, slope1 = (w2 * c * q + b2) / q_out, w2 * q / q_out, w2 * q / q_out
        elif isinstance(layer, ActivationLayer):
            dual = resolve_dual(layer, tol)
            one = np.array([q])
            pr = dual.point(one)
            q_out = float(pr.q_out[0])
            if q_out <= 0.0:
                raise ParameterError(f"layerwise: {layer!r} maps variance {q:.6g} to {q_out:.6g}; the correlation "
                                     "after it is undefined. Give the Dense layer before it a bias (b_std > 0).")
            c_out = float(dual.T(one, one, np.array([c * q]))[0]) / q_out
            slope = q * float(dual.Tdot(one, one, np.array([c * q]))[0]) / q_out
            slope1 = q * float(pr.tdot[0]) / q_out
        else:
            raise ArchitectureError(f"layerwise covers dense architectures (Dense and activation layers); layer "
                                    f"{len(names)} is {layer!r}. Analyse its dense part, or use nk.signal.analyse "
                                    "for a repeated Dense > activation block.")
        q, c = q_out, min(max(c_out, -1.0), 1.0)
        qs.append(q)
        cs.append(c)
        slopes.append(slope)
        slopes1.append(slope1)
        names.append(repr(layer))
    return LayerwiseSignal(tuple(names), np.array(qs), np.array(cs), np.array(slopes), np.array(slopes1))


@dataclasses.dataclass(frozen=True)
class NTKConditioning:
    """Condition numbers of the unit-diagonal NTK and NNGP Gram matrices at each depth.

    ``degenerate_depth``: the first depth whose NTK condition number reaches ``threshold``
    (None if none does).
    """

    depths: np.ndarray
    ntk: np.ndarray
    nngp: np.ndarray
    threshold: float
    degenerate_depth: int | None


def _unit_diagonal_condition(K):
    d = np.sqrt(np.diag(K))
    eig = np.linalg.eigvalsh(K / np.outer(d, d))
    return float(eig[-1] / eig[0]) if eig[0] > 0.0 else np.inf


def ntk_condition(activation, sigma_w: float, sigma_b: float, X, depths=range(1, 33), *,
                  threshold: float = 1e8, tol: float = 1e-10) -> NTKConditioning:
    r"""Condition number of the normalised NTK (and NNGP) of ``X`` through L × (Dense > φ) > Dense.

    Each depth is one compiled kernel from the same duals as :func:`analyse`. ``threshold``
    defaults to 10⁸, where a float64 kernel solve keeps about half its digits.
    """
    w, b = _checked(activation, sigma_w, sigma_b, "ntk_condition")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2:
        raise ParameterError(f"ntk_condition expects X of shape (n, d) with n >= 2 distinct inputs; got shape "
                             f"{X.shape}.")
    depths = np.array(sorted({int(check_param("ntk_condition", "depth", L, low=1, integer=True)) for L in depths}))
    from ..kernel import compile as compile_kernel

    ntk, nngp = [], []
    for L in depths:
        arch = serial(*([Dense(w_std=w, b_std=b), activation] * int(L)), Dense(w_std=w, b_std=b))
        K = compile_kernel(arch, tol=tol)(X)
        ntk.append(_unit_diagonal_condition(K.ntk))
        nngp.append(_unit_diagonal_condition(K.nngp))
    ntk = np.array(ntk)
    hit = np.nonzero(ntk >= threshold)[0]
    return NTKConditioning(depths, ntk, np.array(nngp), float(threshold), int(depths[hit[0]]) if len(hit) else None)
