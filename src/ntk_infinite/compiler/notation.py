r"""Notation shared by the steps' formulas (:meth:`formula_text`, :meth:`formula_latex`).

Every step writes its own update of the recursion (docs/DESIGN.md, "Math conventions" and
"Spatial layers"); this module holds what they share, so the lines of one architecture
read alike:

* the state symbols :math:`\Sigma_l(x, x')` and :math:`\Theta_l(x, x')` as sympy applied
  functions (dense lines are sympy equations, printed by sympy), and on spatial states
  the entry of a position pair, :math:`\Sigma_l(x, x')_{p, p'}`;
* numbers (exact integers stay integers, others print with 15 significant digits);
* the geometry of a window (filter or pool) in words: its size, strides and padding.

Positions p, p' and offsets o are vectors with one entry per spatial axis; ``s*p`` is the
product per axis with the strides s and ``p_lo`` the padding before the first input
position (Novak et al. 2019; Arora et al. 2019; neural-tangents' conventions).
"""

from __future__ import annotations

import math

import sympy as sp

__all__ = ["X", "XP", "sigma", "theta", "number", "number_text", "eq_text", "eq_latex", "entry_text", "entry_latex",
           "activation_eqs", "window_where", "offset_set"]

X, XP = sp.symbols("x x'")
_P, _PP = sp.symbols("p p'")


def sigma(l: int):
    """The NNGP state after layer l, Σ_l (a sympy function of (x, x'))."""
    return sp.Function(f"Sigma_{l}")


def theta(l: int):
    """The NTK state after layer l, Θ_l."""
    return sp.Function(f"Theta_{l}")


def number(value: float):
    """A sympy number for a float64 parameter: an Integer when it is one, else a 15-digit Float."""
    value = float(value)
    return sp.Integer(int(value)) if value.is_integer() else sp.Float(value, 15)


def number_text(value: float) -> str:
    """A parameter as text, as sympy prints it inside an expression (2.25, not 2.25000000000000)."""
    return sp.sstr(number(value), full_prec=False)


def eq_text(eq: sp.Eq) -> str:
    return f"{sp.sstr(eq.lhs)} = {sp.sstr(eq.rhs)}"


def eq_latex(eq: sp.Eq) -> str:
    return f"{sp.latex(eq.lhs)} &= {sp.latex(eq.rhs)}"


def entry_text(fn, idx=None, args=(X, XP)) -> str:
    """``Sigma_l(x, x')`` or, with position indices, ``Sigma_l(x, x')[i, j]``."""
    head = sp.sstr(fn(*args))
    return head if idx is None else f"{head}[{', '.join(idx)}]"


def entry_latex(fn, idx=None, args=(X, XP), sep=",") -> str:
    r"""``\Sigma_{l}{\left(x,x' \right)}`` or, with indices, ``{…}_{i,j}`` (sympy's form for Indexed)."""
    head = sp.latex(fn(*args))
    return head if idx is None else "{" + head + "}_{" + sep.join(idx) + "}"


def activation_eqs(dual, index: int, spatial: bool):
    r"""(Σ, Θ) equations of an activation with dual (T, Ṫ): per entry, with the variances of
    the two points (on a spatial state: of the two positions of the pair),

    .. math::

        \Sigma_l(x, x')_{p,p'} = T\big(\Sigma_{l-1}(x, x)_{p,p}, \Sigma_{l-1}(x', x')_{p',p'},
            \Sigma_{l-1}(x, x')_{p,p'}\big), \qquad \Theta_l = \dot T(\dots)\,\Theta_{l-1}.
    """
    T, Td = (sp.sympify(e) for e in dual.formula())
    names = {s.name: s for e in (T, Td) for s in e.free_symbols}
    q1 = names.get("q_1", sp.Symbol("q_1", positive=True))
    q2 = names.get("q_2", sp.Symbol("q_2", positive=True))
    c = names.get("c", sp.Symbol("c", positive=True))
    S, Th, S1, Th1 = sigma(index - 1), theta(index - 1), sigma(index), theta(index)
    if spatial:
        def at(fn, a, b, i, j):
            return sp.IndexedBase(fn(a, b))[i, j]
    else:
        def at(fn, a, b, i, j):
            return fn(a, b)
    subs = {q1: at(S, X, X, _P, _P), q2: at(S, XP, XP, _PP, _PP), c: at(S, X, XP, _P, _PP)}
    nngp = sp.Eq(at(S1, X, XP, _P, _PP), T.subs(subs))
    ntk = sp.Eq(at(Th1, X, XP, _P, _PP), Td.subs(subs) * at(Th, X, XP, _P, _PP))
    return nngp, ntk


def offset_set(window: tuple, latex: bool = False) -> str:
    """The offsets of a window, e.g. ``{0..2}x{0..1}`` (text) or ``\\{0,\\dots,2\\}\\times\\{0,1\\}``."""
    parts = []
    for k in window:
        if latex:
            parts.append(r"\{0\}" if k == 1 else (r"\{0,1\}" if k == 2 else rf"\{{0,\dots,{k - 1}\}}"))
        else:
            parts.append("{0}" if k == 1 else f"{{0..{k - 1}}}")
    return (r"\times" if latex else "x").join(parts)


def window_where(what: str, letter: str, window: tuple, strides, padding: str) -> str:
    """The geometry of a window in words (plain ASCII, also used inside LaTeX ``\\text``), e.g.
    ``filter k = (3, 3), |k| = 9, strides s = (1, 1); SAME: ...``."""
    strides = tuple(strides) if strides is not None else (1,) * len(window)
    size = math.prod(window)
    head = f"{what} {letter} = {window}, |{letter}| = {size}, strides s = {strides}"
    if padding == "VALID":
        return f"{head}; VALID: p_lo = 0, out = floor((n - {letter})/s) + 1 per axis of input length n"
    if all(s == 1 for s in strides):
        pad = f"p_lo = floor(({letter} - 1)/2) = {tuple((k - 1) // 2 for k in window)}"
    else:
        pad = f"p_lo = floor(max((out - 1)*s + {letter} - n, 0)/2)"
    rest = ("entries outside the input are 0 and the divisor stays" if padding == "SAME"
            else "indices wrap around (mod n), divisor")
    return f"{head}; {padding}: out = ceil(n/s), {pad} per axis of input length n; {rest} {size}"
