r"""Closed-form duals of positively homogeneous activations (the arc-cosine family).

For an activation that is positively homogeneous of degree n, φ(λx) = λⁿφ(x) for λ > 0,
the dual depends on the variances only through a power and on the angle
θ = arccos(c/√(q₁q₂)):

.. math::

    T = (q_1 q_2)^{n/2} F(\theta), \qquad \dot T = (q_1 q_2)^{(n-1)/2} G(\theta).

Every such φ is a *two-sided rectified monomial* φ(x) = b·max(x, 0)ⁿ + a'·max(−x, 0)ⁿ
(ReLU, LeakyReLU, ABReLU, Abs, Step, Sign, RectifiedMonomial, Monomial). Cho & Saul (2009,
eq. 4) give E[max(u, 0)ⁿ max(v, 0)ⁿ] = (q₁q₂)^{n/2} J_n(θ)/(2π) with

.. math::

    J_n(\theta) = (-1)^n (\sin\theta)^{2n+1}
        \left(\frac{1}{\sin\theta}\frac{\partial}{\partial\theta}\right)^{n}
        \left(\frac{\pi-\theta}{\sin\theta}\right),

and the cross terms are the same kernel at the angle π − θ (the pair (u, −v) has
correlation −ρ), so with S = a'² + b², γ = 2a'b/S:

.. math::

    F = \frac{S}{2\pi}\big[J_n(\theta) + \gamma J_n(\pi-\theta)\big], \qquad
    G = \frac{n^2 S}{2\pi}\big[J_{n-1}(\theta) - \gamma J_{n-1}(\pi-\theta)\big].

J_n is *derived by sympy* from the formula above, as J_n = ψ Q_n(cos θ) + sin θ R_n(cos θ)
with ψ = π − θ and polynomials Q_n, R_n (the derivative is carried out on symbols for
sin θ, cos θ and ψ, which is fast for any n).

Numerics. The engine carries ρ = cos θ with sin²θ computed without cancellation, so the
generated code gets θ and ψ = π − θ to full relative accuracy. The output correlation
ρ' = F(θ)/F(0) = [J_n(θ) + γJ_n(π−θ)]/J_n(0) and the quantities 1 − ρ' and 1 + ρ' (whose
product is the next sin²θ) come from two Taylor series derived by sympy,
A(x) = 1 − J_n(x)/J_n(0) and B(x) = J_n(π − x)/J_n(0):

* near θ = 0: 1 − ρ' = A(θ) − γB(θ);
* near θ = π: ρ' = B(ψ) + γ(1 − A(ψ)), 1 − ρ' = (1 − γ) + γA(ψ) − B(ψ),
  1 + ρ' = (1 + γ) − γA(ψ) + B(ψ), with 1 ∓ γ = (a' ∓ b)²/S passed exactly;
* elsewhere the closed form.

So identical inputs stay exactly at θ = 0 through any depth, antipodal ones at θ = π, and
values that vanish at θ = π (ReLU at ρ = −1) keep their relative accuracy. The parameter
γ is read at run time, so every activation of the same degree shares one generated tile.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import sympy as sp

from ..codegen import cached_text, emit_assignments
from .base import Dual, PointResult

__all__ = [
    "ArcCosineDual",
    "arc_cosine_parts",
    "cho_saul_J",
    "rectified_monomial_dual",
    "two_sided_dual",
    "THETA",
]

THETA = sp.Symbol("theta", real=True)
_S, _C, _PSI = sp.symbols("s co psi", real=True)
#: Below this angle (radians) the Taylor branches are used (read by the engine source).
SERIES_SWITCH = 0.3
#: Angles (from 0 or from π) below which the generated tile re-evaluates an entry with the
#: Taylor branches; above it the vectorised closed form is used.
FIXUP_SWITCH = 0.02
#: Degree-0 tiles treat sin θ below this (a few ulp of the inputs' rounding) as exactly 0.
_SNAP = 4e-16


def arc_cosine_parts(n: int) -> tuple[sp.Expr, sp.Expr]:
    """Polynomials (Q_n, R_n) in ``co`` = cos θ with J_n(θ) = (π − θ) Q_n + sin θ R_n.

    Derived from the Cho–Saul formula by differentiating symbolically in the variables
    s = sin θ, co = cos θ and ψ = π − θ (ds/dθ = co, dco/dθ = −s, dψ/dθ = −1).
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"The arc-cosine order must be an integer >= 0; got {n}.")

    def derive():
        f = _PSI / _S
        for _ in range(n):
            f = sp.cancel((sp.diff(f, _S) * _C - sp.diff(f, _C) * _S - sp.diff(f, _PSI)) / _S)
        J = sp.expand(sp.cancel((-1) ** n * _S ** (2 * n + 1) * f))
        reduced = sp.Integer(0)
        for (k,), coeff in sp.Poly(J, _S).terms():
            reduced += coeff * (1 - _C**2) ** (k // 2) * _S ** (k % 2)
        reduced = sp.expand(reduced)
        Q = sp.expand(reduced.coeff(_PSI, 1))
        R = sp.expand((reduced - _PSI * Q).coeff(_S, 1))
        if sp.expand(reduced - _PSI * Q - _S * R) != 0:  # pragma: no cover - structural check
            raise AssertionError(f"J_{n} is not of the form psi*Q + s*R")
        return sp.srepr((Q, R))

    Q, R = eval(cached_text(f"arccos-parts|{n}", derive), sp.__dict__)  # noqa: S307 - our own cache
    return sp.sympify(Q), sp.sympify(R)


def cho_saul_J(n: int) -> sp.Expr:
    """J_n(θ) of Cho & Saul (2009) as a sympy expression in :data:`THETA`, for any integer n >= 0."""
    Q, R = arc_cosine_parts(n)
    return sp.expand((sp.pi - THETA) * Q.subs(_C, sp.cos(THETA)) + sp.sin(THETA) * R.subs(_C, sp.cos(THETA)))


def _J_at(n: int, s, co, psi):
    Q, R = arc_cosine_parts(n)
    return psi * Q.subs(_C, co) + s * R.subs(_C, co)


def _series_mul(a, b, N):
    out = [0] * N
    for i, x in enumerate(a):
        if x == 0:
            continue
        for j in range(N - i):
            out[i + j] += x * b[j]
    return out


def _poly_of_series(coeffs, S, N):
    """Σ_k coeffs[k] S^k for a truncated power series S (Horner)."""
    acc = [0] * N
    for c in reversed(coeffs):
        acc = _series_mul(acc, S, N)
        acc[0] += c
    return acc


def _cancellation(n: int, psi: float) -> float:
    """How many times larger the terms of the closed form of J_n(π − ψ) are than its value."""
    import mpmath as mp

    Q, R = arc_cosine_parts(n)
    qc = [abs(float(c)) for c in sp.Poly(Q, _C).all_coeffs()[::-1]]
    rc = [abs(float(c)) for c in sp.Poly(R, _C).all_coeffs()[::-1]] if R != 0 else [0.0]
    with mp.workdps(60):
        co, s = -mp.cos(psi), mp.sin(psi)
        val = abs(float(psi * _poly_mp(Q, co) + s * _poly_mp(R, co)))
    ac = abs(math.cos(psi))
    terms = psi * sum(q * ac**k for k, q in enumerate(qc)) + math.sin(psi) * sum(r * ac**k for k, r in enumerate(rc))
    return terms / val


def _poly_mp(P, x):
    coeffs = sp.Poly(P, _C).all_coeffs() if P != 0 else [0]
    acc = 0
    for c in coeffs:
        acc = acc * x + int(c)
    return acc


#: Largest tolerated cancellation factor of the closed form near θ = π (about 30 ulp).
_MAX_CANCELLATION = 30.0


def _series_tables(n: int):
    """Taylor coefficients of A(x) = 1 − J_n(x)/J_n(0) and B(x) = J_n(π − x)/J_n(0), the
    ψ-side switch, computed by truncated power-series arithmetic in 50-digit mpmath
    (exact zeros kept exact: B = O(x^{2n+1}), A = O(x²) for n >= 1).

    Returns (A, B, switch): coefficient arrays whose remainder at ``switch`` is below
    1e-19 of the value, and the angle ψ below which the series replace the closed form.
    """

    def derive():
        import mpmath as mp

        grid = [0.3 + 0.05 * k for k in range(26)]
        switch = next((p for p in grid if _cancellation(n, p) <= _MAX_CANCELLATION), math.pi / 2)
        switch = max(switch, SERIES_SWITCH)
        Q, R = arc_cosine_parts(n)
        qc = [int(c) for c in sp.Poly(Q, _C).all_coeffs()[::-1]]
        rc = [int(c) for c in sp.Poly(R, _C).all_coeffs()[::-1]] if R != 0 else [0]
        with mp.workdps(60):
            N = 160
            cos_s = [mp.mpf(0)] * N
            sin_s = [mp.mpf(0)] * N
            for k in range(N):
                if k % 2 == 0:
                    cos_s[k] = mp.mpf(-1) ** (k // 2) / mp.factorial(k)
                else:
                    sin_s[k] = mp.mpf(-1) ** (k // 2) / mp.factorial(k)
            J0 = mp.pi * sum(qc)
            Qp, Rp = _poly_of_series(qc, cos_s, N), _poly_of_series(rc, cos_s, N)
            Qm, Rm = _poly_of_series(qc, [-x for x in cos_s], N), _poly_of_series(rc, [-x for x in cos_s], N)
            pi_minus_x = [mp.pi, mp.mpf(-1)] + [mp.mpf(0)] * (N - 2)
            x_only = [mp.mpf(0), mp.mpf(1)] + [mp.mpf(0)] * (N - 2)
            Jp = [u + v for u, v in zip(_series_mul(pi_minus_x, Qp, N), _series_mul(sin_s, Rp, N))]
            Jm = [u + v for u, v in zip(_series_mul(x_only, Qm, N), _series_mul(sin_s, Rm, N))]
            A = [-v / J0 for v in Jp]
            A[0] += 1
            B = [v / J0 for v in Jm]
            low_a = 1 if n == 0 else 2
            A = [0 if k < low_a else v for k, v in enumerate(A)]
            B = [0 if k < 2 * n + 1 else v for k, v in enumerate(B)]
            scale = abs(sum(v * mp.mpf(switch) ** k for k, v in enumerate(B))) + 1e-300
            order = N
            for m in range(2 * n + 2, N - 10):
                tail = max(abs(A[k]) + abs(B[k]) for k in range(m, m + 10)) * mp.mpf(switch) ** m
                if tail < mp.mpf("1e-19") * min(scale, 1):
                    order = m
                    break
            return repr(([float(v) for v in A[:order]], [float(v) for v in B[:order]], float(switch)))

    A, B, switch = eval(cached_text(f"arccos-series-v3|{n}", derive))  # noqa: S307 - our own cache
    return np.array(A), np.array(B), switch


def _horner(name: str, coeffs, var: str) -> str:
    terms = [repr(float(c)) for c in coeffs]
    expr = terms[-1]
    for c in reversed(terms[:-1]):
        expr = f"({expr}) * {var} + {c}"
    return f"{name} = {expr}"


class ArcCosineDual(Dual):
    r"""Dual of φ(x) = b·max(x, 0)ⁿ + a'·max(−x, 0)ⁿ (arc-cosine kernel of order n, two-sided).

    Parameters
    ----------
    degree : int >= 0
    a_neg, b_pos : float
        The coefficients a' (of max(−x, 0)ⁿ) and b (of max(x, 0)ⁿ); not both 0.
    layer : the layer this dual belongs to (for messages and formulas).

    Notes
    -----
    T and Ṫ are given in the module docstring. The tile parameters are
    ``(γ, 1 − γ, 1 + γ, n²S/(2π))``; the generated code depends on n and on whether γ = 0
    (``key = "arccos{n}"``, or ``"arccos{n}p"`` for the one-sided φ = b·max(x, 0)ⁿ, whose tile
    drops the mirrored term J_n(π − θ) from its main loop: ReLU's tile 2.2 → 1.8 ns per entry).
    """

    route = "closed form (arc-cosine, sympy)"

    def __init__(self, degree: int, a_neg: float, b_pos: float, layer=None):
        self.degree = n = int(degree)
        a_neg, b_pos = float(a_neg), float(b_pos)
        S = a_neg * a_neg + b_pos * b_pos
        if S == 0.0:
            raise ValueError("An arc-cosine dual needs a nonzero coefficient; both a' and b are 0.")
        self.a_neg, self.b_pos, self.S = a_neg, b_pos, S
        self.gamma = 2.0 * a_neg * b_pos / S
        self.key = f"arccos{n}" + ("p" if self.gamma == 0.0 else "")
        self.homogeneous_degree = n
        # Degree 1 (ReLU, leaky ReLU, |x|): the normalised map needs no variance; degree 0 reads
        # them for zero-variance points, degree ≥ 2 for the scale (q₁q₂)^((n−1)/2) of Ṫ.
        self.tile_reads_points = n != 1
        self.layer = layer
        self._J0 = math.pi * float(arc_cosine_parts(n)[0].subs(_C, 1))
        self._J0m = math.pi * float(arc_cosine_parts(n - 1)[0].subs(_C, 1)) if n >= 1 else 0.0
        self.F0 = S * self._J0 / (2.0 * math.pi)
        self.G0 = n * n * S * self._J0m / (2.0 * math.pi)
        self.params = np.array(
            [self.gamma, (a_neg - b_pos) ** 2 / S, (a_neg + b_pos) ** 2 / S, n * n * S / (2.0 * math.pi)]
        )

    def __repr__(self):
        return f"ArcCosineDual(degree={self.degree}, a_neg={self.a_neg!r}, b_pos={self.b_pos!r})"

    # ----- per-point pass -------------------------------------------------------------
    def point(self, q):
        q = np.asarray(q, dtype=np.float64)
        n = self.degree
        q_out = (q**n if n else np.ones_like(q)) * self.F0
        if n == 0:
            tdot = np.zeros_like(q)
        elif n == 1:
            tdot = np.full_like(q, self.G0)
        else:
            tdot = q ** (n - 1) * self.G0
        return PointResult(q_out, tdot)

    # ----- NumPy references -------------------------------------------------------------
    def _J_np(self, n, theta):
        Q, R = arc_cosine_parts(n)
        fq = sp.lambdify(_C, Q, "numpy")
        fr = sp.lambdify(_C, R, "numpy")
        co = np.cos(theta)
        return (np.pi - theta) * fq(co) + np.sin(theta) * fr(co)

    def _theta(self, q1, q2, c):
        q1, q2, c = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (q1, q2, c)))
        r = np.sqrt(q1 * q2)
        s = np.sqrt(np.maximum(q1 * q2 - c * c, 0.0))
        return np.arctan2(s, c), r

    def T(self, q1, q2, c):
        theta, r = self._theta(q1, q2, c)
        n = self.degree
        F = self.S / (2 * np.pi) * (self._J_np(n, theta) + self.gamma * self._J_np(n, np.pi - theta))
        return (r**n if n else 1.0) * F

    def Tdot(self, q1, q2, c):
        theta, r = self._theta(q1, q2, c)
        n = self.degree
        if n == 0:
            return np.zeros_like(theta)
        G = n * n * self.S / (2 * np.pi) * (self._J_np(n - 1, theta) - self.gamma * self._J_np(n - 1, np.pi - theta))
        return (r ** (n - 1) if n != 1 else 1.0) * G

    def formula(self):
        q1, q2, c = sp.symbols("q_1 q_2 c", positive=True)
        theta = sp.acos(c / sp.sqrt(q1 * q2))
        n = self.degree
        S = sp.nsimplify(self.S, rational=True)
        g = sp.nsimplify(self.gamma, rational=True)

        def J(m, ang):
            return cho_saul_J(m).subs(THETA, ang)

        T = (q1 * q2) ** sp.Rational(n, 2) * S / (2 * sp.pi) * (J(n, theta) + g * J(n, sp.pi - theta))
        if n == 0:
            Td = sp.Integer(0)
        else:
            Td = (q1 * q2) ** sp.Rational(n - 1, 2) * n**2 * S / (2 * sp.pi) * (J(n - 1, theta) - g * J(n - 1, sp.pi - theta))
        return T, Td

    # ----- generated tile function --------------------------------------------------------
    def tile_source(self, name: str) -> str:
        one_sided = self.gamma == 0.0
        return cached_text(f"arccos-tile-v9|{self.degree}|{one_sided}|{name}",
                           lambda: _generate_arccos(self.degree, name, one_sided))


def _arccos_tables(n: int, one_sided: bool = False) -> SimpleNamespace:
    """What the order-n tile writers need: the series tables, the closed forms of the middle
    branch, and the fix-up thresholds in cos θ."""
    A, B, sw_pi = _series_tables(n)
    g = sp.Symbol("g0")
    J0 = sp.pi * arc_cosine_parts(n)[0].subs(_C, 1)
    theta = sp.Symbol("theta")
    # Middle branch: closed form ρ' = [J_n(θ) + γ J_n(π−θ)] / J_n(0).
    rn_mid = (_J_at(n, _S, _C, _PSI) + g * _J_at(n, _S, -_C, theta)) / J0
    G_mid = None
    if n >= 1:
        G_mid = _J_at(n - 1, _S, _C, _PSI) - g * _J_at(n - 1, _S, -_C, theta)
    if one_sided:  # γ = 0 (ReLU, rectified monomials): the mirrored terms vanish from the code
        rn_mid = rn_mid.subs(g, 0)
        G_mid = None if G_mid is None else G_mid.subs(g, 0)
    sw_td = _series_tables(n - 1)[2] if n >= 2 else 0.0
    # Entries with cos θ above/below these are re-evaluated by the exact (series) code. Above
    # FIXUP_SWITCH the closed form's 1 - ρ' has relative error ~ε/θ² <= 6e-13, i.e. ~1e-14
    # absolute in the next angle, and most pairs of deep networks (θ -> 0 slowly) stay in
    # the vectorised loop.
    fix_hi = math.cos(FIXUP_SWITCH)
    # Near θ = π the closed form of J_n(π − ψ) ~ ψ^{2n+1} cancels (more for larger n): there
    # the fix-up range is the series' own switch, so T and Ṫ keep their relative accuracy.
    fix_lo = -math.cos(max(FIXUP_SWITCH, sw_pi, sw_td))
    return SimpleNamespace(n=n, A=A, B=B, sw_pi=sw_pi, rn_mid=rn_mid, G_mid=G_mid, fix_hi=fix_hi, fix_lo=fix_lo)


def _angle_lines(t, ind, src=("rr", "ss"), k="b"):
    lines = [ind + f"co = {src[0]}[{k}]", ind + f"s = math.sqrt({src[1]}[{k}])"]
    if t.n == 0:
        # Degree 0 (steps) maps θ to θ' ~ √θ, so angles below the rounding level of the
        # inputs are snapped to 0 rather than amplified. A zero-variance input (the
        # engine's ρ = sin²θ = 0) paired with a nonzero one is independent of it:
        # θ = π/2, the limit that matches its per-point variance F(0) (PSD kernel).
        lines += [
            ind + f"s = s if s >= {_SNAP!r} else 0.0",
            ind + "s = 1.0 if (s == 0.0 and co == 0.0 and (sa != 0.0 or sqbb[b] != 0.0)) else s",
        ]
    return lines + [ind + "theta, psi = angle_pair(s, co)"]


def _scale_lines(t, ind):  # (q1 q2)^((n-1)/2) of the NTK factor
    if t.n <= 1:
        return []
    return [ind + "r_ = sa * sqbb[b]", ind + "td = td" + " * r_" * (t.n - 1)]


def _closed_entry_lines(t, ind, with_ntk):
    lines = _angle_lines(t, ind)
    lines += emit_assignments([("rn", t.rn_mid)], ind, "_m")
    # Outside the fix-up ranges |ρ'| stays at least 1e-4 below 1, so no clamp is needed here
    # (entries inside them are redone, and clamped, by the fix-up loop).
    lines += [
        ind + "rr[b] = rn",
        ind + "ss[b] = min((1.0 - rn) * (1.0 + rn), 1.0)",
    ]
    if with_ntk:
        if t.n == 0:
            lines += [ind + "tt[b] = 0.0"]
        else:
            lines += emit_assignments([("gg", t.G_mid)], ind, "_g")
            lines += [ind + "td = gsc * gg"] + _scale_lines(t, ind) + [ind + "tt[b] = tt[b] * td"]
    return lines


def _exact_entry_lines(t, ind):
    lines = _angle_lines(t, ind, ("rin", "sin2"), "k") + [
        ind + f"if theta < {SERIES_SWITCH!r}:",
        ind + "    " + _horner("sa_", t.A, "theta"),
        ind + "    " + _horner("sb_", t.B, "theta"),
        ind + "    om = sa_ - g0 * sb_",
        ind + "    rn = 1.0 - om",
        ind + "    op = 2.0 - om",
        ind + f"elif psi < {t.sw_pi!r}:",
        ind + "    " + _horner("sa_", t.A, "psi"),
        ind + "    " + _horner("sb_", t.B, "psi"),
        ind + "    rn = sb_ + g0 * (1.0 - sa_)",
        ind + "    om = omg + g0 * sa_ - sb_",
        ind + "    op = opg - g0 * sa_ + sb_",
        ind + "else:",
    ]
    lines += emit_assignments([("rn", t.rn_mid)], ind + "    ", "_m")
    lines += [
        ind + "    om = 1.0 - rn",
        ind + "    op = 1.0 + rn",
        ind + "om = max(om, 0.0)",
        ind + "op = max(op, 0.0)",
        ind + "rr[b] = min(max(rn, -1.0), 1.0)",
        ind + "ss[b] = min(om * op, 1.0)",
        ind + "if want_ntk:",
    ]
    if t.n == 0:
        return lines + [ind + "    tt[b] = 0.0"]
    if t.n >= 2:
        Am, Bm, sw_m = _series_tables(t.n - 1)
        jm = float(sp.pi * arc_cosine_parts(t.n - 1)[0].subs(_C, 1))
        lines += [
            ind + f"    if psi < {sw_m!r}:",
            ind + "        " + _horner("ta_", Am, "psi"),
            ind + "        " + _horner("tb_", Bm, "psi"),
            ind + f"        gg = {jm!r} * (tb_ - g0 * (1.0 - ta_))",
            ind + "    else:",
        ]
        lines += emit_assignments([("gg", t.G_mid)], ind + "        ", "_g")
    else:
        lines += emit_assignments([("gg", t.G_mid)], ind + "    ", "_g")
    return lines + [ind + "    td = gsc * gg"] + _scale_lines(t, ind + "    ") + [ind + "    tt[b] = tin[k] * td"]


def _generate_arccos(n: int, name: str, one_sided: bool = False) -> str:
    """Numba source of the tile function of the order-n two-sided arc-cosine dual.

    Three loops per tile row, so the common case vectorises (duals/base.py): a scan saves
    the input state of the few entries whose angle is within the Taylor switch of 0 or π,
    a branch-free main loop over row views evaluates the closed form for every entry in
    place, then a scalar fix-up loop re-evaluates the saved entries with the series branches.
    (Saving only those entries, rather than copying every row first, removes three loads and
    three stores per entry.)
    """
    t = _arccos_tables(n, one_sided)
    ind = " " * 12
    lines = [
        "@nb.njit(**JIT_INLINE)",
        f"def {name}(rho, sn2, t, i0, j0, sqa, sqb, sqa_out, sqb_out, P1, P2, prm, want_ntk):",
        "    g0 = prm[0]",
        "    omg = prm[1]",
        "    opg = prm[2]",
        "    gsc = prm[3]",
        "    bi, bj = rho.shape",
        "    rin = np.empty(bj)",
        "    sin2 = np.empty(bj)",
        "    tin = np.empty(bj)",
        "    fix = np.empty(bj, dtype=np.int64)",
        "    sqbb = sqb[j0:j0 + bj]",
        "    for a in range(bi):",
        "        sa = sqa[i0 + a]",
        "        rr = rho[a]",
        "        ss = sn2[a]",
        "        tt = t[a] if want_ntk else tin",
        # Angles near 0 or pi: saved here, redone by the Taylor branches after the main loop
        # (rare off the diagonal). A conditional body inside the main loop would be
        # vectorised by predication, i.e. executed for every entry (measured 3x slower).
        # A vectorised count first: most rows have none, and the compacting scan is scalar.
        "        m = 0",
        "        for b in range(bj):",
        f"            m += 1 if (rr[b] > {t.fix_hi!r} or rr[b] < {t.fix_lo!r}) else 0",
        "        if m > 0:",
        "            m = 0",
        "            for b in range(bj):",
        f"                if rr[b] > {t.fix_hi!r} or rr[b] < {t.fix_lo!r}:",
        "                    fix[m] = b",
        "                    rin[m] = rr[b]",
        "                    sin2[m] = ss[b]",
        "                    if want_ntk:",
        "                        tin[m] = tt[b]",
        "                    m += 1",
        "        if want_ntk:",
        "            for b in range(bj):",
    ]
    lines += _closed_entry_lines(t, ind + "    ", True)
    lines += ["        else:", "            for b in range(bj):"]
    lines += _closed_entry_lines(t, ind + "    ", False)
    lines += [
        "        for k in range(m):",
        "            b = fix[k]",
    ]
    lines += _exact_entry_lines(t, ind)
    return "\n".join(lines) + "\n"


def two_sided_dual(degree: int, a_neg: float, b_pos: float, layer=None) -> ArcCosineDual:
    """Dual of φ(x) = b·max(x, 0)ⁿ + a'·max(−x, 0)ⁿ."""
    return ArcCosineDual(degree, a_neg, b_pos, layer=layer)


def rectified_monomial_dual(n: int, layer=None) -> ArcCosineDual:
    """Dual of φ(x) = max(x, 0)ⁿ: T = (q₁q₂)^{n/2} J_n/(2π), Ṫ = n²(q₁q₂)^{(n-1)/2} J_{n-1}/(2π)."""
    return ArcCosineDual(n, 0.0, 1.0, layer=layer)
