r"""Kink-aware 2-D quadrature: the route for activations with kinks and no closed form.

For φ with kinks (points where φ or φ' jumps) the Hermite series converges only
algebraically, so the dual is computed per pair by quadrature, inside the engine.

**φ in Numba.** At the point pass, φ and φ' are replaced by piecewise polynomials on
[−X, X], X = L·max√q (L = :data:`Z_RANGE`): the interval is cut at the kinks, each piece
into equal cells, and on each cell a degree-9 interpolant at Chebyshev points (stored as a
polynomial in the cell's local variable t ∈ [−1, 1]). Cells are refined until the
interpolant matches φ to 1e-14 of its scale at test points between the nodes. The tables
travel in the tile's parameter vector; lookup is O(number of kinks).

**The 2-D rule.** In standard coordinates u = √q₁ z₁, v = √q₂(ρz₁ + s z₂), s = sin θ, over
[−L, L]² with the Gaussian weight:

* z₁ is split at the kinks of φ(u) (z₁ = k/√q₁) and, around z₁* = k/(√q₂ ρ) where the kink of
  φ(v) sweeps across the z₂ range, at z₁* + (s/|ρ|)·{−L, −3, 0, 3, L}: the inner integral
  varies on the scale s/|ρ| there, so this scaled copy of the base panels resolves it for any
  s (nearly parallel pairs included);
* z₂ is split where v crosses a kink, z₂ = (k/√q₂ − ρz₁)/s;
* every panel, including the base panels {−L, −3, 0, 3, L}, gets 12-point Gauss–Legendre.

With f = φ/√E[φ²] the rule accumulates, per node,

.. math::

    1 - \rho' = \tfrac12 E[(f(u) - f(v))^2], \qquad 1 + \rho' = \tfrac12 E[(f(u) + f(v))^2],
    \qquad \dot T = E[\phi'(u)\phi'(v)],

so 1 ∓ ρ' keep their relative accuracy for nearly parallel (antiparallel) pairs, and
identical inputs give ρ' = 1 and Ṫ = E[φ'²] exactly. Per point, E[φ²] and E[φ'²] come from
1-D rules split at the kinks (20-point Gauss–Legendre panels).

The error estimate compares the 1-D moments with a rule of half the panels' density and
adds the interpolation error; results above the tolerance warn.
"""

from __future__ import annotations

import numpy as np

from ...errors import warn_accuracy
from .base import Dual, PointResult
from .guards import check_growth, check_moments, check_node_values

__all__ = ["QuadratureDual", "Z_RANGE", "piecewise_table"]

#: Half-width of the integration square in standard-normal units (e^{-L²/2} ≈ 1.3e-14).
Z_RANGE = 8.0
#: Degree of the per-cell interpolants.
CELL_DEGREE = 9
_BASE = np.array([-Z_RANGE, -3.0, 0.0, 3.0, Z_RANGE])
_GL10_X, _GL10_W = np.polynomial.legendre.leggauss(12)
_GL20_X, _GL20_W = np.polynomial.legendre.leggauss(20)
_SQRT_2PI = np.sqrt(2.0 * np.pi)


# ------------------------------------------------------------------------- tables of φ
def _cell_fit(fn, lo, hi, n_cells, context=""):
    """Coefficients (n_cells, deg+1) of interpolants in t ∈ [−1, 1] on equal cells, and the
    maximal deviation at test points between the nodes."""
    deg = CELL_DEGREE
    nodes = np.cos(np.pi * (np.arange(deg + 1) + 0.5) / (deg + 1))[::-1]
    edges = np.linspace(lo, hi, n_cells + 1)
    centers, halves = 0.5 * (edges[1:] + edges[:-1]), 0.5 * (edges[1:] - edges[:-1])
    x = centers[:, None] + halves[:, None] * nodes[None, :]
    y = np.asarray(fn(x.ravel()), dtype=np.float64).reshape(x.shape)
    check_node_values(fn, y, x, context=context)
    V = np.vander(nodes, deg + 1, increasing=True)
    coeffs = np.linalg.solve(V, y.T).T  # monomials in t, lowest first
    test = np.linspace(-0.97, 0.97, 2 * deg + 3)
    xt = centers[:, None] + halves[:, None] * test[None, :]
    yt = np.asarray(fn(xt.ravel()), dtype=np.float64).reshape(xt.shape)
    check_node_values(fn, yt, xt, context=context)
    approx = np.polynomial.polynomial.polyval(test, coeffs.T)
    return coeffs, float(np.max(np.abs(approx - yt))), float(np.max(np.abs(y)))


def piecewise_table(fns, kinks, X, rtol=1e-14, max_cells=4096):
    """Pieces of [−X, X] cut at ``kinks``, each in equal cells with interpolants of every
    function in ``fns``. Returns (bounds, cells per piece, [coefficient tables], max error)."""
    inner = [k for k in sorted(kinks) if -X < k < X]
    bounds = np.array([-X, *inner, X], dtype=np.float64)
    counts, tables, worst = [], [[] for _ in fns], 0.0
    context = (f", an interpolation node in [{-X:.6g}, {X:.6g}] ({Z_RANGE:g} standard deviations of the "
               f"largest input variance, q = {(X / Z_RANGE) ** 2:.6g}, reaching this layer)")
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        n = max(1, int(np.ceil((hi - lo) / max(X / 16, 1e-300))))
        while True:
            fits = [_cell_fit(f, lo, hi, n, context) for f in fns]
            scale = max(max(fit[2] for fit in fits), 1e-300)
            err = max(fit[1] for fit in fits)
            if err <= rtol * scale or n >= max_cells:
                break
            n *= 2
        worst = max(worst, err / scale)
        counts.append(n)
        for table, fit in zip(tables, fits):
            table.append(fit[0])
    return bounds, np.array(counts), [np.concatenate(t) for t in tables], worst


# ------------------------------------------------------------------------- 1-D moments
def _moments_1d(layer, q, kinks, gl_x, gl_w):
    """E[φ(√q z)²], E[φ'(√q z)²] for each q, GL panels split at the kinks."""
    q = np.asarray(q, dtype=np.float64)
    sq = np.sqrt(np.maximum(q, 0.0))
    n = q.size
    with np.errstate(divide="ignore", invalid="ignore"):
        ks = np.array(kinks, dtype=np.float64)[None, :] / sq[:, None] if kinks else np.zeros((n, 0))
    ks = np.where(np.isfinite(ks), np.clip(ks, -Z_RANGE, Z_RANGE), Z_RANGE)
    edges = np.sort(np.concatenate([np.broadcast_to(_BASE, (n, _BASE.size)), ks], axis=1), axis=1)
    lo, hi = edges[:, :-1], edges[:, 1:]
    mid, half = 0.5 * (hi + lo), 0.5 * (hi - lo)
    z = mid[..., None] + half[..., None] * gl_x  # (n, panels, m)
    w = half[..., None] * gl_w * np.exp(-0.5 * z * z) / _SQRT_2PI
    x = sq[:, None, None] * z
    # The rule stops at |z| = Z_RANGE, which is only sound for a square-integrable φ.
    check_growth(layer.fn, q)
    check_growth(layer.dfn, q)
    f = layer.fn(x.ravel()).reshape(x.shape)
    d = layer.dfn(x.ravel()).reshape(x.shape)
    check_node_values(layer.fn, f, x, q[:, None, None])
    check_node_values(layer.dfn, d, x, q[:, None, None])
    # √w·φ before squaring: no overflow where w is tiny and φ large.
    sw = np.sqrt(w)
    second, dsecond = np.sum((sw * f) ** 2, axis=(1, 2)), np.sum((sw * d) ** 2, axis=(1, 2))
    check_moments(layer.fn, second, q)
    check_moments(layer.dfn, dsecond, q)
    return second, dsecond


class QuadratureDual(Dual):
    """Kink-aware quadrature dual of an activation with ``fn``, ``dfn`` and ``kinks``."""

    route = "kink-aware quadrature"
    key = "quadrature"

    def __init__(self, layer, tol: float = 1e-10):
        self.layer = layer
        self.tol = float(tol)
        self.kinks = tuple(sorted(float(k) for k in layer.kinks))

    def __repr__(self):
        return f"QuadratureDual({self.layer!r})"

    def point(self, q):
        """1-D moments per point; the tables of φ, φ' cover this call's range of variances and
        travel in the result's ``params`` (with its ``error_estimate``)."""
        q = np.asarray(q, dtype=np.float64)
        uq, inverse = np.unique(q, return_inverse=True)
        second, dsecond = _moments_1d(self.layer, uq, self.kinks, _GL20_X, _GL20_W)
        coarse, dcoarse = _moments_1d(self.layer, uq, self.kinks, _GL10_X, _GL10_W)
        zero = uq <= 0.0
        f0, d0 = self.layer.fn(np.zeros(1))[0], self.layer.dfn(np.zeros(1))[0]
        second[zero], dsecond[zero] = f0 * f0, d0 * d0
        coarse[zero], dcoarse[zero] = f0 * f0, d0 * d0
        X = Z_RANGE * max(float(np.sqrt(uq.max(initial=0.0))), 1e-3) * 1.0001
        bounds, counts, (cf, cd), fit_err = piecewise_table([self.layer.fn, self.layer.dfn], self.kinks, X)
        with np.errstate(divide="ignore", invalid="ignore"):
            rule_err = np.nanmax(np.concatenate([
                np.abs(coarse - second) / np.where(second > 0, second, 1.0),
                np.abs(dcoarse - dsecond) / np.where(dsecond > 0, dsecond, 1.0),
            ]), initial=0.0)
        err = float(max(rule_err, fit_err))
        if err > self.tol:
            warn_accuracy(
                f"The kink-aware quadrature of {self.layer!r} reached a relative error of about {err:.1e}, "
                f"above the requested {self.tol:.0e}. Check that every kink of the function is declared "
                f"(kinks={self.kinks}) and that it is smooth between them.",
                stacklevel=5,
            )
        npieces = len(counts)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        params = np.concatenate([
            [float(npieces), float(CELL_DEGREE + 1), float(len(self.kinks)), float(counts.sum())],
            np.array(self.kinks, dtype=np.float64),
            bounds, counts.astype(np.float64), offsets.astype(np.float64),
            cf.ravel(), cd.ravel(),
        ])
        data = np.ascontiguousarray(dsecond[inverse][None, :])
        return PointResult(second[inverse], dsecond[inverse], data, params=params, error_estimate=err)

    # ----- NumPy references (nested 20-point rules split at the kinks, in Python) ---------
    def T(self, q1, q2, c):
        return self._pairs(q1, q2, c)[0]

    def Tdot(self, q1, q2, c):
        return self._pairs(q1, q2, c)[1]

    def _pairs(self, q1, q2, c):
        q1, q2, c = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (q1, q2, c)))
        T = np.empty(q1.shape)
        Td = np.empty(q1.shape)
        for idx in np.ndindex(q1.shape):
            T[idx], Td[idx] = _pair_reference(self.layer, self.kinks, q1[idx], q2[idx], c[idx])
        return T, Td

    def formula(self):
        import sympy as sp

        q1, q2, c = sp.symbols("q_1 q_2 c", positive=True)
        u, v = sp.symbols("u v", real=True)
        phi = sp.Function(getattr(self.layer, "name", None) or type(self.layer).__name__)
        density = sp.Function("N_{\\Sigma}")(u, v)
        T = sp.Integral(phi(u) * phi(v) * density, (u, -sp.oo, sp.oo), (v, -sp.oo, sp.oo))
        Td = sp.Integral(sp.Derivative(phi(u), u) * sp.Derivative(phi(v), v) * density,
                         (u, -sp.oo, sp.oo), (v, -sp.oo, sp.oo))
        return T, Td

    def tile_source(self, name: str) -> str:
        return _TILE.replace("__NAME__", name)


def _pair_reference(layer, kinks, q1, q2, c):
    """(T, Ṫ) of one pair by nested 1-D GL rules split at kinks (Python; for tests)."""
    a, b = np.sqrt(max(q1, 0.0)), np.sqrt(max(q2, 0.0))
    r = a * b
    rho = float(np.clip(c / r, -1.0, 1.0)) if r > 0 else 0.0
    s = np.sqrt(max(0.0, 1.0 - rho * rho))
    e1 = sorted({*_BASE, *[np.clip(k / a, -Z_RANGE, Z_RANGE) for k in kinks if a > 0]})
    T = Td = 0.0
    for lo, hi in zip(e1[:-1], e1[1:]):
        z1 = 0.5 * (hi + lo) + 0.5 * (hi - lo) * _GL20_X
        w1 = 0.5 * (hi - lo) * _GL20_W * np.exp(-0.5 * z1 * z1) / _SQRT_2PI
        for zz, ww in zip(z1, w1):
            fu, du = layer.fn(np.array([a * zz]))[0], layer.dfn(np.array([a * zz]))[0]
            if s == 0.0 or b == 0.0:
                v = np.array([b * rho * zz])
                T += ww * fu * layer.fn(v)[0]
                Td += ww * du * layer.dfn(v)[0]
                continue
            cuts = [np.clip((k / b - rho * zz) / s, -Z_RANGE, Z_RANGE) for k in kinks]
            e2 = sorted({*_BASE, *cuts})
            for lo2, hi2 in zip(e2[:-1], e2[1:]):
                z2 = 0.5 * (hi2 + lo2) + 0.5 * (hi2 - lo2) * _GL20_X
                w2 = 0.5 * (hi2 - lo2) * _GL20_W * np.exp(-0.5 * z2 * z2) / _SQRT_2PI
                v = b * (rho * zz + s * z2)
                T += ww * fu * np.sum(w2 * layer.fn(v))
                Td += ww * du * np.sum(w2 * layer.dfn(v))
    return T, Td


_TILE = '''
_QX___NAME__ = np.array(__GLX__)
_QW___NAME__ = np.array(__GLW__)
_QB___NAME__ = np.array(__BASE__)
_QZ___NAME__ = np.empty(_QX___NAME__.shape[0] * (_QB___NAME__.shape[0] - 1))
_QG___NAME__ = np.empty(_QX___NAME__.shape[0] * (_QB___NAME__.shape[0] - 1))
for _p in range(_QB___NAME__.shape[0] - 1):
    _mid = 0.5 * (_QB___NAME__[_p + 1] + _QB___NAME__[_p])
    _half = 0.5 * (_QB___NAME__[_p + 1] - _QB___NAME__[_p])
    for _i in range(_QX___NAME__.shape[0]):
        _z = _mid + _half * _QX___NAME__[_i]
        _QZ___NAME__[_p * _QX___NAME__.shape[0] + _i] = _z
        _QG___NAME__[_p * _QX___NAME__.shape[0] + _i] = _half * _QW___NAME__[_i] * math.exp(-0.5 * _z * _z) / math.sqrt(2.0 * math.pi)


@nb.njit(**JIT_INLINE)
def __NAME___eval(x, bounds, h, counts, offsets, coef, total):
    # phi(x) and phi'(x) from the piecewise polynomial tables: cells of width h[p] in piece
    # p, monomials in the cell variable t in [-1, 1]
    npieces = counts.shape[0]
    if x < bounds[0]:
        x = bounds[0]
    elif x > bounds[npieces]:
        x = bounds[npieces]
    p = 0
    while p < npieces - 1 and x > bounds[p + 1]:
        p += 1
    hp = h[p]
    n = counts[p]
    j = int((x - bounds[p]) / hp)
    if j >= n:
        j = n - 1
    if j < 0:
        j = 0
    tt = (x - (bounds[p] + (j + 0.5) * hp)) / (0.5 * hp)
    row = offsets[p] + j
    ncoef = coef.shape[1]
    acc = coef[row, ncoef - 1]
    dacc = coef[row + total, ncoef - 1]
    for k in range(ncoef - 2, -1, -1):
        acc = acc * tt + coef[row, k]
        dacc = dacc * tt + coef[row + total, k]
    return acc, dacc


@nb.njit(**JIT_INLINE)
def __NAME___sort(e, n):
    for i in range(1, n):
        v = e[i]
        j = i - 1
        while j >= 0 and e[j] > v:
            e[j + 1] = e[j]
            j -= 1
        e[j + 1] = v


@nb.njit(**JIT_INLINE)
def __NAME___node(f1, v, inv2, bounds, h, counts, offsets, coef, total):
    # one node of the inner rule: f1 -+ f2 (f normalised) and phi'(v)
    f2, d2 = __NAME___eval(v, bounds, h, counts, offsets, coef, total)
    f2 = f2 * inv2
    return f1 - f2, f1 + f2, d2


@nb.njit(**JIT_INLINE)
def __NAME___inner(f1, mu, s, sb, inv2, kinks, bounds, h, counts, offsets, coef, total, e2):
    # E over z2 of (f1 - f2)^2, (f1 + f2)^2 and phi'(v), v = sb (mu + s z2), split where v
    # crosses a kink; unsplit base panels use precomputed nodes and weights.
    L = _QB___NAME__[_QB___NAME__.shape[0] - 1]
    m = _QX___NAME__.shape[0]
    nbase = _QB___NAME__.shape[0]
    im = 0.0
    ip = 0.0
    idd = 0.0
    n2 = 0
    for jk in range(kinks.shape[0]):
        z = (kinks[jk] / sb - mu) / s
        if -L < z < L:
            e2[n2] = z
            n2 += 1
    __NAME___sort(e2, n2)
    for p in range(nbase - 1):
        lo = _QB___NAME__[p]
        hi = _QB___NAME__[p + 1]
        cut = False
        for c in range(n2):
            if lo < e2[c] < hi:
                cut = True
        if not cut:
            for i in range(m):
                z2 = _QZ___NAME__[p * m + i]
                w2 = _QG___NAME__[p * m + i]
                dm, dp, d2 = __NAME___node(f1, sb * (mu + s * z2), inv2, bounds, h, counts, offsets, coef, total)
                im += w2 * dm * dm
                ip += w2 * dp * dp
                idd += w2 * d2
            continue
        left = lo
        for c in range(n2 + 1):
            if c < n2:
                right = e2[c]
                if not (lo < right < hi):
                    continue
            else:
                right = hi
            mid = 0.5 * (right + left)
            half = 0.5 * (right - left)
            for i in range(m):
                z2 = mid + half * _QX___NAME__[i]
                w2 = half * _QW___NAME__[i] * math.exp(-0.5 * z2 * z2) * 0.3989422804014327
                dm, dp, d2 = __NAME___node(f1, sb * (mu + s * z2), inv2, bounds, h, counts, offsets, coef, total)
                im += w2 * dm * dm
                ip += w2 * dp * dp
                idd += w2 * d2
            left = right
    return im, ip, idd


@nb.njit(**JIT_INLINE)
def __NAME___pair(sa, sb, co, s, inv1, inv2, kinks, bounds, h, counts, offsets, coef, total, e1, e2):
    L = _QB___NAME__[_QB___NAME__.shape[0] - 1]
    nbase = _QB___NAME__.shape[0]
    m = _QX___NAME__.shape[0]
    n1 = 0
    for i in range(nbase):
        e1[n1] = _QB___NAME__[i]
        n1 += 1
    aco = abs(co)
    for i in range(kinks.shape[0]):
        k = kinks[i]
        if sa > 0.0:
            z = k / sa
            if -L < z < L:
                e1[n1] = z
                n1 += 1
        # where the kink of phi(v) sweeps across the z2 range the inner integral varies on
        # the scale s/|rho|: a scaled copy of the base panels resolves it
        if sb > 0.0 and aco > 0.0 and s < aco:
            zc = k / (sb * co)
            w = s / aco
            for jb in range(nbase):
                z = zc + w * _QB___NAME__[jb]
                if -L < z < L:
                    e1[n1] = z
                    n1 += 1
    __NAME___sort(e1, n1)
    om = 0.0
    op = 0.0
    td = 0.0
    for p in range(n1 - 1):
        lo = e1[p]
        hi = e1[p + 1]
        if hi - lo <= 0.0:
            continue
        mid = 0.5 * (hi + lo)
        half = 0.5 * (hi - lo)
        for i in range(m):
            z1 = mid + half * _QX___NAME__[i]
            w1 = half * _QW___NAME__[i] * math.exp(-0.5 * z1 * z1) * 0.3989422804014327
            u = sa * z1
            f1, d1 = __NAME___eval(u, bounds, h, counts, offsets, coef, total)
            f1 = f1 * inv1
            mu = co * z1
            if s == 0.0 or sb == 0.0:
                v = sb * mu
                f2, d2 = __NAME___eval(v, bounds, h, counts, offsets, coef, total)
                f2 = f2 * inv2
                om += w1 * (f1 - f2) * (f1 - f2)
                op += w1 * (f1 + f2) * (f1 + f2)
                td += w1 * d1 * d2
                continue
            im, ip, idd = __NAME___inner(f1, mu, s, sb, inv2, kinks, bounds, h, counts, offsets, coef, total, e2)
            om += w1 * im
            op += w1 * ip
            td += w1 * d1 * idd
    return 0.5 * om, 0.5 * op, td


@nb.njit(**JIT_OPTIONS)
def __NAME__(rho, sn2, t, i0, j0, sqa, sqb, sqa_out, sqb_out, P1, P2, prm, want_ntk):
    # prm = [npieces, ncoef, nkinks, ncells, kinks..., bounds (npieces+1), cells per piece,
    #        offsets, coefficients of phi (ncells x ncoef), of phi' (ncells x ncoef)]
    npieces = int(prm[0])
    ncoef = int(prm[1])
    nk = int(prm[2])
    total = int(prm[3])
    kinks = prm[4:4 + nk].copy()
    b0 = 4 + nk
    bounds = prm[b0:b0 + npieces + 1].copy()
    counts = np.empty(npieces, dtype=np.int64)
    offsets = np.empty(npieces, dtype=np.int64)
    h = np.empty(npieces)
    for p in range(npieces):
        counts[p] = int(prm[b0 + npieces + 1 + p])
        offsets[p] = int(prm[b0 + 2 * npieces + 1 + p])
        h[p] = (bounds[p + 1] - bounds[p]) / counts[p]
    c0 = b0 + 3 * npieces + 1
    coef = prm[c0:c0 + 2 * total * ncoef].copy().reshape((2 * total, ncoef))
    e1 = np.empty(_QB___NAME__.shape[0] * (nk + 1) + nk + 2)
    e2 = np.empty(nk + 2)
    bi, bj = rho.shape
    for a in range(bi):
        ia = i0 + a
        sa = sqa[ia]
        s1 = sqa_out[ia]
        inv1 = 1.0 / s1 if s1 > 0.0 else 0.0
        for b in range(bj):
            jb = j0 + b
            sb = sqb[jb]
            s2 = sqb_out[jb]
            co = rho[a, b]
            if sa == sb and sn2[a, b] == 0.0 and co > 0.0:
                rho[a, b] = 1.0
                sn2[a, b] = 0.0
                if want_ntk:
                    t[a, b] = t[a, b] * P1[0, ia]
                continue
            inv2 = 1.0 / s2 if s2 > 0.0 else 0.0
            # The rule is not symmetric in (u, v): order the pair so T(x, x') and T(x', x)
            # are computed identically (symmetric and non-symmetric Gram matrices agree).
            if sa <= sb:
                om, op, td = __NAME___pair(sa, sb, co, math.sqrt(sn2[a, b]), inv1, inv2, kinks, bounds, h, counts,
                                           offsets, coef, total, e1, e2)
            else:
                om, op, td = __NAME___pair(sb, sa, co, math.sqrt(sn2[a, b]), inv2, inv1, kinks, bounds, h, counts,
                                           offsets, coef, total, e1, e2)
            if s1 > 0.0 and s2 > 0.0:
                rn = 0.5 * (op - om)
            else:
                rn = 0.0
                om = 1.0
                op = 1.0
            rho[a, b] = min(max(rn, -1.0), 1.0)
            sn2[a, b] = min(max(om, 0.0) * max(op, 0.0), 1.0)
            if want_ntk:
                t[a, b] = t[a, b] * td
'''.replace("__GLX__", repr([float(x) for x in _GL10_X])).replace(
    "__GLW__", repr([float(w) for w in _GL10_W])).replace("__BASE__", repr([float(x) for x in _BASE]))
