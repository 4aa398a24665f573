r"""Partial derivatives of the duals (T, Ṫ) for forward-mode kernel derivatives.

The forward-mode recursion of :mod:`ntk_infinite.evaluate.gradients` needs, for every activation
step and every pair of inputs, the partials of both maps with respect to their three
arguments (Lee et al. 2018, 2019 write the recursion; the chain rule is ours):

.. math::

    dT = \frac{\partial T}{\partial q_1} dq_1 + \frac{\partial T}{\partial q_2} dq_2
         + \frac{\partial T}{\partial c} dc, \qquad
    d\dot T = \frac{\partial \dot T}{\partial q_1} dq_1 + \frac{\partial \dot T}{\partial q_2} dq_2
         + \frac{\partial \dot T}{\partial c} dc,

and, per point, the derivative of the diagonal maps :math:`V(q) = T(q, q, q)` and
:math:`\dot V(q) = \dot T(q, q, q)`.

Two routes:

* **Closed form** (:class:`ClosedFormPartials`): the partials are derived by sympy from
  ``dual.formula()`` (expressions in ``q_1, q_2, c``), simplified once and cached on disk.
  Where the angle θ = arccos(c/√(q₁q₂)) is 0 or π, ∂θ/∂c = −1/(√(q₁q₂) sin θ) is singular
  (for ReLU ∂Ṫ/∂c = 1/(2π√(q₁q₂ − c²))). Such pairs stay on the boundary |ρ| = 1 for all
  nearby parameters (identical inputs, or parallel inputs without biases), so dρ = 0
  there and the derivative is that of the *restricted* map T(q₁, q₂, ±√(q₁q₂)). Identical
  inputs use the per-point recursion, dT = V'(q) dq.
* **Hermite series** (:class:`SeriesPartials`): with T = Σₖ aₖ(q₁)aₖ(q₂)ρᵏ (Mehler), the
  coefficients' derivatives follow from Gaussian integration by parts twice,

  .. math::

      \frac{d a_k}{d q} = \frac{\sqrt{(k+1)(k+2)}\, a_{k+2}(q) + k\, a_k(q)}{2q},

  valid for any φ with finite second moment (the identity
  z²hₖ − hₖ − z hₖ' = √((k+1)(k+2)) h_{k+2} + k hₖ for normalised Hermite polynomials), and
  the same for the coefficients bₖ of φ'. The per-point variance uses
  V'(q) = E[φ(√q z)²(z² − 1)]/(2q) by 1-D Gauss–Hermite quadrature.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..codegen import cached_text
from ...errors import ArchitectureError
from .base import Dual
from .series import SeriesDual, hermite_coefficients

__all__ = ["PairPartials", "PointPartials", "ClosedFormPartials", "SeriesPartials", "dual_partials"]

#: Variances at or below this are zero-variance points (their tangents vanish too).
_TINY_Q = 1e-300


@dataclass(frozen=True)
class PairPartials:
    """Values and partials of T and Ṫ on a block of pairs, each (n1, n2)."""

    T: np.ndarray
    T_q1: np.ndarray
    T_q2: np.ndarray
    T_c: np.ndarray
    Td: np.ndarray
    Td_q1: np.ndarray
    Td_q2: np.ndarray
    Td_c: np.ndarray


@dataclass(frozen=True)
class PointPartials:
    """Per-point V(q) = T(q,q,q), V'(q), Ṫ(q,q,q) and its derivative, each (n,)."""

    V: np.ndarray
    dV: np.ndarray
    Vd: np.ndarray
    dVd: np.ndarray


#: Partials evaluators per dual. Duals are immutable (they are shared between threads), so
#: the cache lives here; it holds no dual alive. A race builds an evaluator twice, harmlessly.
_PARTIALS: "weakref.WeakKeyDictionary[Dual, object]" = weakref.WeakKeyDictionary()
_PARTIALS_LOCK = threading.Lock()


def dual_partials(dual: Dual):
    """The partials evaluator for ``dual`` (cached per dual)."""
    with _PARTIALS_LOCK:
        cached = _PARTIALS.get(dual)
    if cached is not None:
        return cached
    if isinstance(dual, SeriesDual):
        result = SeriesPartials(dual)
    else:
        formula = dual.formula()
        if not _is_closed_form(formula):
            layer = getattr(dual, "layer", None)
            raise ArchitectureError(
                "Kernel gradients with respect to w_std and b_std need every activation's dual in closed form "
                f"or as a Hermite series; {layer!r} uses the {getattr(dual, 'route', '?')} route, whose "
                "derivatives are not implemented. Compute the log marginal likelihood without eval_gradient, "
                "or choose parameters by nk.select(..., criterion='loo'), which needs no gradient."
            )
        result = ClosedFormPartials(*formula)
    with _PARTIALS_LOCK:
        _PARTIALS[dual] = result
    return result


def _is_closed_form(formula) -> bool:
    try:
        T, Td = (sp.sympify(e) for e in formula)
    except Exception:
        return False
    bad = (sp.Sum, sp.Integral, sp.Derivative)
    for e in (T, Td):
        if e.has(*bad) or any(isinstance(f, sp.core.function.AppliedUndef) for f in e.atoms(sp.Function)):
            return False
        if not {s.name for s in e.free_symbols} <= {"q_1", "q_2", "c", "q1", "q2"}:
            return False
    return True


# ============================================================================ closed form
_NAMES = ("T", "Td")
_Q = sp.Symbol("q", positive=True)


def _symbols(exprs):
    found = {s.name: s for e in exprs for s in e.free_symbols}
    q1 = found.get("q_1", found.get("q1", sp.Symbol("q_1", positive=True)))
    q2 = found.get("q_2", found.get("q2", sp.Symbol("q_2", positive=True)))
    c = found.get("c", sp.Symbol("c", positive=True))
    return q1, q2, c


def _derive(T: sp.Expr, Td: sp.Expr) -> dict:
    """All partials needed, as simplified sympy expressions (see module docstring)."""
    q1, q2, c = _symbols((T, Td))
    r = sp.sqrt(q1 * q2)
    out = {}
    for name, e in zip(_NAMES, (T, Td)):
        for tag, v in (("q1", q1), ("q2", q2), ("c", c)):
            out[f"{name}_{tag}"] = sp.simplify(sp.diff(e, v))
        for tag, sign in (("p", 1), ("m", -1)):  # restricted to rho = +1 / -1
            er = sp.simplify(e.subs(c, sign * r))
            out[f"{name}{tag}_q1"] = sp.simplify(sp.diff(er, q1))
            out[f"{name}{tag}_q2"] = sp.simplify(sp.diff(er, q2))
        ed = sp.simplify(e.subs(c, r).subs({q1: _Q, q2: _Q}))
        out[f"{name}_diag"] = ed
        out[f"{name}_diag_q"] = sp.simplify(sp.diff(ed, _Q))
    return out


class ClosedFormPartials:
    r"""Partials of a closed-form dual, derived symbolically from its ``formula()``.

    Parameters
    ----------
    T, Td : sympy expressions in ``q_1``, ``q_2``, ``c``
        The dual maps, e.g. for ReLU
        :math:`T = \frac{\sqrt{q_1q_2}}{2\pi}(\sin\theta + (\pi-\theta)\cos\theta)`,
        :math:`\dot T = \frac{\pi-\theta}{2\pi}` (Cho & Saul 2009).
    """

    _LAMBDIFIED: dict = {}

    def __init__(self, T, Td):
        T, Td = sp.sympify(T), sp.sympify(Td)
        self.q1, self.q2, self.c = _symbols((T, Td))
        key = "dual-partials|v1|" + sp.srepr((T, Td))

        def produce():
            derived = _derive(T, Td)
            return sp.srepr(tuple(sorted(derived.items())))

        if key not in self._LAMBDIFIED:
            items = eval(cached_text(key, produce), sp.__dict__)  # noqa: S307 - our own cache
            self._LAMBDIFIED[key] = self._lambdify(dict(items))
        self.exprs, self.fns = self._LAMBDIFIED[key]
        self.T_expr, self.Td_expr = T, Td

    def _lambdify(self, exprs: dict):
        fns = {}
        for name, e in exprs.items():
            args = (_Q,) if name.endswith("_diag") or name.endswith("_diag_q") else (self.q1, self.q2, self.c)
            fns[name] = sp.lambdify(args, e, modules="numpy", cse=True)
        # values (only for the generic pairs; the engine's own NumPy references are used)
        return exprs, fns

    def _eval(self, name, shape, *args):
        with np.errstate(all="ignore"):
            value = self.fns[name](*args)
        return np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()

    def point(self, q: np.ndarray) -> PointPartials:
        """V, V', Ṫ and its derivative on the diagonal, per point."""
        q = np.asarray(q, dtype=np.float64)
        vals = [self._eval(n, q.shape, q) for n in ("T_diag", "T_diag_q", "Td_diag", "Td_diag_q")]
        zero = q <= _TINY_Q
        if zero.any():
            # A zero-variance point stays at zero variance (its tangent is zero); keep the
            # values finite there.
            vals = [np.where(zero, np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0), v) for v in vals]
        return PointPartials(*vals)

    def pair(self, dual: Dual, q1: np.ndarray, q2: np.ndarray, c: np.ndarray, same: np.ndarray) -> PairPartials:
        """Values and partials on a block of pairs.

        Parameters
        ----------
        dual : Dual
            Supplies the values T and Ṫ (its accurate NumPy references).
        q1 : (n1,) ; q2 : (n2,) ; c : (n1, n2)
        same : (n1, n2) bool
            Pairs of identical inputs (per-point recursion).
        """
        Q1, Q2 = q1[:, None], q2[None, :]
        shape = c.shape
        T = np.asarray(dual.T(Q1, Q2, c), dtype=np.float64)
        Td = np.asarray(dual.Tdot(Q1, Q2, c), dtype=np.float64)
        parts = {n: self._eval(n, shape, Q1, Q2, c) for n in ("T_q1", "T_q2", "T_c", "Td_q1", "Td_q2", "Td_c")}
        r = np.sqrt(Q1 * Q2)
        with np.errstate(all="ignore"):
            rho = np.where(r > 0, c / np.where(r > 0, r, 1.0), 0.0)
        zero = np.broadcast_to(r <= 0, shape)
        plus = (rho >= 1.0) & ~same & ~zero
        minus = (rho <= -1.0) & ~same & ~zero
        for tag, mask in (("p", plus), ("m", minus)):
            if mask.any():
                for name in _NAMES:
                    for v in ("q1", "q2"):
                        restricted = self._eval(f"{name}{tag}_{v}", shape, Q1, Q2, c)
                        parts[f"{name}_{v}"] = np.where(mask, restricted, parts[f"{name}_{v}"])
                    parts[f"{name}_c"] = np.where(mask, 0.0, parts[f"{name}_c"])
        if same.any():
            ii = np.nonzero(same)
            pp = self.point(q1[ii[0]])
            T[ii], Td[ii] = pp.V, pp.Vd
            parts["T_q1"][ii], parts["Td_q1"][ii] = pp.dV, pp.dVd
            for name in ("T_q2", "T_c", "Td_q2", "Td_c"):
                parts[name][ii] = 0.0
        if zero.any():
            # Zero-variance inputs keep zero variance and zero covariance for all parameters
            # (q = w²q + b² >= 0 and |c| <= √(q1 q2)), so only finite coefficients matter.
            for name in parts:
                parts[name] = np.where(zero & ~np.isfinite(parts[name]), 0.0, parts[name])
        return PairPartials(T, parts["T_q1"], parts["T_q2"], parts["T_c"], Td, parts["Td_q1"], parts["Td_q2"],
                            parts["Td_c"])


# ============================================================================ series
class SeriesPartials:
    r"""Partials of the Hermite-series dual (see the module docstring for the identities).

    With :math:`\rho = c/\sqrt{q_1 q_2}`:

    .. math::

        \frac{\partial T}{\partial q_1} = \sum_k a_k'(q_1) a_k(q_2)\rho^k
            - \frac{\rho}{2 q_1}\frac{\partial T}{\partial \rho}, \qquad
        \frac{\partial T}{\partial c} = \frac{1}{\sqrt{q_1 q_2}}\sum_k k\, a_k(q_1) a_k(q_2) \rho^{k-1},

    and the same for Ṫ with the coefficients bₖ of φ' (Mehler 1866; O'Donnell 2014, ch. 11).
    """

    def __init__(self, dual: SeriesDual):
        self.dual = dual
        self.layer = dual.layer

    def _terms(self, uq: np.ndarray) -> int:
        *_, K = self.dual._coefficients(uq)
        return int(K)

    def _coefficients(self, uq: np.ndarray, K: int):
        """a (K+1, m), a' (K, m), b (K, m), b' (K, m) at the unique variances ``uq``."""
        fn = self.layer.fn
        q = np.maximum(uq, 0.0)
        a, _ = hermite_coefficients(fn, q, K + 3)
        if self.dual._explicit_dfn:
            b, _ = hermite_coefficients(self.layer.dfn, q, K + 2, 2 * (K + 3) + 64)
        else:
            sq = np.sqrt(np.maximum(q, _TINY_Q))
            k = np.arange(1, K + 3)[:, None]
            b = np.sqrt(k) * a[1 : K + 3] / sq[None, :]
        zero = q <= _TINY_Q
        k = np.arange(K)[:, None]
        with np.errstate(all="ignore"):
            inv2q = np.where(zero, 0.0, 0.5 / np.where(zero, 1.0, q))
        da = (np.sqrt((k + 1.0) * (k + 2.0)) * a[2 : K + 2] + k * a[:K]) * inv2q
        db = (np.sqrt((k + 1.0) * (k + 2.0)) * b[2 : K + 2] + k * b[:K]) * inv2q
        if zero.any():
            a[:, zero] = 0.0
            a[0, zero] = fn(np.zeros(1))[0]
            b[:, zero] = 0.0
            b[0, zero] = self.layer.dfn(np.zeros(1))[0]
        return a[:K], da, b[:K], db

    def point(self, q: np.ndarray) -> PointPartials:
        q = np.asarray(q, dtype=np.float64)
        uq, inv = np.unique(q, return_inverse=True)
        K = self._terms(uq)
        _, _, b, db = self._coefficients(uq, K)
        fn = self.layer.fn
        qq = np.maximum(uq, 0.0)
        sq_coeffs, _ = hermite_coefficients(lambda x: fn(x) ** 2, qq, 3, 2 * (K + 1) + 64)
        second = sq_coeffs[0].copy()  # E[φ(√q z)²]
        zero = qq <= _TINY_Q
        with np.errstate(all="ignore"):
            dV = np.where(zero, 0.0, np.sqrt(2.0) * sq_coeffs[2] / (2.0 * np.where(zero, 1.0, qq)))
        if zero.any():
            second = np.where(zero, fn(np.zeros(1))[0] ** 2, second)
        Vd = np.sum(b * b, axis=0)
        dVd = 2.0 * np.sum(b * db, axis=0)
        return PointPartials(second[inv], dV[inv], Vd[inv], dVd[inv])

    def pair(self, dual: Dual, q1: np.ndarray, q2: np.ndarray, c: np.ndarray, same: np.ndarray) -> PairPartials:
        n1 = q1.shape[0]
        uq, inv = np.unique(np.concatenate([q1, q2]), return_inverse=True)
        K = self._terms(uq)
        a, da, b, db = self._coefficients(uq, K)
        i1, i2 = inv[:n1], inv[n1:]
        Q1, Q2 = q1[:, None], q2[None, :]
        r = np.sqrt(np.maximum(Q1, 0.0) * np.maximum(Q2, 0.0))
        zero = np.broadcast_to(r <= 0, c.shape)
        with np.errstate(all="ignore"):
            rho = np.clip(np.where(zero, 0.0, c / np.where(zero, 1.0, r)), -1.0, 1.0)
        edge = same | (np.abs(rho) >= 1.0) | zero  # dρ = 0 there
        rho = np.where(same, 1.0, rho)
        out = {}
        for name, A, dA in (("T", a, da), ("Td", b, db)):
            val = np.zeros(c.shape)
            d1 = np.zeros(c.shape)
            d2 = np.zeros(c.shape)
            drho = np.zeros(c.shape)
            power = np.ones(c.shape)
            prev = np.zeros(c.shape)  # rho^(k-1)
            for k in range(A.shape[0]):
                A1, A2 = A[k, i1][:, None], A[k, i2][None, :]
                val += A1 * A2 * power
                d1 += dA[k, i1][:, None] * A2 * power
                d2 += A1 * dA[k, i2][None, :] * power
                if k:
                    drho += k * A1 * A2 * prev
                prev = power
                power = power * rho
            drho = np.where(edge, 0.0, drho)
            with np.errstate(all="ignore"):
                inv_r = np.where(zero, 0.0, 1.0 / np.where(zero, 1.0, r))
                h1 = np.where(Q1 > _TINY_Q, rho / (2.0 * np.where(Q1 > _TINY_Q, Q1, 1.0)), 0.0)
                h2 = np.where(Q2 > _TINY_Q, rho / (2.0 * np.where(Q2 > _TINY_Q, Q2, 1.0)), 0.0)
            out[name] = val
            out[f"{name}_c"] = drho * inv_r
            out[f"{name}_q1"] = d1 - drho * h1
            out[f"{name}_q2"] = d2 - drho * h2
        if same.any():
            ii = np.nonzero(same)
            pp = self.point(q1[ii[0]])
            out["T"][ii], out["Td"][ii] = pp.V, pp.Vd
            out["T_q1"][ii], out["Td_q1"][ii] = pp.dV, pp.dVd
            for name in ("T_q2", "T_c", "Td_q2", "Td_c"):
                out[name][ii] = 0.0
        return PairPartials(out["T"], out["T_q1"], out["T_q2"], out["T_c"], out["Td"], out["Td_q1"], out["Td_q2"],
                            out["Td_c"])
