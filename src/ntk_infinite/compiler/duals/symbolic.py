r"""Activations given as sympy expressions, and the route choice for ``Activation`` layers.

``nk.Activation(expr)`` with ``expr`` a sympy expression in one symbol:

* ``fn`` and ``dfn`` are generated from ``expr`` and its sympy derivative
  (``lambdify``; Heaviside/sign/Abs/Max/Min/Piecewise compile to NumPy);
* kinks are read off the expression: the roots of the arguments of ``Abs``, ``Heaviside``
  and ``sign``, the points where the arguments of ``Max``/``Min`` cross, and the
  boundaries of ``Piecewise`` conditions.

The dual is then chosen (:func:`resolve_activation`):

1. a polynomial → :class:`~ntk_infinite.compiler.duals.series.PolynomialDual` (exact Gaussian moments);
2. a function that is bⁿxⁿ for x > 0 and a'(−x)ⁿ for x < 0 (piecewise linear with its kink at
   0, n = 1, steps and signs, n = 0, rectified monomials) →
   :class:`~ntk_infinite.compiler.duals.arccos.ArcCosineDual` (exact);
3. any other kinked expression → the kink-aware quadrature route;
4. a smooth expression whose Price derivation closes (erf-, Gaussian-, sinusoid- and
   exponential-type terms) → :class:`~ntk_infinite.compiler.duals.closed_forms.ClosedFormDual`;
5. otherwise the Hermite series, with Ṫ from the series of the sympy derivative.

``Activation(fn)`` with a NumPy callable goes to the quadrature route when it declares
kinks and to the Hermite series otherwise.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ...errors import ParameterError
from .arccos import ArcCosineDual
from .closed_forms import NotClosedForm, closed_form_dual_from_expression
from .series import PolynomialDual, SeriesDual

__all__ = ["is_sympy_expression", "activation_parts", "find_kinks", "classify", "resolve_activation"]

_MODULES = [{"Heaviside": lambda x, h=0.5: np.heaviside(x, 0.5), "sign": np.sign}, "scipy", "numpy"]


def is_sympy_expression(obj) -> bool:
    """True for a sympy expression (not a plain Python number)."""
    return isinstance(obj, sp.Basic)


def _symbol_of(expr: sp.Expr) -> sp.Symbol:
    free = sorted(expr.free_symbols, key=lambda s: s.name)
    if len(free) != 1:
        raise ParameterError(
            f"An activation given as a sympy expression must contain exactly one symbol (the "
            f"pre-activation); got {expr} with symbols {[s.name for s in free] or 'none'}. Substitute "
            "numbers for the other symbols, e.g. expr.subs(a, 0.5)."
        )
    return free[0]


def activation_parts(expr):
    """(fn, dfn, name, kinks, expr, symbol) of an activation given as a sympy expression."""
    expr = sp.sympify(expr)
    x = _symbol_of(expr)
    real = sp.Symbol(x.name, real=True)
    expr = expr.subs(x, real)
    x = real
    # Jumps contribute Dirac masses to φ'; by the library's convention (Step, Sign) they are
    # dropped: Ṫ uses the almost-everywhere derivative.
    dexpr = sp.diff(expr, x).replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.Integer(0))
    f = sp.lambdify(x, expr, _MODULES)
    df = sp.lambdify(x, dexpr, _MODULES)

    def fn(v):
        v = np.asarray(v, dtype=np.float64)
        return np.broadcast_to(np.asarray(f(v), dtype=np.float64), v.shape).copy()

    def dfn(v):
        v = np.asarray(v, dtype=np.float64)
        return np.broadcast_to(np.asarray(df(v), dtype=np.float64), v.shape).copy()

    fn.__name__ = str(expr)
    dfn.__name__ = f"d({expr})"
    return fn, dfn, str(expr), find_kinks(expr, x), expr, x


def _real_roots(expr, x):
    try:
        roots = sp.solveset(sp.simplify(expr), x, domain=sp.S.Reals)
    except Exception:  # pragma: no cover - solveset failures
        return []
    if isinstance(roots, sp.FiniteSet):
        return [float(r) for r in roots if r.is_real]
    return []


def find_kinks(expr: sp.Expr, x: sp.Symbol) -> tuple[float, ...]:
    """Points where ``expr`` (or its derivative) is not smooth, from its non-smooth atoms."""
    points: set[float] = set()
    for node in sp.preorder_traversal(expr):
        if isinstance(node, (sp.Abs, sp.Heaviside, sp.sign)):
            points.update(_real_roots(node.args[0], x))
        elif isinstance(node, (sp.Max, sp.Min)):
            args = node.args
            for i in range(len(args)):
                for j in range(i + 1, len(args)):
                    points.update(_real_roots(args[i] - args[j], x))
        elif isinstance(node, sp.Piecewise):
            for _, cond in node.args:
                for rel in cond.atoms(sp.core.relational.Relational):
                    points.update(_real_roots(rel.lhs - rel.rhs, x))
    return tuple(sorted(p for p in points if np.isfinite(p)))


def classify(expr: sp.Expr, x: sp.Symbol):
    """('polynomial', coef) | ('homogeneous', (n, a', b)) | ('kinked', kinks) | ('smooth', None)."""
    if expr.is_polynomial(x):
        coef = [float(c) for c in reversed(sp.Poly(expr, x).all_coeffs())]
        return "polynomial", tuple(coef)
    kinks = find_kinks(expr, x)
    if not kinks:
        return "smooth", None
    if kinks == (0.0,):
        p = sp.Symbol("p", positive=True)
        pos = sp.simplify(sp.piecewise_fold(expr.subs(x, p)))
        neg = sp.simplify(sp.piecewise_fold(expr.subs(x, -p)))
        parts = []
        for side in (neg, pos):
            if not side.is_polynomial(p):
                break
            poly = sp.Poly(side, p)
            terms = poly.terms()
            if len(terms) > 1 or any(not c.is_number for _, c in terms):
                break
            parts.append(terms[0] if terms else ((None,), sp.Integer(0)))
        if len(parts) == 2:
            degrees = {d[0] for d, c in parts if c != 0}
            if len(degrees) == 1:
                n = degrees.pop()
                (_, a_neg), (_, b_pos) = parts
                return "homogeneous", (int(n), float(a_neg), float(b_pos))
    return "kinked", kinks


def resolve_activation(layer, tol: float):
    """The dual of an :class:`~ntk_infinite.describe.layers.Activation` layer (see the module docstring)."""
    expr = getattr(layer, "expr", None)
    if expr is None:
        if layer.kinks:
            from .quadrature import QuadratureDual

            return QuadratureDual(layer, tol=tol)
        return SeriesDual(layer, tol=tol)
    x = getattr(layer, "symbol", None) or _symbol_of(expr)
    kind, info = classify(expr, x)
    if kind == "polynomial":
        return PolynomialDual(info, layer=layer)
    if kind == "homogeneous":
        n, a_neg, b_pos = info
        return ArcCosineDual(n, a_neg, b_pos, layer=layer)
    if kind == "kinked":
        from .quadrature import QuadratureDual

        return QuadratureDual(layer, tol=tol)
    try:
        return closed_form_dual_from_expression(expr, x, layer=layer)
    except NotClosedForm:
        return SeriesDual(layer, tol=tol)
