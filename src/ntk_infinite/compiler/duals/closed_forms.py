r"""Closed-form duals derived by sympy, generated into Numba tile functions.

Families (parameters are read at run time from the tile's ``prm`` vector, so every
activation of a family shares one generated tile):

=============  ======================================  =========================================
family         φ(x)                                    derivation (:mod:`.gaussian`)
=============  ======================================  =========================================
``erf``        a·erf(bx) + c                           Price's theorem, once (Williams 1997)
``gelu``       x Φ(x)                                  Price's theorem, twice
``sinusoid``   α sin(bx) + β cos(bx)                   Gaussian characteristic function
``exp``        a·exp(bx)                               Gaussian moment generating function
``gauss``      a·exp(bx²)                              Gaussian moment generating function
=============  ======================================  =========================================

``Sin``, ``Cos`` and ``RBF`` are sinusoids; ``Polynomial`` and ``Monomial`` use exact
Gaussian moments (:class:`PolynomialDual`, Isserlis/Wick) evaluated by the Hermite-series
tile. A user's sympy expression in one of these classes also gets a closed form
(:func:`closed_form_dual_from_expression`).

Numerics of the generated tile. T and Ṫ are written in the engine's stable variables
(D = q₁q₂ sin²θ, δ∓ = q₁ + q₂ ∓ 2c), so T itself has no cancellation near ρ = ±1. The next
layer also needs 1 − ρ' (and 1 + ρ') to *relative* accuracy when ρ' → 1. With
r = √(q₁q₂), s₁s₂ = √(T₁₁T₂₂) and P = T(q₁, q₂, r) (perfectly correlated inputs):

.. math::

    1 - \rho' = \frac{(s_1 s_2 - P) + \int_c^{r} \dot T(q_1, q_2, c')\, dc'}{s_1 s_2},

because ∂T/∂c = Ṫ (Price 1958). The integral runs over an interval of length r(1 − ρ)
(computed without cancellation) and is evaluated by 8-point Gauss–Legendre. The gap
s₁s₂ − P ≥ 0 (Cauchy–Schwarz) vanishes exactly for equal variances; for nearly equal ones,
scales m ∓ ε, it is s₁s₂(h₂(m)ε² + O(ε⁴)) with h₂ derived by sympy, since the difference
itself would cancel. For odd (even) φ the same is done
around ρ = −1, where T(q₁, q₂, −r) = ∓P. Identical inputs therefore give ρ' = 1 exactly.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import sympy as sp

from ..codegen import cached_text, emit_assignments
from ...errors import ParameterError
from .base import Dual, PointResult
from .gaussian import C, D, DM, DP, Q1, Q2, X, NotClosedForm, collect_exponentials, price_dual, stabilize

__all__ = [
    "Family",
    "FAMILIES",
    "ClosedFormDual",
    "closed_form_dual",
    "closed_form_dual_from_expression",
    "NotClosedForm",
]

#: Below this 1 − |ρ| the Price-integral branch computes 1 ∓ ρ' (see the module docstring).
PRICE_SWITCH = 1e-2
#: Below this |√q₁ − √q₂|/(√q₁ + √q₂) the gap s₁s₂ − P comes from its series h₂ε² (relative
#: truncation error ~1e-8), above it from the difference (relative error ~1e-16/ε² <= 1e-8).
GAP_SWITCH = 1e-4
_GL_X, _GL_W = np.polynomial.legendre.leggauss(8)
_GL_X = 0.5 * (_GL_X + 1.0)
_GL_W = 0.5 * _GL_W

_P = sp.symbols("p0:8", real=True)


class Family:
    """A parametrised activation φ(x; p0, p1, ...) whose dual has a closed form."""

    def __init__(self, name: str, n_params: int, phi: sp.Expr, description: str = ""):
        self.name = name
        self.params = _P[:n_params]
        self.phi = sp.sympify(phi)
        self.description = description

    def __repr__(self):
        return f"Family({self.name!r}, {self.phi})"


a_, b_, c_ = _P[0], _P[1], _P[2]
FAMILIES = {
    "erf": Family("erf", 3, a_ * sp.erf(b_ * X) + c_, "a·erf(bx) + c"),
    "gelu": Family("gelu", 0, X * (1 + sp.erf(X / sp.sqrt(2))) / 2, "x·Φ(x)"),
    "sinusoid": Family("sinusoid", 3, a_ * sp.sin(c_ * X) + b_ * sp.cos(c_ * X), "α sin(bx) + β cos(bx)"),
    "exp": Family("exp", 2, a_ * sp.exp(b_ * X), "a·exp(bx)"),
    "gauss": Family("gauss", 2, a_ * sp.exp(b_ * X**2), "a·exp(bx²)"),
}


# ------------------------------------------------------------------------- derivation
def _derive_one(phi: sp.Expr):
    T, defs = price_dual(phi)
    if T.has(sp.exp):
        T = collect_exponentials(T)
    return stabilize(T, defs)


#: Half-sum of the output scales of a pair, symbol of the gap coefficient (see _gap_coefficient).
GAP_M = sp.Symbol("gm", positive=True)


def _gap_coefficient(T, defs):
    r"""h₂(m) with 1 − P(m−ε, m+ε)/√(P(m−ε, m−ε)P(m+ε, m+ε)) = h₂(m)ε² + O(ε⁴), where
    P(a, b) = T(a², b², ab) is the dual of perfectly correlated inputs of scales a, b."""
    e = sp.Symbol("epsilon", positive=True)
    expr = T
    for w, d in defs:
        expr = expr.subs(w, d)

    def P(a, b):
        return expr.subs({D: 0, DM: (a - b) ** 2, DP: (a + b) ** 2}).subs({Q1: a**2, Q2: b**2, C: a * b})

    a, b = GAP_M - e, GAP_M + e
    h = 1 - P(a, b) / sp.sqrt(P(a, a) * P(b, b))
    return sp.simplify(sp.diff(h, e, 2).subs(e, 0) / 2)


@lru_cache(maxsize=64)
def derived(family_key: str, phi_srepr: str):
    """Stabilised (T, T-defs, Ṫ, Ṫ-defs, h₂) of φ, derived once and cached on disk."""

    def produce():
        phi = sp.sympify(eval(phi_srepr, sp.__dict__))  # noqa: S307 - our own srepr
        T, Tdefs = _derive_one(phi)
        Td, Tddefs = _derive_one(sp.diff(phi, X))
        return sp.srepr((T, tuple(Tdefs), Td, tuple(Tddefs), _gap_coefficient(T, Tdefs)))

    text = cached_text(f"closed-form|{family_key}|{phi_srepr}", produce)
    T, Tdefs, Td, Tddefs, h2 = eval(text, sp.__dict__)  # noqa: S307 - our own cache
    return T, list(Tdefs), Td, list(Tddefs), h2


def _parity(phi: sp.Expr) -> float:
    """-1 for odd φ, +1 for even φ, 0 otherwise (numeric parameters substituted)."""
    if sp.simplify(phi.subs(X, -X) + phi) == 0:
        return -1.0
    if sp.simplify(phi.subs(X, -X) - phi) == 0:
        return 1.0
    return 0.0


# ------------------------------------------------------------------------- the dual
class ClosedFormDual(Dual):
    r"""Dual of a closed-form family member (see the module docstring).

    Parameters
    ----------
    family : Family
    values : sequence of float
        The family's parameter values.
    layer : the activation layer (for messages).
    """

    route = "closed form (sympy)"

    def __init__(self, family: Family, values=(), layer=None, key: str | None = None):
        self.family = family
        self.values = tuple(float(v) for v in values)
        if len(self.values) != len(family.params):
            raise ValueError(f"{family.name} takes {len(family.params)} parameters, got {len(self.values)}")
        self.layer = layer
        self.key = key or f"cf_{family.name}"
        self.T_expr, self.T_defs, self.Td_expr, self.Td_defs, self.gap_h2 = derived(self.key, sp.srepr(family.phi))
        self.phi = family.phi.subs(dict(zip(family.params, self.values)))
        self.parity = _parity(self.phi)
        self.params = np.array(self.values + (self.parity,))
        self._T_np = self._lambdify(self.T_expr, self.T_defs)
        self._Td_np = self._lambdify(self.Td_expr, self.Td_defs)

    def __repr__(self):
        return f"ClosedFormDual({self.family.name}, {self.values})"

    # ----- NumPy evaluation --------------------------------------------------------------
    def _lambdify(self, expr, defs):
        args = (Q1, Q2, C, D, DM, DP) + tuple(self.family.params)
        fdefs = [(w, sp.lambdify(args, e, "numpy")) for w, e in defs]
        f = sp.lambdify(args + tuple(w for w, _ in defs), expr, "numpy")

        def evaluate(q1, q2, c, Dv, dm, dp):
            vals = (q1, q2, c, Dv, dm, dp) + self.values
            with np.errstate(all="ignore"):
                ws = [g(*vals) for _, g in fdefs]
                return np.broadcast_to(f(*vals, *ws), np.broadcast(q1, q2, c).shape).astype(np.float64)

        return evaluate

    @staticmethod
    def _state(q1, q2, c):
        q1, q2, c = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (q1, q2, c)))
        r = np.sqrt(q1 * q2)
        c = np.clip(c, -r, r)
        Dv = np.maximum(q1 * q2 - c * c, 0.0)
        return q1, q2, c, Dv, np.maximum(q1 + q2 - 2 * c, 0.0), np.maximum(q1 + q2 + 2 * c, 0.0)

    def T(self, q1, q2, c):
        return self._T_np(*self._state(q1, q2, c))

    def Tdot(self, q1, q2, c):
        return self._Td_np(*self._state(q1, q2, c))

    def point(self, q):
        q = np.asarray(q, dtype=np.float64)
        zero = np.zeros_like(q)
        q_out = self._T_np(q, q, q, zero, zero, 4.0 * q)
        tdot = self._Td_np(q, q, q, zero, zero, 4.0 * q)
        if not (np.isfinite(q_out).all() and np.isfinite(tdot).all()):
            bad = float(q[~(np.isfinite(q_out) & np.isfinite(tdot))][0])
            raise ParameterError(
                f"The output variance of {self.layer!r} is infinite or overflows float64 at the input "
                f"variance q = {bad:.4g} (E[φ(u)²] with u ~ N(0, q) diverges or exceeds 1e308). Reduce the "
                "activation's parameters or the w_std/b_std of the Dense layer before it."
            )
        return PointResult(q_out, tdot)

    def formula(self):
        """(T, Ṫ) in the positive symbols q_1, q_2, c with the parameter values substituted."""
        q1, q2, c = sp.symbols("q_1 q_2 c", positive=True)
        back = {Q1: q1, Q2: q2, C: c, D: q1 * q2 - c**2, DM: q1 + q2 - 2 * c, DP: q1 + q2 + 2 * c}
        values = {p: sp.Float(v) if not float(v).is_integer() else sp.Integer(int(v))
                  for p, v in zip(self.family.params, self.values)}

        def build(expr, defs):
            expr = expr.subs({w: e for w, e in defs})
            return expr.subs(back).subs(values)

        return build(self.T_expr, self.T_defs), build(self.Td_expr, self.Td_defs)

    # ----- generated tile function --------------------------------------------------------
    def tile_source(self, name: str) -> str:
        key = f"closed-form-tile|{self.key}|{sp.srepr(self.family.phi)}|{name}"
        return cached_text(key, lambda: _generate(self, name))


class _SqrtNonneg(sp.Function):
    """√x printed as ``math.sqrt``: keeps sympy from merging it back into a half power."""

    def _pythoncode(self, printer):
        return f"math.sqrt({printer._print(self.args[0])})"


class _AtanVector(sp.Function):
    """arctan printed as the branch-free :func:`ntk_infinite.evaluate._numerics.atan_any`."""

    def _pythoncode(self, printer):
        return f"atan_any({printer._print(self.args[0])})"


def _vectorisable(expr: sp.Expr) -> sp.Expr:
    """``expr`` with only operations LLVM vectorises without a vector math library.

    x**(p/2) (a ``pow`` call) becomes x**((p−1)/2)·√x, or x**((p+1)/2)/√x for p < 0 (so no
    intermediate power overflows before the original does; integer powers are
    multiplications, √x an instruction), and ``atan`` the polynomial :func:`atan_any`.
    """

    def half_power(e):
        return e.is_Pow and e.exp.is_Rational and e.exp.q == 2

    def split(e):
        p = e.exp.p
        return e.base ** ((p - 1) // 2) * _SqrtNonneg(e.base) if p > 0 else e.base ** ((p + 1) // 2) / _SqrtNonneg(e.base)

    expr = expr.replace(half_power, split)
    return expr.replace(sp.atan, _AtanVector)


def _helper_sources(dual, name: str, plist: str) -> list:
    """Source lines of the tile's helpers: the Gauss–Legendre nodes of the Price integral, T
    and Ṫ as functions of the stable variables, and the gap of perfectly correlated inputs."""
    out = [f"_GX_{name} = np.array({list(map(float, _GL_X))!r})", f"_GW_{name} = np.array({list(map(float, _GL_W))!r})", ""]
    for fname, expr, defs in ((f"{name}_T", dual.T_expr, dual.T_defs), (f"{name}_Td", dual.Td_expr, dual.Td_defs)):
        out += ["@nb.njit(**JIT_INLINE)", f"def {fname}(q1, q2, c, D, dm, dp{plist}):"]
        for k, (w, e) in enumerate(defs):
            out += emit_assignments([(str(w), _vectorisable(e))], "    ", f"_d{k}_")
        out += emit_assignments([("value", _vectorisable(expr))], "    ", "_e")
        out += ["    return value", ""]
    out += ["@nb.njit(**JIT_INLINE)", f"def {name}_h2(gm{plist}):"]
    out += emit_assignments([("value", dual.gap_h2)], "    ", "_h")
    out += ["    return value", ""]
    T = f"{name}_T"
    # The gap s1 s2 - P = s1 s2 (h2 eps^2 + O(eps^4)) of perfectly correlated inputs of scales
    # m -+ eps: from its series when eps/m < GAP_SWITCH (the direct difference cancels),
    # exactly 0 for equal scales.
    out += [
        "@nb.njit(**JIT_INLINE)",
        f"def {name}_gap(sa, sb, so, q1, q2, r, dd, dd2, ss2{plist}):",
        "    if dd == 0.0:",
        "        return 0.0",
        f"    if abs(dd) < {GAP_SWITCH!r} * (sa + sb):",
        f"        g2 = {name}_h2(0.5 * (sa + sb){plist})",
        "        if math.isfinite(g2):",
        "            return so * (0.25 * dd2) * g2",
        f"    return so - {T}(q1, q2, r, 0.0, dd2, ss2{plist})",
        "",
    ]
    return out


def _state_lines(ind):  # the pair's (q1, q2, c) and the stable variables of T from (rho, sin^2)
    return [ind + line for line in (
        "sb = sqbb[b]",
        "co = rin[b]",
        "q2 = sb * sb",
        "r = sa * sb",
        "c = co * r",
        "D = (r * r) * sin2[b]",
        "omr = one_minus_rho(co, sin2[b])",
        "opr = one_plus_rho(co, sin2[b])",
        "dd = sa - sb",
        "dd2 = dd * dd",
        "ss2 = (sa + sb) * (sa + sb)",
        "dm = dd2 + 2.0 * r * omr",
        "dp = dd2 + 2.0 * r * opr",
        "so = sao * sqbo[b]",
        "inv = 1.0 / so if so > 0.0 else 0.0",
    )]


def _store_lines(ind):
    return [ind + line for line in (
        "om = max(om, 0.0)",
        "op = max(op, 0.0)",
        "rr[b] = min(max(rn, -1.0), 1.0)",
        "ss[b] = min(om * op, 1.0)",
    )]


def _tile_lines(name: str, params: list, plist: str) -> list:
    """Source lines of the tile function itself (main loop, then the scalar fix-up loop)."""
    T, Td = f"{name}_T", f"{name}_Td"
    n = len(params)
    i3, i4 = " " * 12, " " * 16
    body = [
        "@nb.njit(**JIT_INLINE)",
        f"def {name}(rho, sn2, t, i0, j0, sqa, sqb, sqa_out, sqb_out, P1, P2, prm, want_ntk):",
    ]
    body += [f"    {p} = prm[{i}]" for i, p in enumerate(params)]
    body += [
        f"    parity = prm[{n}]",
        "    bi, bj = rho.shape",
        "    rin = np.empty(bj)",
        "    sin2 = np.empty(bj)",
        "    fix = np.empty(bj, dtype=np.int64)",
        "    sqbb = sqb[j0:j0 + bj]",
        "    sqbo = sqb_out[j0:j0 + bj]",
        "    for a in range(bi):",
        "        sa = sqa[i0 + a]",
        "        sao = sqa_out[i0 + a]",
        "        q1 = sa * sa",
        "        rr = rho[a]",
        "        ss = sn2[a]",
        "        for b in range(bj):",
        "            rin[b] = rr[b]",
        "            sin2[b] = ss[b]",
        "        if want_ntk:",
        "            tt = t[a]",
        "            for b in range(bj):",
    ]
    body += _state_lines(i4)
    body += [
        f"                tt[b] = tt[b] * {Td}(q1, q2, c, D, dm, dp{plist})",
        "        for b in range(bj):",
    ]
    body += _state_lines(i3)
    body += [i3 + f"rn = {T}(q1, q2, c, D, dm, dp{plist}) * inv", i3 + "om = 1.0 - rn", i3 + "op = 1.0 + rn"]
    body += _store_lines(i3)
    body += [
        # Indices first, then the scalar loop (a conditional body inside the scan would be
        # vectorised by predication, i.e. run for every entry).
        "        m = 0",
        "        for b in range(bj):",
        f"            if one_minus_rho(rin[b], sin2[b]) < {PRICE_SWITCH!r} or "
        f"(parity != 0.0 and one_plus_rho(rin[b], sin2[b]) < {PRICE_SWITCH!r}):",
        "                fix[m] = b",
        "                m += 1",
        "        for k in range(m):",
        "            b = fix[k]",
    ]
    body += _state_lines(i3)
    body += [
        f"            if omr < {PRICE_SWITCH!r}:",
        "                tt_ = r * omr",
        "                acc = 0.0",
        "                for g in range(8):",
        f"                    u = tt_ * _GX_{name}[g]",
        f"                    acc += _GW_{name}[g] * {Td}(q1, q2, r - u, u * (2.0 * r - u), dd2 + 2.0 * u, ss2 - 2.0 * u{plist})",
        f"                gap = {name}_gap(sa, sb, so, q1, q2, r, dd, dd2, ss2{plist})",
        "                om = (gap + tt_ * acc) * inv",
        "                rn = 1.0 - om",
        "                op = 2.0 - om",
        "            else:",
        "                tt_ = r * opr",
        "                acc = 0.0",
        "                for g in range(8):",
        f"                    u = tt_ * _GX_{name}[g]",
        f"                    acc += _GW_{name}[g] * {Td}(q1, q2, u - r, u * (2.0 * r - u), ss2 - 2.0 * u, dd2 + 2.0 * u{plist})",
        f"                gap = {name}_gap(sa, sb, so, q1, q2, r, dd, dd2, ss2{plist})",
        "                if parity < 0.0:",
        "                    op = (gap + tt_ * acc) * inv",
        "                    rn = op - 1.0",
        "                    om = 2.0 - op",
        "                else:",
        "                    om = (gap - tt_ * acc) * inv",
        "                    rn = 1.0 - om",
        "                    op = 2.0 - om",
    ]
    body += _store_lines(i3)
    return body


def _generate(dual: ClosedFormDual, name: str) -> str:
    """Numba source of the tile function of a closed-form dual.

    As in the arc-cosine tiles (duals/base.py), each tile row is done in branch-free loops
    over row views that LLVM vectorises: Ṫ·Θ, then ρ' = T/(s₁s₂) for every entry. A scalar
    fix-up loop then recomputes 1 ∓ ρ' by the Price integral (module docstring) for the
    entries within PRICE_SWITCH of ρ = 1 (or of ρ = −1 for odd or even φ), from a copy of
    the row's input state.
    """
    params = [str(p) for p in dual.family.params]
    plist = "".join(f", {p}" for p in params)
    return "\n".join(_helper_sources(dual, name, plist) + _tile_lines(name, params, plist)) + "\n"


# ------------------------------------------------------------------------- constructors
def closed_form_dual(family: str, values=(), layer=None) -> ClosedFormDual:
    """The closed-form dual of a member of :data:`FAMILIES`."""
    return ClosedFormDual(FAMILIES[family], values, layer=layer)


def closed_form_dual_from_expression(expr: sp.Expr, symbol: sp.Symbol, layer=None) -> ClosedFormDual:
    """Closed-form dual of a user's sympy expression, or :class:`NotClosedForm`.

    The expression gets its own generated tile (keyed on its hash).
    """
    phi = sp.sympify(expr).subs(symbol, X)
    family = Family("expr", 0, phi, str(expr))
    digest = hashlib.sha256(sp.srepr(phi).encode()).hexdigest()[:10]
    try:
        return ClosedFormDual(family, (), layer=layer, key=f"cf_expr_{digest}")
    except (NotClosedForm, NotImplementedError, ValueError, TypeError) as exc:
        raise NotClosedForm(str(exc)) from exc
