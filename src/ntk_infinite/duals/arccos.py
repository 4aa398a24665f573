r"""Closed-form duals of positively homogeneous activations (the arc-cosine family).

For an activation that is positively homogeneous of degree n, φ(λx) = λⁿφ(x) for λ > 0,
the dual depends on the variances only through a power and on the angle
θ = arccos(c/√(q₁q₂)):

.. math::

    T = (q_1 q_2)^{n/2} F(\theta), \qquad \dot T = (q_1 q_2)^{(n-1)/2} G(\theta).

For ``RectifiedMonomial(n)`` (φ = max(x, 0)ⁿ; ReLU is n = 1) Cho & Saul (2009, eq. 4)
give F = J_n/(2π) with

.. math::

    J_n(\theta) = (-1)^n (\sin\theta)^{2n+1}
        \left(\frac{1}{\sin\theta}\frac{\partial}{\partial\theta}\right)^{n}
        \left(\frac{\pi-\theta}{\sin\theta}\right),

and G = n² J_{n-1}/(2π). Here J_n is *derived by sympy* from that formula, never typed in.

Numerics. The engine carries the normalised correlation ρ = cos θ together with
sin²θ computed without cancellation, so the generated code gets θ and ψ = π − θ to full
relative accuracy. The output correlation ρ' = F(θ)/F(0) and the quantities 1 − ρ' and
1 + ρ' (whose product is the next sin²θ) are evaluated from sympy's Taylor series near
θ = 0 (and near θ = π when F(π) = −F(0)), where the closed form would cancel, and from
the closed form elsewhere. Identical inputs therefore stay exactly at θ = 0 through any
depth.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ..codegen import cached_text, emit_assignments
from .base import Dual, PointResult

__all__ = ["HomogeneousDual", "cho_saul_J", "rectified_monomial_dual", "THETA"]

THETA = sp.Symbol("theta", real=True)
_S, _C, _PSI = sp.symbols("s co psi", real=True)
#: Below this angle (radians) the Taylor branches are used. There the closed form of
#: 1 - F(θ)/F(0) ~ θ² would lose log10(1/θ²) digits; above it the loss is at most 2.3
#: digits (relative error ~5e-14 of sin²θ', i.e. ~2e-15 absolute in θ').
SERIES_SWITCH = 0.1
#: Taylor order of the small-angle branches: the remainder at SERIES_SWITCH, relative to
#: the leading θ² term, is below 1e-17 (θ^11/11! / θ² at θ = 0.1).
SERIES_ORDER = 13


def cho_saul_J(n: int) -> sp.Expr:
    """J_n(θ) of Cho & Saul (2009), derived symbolically for any integer n >= 0."""
    if n < 0:
        raise ValueError(f"The arc-cosine order must be an integer >= 0; got {n}.")
    f = (sp.pi - THETA) / sp.sin(THETA)
    for _ in range(n):
        f = sp.diff(f, THETA) / sp.sin(THETA)
    return sp.simplify(sp.expand_trig(sp.simplify((-1) ** n * sp.sin(THETA) ** (2 * n + 1) * f)))


def _trig_to_symbols(expr: sp.Expr) -> sp.Expr:
    """Rewrite sin(θ), cos(θ) (after expanding multiple angles) as the symbols s, co."""
    expr = sp.expand_trig(expr)
    # π - θ is carried separately as ψ, accurate when θ is close to π.
    return expr.subs({sp.sin(THETA): _S, sp.cos(THETA): _C}).subs(sp.pi - THETA, _PSI)


def _series_poly(expr: sp.Expr, var: sp.Symbol, order: int) -> sp.Expr:
    """Taylor polynomial of ``expr`` at 0, with coefficients rounded to float64, in Horner form."""
    poly = sp.Poly(sp.series(expr, var, 0, order).removeO(), var)
    coeffs = [sp.Float(float(sp.N(c, 40)), 17) for c in poly.all_coeffs()]
    acc = sp.Integer(0)
    for c in coeffs:
        acc = acc * var + c
    return acc


class HomogeneousDual(Dual):
    r"""Dual of a positively homogeneous activation of degree ``degree`` from F(θ), G(θ).

    Parameters
    ----------
    F, G : sympy expressions in :data:`THETA`
        T = (q₁q₂)^{n/2} F(θ) and Ṫ = (q₁q₂)^{(n-1)/2} G(θ). ``G = 0`` encodes the Ṫ = 0
        convention of step-like activations.
    degree : int
    key : str
        Unique name of this dual's generated code.
    """

    route = "closed form (sympy)"

    def __init__(self, F: sp.Expr, G: sp.Expr, degree: int, key: str, layer=None):
        self.F = sp.sympify(F)
        self.G = sp.sympify(G)
        self.degree = int(degree)
        self.key = key
        self.layer = layer
        self.params = np.zeros(0)
        self.F0 = sp.nsimplify(sp.limit(self.F, THETA, 0))
        self.G0 = sp.limit(self.G, THETA, 0)
        self.Fpi = sp.limit(self.F, THETA, sp.pi)
        if self.F0 == 0:
            raise ValueError(f"Dual {key}: F(0) = 0, so the activation has zero output variance.")
        self._F0f = float(self.F0)
        self._G0f = float(self.G0)
        self._F_np = sp.lambdify(THETA, self.F, "numpy")
        self._G_np = sp.lambdify(THETA, self.G, "numpy")

    # ----- per-point pass -------------------------------------------------------------
    def point(self, q):
        n = self.degree
        q_out = q**n * self._F0f
        tdot = (q ** (n - 1) if n != 1 else np.ones_like(q)) * self._G0f
        if n < 1:
            tdot = np.where(q > 0, tdot, 0.0) if self._G0f != 0 else np.zeros_like(q)
        return PointResult(q_out, tdot)

    # ----- NumPy references -------------------------------------------------------------
    def _theta(self, q1, q2, c):
        q1, q2, c = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (q1, q2, c)))
        r = np.sqrt(q1 * q2)
        s = np.sqrt(np.maximum(q1 * q2 - c * c, 0.0))
        return np.arctan2(s, c), r

    def T(self, q1, q2, c):
        theta, r = self._theta(q1, q2, c)
        return r**self.degree * np.broadcast_to(self._F_np(theta), theta.shape)

    def Tdot(self, q1, q2, c):
        theta, r = self._theta(q1, q2, c)
        with np.errstate(divide="ignore"):
            scale = r ** (self.degree - 1) if self.degree != 1 else np.ones_like(r)
        return scale * np.broadcast_to(self._G_np(theta), theta.shape)

    def formula(self):
        q1, q2, c = sp.symbols("q_1 q_2 c", positive=True)
        theta = sp.acos(c / sp.sqrt(q1 * q2))
        n = self.degree
        T = (q1 * q2) ** sp.Rational(n, 2) * self.F.subs(THETA, theta)
        Td = (q1 * q2) ** sp.Rational(n - 1, 2) * self.G.subs(THETA, theta)
        return T, Td

    # ----- generated tile function --------------------------------------------------------
    def tile_source(self, name: str) -> str:
        key = f"homogeneous-tile|{self.key}|{sp.srepr(self.F)}|{sp.srepr(self.G)}|{self.degree}|{name}"
        return cached_text(key, lambda: self._generate(name))

    def _generate(self, name: str) -> str:
        F, F0 = self.F, self.F0
        ratio = sp.simplify(F / F0)
        om_series = _series_poly(sp.expand(1 - ratio), THETA, SERIES_ORDER)
        antipodal = sp.simplify(self.Fpi + F0) == 0
        n = self.degree
        ind = " " * 12
        lines = [
            "@nb.njit(**JIT_INLINE)",
            f"def {name}(rho, sn2, t, i0, j0, sqa, sqb, sqa_out, sqb_out, P1, P2, prm, want_ntk):",
            "    bi, bj = rho.shape",
            "    for a in range(bi):",
            "        sa = sqa[i0 + a]",
            "        for b in range(bj):",
            "            co = rho[a, b]",
            "            s = math.sqrt(sn2[a, b])",
            "            theta, psi = angle_pair(s, co)",
            "            if theta < SERIES_SWITCH:",
        ]
        lines += emit_assignments([("om", om_series)], ind + "    ", "_a")
        lines += [ind + "    rn = 1.0 - om", ind + "else:"]
        lines += emit_assignments([("rn", _trig_to_symbols(ratio))], ind + "    ", "_b")
        lines += [ind + "    om = 1.0 - rn"]
        if antipodal:
            op_series = _series_poly(sp.expand(1 + ratio.subs(THETA, sp.pi - _PSI)), _PSI, SERIES_ORDER)
            lines += [ind + "if psi < SERIES_SWITCH:"]
            lines += emit_assignments([("op", op_series)], ind + "    ", "_c")
            lines += [ind + "    rn = op - 1.0", ind + "else:", ind + "    op = 1.0 + rn"]
        else:
            lines += [ind + "op = 1.0 + rn"]
        lines += [ind + "rho[a, b] = rn", ind + "sn2[a, b] = om * op"]
        if self.G == 0:
            lines += [ind + "if want_ntk:", ind + "    t[a, b] = 0.0"]
        else:
            lines += [ind + "if want_ntk:"]
            lines += emit_assignments([("td", _trig_to_symbols(self.G))], ind + "    ", "_d")
            if n != 1:
                lines += [ind + f"    td = td * (sa * sqb[j0 + b]) ** {n - 1}"]
            lines += [ind + "    t[a, b] = t[a, b] * td"]
        return "\n".join(lines) + "\n"


def rectified_monomial_dual(n: int, layer=None) -> HomogeneousDual:
    """Dual of φ(x) = max(x, 0)ⁿ: T = (q₁q₂)^{n/2} J_n/(2π), Ṫ = n²(q₁q₂)^{(n-1)/2} J_{n-1}/(2π)."""

    def derive():
        F = cho_saul_J(n) / (2 * sp.pi)
        G = n**2 * cho_saul_J(n - 1) / (2 * sp.pi) if n >= 1 else sp.Integer(0)
        return sp.srepr((F, G))

    F, G = sp.sympify(eval(cached_text(f"cho-saul|{n}", derive), sp.__dict__))  # noqa: S307 - our own cache
    return HomogeneousDual(F, G, n, key=f"arccos{n}", layer=layer)
