r"""The Mehler/Hermite series route for any activation given as a NumPy callable.

Mehler's formula (e.g. O'Donnell 2014, ch. 11; Daniely et al. 2016) expands the dual in
normalised probabilists' Hermite polynomials hₖ = Heₖ/√k!:

.. math::

    T(q_1, q_2, c) = \sum_{k \ge 0} a_k(q_1)\, a_k(q_2)\, \rho^k, \qquad
    a_k(q) = E_{z\sim N(0,1)}[\phi(\sqrt q\, z)\, h_k(z)], \qquad \rho = c/\sqrt{q_1 q_2}.

Gaussian integration by parts (Stein's lemma, with z hₖ − hₖ' = √(k+1) h_{k+1}) gives the
derivative's coefficients from φ's own, exactly, for any absolutely continuous φ:

.. math::

    b_k(q) = E[\phi'(\sqrt q\, z) h_k(z)] = \sqrt{k+1}\, a_{k+1}(q) / \sqrt q, \qquad
    \dot T = \sum_k b_k(q_1) b_k(q_2) \rho^k.

The coefficients are per-point data (point pass, one BLAS product over Gauss–Hermite
nodes); the pair pass costs O(Ka + Kb) per entry. **Truncation.** Ka (for T) and Kb (for Ṫ)
are chosen separately, as the smallest orders whose tails Σ_{k≥K} a_k² / E[φ²] and
Σ_{k≥K} b_k² / E[φ'²] (known from the exact second moments) are below a tenth of the
requested tolerance at every point (a sample of the variances first, then all points);
Cauchy–Schwarz bounds the pair error by the geometric mean of the two points' tails, relative
to √(T₁₁T₂₂). When the orders would exceed ``max_terms`` the dual uses ``max_terms`` and warns
(:class:`~ntk_infinite.errors.AccuracyWarning`) with the achieved error and what to change.
The b_k are rescaled to the exact E[φ'²], so Ṫ is exact for identical inputs.

**Pair pass.** With unit coefficient vectors Ã (identical inputs give ρ' = 1 exactly), a
vectorised Horner evaluation of Σₖ Ã₁ₖÃ₂ₖρᵏ and Σₖ b₁ₖb₂ₖρᵏ over each row of a tile (1-D
views, so LLVM vectorises; about 0.6 ns per term). Entries with |ρ'| > 0.95 are redone
exactly: with σ = sign ρ, μ = |ρ|, sₖ = σᵏ,

.. math::

    1 - \sigma\rho' = \tfrac12 \sum_k (\tilde A_{1k} - \sigma s_k \tilde A_{2k})^2
        + \sigma \sum_k s_k \tilde A_{1k}\tilde A_{2k} (1 - \mu^k),

with 1 − μᵏ = (1 − μ) + μ(1 − μᵏ⁻¹) and 1 − μ from sin²θ, so nearly parallel (and, for odd or
even φ, nearly antiparallel) inputs keep their small angle through the layers that follow.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.special import roots_hermitenorm

from ...errors import warn_accuracy
from .base import Dual, PointResult
from .guards import check_growth, check_moments, check_node_values

__all__ = ["SeriesDual", "PolynomialDual", "hermite_coefficients"]

_TINY_Q = 1e-300


@lru_cache(maxsize=16)
def _nodes(n_nodes: int):
    z, w = roots_hermitenorm(n_nodes)
    w = w / np.sqrt(2.0 * np.pi)
    return z, w


@lru_cache(maxsize=16)
def _hermite_functions(n_terms: int, n_nodes: int):
    """(n_terms, n_nodes) array of hₖ(zᵢ)·√wᵢ, by a recurrence that cannot overflow."""
    z, w = _nodes(n_nodes)
    psi = np.empty((n_terms, n_nodes))
    psi[0] = np.sqrt(w)
    if n_terms > 1:
        psi[1] = z * psi[0]
    for k in range(1, n_terms - 1):
        psi[k + 1] = (z * psi[k] - np.sqrt(k) * psi[k - 1]) / np.sqrt(k + 1)
    return psi


def hermite_coefficients(fn, q: np.ndarray, n_terms: int, n_nodes: int | None = None):
    """aₖ(q) = E[fn(√q z) hₖ(z)] for k < n_terms, and E[fn(√q z)²]; shapes (n_terms, m), (m,)."""
    q = np.asarray(q, dtype=np.float64)
    n_nodes = n_nodes or 2 * n_terms + 64
    z, w = _nodes(n_nodes)
    psi = _hermite_functions(n_terms, n_nodes)
    x = np.sqrt(q)[None, :] * z[:, None]  # (n_nodes, m)
    with np.errstate(all="ignore"):
        values = np.broadcast_to(np.asarray(fn(x), dtype=np.float64), (n_nodes, q.size))
    # Nodes whose weight underflows to 0 (|z| > ~38) contribute nothing; dropping them keeps
    # a fast-growing but square-integrable φ (e.g. exp(0.2 x²)) from giving 0·inf = NaN.
    sw = np.sqrt(w)
    values = np.where((sw > 0)[:, None], values, 0.0)
    check_node_values(fn, values, x, q[None, :])
    # √w·φ first, then the square: the weight tames φ's growth before it can overflow.
    weighted = sw[:, None] * values
    second = np.sum(weighted * weighted, axis=0)
    coeffs = psi @ weighted
    check_moments(fn, second + np.sum(np.abs(coeffs), axis=0), q)
    return coeffs, second


class SeriesDual(Dual):
    """Hermite-series dual of an activation layer with ``fn``/``dfn`` callables.

    Parameters
    ----------
    layer : activation layer
    tol : float
        Requested accuracy: the truncated series of T and of Ṫ each leave a tail below
        ``tol`` relative to T(q, q, q) and Ṫ(q, q, q) at every point, which bounds the pair
        error by ``tol``·√(T₁₁T₂₂) (Cauchy–Schwarz).
    max_terms : int
        Largest truncation; beyond it the dual warns with the achieved error.
    """

    route = "Hermite series"
    key = "series"

    def __init__(self, layer, tol: float = 1e-10, max_terms: int = 1024, min_terms: int = 8):
        self.layer = layer
        self.tol = float(tol)
        #: Per-layer tail target: a tenth of the tolerance leaves room for the errors of
        #: several layers to add up; below ~1e-14 the tail estimate (a difference of sums
        #: of squares) is rounding noise.
        self.layer_tol = max(0.1 * self.tol, 1e-14)
        self.max_terms = int(max_terms)
        self.min_terms = int(min_terms)
        user_dfn = getattr(layer, "dfn_", None)
        self._explicit_dfn = user_dfn is not None

    def __repr__(self):
        return f"SeriesDual({self.layer!r}, tol={self.tol:g})"

    # ----- per-point pass ----------------------------------------------------------------
    def point(self, q):
        """Coefficients truncated for these variances; the truncation (Ka, Kb) is this call's
        (``terms``, and ``params`` = [Ka, Kb] for the tile), as is ``error_estimate``."""
        q = np.asarray(q, dtype=np.float64)
        uq, inverse = np.unique(q, return_inverse=True)
        A, B, q_out, tdot, err, (Ka, Kb) = self._truncated(uq)
        if err > self.tol:
            warn_accuracy(
                f"The Hermite series of {self.layer!r} reached a relative error of about {err:.1e} "
                f"with {max(Ka, Kb)} terms (the most allowed, max_terms={self.max_terms}), above the "
                f"requested {self.tol:.0e}. The input variance reaching this layer (up to {uq.max():.3g}) "
                "may be too large for the series, or the activation may have a kink: declare kinks=(...) "
                "to use the kink-aware quadrature route, reduce w_std/b_std of the Dense layer before it, "
                "or use a closed-form layer where one exists (e.g. nk.ReLU(), nk.Erf()).",
                stacklevel=5,
            )
        data = np.concatenate([A, B], axis=0)[:, inverse]
        return PointResult(q_out[inverse], tdot[inverse], np.ascontiguousarray(data),
                           params=np.array([float(Ka), float(Kb)]), error_estimate=err, terms=(Ka, Kb))

    def _raw(self, uq, n_terms):
        """a (n_terms, m), b (n_terms - 1, m), E[φ²] (m,), E[φ'²] (m,)."""
        fn = self.layer.fn
        q = np.maximum(uq, 0.0)
        coeffs, second = hermite_coefficients(fn, q, n_terms)
        if self._explicit_dfn:
            b, dsecond = hermite_coefficients(self.layer.dfn, q, n_terms - 1, 2 * n_terms + 64)
        else:
            sq = np.sqrt(np.maximum(q, _TINY_Q))
            b = np.sqrt(np.arange(1, n_terms))[:, None] * coeffs[1:] / sq[None, :]
            _, dsecond = hermite_coefficients(self.layer.dfn, q, 1, 2 * n_terms + 64)
        return coeffs, b, second, dsecond

    def _needed(self, coeffs, total):
        """Smallest K with relative tail Σ_{k>=K} c_k² / total <= tol at every column (or None)."""
        partial = np.cumsum(coeffs * coeffs, axis=0)
        tails = _relative_tail(total[None, :], partial)  # tails[k] = tail after k+1 terms
        ok = np.all(tails <= self.layer_tol, axis=1)
        if not ok.any():
            return None
        return int(np.argmax(ok)) + 1

    def _truncated(self, uq):
        """Coefficients truncated for the tolerance: (Ã, B, E[φ²], Σb², error, (Ka, Kb))."""
        positive = uq > _TINY_Q
        # A φ that is not square-integrable would never meet the tolerance: say so up front.
        check_growth(self.layer.fn, uq[positive])
        check_growth(self.layer.dfn, uq[positive])
        sample = uq[positive]
        if sample.size > 9:
            sample = sample[np.unique(np.linspace(0, sample.size - 1, 9).round().astype(int))]
        K = max(self.min_terms, 32)
        Ka = Kb = None
        while sample.size:
            a, b, second, dsecond = self._raw(sample, K + 1)
            Ka, Kb = self._needed(a, second), self._needed(b, dsecond)
            if (Ka is not None and Kb is not None) or K >= self.max_terms:
                break
            K = min(2 * K, self.max_terms)
        Ka = max(self.min_terms, Ka or K)
        Kb = max(self.min_terms, Kb or K)
        while True:
            n = max(Ka, Kb + 1)
            a, b, second, dsecond = self._raw(uq, n)
            a, b = a[:Ka], b[:Kb]
            tail_a = _relative_tail(second, np.sum(a * a, axis=0))
            tail_b = _relative_tail(dsecond, np.sum(b * b, axis=0))
            tail_a[~positive] = 0.0
            tail_b[~positive] = 0.0
            err = float(max(tail_a.max(initial=0.0), tail_b.max(initial=0.0)))
            if err <= self.layer_tol or max(Ka, Kb) >= self.max_terms:
                break
            # "not <=" so that a NaN tail counts as unconverged: every pass grows Ka or Kb
            # until the cap, and the loop ends in at most ~25 passes whatever φ returns.
            grow_a = not tail_a.max(initial=0.0) <= self.layer_tol
            grow_b = not tail_b.max(initial=0.0) <= self.layer_tol
            if not (grow_a or grow_b):
                break
            if grow_a:
                Ka = min(self.max_terms, int(Ka * 1.25) + 1)
            if grow_b:
                Kb = min(self.max_terms, int(Kb * 1.25) + 1)
        zero = ~positive
        if zero.any():
            # q = 0: the input is deterministic 0; a₀ = φ(0), b₀ = φ'(0), nothing else.
            a[:, zero] = 0.0
            a[0, zero] = self.layer.fn(np.zeros(1))[0]
            b[:, zero] = 0.0
            b[0, zero] = self.layer.dfn(np.zeros(1))[0]
            second[zero] = a[0, zero] ** 2
        norm = np.sqrt(np.sum(a * a, axis=0))
        A = np.where(norm > 0, a / np.where(norm > 0, norm, 1.0), 0.0)
        # Ṫ's coefficients rescaled to the exact E[φ'²]: removes the truncation bias at
        # ρ = 1 and makes the pair pass agree with the per-point diagonal.
        bnorm2 = np.sum(b * b, axis=0)
        dsecond = np.where(zero, bnorm2, dsecond)
        with np.errstate(divide="ignore", invalid="ignore"):
            b = b * np.where(bnorm2 > 0, np.sqrt(dsecond / np.where(bnorm2 > 0, bnorm2, 1.0)), 1.0)[None, :]
        return A, b, second, dsecond, err, (Ka, Kb)

    def _coefficients(self, uq):
        """(Ã, B, E[φ²], Σb², error, K) with K = max(Ka, Kb) (used by :mod:`.partials`)."""
        A, B, q_out, tdot, err, (Ka, Kb) = self._truncated(uq)
        return A, B, q_out, tdot, err, max(Ka, Kb)

    # ----- NumPy references (direct series evaluation) -------------------------------------
    def _series(self, q1, q2, c, derivative):
        q1, q2, c = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (q1, q2, c)))
        flat = np.concatenate([q1.ravel(), q2.ravel()])
        uq, inv = np.unique(flat, return_inverse=True)
        A, B, q_out, _, _, _ = self._truncated(uq)
        return _evaluate_series(A, B, q_out, inv, q1, q2, c, derivative)

    def T(self, q1, q2, c):
        return self._series(q1, q2, c, derivative=False)

    def Tdot(self, q1, q2, c):
        return self._series(q1, q2, c, derivative=True)

    def formula(self):
        import sympy as sp

        q1, q2, c = sp.symbols("q_1 q_2 c", positive=True)
        k = sp.Symbol("k", integer=True, nonnegative=True)
        a, b = sp.Function("a_k"), sp.Function("b_k")
        rho = c / sp.sqrt(q1 * q2)
        T = sp.Sum(a(q1) * a(q2) * rho**k, (k, 0, sp.oo))
        Td = sp.Sum(b(q1) * b(q2) * rho**k, (k, 0, sp.oo))
        return T, Td

    def tile_source(self, name: str) -> str:
        return _SERIES_TILE.replace("__NAME__", name)


def _evaluate_series(A, B, q_out, inv, q1, q2, c, derivative):
    m = q1.size
    i1, i2 = inv[:m], inv[m:]
    r = np.sqrt(q1.ravel() * q2.ravel())
    rho = np.clip(np.where(r > 0, c.ravel() / np.where(r > 0, r, 1.0), 0.0), -1.0, 1.0)
    if derivative:
        C1, C2, scale = B[:, i1], B[:, i2], 1.0
    else:
        C1, C2 = A[:, i1], A[:, i2]
        scale = np.sqrt(q_out[i1] * q_out[i2])
    powers = rho[None, :] ** np.arange(C1.shape[0])[:, None]
    return (scale * np.sum(C1 * C2 * powers, axis=0)).reshape(q1.shape)


def _relative_tail(total, partial):
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(total > 0, (total - partial) / np.where(total > 0, total, 1.0), 0.0)
    return np.maximum(rel, 0.0)


_SERIES_TILE = '''
@nb.njit(**JIT_INLINE)
def __NAME___exact(P1, P2, ia, jb, Ka, rho, sn2):
    # X = 1 - sigma rho' without cancellation, sigma = sign(rho), mu = |rho|, s_k = sigma^k:
    # X = 1/2 sum_k (A1_k - sigma s_k A2_k)^2 + sigma sum_k s_k A1_k A2_k (1 - mu^k)
    # (unit coefficient vectors), with 1 - mu^k by the recurrence (1 - mu) + mu (1 - mu^(k-1)).
    sg = 1.0 if rho >= 0.0 else -1.0
    mu = abs(rho)
    omu = one_minus_rho(mu, sn2)
    e2 = 0.0
    acc = 0.0
    g = 0.0
    s = 1.0
    for k in range(Ka):
        x = s * P2[k, jb]
        ca = P1[k, ia]
        d = ca - sg * x
        e2 += d * d
        acc += (ca * x) * g
        g = omu + mu * g
        s *= sg
    return 0.5 * e2 + sg * acc, sg


@nb.njit(**JIT_OPTIONS)
def __NAME__(rho, sn2, t, i0, j0, sqa, sqb, sqa_out, sqb_out, P1, P2, prm, want_ntk):
    # Mehler series: rho' = sum_k A1_k A2_k rho^k (unit vectors A), Tdot = sum_k B1_k B2_k rho^k.
    # Fast path: Horner over a row of pairs (1-D views so LLVM vectorises). Pairs with
    # |rho'| within NEAR of 1 are redone by the exact form above, so 1 -+ rho' keeps its digits.
    Ka = int(prm[0])
    Kb = int(prm[1])
    bi, bj = rho.shape
    acc = np.empty(bj)
    r = np.empty(bj)
    for a in range(bi):
        ia = i0 + a
        for b in range(bj):
            r[b] = rho[a, b]
            acc[b] = 0.0
        if want_ntk:
            for k in range(Ka + Kb - 1, Ka - 1, -1):
                cb = P1[k, ia]
                row = P2[k, j0:j0 + bj]
                for b in range(bj):
                    acc[b] = acc[b] * r[b] + cb * row[b]
            for b in range(bj):
                t[a, b] = t[a, b] * acc[b]
                acc[b] = 0.0
        for k in range(Ka - 1, -1, -1):
            ca = P1[k, ia]
            row = P2[k, j0:j0 + bj]
            for b in range(bj):
                acc[b] = acc[b] * r[b] + ca * row[b]
        for b in range(bj):
            rn = acc[b]
            if rn > 1.0 - SERIES_NEAR or rn < SERIES_NEAR - 1.0:
                x, sg = __NAME___exact(P1, P2, ia, j0 + b, Ka, r[b], sn2[a, b])
                if x < 0.0:
                    x = 0.0
                if sg > 0.0:
                    om = x
                    rn = 1.0 - x
                    op = 2.0 - x
                else:
                    op = x
                    rn = x - 1.0
                    om = 2.0 - x
            else:
                om = 1.0 - rn
                op = 1.0 + rn
            if om < 0.0:
                om = 0.0
            if op < 0.0:
                op = 0.0
            rho[a, b] = min(max(rn, -1.0), 1.0)
            sn2[a, b] = min(om * op, 1.0)
'''.replace("SERIES_NEAR", repr(0.05))


# ============================================================================ polynomials
class PolynomialDual(Dual):
    r"""Exact dual of a polynomial φ(x) = Σⱼ coefⱼ xʲ by Gaussian moments (Isserlis/Wick).

    With Mₘ(q) = E[φ⁽ᵐ⁾(u)], u ~ N(0, q) (so E[u^{2i}] = q^i (2i − 1)!!), Price's theorem
    ∂ᵐT/∂cᵐ = E[φ⁽ᵐ⁾(u)φ⁽ᵐ⁾(v)] and a finite Taylor series in c give

    .. math::

        T = \sum_{m=0}^{\deg\phi} \frac{c^m}{m!} M_m(q_1) M_m(q_2), \qquad
        \dot T = \sum_{m=0}^{\deg\phi - 1} \frac{c^m}{m!} M_{m+1}(q_1) M_{m+1}(q_2),

    i.e. a *finite* Hermite series with aₘ(q) = Mₘ(q) q^{m/2}/√m!, so the engine's series
    tile evaluates it exactly (O(deg) per pair) with the same stable 1 − ρ'.
    """

    route = "closed form (Gaussian moments, Wick)"
    key = "series"

    def __init__(self, coef, layer=None):
        self.coef = tuple(float(c) for c in coef)
        self.layer = layer
        self.degree = len(self.coef) - 1
        self.params = np.array([float(self.degree + 1), float(max(self.degree, 1))])
        self.terms = (self.degree + 1, max(self.degree, 1))

    def __repr__(self):
        return f"PolynomialDual(coef={self.coef})"

    def moments(self, q):
        """M (deg + 2, m): Mₘ(q) = E[φ⁽ᵐ⁾(u)], u ~ N(0, q), exact Gaussian moments."""
        q = np.asarray(q, dtype=np.float64)
        n = self.degree
        out = np.zeros((n + 2, q.size))
        for m in range(n + 1):
            for j in range(m, n + 1):
                if self.coef[j] == 0.0 or (j - m) % 2:
                    continue
                i = (j - m) // 2
                falling = math.factorial(j) / math.factorial(j - m)
                out[m] += self.coef[j] * falling * _double_factorial(2 * i - 1) * q**i
        return out

    def _coefficients(self, q):
        q = np.maximum(np.asarray(q, dtype=np.float64), 0.0)
        M = self.moments(q)
        n = self.degree
        ks = np.arange(n + 1)
        scale = np.sqrt(q)[None, :] ** ks[:, None] / np.sqrt([math.factorial(k) for k in ks])[:, None]
        a = M[: n + 1] * scale
        b = M[1 : n + 2] * scale
        if n == 0:
            b = np.zeros((1, q.size))
        else:
            b = b[:n]
        return a, b

    def point(self, q):
        q = np.asarray(q, dtype=np.float64)
        a, b = self._coefficients(q)
        second = np.sum(a * a, axis=0)
        norm = np.sqrt(second)
        A = np.where(norm > 0, a / np.where(norm > 0, norm, 1.0), 0.0)
        data = np.ascontiguousarray(np.concatenate([A, b], axis=0))
        return PointResult(second, np.sum(b * b, axis=0), data, terms=self.terms)

    def T(self, q1, q2, c):
        return self._evaluate(q1, q2, c, False)

    def Tdot(self, q1, q2, c):
        return self._evaluate(q1, q2, c, True)

    def _evaluate(self, q1, q2, c, derivative):
        q1, q2, c = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (q1, q2, c)))
        M1 = self.moments(q1.ravel())
        M2 = self.moments(q2.ravel())
        cc = c.ravel()
        off = 1 if derivative else 0
        total = np.zeros(cc.size)
        for m in range(self.degree + 1 - off):
            total += cc**m / math.factorial(m) * M1[m + off] * M2[m + off]
        return total.reshape(q1.shape)

    def formula(self):
        import sympy as sp

        q1, q2, c = sp.symbols("q_1 q_2 c", positive=True)
        x = sp.Symbol("x")
        phi = sum(sp.nsimplify(v, rational=True) * x**j for j, v in enumerate(self.coef))

        def moment(expr, q):
            poly = sp.Poly(sp.expand(expr), x)
            return sum(coef * (q ** (k // 2) * sp.factorial2(k - 1) if k % 2 == 0 else 0)
                       for (k,), coef in poly.terms()) if expr != 0 else sp.Integer(0)

        T = sum(c**m / sp.factorial(m) * moment(sp.diff(phi, x, m), q1) * moment(sp.diff(phi, x, m), q2)
                for m in range(self.degree + 1))
        Td = sum(c**m / sp.factorial(m) * moment(sp.diff(phi, x, m + 1), q1) * moment(sp.diff(phi, x, m + 1), q2)
                 for m in range(self.degree))
        return sp.expand(T), sp.expand(sp.sympify(Td))

    def tile_source(self, name: str) -> str:
        return _SERIES_TILE.replace("__NAME__", name)


def _double_factorial(n: int) -> int:
    return 1 if n <= 0 else n * _double_factorial(n - 2)
