r"""Symbolic Gaussian calculus: the duals of activations derived by sympy.

Everything here runs once per activation *family* at compile time (results cached on disk
by :mod:`ntk_infinite.compiler.duals.closed_forms`). With (u, v) ~ N(0, [[q₁, c], [c, q₂]]):

* **Gaussian class.** For φ(x) = Σᵢ Pᵢ(x) exp(αᵢx + βᵢx²) (Pᵢ polynomials; sin, cos and exp are
  rewritten as complex exponentials) the moment generating function of the bivariate
  normal gives every term in closed form,

  .. math::

      E\big[e^{b_1u + b_2v + \beta_1u^2 + \beta_2v^2}\big]
        = \det(I - 2\Sigma B)^{-1/2} \exp\big(\tfrac12 b^\top (I - 2\Sigma B)^{-1}\Sigma\, b\big),
      \qquad B = \operatorname{diag}(\beta_1, \beta_2),

  and polynomial factors are derivatives in b (Isserlis/Wick for pure polynomials).
* **Price's theorem.** ∂ᵏT/∂cᵏ = E[φ⁽ᵏ⁾(u)φ⁽ᵏ⁾(v)] (Price 1958). If φ⁽ᵐ⁾ is in the Gaussian class
  (m = 1 for erf, m = 2 for GELU, m = deg + 1 for polynomials), Taylor's formula with
  integral remainder in c gives

  .. math::

      T(c) = \sum_{k<m} \frac{c^k}{k!} E[\phi^{(k)}(u)]\,E[\phi^{(k)}(v)]
           + \int_0^c \frac{(c-t)^{m-1}}{(m-1)!}\, E[\phi^{(m)}(u)\phi^{(m)}(v)]\big|_{c=t}\, dt.

  The integrand is a polynomial in t times powers W(t)^h, W = K − Lt², h half-integer; it is
  integrated exactly by the reduction I_h = (tW^h + 2hK I_{h−1})/(2h+1) (integration by
  parts) from I_{−1/2} = arcsin(t√L/√K)/√L, written as atan2(t√L, √W)/√L.
* **Heat equation.** One-dimensional E[ψ(u)], u ~ N(0, q), of a ψ outside the Gaussian
  class: d/dq E[ψ(u)] = ½E[ψ''(u)], so E[ψ(u)] = ψ(0) + ½∫₀^q E[ψ''] ds.

The results are written with the stable variables of the engine: D = q₁q₂ − c² (carried as
q₁q₂ sin²θ), δ₋ = q₁ + q₂ − 2c and δ₊ = q₁ + q₂ + 2c (carried without cancellation), so a
radicand like (1 + 2b²q₁)(1 + 2b²q₂) − 4b⁴c² becomes 1 + 2b²(q₁ + q₂) + 4b⁴D.
"""

from __future__ import annotations

import sympy as sp

__all__ = [
    "X",
    "Q1",
    "Q2",
    "C",
    "D",
    "DM",
    "DP",
    "NotClosedForm",
    "gaussian_terms",
    "expect_pair",
    "expect_one",
    "price_dual",
    "stabilize",
]

X = sp.Symbol("x", real=True)
Q1, Q2 = sp.symbols("q1 q2", positive=True)
C = sp.Symbol("c", real=True)
#: Stable state variables: D = q1 q2 − c², DM = q1 + q2 − 2c, DP = q1 + q2 + 2c.
D, DM, DP = sp.symbols("D dm dp", nonnegative=True)
_T = sp.Symbol("t", real=True)
_B1, _B2 = sp.symbols("b1 b2")


class NotClosedForm(Exception):
    """The expectation is outside what the symbolic routes can integrate exactly."""


# ----------------------------------------------------------------------- Gaussian class
def gaussian_terms(expr: sp.Expr) -> list[tuple[sp.Expr, sp.Expr, sp.Expr]]:
    """Decompose ``expr`` (in :data:`X`) as Σ P(x)·exp(αx + βx²); list of (P, α, β).

    Raises :class:`NotClosedForm` when some term is not of that form.
    """
    expr = sp.expand(sp.sympify(expr).rewrite(sp.exp))
    groups: dict = {}
    for term in sp.Add.make_args(expr):
        rest, arg = [], sp.Integer(0)
        for factor in sp.Mul.make_args(term):
            if isinstance(factor, sp.exp):
                arg += factor.args[0]
            elif factor.is_Pow and isinstance(factor.base, sp.exp):
                arg += factor.base.args[0] * factor.exp
            else:
                rest.append(factor)
        P = sp.Mul(*rest)
        arg = sp.expand(arg)
        if not P.is_polynomial(X) or not arg.is_polynomial(X) or (arg.has(X) and sp.degree(arg, X) > 2):
            raise NotClosedForm(f"{term} is not a polynomial times exp(quadratic)")
        key = (arg.coeff(X, 1), arg.coeff(X, 2))
        groups[key] = groups.get(key, 0) + P * sp.exp(arg.subs(X, 0))
    return [(sp.expand(P), a, b) for (a, b), P in groups.items() if P != 0]


def _poly_terms(P):
    if P == 0:
        return []
    return [(k, coeff) for (k,), coeff in sp.Poly(P, X).terms()]


def expect_pair(f: sp.Expr, g: sp.Expr, cov: sp.Expr = C) -> sp.Expr:
    """E[f(u) g(v)] for Gaussian-class f, g, with Cov(u, v) = ``cov`` (raw, unstabilised)."""
    tf, tg = gaussian_terms(f), gaussian_terms(g)
    S = sp.Matrix([[Q1, cov], [cov, Q2]])
    bb = sp.Matrix([_B1, _B2])
    total = sp.Integer(0)
    for P, a1, be1 in tf:
        for Qp, a2, be2 in tg:
            M = sp.eye(2) - 2 * S * sp.diag(be1, be2)
            det = sp.expand(M.det())
            quad = sp.together((bb.T * (M.adjugate() * S) * bb)[0] / det)
            mgf = sp.exp(quad / 2) / sp.sqrt(det)
            for j, pc in _poly_terms(P):
                for k, qc in _poly_terms(Qp):
                    d = mgf
                    if j:
                        d = sp.diff(d, _B1, j)
                    if k:
                        d = sp.diff(d, _B2, k)
                    total += pc * qc * d.subs({_B1: a1, _B2: a2})
    return total


def expect_one(psi: sp.Expr, q: sp.Expr, depth: int = 0) -> sp.Expr:
    """E[psi(u)] for u ~ N(0, q): Gaussian class directly, else by the heat equation."""
    try:
        terms = gaussian_terms(psi)
    except NotClosedForm:
        if depth > 4:
            raise
        s = sp.Symbol(f"s{depth}", positive=True)
        inner = expect_one(sp.diff(psi, X, 2), s, depth + 1)
        return sp.simplify(psi.subs(X, 0) + sp.integrate(inner / 2, (s, 0, q)))
    total = sp.Integer(0)
    for P, a1, be1 in terms:
        m = 1 - 2 * q * be1
        mgf = sp.exp(q * _B1**2 / (2 * m)) / sp.sqrt(m)
        for j, pc in _poly_terms(P):
            total += pc * (sp.diff(mgf, _B1, j) if j else mgf).subs(_B1, a1)
    return sp.simplify(total)


def price_order(phi: sp.Expr, max_order: int = 6) -> int:
    """Smallest m such that the m-th derivative of φ is in the Gaussian class."""
    expr = sp.sympify(phi)
    for m in range(max_order + 1):
        try:
            gaussian_terms(expr)
            return m
        except NotClosedForm:
            expr = sp.diff(expr, X)
    raise NotClosedForm(f"no derivative of order <= {max_order} of {phi} is a polynomial times exp(quadratic)")


# ----------------------------------------------------------------------- the c-integral
def _integrate_remainder(G: sp.Expr, m: int):
    """∫₀^c (c − t)^{m−1}/(m−1)! G(t) dt for G = N(t)/(d₀ W(t)^{k+1/2}), W = K − L t².

    The antiderivative of P(t) W^{−(k+1/2)} (P a polynomial) is Q(t) W^{−(k−1/2)} +
    λ atan2(t√L, √W)/√L with a polynomial Q and a constant λ (differentiate: P = Q'W +
    (2k−1)L t Q + λW^k, a linear system for the coefficients, solved exactly by sympy).

    Returns (R, W, K, K_expr): R in c and the symbols W = W(c), K = W(0) = K_expr.
    """
    G = sp.together(sp.sympify(G))
    num, den = sp.fraction(G)
    powers = [p for p in den.atoms(sp.Pow) if p.base.has(_T) and not p.exp.is_integer]
    if len(powers) != 1 or num.has(sp.exp) or den.has(sp.exp):
        raise NotClosedForm(f"remainder integrand {G} is not N(t)/W(t)^(k+1/2)")
    base, e = sp.expand(powers[0].base), powers[0].exp
    d0 = sp.simplify(den / powers[0])
    poly = sp.Poly(base, _T)
    if poly.degree() != 2 or poly.coeff_monomial(_T) != 0 or d0.has(_T) or not (2 * e).is_integer or e < 0:
        raise NotClosedForm(f"radicand {base} is not K - L t^2")
    K_expr, L = poly.coeff_monomial(1), -poly.coeff_monomial(_T**2)
    k = e - sp.Rational(1, 2)
    P = sp.expand((C - _T) ** (m - 1) / sp.factorial(m - 1) * num / d0)
    if not P.is_polynomial(_T):
        raise NotClosedForm(f"numerator {num} is not a polynomial in t")
    deg = sp.degree(P, _T) if P != 0 else 0
    unknowns = sp.symbols(f"u0:{deg + 2}")
    lam = sp.Symbol("lam")
    Q = sum(u * _T**i for i, u in enumerate(unknowns))
    Wt = K_expr - L * _T**2
    residual = sp.expand(sp.diff(Q, _T) * Wt + (2 * k - 1) * L * _T * Q + lam * Wt**k - P)
    solution = sp.solve(sp.Poly(residual, _T).coeffs(), list(unknowns) + [lam], dict=True)
    if not solution:
        raise NotClosedForm("no antiderivative of the assumed form")
    sol = {u: sp.factor(v) for u, v in solution[0].items()}
    Q = sum(sol.get(u, 0) * _T**i for i, u in enumerate(unknowns))
    lam = sol.get(lam, 0)
    W, K = sp.Symbol("W", positive=True), sp.Symbol("K", positive=True)
    h = k - sp.Rational(1, 2)
    R = Q.subs(_T, C) * W ** (-h) - Q.subs(_T, 0) * K ** (-h)
    R += lam * sp.atan2(C * sp.sqrt(L), sp.sqrt(W)) / sp.sqrt(L)
    return R, W, K, K_expr


def price_dual(phi: sp.Expr) -> tuple[sp.Expr, list]:
    """T(q1, q2, c) of φ by Price's theorem (see the module docstring).

    Returns (T, defs): T in :data:`Q1`, :data:`Q2`, :data:`C` and radicand symbols, and
    defs = [(symbol, raw expression)] defining them (K free of c, W = K − L c²).
    """
    phi = sp.sympify(phi)
    m = price_order(phi)
    if m == 0:
        return expect_pair(phi, phi, C), []
    T = sp.Integer(0)
    deriv = phi
    for k in range(m):
        mu1, mu2 = expect_one(deriv, Q1), expect_one(deriv, Q2)
        T += C**k / sp.factorial(k) * mu1 * mu2
        deriv = sp.diff(deriv, X)
    if deriv == 0:
        return T, []
    G = sp.simplify(expect_pair(deriv, deriv, _T))
    R, W, K, K_expr = _integrate_remainder(G, m)
    W_raw = _radicand_at_c(G)
    T = sp.simplify((T + R).subs(K, sp.factor(K_expr)))
    return T, [(W, W_raw)]


def _radicand_at_c(G):
    """The radicand of G(t) with t replaced by c."""
    num, den = sp.fraction(sp.together(G))
    base = next(p.base for p in den.atoms(sp.Pow) if p.base.has(_T) and not p.exp.is_integer)
    return sp.expand(base.subs(_T, C))


# ----------------------------------------------------------------------- stabilisation
def _stable_radicand(base: sp.Expr) -> sp.Expr:
    """A polynomial in c of degree 2 rewritten with c² = q1 q2 − D (no cancellation)."""
    poly = sp.Poly(sp.expand(base), C)
    if poly.degree() > 2:
        raise NotClosedForm(f"radicand {base} of degree > 2 in c")
    k0, k1, k2 = (poly.coeff_monomial(C**j) for j in range(3))
    return sp.expand(k0 + k1 * C + k2 * (Q1 * Q2 - D))


def _stable_exponent(arg: sp.Expr) -> sp.Expr:
    """A linear exponent in q1, q2, c written with δ∓ = q1 + q2 ∓ 2c when that removes q1, q2."""
    arg = sp.expand(arg)
    if not arg.is_polynomial(Q1, Q2, C) or sp.Poly(arg, Q1, Q2, C).total_degree() > 1:
        return arg
    k1, k2, kc = arg.coeff(Q1), arg.coeff(Q2), arg.coeff(C)
    k0 = sp.expand(arg - k1 * Q1 - k2 * Q2 - kc * C)
    if kc == 0:
        return arg
    for sym, A in ((DM, -kc / 2), (DP, kc / 2)):
        r1, r2 = sp.simplify(k1 - A), sp.simplify(k2 - A)
        if r1 == 0 and r2 == 0:
            return sp.simplify(A) * sym + k0
    return arg


def stabilize(expr: sp.Expr, defs=()) -> tuple[sp.Expr, list]:
    """Rewrite ``expr`` (in q1, q2, c) with the stable variables D, dm, dp.

    Fractional powers of quadratics in c become powers of new symbols ``W_k`` whose
    definitions (stable, in D) are returned as [(W_k, expr)]; linear exponents use dm/dp.
    """
    out_defs = [(w, _stable_radicand(raw) if raw.has(C) else raw) for w, raw in defs]
    counter = [len(out_defs)]
    known = {sp.expand(raw): w for w, raw in defs if raw.has(C)}

    def radical(e):
        base = sp.expand(e.base)
        if base not in known:
            w = sp.Symbol(f"W{counter[0]}", positive=True)
            counter[0] += 1
            known[base] = w
            out_defs.append((w, _stable_radicand(base)))
        return known[base] ** e.exp

    expr = sp.sympify(expr).replace(lambda e: e.is_Pow and e.base.has(C) and not e.exp.is_integer, radical)
    expr = expr.replace(lambda e: isinstance(e, sp.exp), lambda e: sp.exp(_stable_exponent(e.args[0])))
    # Even powers of c inside polynomial parts: c² = q1 q2 − D turns sums that cancel near
    # |ρ| = 1 into sums of terms of one sign (e.g. GELU's Ṫ).
    expr = expr.replace(lambda e: e.is_Pow and e.base == C and e.exp.is_integer and e.exp >= 2,
                        lambda e: C ** (e.exp % 2) * (Q1 * Q2 - D) ** (e.exp // 2))
    expr = sp.simplify(expr)
    return expr, out_defs


def collect_exponentials(expr: sp.Expr) -> sp.Expr:
    """Group a sum of exponential terms by exponent and simplify each coefficient."""
    expr = sp.powsimp(sp.expand(expr), combine="exp")
    groups: dict = {}
    for term in sp.Add.make_args(expr):
        arg = sp.Integer(0)
        rest = []
        for f in sp.Mul.make_args(term):
            if isinstance(f, sp.exp):
                arg += f.args[0]
            else:
                rest.append(f)
        key = sp.expand(arg)
        groups[key] = groups.get(key, 0) + sp.Mul(*rest)
    return sp.Add(*[sp.simplify(coef) * sp.exp(arg) for arg, coef in groups.items() if sp.simplify(coef) != 0])
