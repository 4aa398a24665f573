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
nodes); the pair pass costs O(K) per entry. K is the smallest order whose tail
Σ_{k>K} a_k² (known exactly from E[φ²] − Σ_{k≤K} a_k²) is below the tolerance for every
point, for both series; Cauchy–Schwarz bounds the pair error by the geometric mean of the
two points' tails. When K would exceed ``max_terms`` the dual uses ``max_terms`` and warns
with the achieved error.

The pair pass normalises the truncated series (unit coefficient vectors Ã) so that
identical inputs give ρ' = 1 exactly, and accumulates
1 − ρ' = ½ Σₖ (Ã₁ₖ − Ã₂ₖ)² + Σₖ Ã₁ₖÃ₂ₖ (1 − ρᵏ), with 1 − ρᵏ by the stable recurrence
(1 − ρᵏ) = (1 − ρ) + ρ(1 − ρᵏ⁻¹): every term is non-negative for ρ ≥ 0, so nearly
identical inputs keep their small angle through the layers that follow.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.special import roots_hermitenorm

from ..errors import warn_accuracy
from .base import Dual, PointResult

__all__ = ["SeriesDual", "hermite_coefficients"]

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
    values = fn(np.sqrt(q)[None, :] * z[:, None])  # (n_nodes, m)
    values = np.broadcast_to(np.asarray(values, dtype=np.float64), (n_nodes, q.size))
    second = w @ (values * values)
    coeffs = psi @ (np.sqrt(w)[:, None] * values)
    return coeffs, second


class SeriesDual(Dual):
    """Hermite-series dual of an activation layer with ``fn``/``dfn`` callables."""

    route = "Hermite series"
    key = "series"

    def __init__(self, layer, tol: float = 1e-10, max_terms: int = 1024, min_terms: int = 16):
        self.layer = layer
        self.tol = float(tol)
        self.max_terms = int(max_terms)
        self.min_terms = int(min_terms)
        self.error_estimate = 0.0
        self.terms_used = 0
        self.params = np.zeros(1)
        user_dfn = getattr(layer, "dfn_", None)
        self._explicit_dfn = user_dfn is not None

    def __repr__(self):
        return f"SeriesDual({self.layer!r}, tol={self.tol:g})"

    # ----- per-point pass ----------------------------------------------------------------
    def point(self, q):
        q = np.asarray(q, dtype=np.float64)
        uq, inverse = np.unique(q, return_inverse=True)
        A, B, q_out, tdot, err, K = self._coefficients(uq)
        self.error_estimate = max(self.error_estimate, err)
        self.terms_used = max(self.terms_used, K)
        if err > self.tol:
            warn_accuracy(
                f"The Hermite series of {self.layer!r} reached a relative error of about {err:.1e} "
                f"with {K} terms, above the requested {self.tol:.0e}. The activation may have a kink "
                "or the input variance may be large; pass kinks=... or a smaller tolerance target, "
                "or use a closed-form layer where one exists (e.g. nk.ReLU()).",
                stacklevel=5,
            )
        self.params = np.array([float(K)])
        data = np.concatenate([A, B], axis=0)[:, inverse]
        return PointResult(q_out[inverse], tdot[inverse], np.ascontiguousarray(data))

    def _coefficients(self, uq):
        fn = self.layer.fn
        K = self.min_terms
        while True:
            coeffs, second = hermite_coefficients(fn, np.maximum(uq, 0.0), K + 1)
            a = coeffs[:K]
            if self._explicit_dfn:
                b_all, dsecond = hermite_coefficients(self.layer.dfn, np.maximum(uq, 0.0), K, 2 * (K + 1) + 64)
                b = b_all
            else:
                sq = np.sqrt(np.maximum(uq, _TINY_Q))
                b = np.sqrt(np.arange(1, K + 1))[:, None] * coeffs[1 : K + 1] / sq[None, :]
                _, dsecond = hermite_coefficients(self.layer.dfn, np.maximum(uq, 0.0), 1, 2 * (K + 1) + 64)
            tail_a = _relative_tail(second, np.sum(a * a, axis=0))
            tail_b = _relative_tail(dsecond, np.sum(b * b, axis=0))
            err = float(max(tail_a.max(initial=0.0), tail_b.max(initial=0.0)))
            if err <= self.tol or K >= self.max_terms:
                break
            K = min(2 * K, self.max_terms)
        zero = uq <= _TINY_Q
        if zero.any():
            # q = 0: the input is deterministic 0; a₀ = φ(0), b₀ = φ'(0), nothing else.
            a[:, zero] = 0.0
            a[0, zero] = fn(np.zeros(1))[0]
            b[:, zero] = 0.0
            b[0, zero] = self.layer.dfn(np.zeros(1))[0]
            second[zero] = a[0, zero] ** 2
        norm = np.sqrt(np.sum(a * a, axis=0))
        A = np.where(norm > 0, a / np.where(norm > 0, norm, 1.0), 0.0)
        q_out = second
        tdot = np.sum(b * b, axis=0)
        return A, b, q_out, tdot, err, K

    # ----- NumPy references (direct series evaluation) -------------------------------------
    def _series(self, q1, q2, c, derivative):
        q1, q2, c = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (q1, q2, c)))
        flat = np.concatenate([q1.ravel(), q2.ravel()])
        uq, inv = np.unique(flat, return_inverse=True)
        A, B, q_out, _, _, _ = self._coefficients(uq)
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


def _relative_tail(total, partial):
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(total > 0, (total - partial) / np.where(total > 0, total, 1.0), 0.0)
    return np.maximum(rel, 0.0)


_SERIES_TILE = '''
@nb.njit(**JIT_OPTIONS)
def __NAME__(rho, sn2, t, i0, j0, sqa, sqb, sqa_out, sqb_out, P1, P2, prm, want_ntk):
    K = int(prm[0])
    bi, bj = rho.shape
    acc = np.empty(bj)
    om = np.empty(bj)
    tot = np.empty(bj)
    g = np.empty(bj)
    omr = np.empty(bj)
    for a in range(bi):
        ia = i0 + a
        # With unit-norm coefficient vectors A1, A2 (P_k = A1_k A2_k):
        # 1 - rho' = 1/2 sum_k (A1_k - A2_k)^2 + sum_k P_k (1 - rho^k),
        # exactly 0 for identical inputs, and 1 - rho^k by the stable recurrence.
        for b in range(bj):
            om[b] = 0.0
            tot[b] = 0.0
            g[b] = 0.0
            omr[b] = one_minus_rho(rho[a, b], sn2[a, b])
        for k in range(K):
            ca = P1[k, ia]
            for b in range(bj):
                cb = P2[k, j0 + b]
                om[b] += (ca * cb) * g[b]
                tot[b] += (ca - cb) * (ca - cb)
                g[b] = omr[b] + rho[a, b] * g[b]
        if want_ntk:
            for b in range(bj):
                acc[b] = P1[2 * K - 1, ia] * P2[2 * K - 1, j0 + b]
            for k in range(K - 2, -1, -1):
                cb = P1[K + k, ia]
                for b in range(bj):
                    acc[b] = acc[b] * rho[a, b] + cb * P2[K + k, j0 + b]
            for b in range(bj):
                t[a, b] = t[a, b] * acc[b]
        for b in range(bj):
            o = om[b] + 0.5 * tot[b]
            rn = 1.0 - o
            if rn < -1.0:
                rn = -1.0
            if o < 0.0:
                o = 0.0
                rn = 1.0
            rho[a, b] = rn
            s = o * (1.0 + rn)
            sn2[a, b] = s if s < 1.0 else 1.0
'''
