r"""Jitted position maps of the spatial pair pass (docs/DESIGN.md, "Spatial layers").

The pair state is the dense engine's normalised state (ρ, sin²θ, Θ) per entry, with
per-point √q, where a "point" is an (image, position) and a pair of images has a block of
entries over position pairs. Two layouts:

* **full**: one tile is a (bi·P, bj·P) array; row a·P + p is image I0 + a at position p, so
  the activation tiles of :mod:`ntk_infinite.compiler.duals` act on it unchanged (their
  per-point arrays are image-major: index i·P + p).
* **diagonal**: only same-position entries, a (P, bi, bj) array; slice p is an ordinary
  dense tile over images whose per-point arrays are position-major (index p·n + i).

Position maps are given by index tables ``tab[u, o]``: the input position read by output
position u at offset o, or −1 for padding; ``k`` is the divisor (the filter size).

**Same-offset sums (Conv, Flatten) without cancellation.** With α_o = √q₁ and β_o = √q₂ at the
two source positions of offset o (0 for padding), r_o = α_o β_o, the summed Gram determinant is

.. math::

    k^2\,(\tilde q_1 \tilde q_2 - \tilde c^2)
      = \underbrace{\Big(\sum_o \alpha_o^2\Big)\Big(\sum_o \beta_o^2\Big) - \Big(\sum_o \alpha_o\beta_o\Big)^2}_{
        \frac12 \sum_{o, o'} (\alpha_o\beta_{o'} - \alpha_{o'}\beta_o)^2\ \text{(Lagrange)}}
      + \Big(\sum_o r_o (1 - \rho_o)\Big)\Big(\sum_o r_o (1 + \rho_o)\Big),

every term non-negative; 1 ∓ ρ come from sin²θ without cancellation, and near collinear
pairs get the Lagrange term from its sum of squares. The affine map that follows is the
dense engine's (:func:`~ntk_infinite.evaluate._numerics.affine_pair`):
D' = w⁴ D̃ + w²b² δ̃ with δ̃ = q̃₁ + q̃₂ − 2c̃ = (1/k) Σ_o [(α_o − β_o)² + 2 r_o (1 − ρ_o)].
So θ stays accurate to rounding level through convolutions, as through dense layers.

**Independent-offset sums (AvgPool, GlobalAvgPool)** average covariances c = ρ√q₁√q₂ and
renormalise by the pooled per-point variances; sin²θ is then (1 − ρ)(1 + ρ) of the rounded ρ.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ._numerics import JIT_INLINE, JIT_OPTIONS, one_minus_rho, one_plus_rho, reciprocal

__all__ = ["init_full", "init_diag", "conv_full", "conv_diag", "pool_full", "affine_tile_diag"]

#: Summed determinants below this fraction of q̃₁q̃₂ get the Lagrange term from its sum of squares.
NEAR_COLLINEAR = 1e-3
_NEAR_INPUT = 1e-4


@nb.njit(**JIT_INLINE)
def _input_entry(x1, x2, inv1, inv2):
    """(ρ, sin²θ) of two channel vectors: ρ from the dot product, sin²θ from |u−v||u+v|/2 of
    the unit vectors when the pair is nearly collinear (no cancellation)."""
    C = x1.shape[0]
    dot = 0.0
    for c in range(C):
        dot += x1[c] * x2[c]
    rho = min(max(dot * inv1 * inv2, -1.0), 1.0)
    sn2 = (1.0 - rho) * (1.0 + rho)
    if inv1 == 0.0 or inv2 == 0.0:
        return 0.0, 0.0
    if sn2 < _NEAR_INPUT:
        dm = 0.0
        dp = 0.0
        for c in range(C):
            u = x1[c] * inv1
            v = x2[c] * inv2
            dm += (u - v) * (u - v)
            dp += (u + v) * (u + v)
        sn2 = min(0.25 * dm * dp, 1.0)
    return rho, sn2


@nb.njit(**JIT_OPTIONS)
def init_full(rho, sn2, t, X1, X2, inv1, inv2, I0, J0, bi, bj, P, want_ntk):
    """Σ⁰ of a full tile: X1 (n1, P, C), inverse channel norms inv1 (n1, P)."""
    for a in range(bi):
        for p in range(P):
            r = a * P + p
            x1 = X1[I0 + a, p]
            i1 = inv1[I0 + a, p]
            for b in range(bj):
                for pp in range(P):
                    c = b * P + pp
                    rho[r, c], sn2[r, c] = _input_entry(x1, X2[J0 + b, pp], i1, inv2[J0 + b, pp])
    if want_ntk:
        t[:, :] = 0.0


@nb.njit(**JIT_OPTIONS)
def init_diag(rho, sn2, t, X1, X2, inv1, inv2, I0, J0, bi, bj, P, want_ntk):
    """Σ⁰ of a diagonal tile (P, bi, bj)."""
    for p in range(P):
        for a in range(bi):
            x1 = X1[I0 + a, p]
            i1 = inv1[I0 + a, p]
            for b in range(bj):
                rho[p, a, b], sn2[p, a, b] = _input_entry(x1, X2[J0 + b, p], i1, inv2[J0 + b, p])
    if want_ntk:
        t[:, :, :] = 0.0


@nb.njit(**JIT_INLINE)
def _same_offset_entry(rho, sn2, t, ra, cb, ta, tb, K, sqa, sqb, ia0, jb0, k, want_ntk):
    """Sums over the offsets of one output entry. ``ta``/``tb``: the source positions of the
    two output positions (−1: padding); ``ra``/``cb``: row/column offsets of the pair's block;
    ``ia0``/``jb0``: offsets of the pair's points in the per-point arrays.
    Returns (c̃·k, Lagrange + E·F, δ̃·k, Θ̃·k, Qa, Qb)."""
    qa = 0.0
    qb = 0.0
    sab = 0.0
    sc = 0.0
    e = 0.0
    f = 0.0
    sd = 0.0
    st = 0.0
    for o in range(K):
        pa = ta[o]
        pb = tb[o]
        al = sqa[ia0 + pa] if pa >= 0 else 0.0
        be = sqb[jb0 + pb] if pb >= 0 else 0.0
        qa += al * al
        qb += be * be
        if pa >= 0 and pb >= 0:
            rr = rho[ra + pa, cb + pb]
            ss = sn2[ra + pa, cb + pb]
            r = al * be
            sab += r
            sc += r * rr
            e += r * one_minus_rho(rr, ss)
            f += r * one_plus_rho(rr, ss)
            d = al - be
            sd += d * d
            if want_ntk:
                st += t[ra + pa, cb + pb]
        else:
            sd += al * al + be * be
    lag = qa * qb - sab * sab
    det = max(lag, 0.0) + e * f
    if det < NEAR_COLLINEAR * qa * qb:
        lag = 0.0
        for o in range(K):
            pa = ta[o]
            pb = tb[o]
            al = sqa[ia0 + pa] if pa >= 0 else 0.0
            be = sqb[jb0 + pb] if pb >= 0 else 0.0
            for o2 in range(o + 1, K):
                pa2 = ta[o2]
                pb2 = tb[o2]
                al2 = sqa[ia0 + pa2] if pa2 >= 0 else 0.0
                be2 = sqb[jb0 + pb2] if pb2 >= 0 else 0.0
                m = al * be2 - al2 * be
                lag += m * m
        det = lag + e * f
    return sc, det, sd + 2.0 * e, st, qa, qb


@nb.njit(**JIT_INLINE)
def _affine_normalise(sc, det, delta, st, k, w2, b2, inv_a, inv_b, affine):
    """(ρ', sin²θ', Θ') of an output entry from the offset sums (see the module docstring);
    ``affine``: a Conv (Θ gains the new Σ), not a Flatten (Θ is only averaged)."""
    ik = 1.0 / k
    c_new = w2 * (sc * ik) + b2
    rho_new = min(max((c_new * inv_a) * inv_b, -1.0), 1.0)
    d_new = (w2 * w2) * (det * ik * ik) + (w2 * b2) * (delta * ik)
    sn2_new = min(((d_new * inv_a) * inv_b) * (inv_a * inv_b), 1.0)
    return rho_new, sn2_new, w2 * (st * ik) + (c_new if affine else 0.0)


@nb.njit(**JIT_OPTIONS)
def conv_full(rho, sn2, t, out_r, out_s, out_t, tab, k, Pi, Po, sqa, sqb, sqa_o, sqb_o, I0, J0, bi, bj,
              w2, b2, affine, want_ntk):
    """Same-offset sum on a full tile (bi·Pi, bj·Pi) -> (bi·Po, bj·Po); per-point arrays image-major."""
    K = tab.shape[1]
    for a in range(bi):
        ia0 = (I0 + a) * Pi
        for b in range(bj):
            jb0 = (J0 + b) * Pi
            for u in range(Po):
                inv_a = reciprocal(sqa_o[(I0 + a) * Po + u])
                for v in range(Po):
                    inv_b = reciprocal(sqb_o[(J0 + b) * Po + v])
                    sc, det, delta, st, qa, qb = _same_offset_entry(rho, sn2, t, a * Pi, b * Pi, tab[u], tab[v], K,
                                                                    sqa, sqb, ia0, jb0, k, want_ntk)
                    r_, s_, t_ = _affine_normalise(sc, det, delta, st, k, w2, b2, inv_a, inv_b, affine)
                    out_r[a * Po + u, b * Po + v] = r_
                    out_s[a * Po + u, b * Po + v] = s_
                    if want_ntk:
                        out_t[a * Po + u, b * Po + v] = t_


@nb.njit(**JIT_OPTIONS)
def conv_diag(rho, sn2, t, out_r, out_s, out_t, tab, k, n1, n2, sqa, sqb, sqa_o, sqb_o, I0, J0, bi, bj,
              w2, b2, affine, want_ntk):
    """Same-offset sum on a diagonal tile (Pi, bi, bj) -> (Po, bi, bj); per-point arrays
    position-major. Only same-position entries are read, so each offset is one entry."""
    Po = tab.shape[0]
    K = tab.shape[1]
    for u in range(Po):
        tu = tab[u]
        for a in range(bi):
            inv_a = reciprocal(sqa_o[u * n1 + I0 + a])
            for b in range(bj):
                inv_b = reciprocal(sqb_o[u * n2 + J0 + b])
                qa = 0.0
                qb = 0.0
                sab = 0.0
                sc = 0.0
                e = 0.0
                f = 0.0
                sd = 0.0
                st = 0.0
                for o in range(K):
                    p = tu[o]
                    if p < 0:
                        continue
                    al = sqa[p * n1 + I0 + a]
                    be = sqb[p * n2 + J0 + b]
                    rr = rho[p, a, b]
                    ss = sn2[p, a, b]
                    r = al * be
                    qa += al * al
                    qb += be * be
                    sab += r
                    sc += r * rr
                    e += r * one_minus_rho(rr, ss)
                    f += r * one_plus_rho(rr, ss)
                    d = al - be
                    sd += d * d
                    if want_ntk:
                        st += t[p, a, b]
                lag = qa * qb - sab * sab
                det = max(lag, 0.0) + e * f
                if det < NEAR_COLLINEAR * qa * qb:
                    lag = 0.0
                    for o in range(K):
                        p = tu[o]
                        if p < 0:
                            continue
                        al = sqa[p * n1 + I0 + a]
                        be = sqb[p * n2 + J0 + b]
                        for o2 in range(o + 1, K):
                            p2 = tu[o2]
                            if p2 < 0:
                                continue
                            m = al * sqb[p2 * n2 + J0 + b] - sqa[p2 * n1 + I0 + a] * be
                            lag += m * m
                    det = lag + e * f
                r_, s_, t_ = _affine_normalise(sc, det, sd + 2.0 * e, st, k, w2, b2, inv_a, inv_b, affine)
                out_r[u, a, b] = r_
                out_s[u, a, b] = s_
                if want_ntk:
                    out_t[u, a, b] = t_


@nb.njit(**JIT_OPTIONS)
def pool_full(rho, sn2, t, out_r, out_s, out_t, tab, k, Pi, Po, sqa, sqb, sqa_o, sqb_o, I0, J0, bi, bj, want_ntk):
    """Independent-offset average on a full tile: c̃[u, v] = (1/k²) Σ_{o, o'} c[tab[u, o], tab[v, o']]
    (separably: first over the columns, then over the rows), Θ alike."""
    K = tab.shape[1]
    ik2 = 1.0 / (k * k)
    half_c = np.empty((Pi, Po))
    half_t = np.empty((Pi, Po))
    for a in range(bi):
        ia0 = (I0 + a) * Pi
        for b in range(bj):
            jb0 = (J0 + b) * Pi
            for p in range(Pi):
                al = sqa[ia0 + p]
                for v in range(Po):
                    acc = 0.0
                    acct = 0.0
                    for o in range(K):
                        pb = tab[v, o]
                        if pb >= 0:
                            acc += rho[a * Pi + p, b * Pi + pb] * (al * sqb[jb0 + pb])
                            if want_ntk:
                                acct += t[a * Pi + p, b * Pi + pb]
                    half_c[p, v] = acc
                    half_t[p, v] = acct
            for u in range(Po):
                inv_a = reciprocal(sqa_o[(I0 + a) * Po + u])
                for v in range(Po):
                    inv_b = reciprocal(sqb_o[(J0 + b) * Po + v])
                    acc = 0.0
                    acct = 0.0
                    for o in range(K):
                        pa = tab[u, o]
                        if pa >= 0:
                            acc += half_c[pa, v]
                            acct += half_t[pa, v]
                    r_ = min(max((acc * ik2 * inv_a) * inv_b, -1.0), 1.0)
                    out_r[a * Po + u, b * Po + v] = r_
                    out_s[a * Po + u, b * Po + v] = (1.0 - r_) * (1.0 + r_)
                    if want_ntk:
                        out_t[a * Po + u, b * Po + v] = acct * ik2
