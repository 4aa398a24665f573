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

**Same-offset sums (Conv, Flatten).** The covariances c = ρ√q₁√q₂ and Θ are summed over the
offsets axis by axis (:func:`axis_pass_full`; the diagonal layout adds whole slices), and
the output's sin²θ comes from the summed Gram determinant k²(q̃₁q̃₂ − c̃²), whose relative
error is ~ε·q̃₁q̃₂/det: below 1e-12 wherever det ≥ NEAR_COLLINEAR·q̃₁q̃₂. The other, nearly
collinear entries are redone without cancellation. With α_o = √q₁ and β_o = √q₂ at the two
source positions of offset o (0 for padding), r_o = α_o β_o,

.. math::

    k^2\,(\tilde q_1 \tilde q_2 - \tilde c^2)
      = \underbrace{\Big(\sum_o \alpha_o^2\Big)\Big(\sum_o \beta_o^2\Big) - \Big(\sum_o \alpha_o\beta_o\Big)^2}_{
        \frac12 \sum_{o, o'} (\alpha_o\beta_{o'} - \alpha_{o'}\beta_o)^2\ \text{(Lagrange)}}
      + \Big(\sum_o r_o (1 - \rho_o)\Big)\Big(\sum_o r_o (1 + \rho_o)\Big),

every term non-negative, 1 ∓ ρ from sin²θ without cancellation and the Lagrange term from
its sum of squares (:func:`_collinear_sums`). The affine map that follows is the
dense engine's (:func:`~ntk_infinite.evaluate._numerics.affine_pair`):
D' = w⁴ D̃ + w²b² δ̃ with δ̃ = q̃₁ + q̃₂ − 2c̃ = (1/k) Σ_o [(α_o − β_o)² + 2 r_o (1 − ρ_o)].
So θ stays accurate to rounding level through convolutions, as through dense layers.

**Independent-offset sums (AvgPool, GlobalAvgPool)** average covariances c = ρ√q₁√q₂ and
renormalise by the pooled per-point variances; sin²θ is then (1 − ρ)(1 + ρ) of the rounded ρ.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._numerics import JIT_INLINE, JIT_OPTIONS, one_minus_rho, one_plus_rho, reciprocal
from ._offset_sums import axis_pass_full, pure_shifts, shift_masks, shift_pass_full, slice_sums

__all__ = ["init_full", "init_diag", "conv_full", "conv_diag", "pool_full", "norm_full",
           "norm_diag"]

#: Summed determinants below this fraction of q̃₁q̃₂ get the Lagrange term from its sum of squares.
NEAR_COLLINEAR = 1e-3
_NEAR_INPUT = 1e-4


@nb.njit(**JIT_INLINE)
def _input_row(rr, ss, fix, x1, i1, V2, start):
    """One row of Σ⁰ in normalised form, against a row of unit channel vectors of X2
    (``V2[c, start + col]``, transposed so every loop over columns vectorises): ρ = u·v, and
    sin²θ = (1 − ρ)(1 + ρ) or, for the few nearly collinear pairs, ¼|u − v|²|u + v|² (no
    cancellation; exactly 0 for collinear ones, e.g. every pair of a one-channel input),
    recomputed in a second, scalar loop. ``fix``: scratch for their columns."""
    m = rr.shape[0]
    C = V2.shape[0]
    for g in range(0, C, 3):  # three channels per pass (weight 0 past the last)
        v0 = V2[g, start:start + m]
        v1 = V2[g + 1, start:start + m] if g + 1 < C else v0
        v2 = V2[g + 2, start:start + m] if g + 2 < C else v0
        u0 = x1[g] * i1
        u1 = x1[g + 1] * i1 if g + 1 < C else 0.0
        u2 = x1[g + 2] * i1 if g + 2 < C else 0.0
        if g == 0:
            for col in range(m):
                rr[col] = u0 * v0[col] + u1 * v1[col] + u2 * v2[col]
        else:
            for col in range(m):
                rr[col] += u0 * v0[col] + u1 * v1[col] + u2 * v2[col]
    near = 0
    for col in range(m):
        r = min(max(rr[col], -1.0), 1.0)
        rr[col] = r
        direct = (1.0 - r) * (1.0 + r)
        ss[col] = direct
        near += 1 if direct < _NEAR_INPUT else 0  # a vectorised count: the scan below is scalar
    count = 0
    for col in range(m if near > 0 else 0):
        if ss[col] < _NEAR_INPUT:
            fix[count] = col
            count += 1
    for k in range(count):
        col = fix[k]
        dm = 0.0
        dp = 0.0
        for c in range(V2.shape[0]):
            u = x1[c] * i1
            v = V2[c, start + col]
            dm += (u - v) * (u - v)
            dp += (u + v) * (u + v)
        ss[col] = min(0.25 * dm * dp, 1.0)


@nb.njit(nogil=True, **JIT_OPTIONS)
def init_full(rho, sn2, t, X1, inv1, V2, I0, J0, bi, bj, P, want_ntk, blank_self=False):
    """Σ⁰ of a full tile: X1 (n1, P, C), inverse channel norms inv1 (n1, P), V2 (C, n2·P) the unit
    channel vectors of X2 image-major. ``blank_self``: the tile's pairs of an image with itself
    (a tile on the diagonal of K(X)) start uncorrelated, see :func:`_blank`."""
    fix = np.empty(bj * P, dtype=np.int64)
    for a in range(bi):
        for p in range(P):
            r = a * P + p
            _input_row(rho[r], sn2[r], fix, X1[I0 + a, p], inv1[I0 + a, p], V2, J0 * P)
    if blank_self:
        for a in range(min(bi, bj)):
            for p in range(P):
                _blank(rho[a * P + p, a * P:(a + 1) * P], sn2[a * P + p, a * P:(a + 1) * P])
    if want_ntk:
        t[:, :] = 0.0


@nb.njit(**JIT_INLINE)
def _blank(rr, ss):
    """ρ = 0, sin²θ = 1 on a row of entries of an image with itself. K(X)'s diagonal comes from
    the point pass (exactly; the pair pass's value is overwritten), and these exactly collinear
    entries would otherwise take the slow cancellation-free paths in every layer (in the
    diagonal layout at n = 200, 1% of the entries cost a third of the time)."""
    for x in range(rr.shape[0]):
        rr[x] = 0.0
        ss[x] = 1.0


@nb.njit(**JIT_OPTIONS)
def init_diag(rho, sn2, t, X1, inv1, V2, n2, I0, J0, bi, bj, P, want_ntk, blank_self=False):
    """Σ⁰ of a diagonal tile (P, bi, bj); V2 (C, P·n2) position-major; ``blank_self`` as in
    :func:`init_full`."""
    fix = np.empty(bj, dtype=np.int64)
    for p in range(P):
        for a in range(bi):
            _input_row(rho[p, a], sn2[p, a], fix, X1[I0 + a, p], inv1[I0 + a, p], V2, p * n2 + J0)
            if blank_self and a < bj:
                _blank(rho[p, a, a:a + 1], sn2[p, a, a:a + 1])
    if want_ntk:
        t[:, :, :] = 0.0


@nb.njit(**JIT_INLINE)
def _collinear_sums(al, be, rr, ss, tt, want_ntk):
    """Cancellation-free offset sums of one nearly collinear entry (see the module docstring)
    from per-offset α, β (0 at padding), ρ, sin²θ and Θ (0 where either side is padding):
    returns (c̃·k, Lagrange + E·F, δ̃·k, Θ̃·k)."""
    K = al.shape[0]
    sc = 0.0
    e = 0.0
    f = 0.0
    sd = 0.0
    st = 0.0
    lag = 0.0
    for o in range(K):
        r = al[o] * be[o]
        sc += r * rr[o]
        e += r * one_minus_rho(rr[o], ss[o])
        f += r * one_plus_rho(rr[o], ss[o])
        d = al[o] - be[o]
        sd += d * d
        if want_ntk:
            st += tt[o]
        for o2 in range(o + 1, K):
            m = al[o] * be[o2] - al[o2] * be[o]
            lag += m * m
    return sc, lag + e * f, sd + 2.0 * e, st


@nb.njit(**JIT_INLINE)
def _same_offset_entry(v, rho, sn2, t, ra, cb, ta, tb, K, sqa, sqb, ia0, jb0, want_ntk):
    """:func:`_collinear_sums` of one full-layout entry: ``ta``/``tb`` the source positions of
    its two output positions (−1: padding), ``ra``/``cb`` the row/column offsets of the pair's
    block, ``ia0``/``jb0`` those of its points in the per-point arrays."""
    v[:, :] = 0.0
    for o in range(K):
        pa = ta[o]
        pb = tb[o]
        v[0, o] = sqa[ia0 + pa] if pa >= 0 else 0.0
        v[1, o] = sqb[jb0 + pb] if pb >= 0 else 0.0
        if pa >= 0 and pb >= 0:
            v[2, o] = rho[ra + pa, cb + pb]
            v[3, o] = sn2[ra + pa, cb + pb]
            if want_ntk:
                v[4, o] = t[ra + pa, cb + pb]
    return _collinear_sums(v[0], v[1], v[2], v[3], v[4], want_ntk)


@nb.njit(**JIT_INLINE)
def _affine_normalise(sc, det, delta, st, k, w2, b2, inv_a, inv_b, ta, tb):
    """(ρ', sin²θ', Θ') of an output entry from the offset sums (see the module docstring);
    Θ' = w²·mean(Θ) + ta·mean(c) + tb: (ta, tb) = (w², b²) for a Conv (Θ gains the new Σ),
    (C_in|k|, [σb > 0]) for a Conv in standard parameterisation, (0, 0) for a Flatten."""
    ik = 1.0 / k
    c_new = w2 * (sc * ik) + b2
    rho_new = min(max((c_new * inv_a) * inv_b, -1.0), 1.0)
    d_new = (w2 * w2) * (det * ik * ik) + (w2 * b2) * (delta * ik)
    sn2_new = min(((d_new * inv_a) * inv_b) * (inv_a * inv_b), 1.0)
    return rho_new, sn2_new, w2 * (st * ik) + ta * (sc * ik) + tb


@nb.njit(**JIT_INLINE)
def work_view(W, slot, rows, cols):
    """A (rows, cols) array in row ``slot`` of a per-thread workspace (reused: no allocation
    and no page faults per layer)."""
    return W[slot, :rows * cols].reshape((rows, cols))


#: Workspace rows of the full layout: two state sets (ρ, sin²θ, Θ) and four sums.
FULL_SLOTS = 10


@nb.njit(nogil=True, **JIT_OPTIONS)
def conv_full(rho, sn2, t, nr, ns, nt, W, tab, k, Pi, Po, sqa, sqb, sqa_o, sqb_o, I0, J0, bi, bj, w2, b2, ta, tb,
              want_ntk, meta, axtab, runs, nruns, grid, t_zero, self_pair=False):
    """Same-offset sum on a full tile (bi·Pi, bj·Pi) -> (bi·Po, bj·Po) into (nr, ns, nt),
    per-point arrays image-major. The covariances c = ρ√q₁√q₂ and Θ are summed axis by axis
    (:func:`axis_pass_full`) through workspace rows 6–9, then normalised (:func:`normalise_full`).
    ``t_zero``: Θ is 0 (no affine layer yet), so are its sums: they are not computed.
    ``self_pair``: the tile is one image with itself (see :func:`normalise_full`)."""
    rows = bi * Pi
    cols = bj * Pi
    c = work_view(W, 6, rows, cols)
    sb = sqb[J0 * Pi:J0 * Pi + cols]
    for r in range(rows):
        s = sqa[I0 * Pi + r]
        rr = rho[r]
        cr = c[r]
        for col in range(cols):
            cr[col] = (rr[col] * s) * sb[col]
    src_c = c
    src_t = t
    c_slot = 6
    t_slot = 9
    shape = grid.copy()
    D = meta.shape[0]
    shifts = np.empty(axtab.shape[2], dtype=np.int64)
    for d in range(D - 1, -1, -1):
        n_in = meta[d, 0]
        m_out = meta[d, 1]
        K = meta[d, 2]
        outer = 1
        for e in range(d):
            outer *= shape[e]
        inner = 1
        for e in range(d + 1, D):
            inner *= shape[e]
        P_new = outer * m_out * inner
        c_slot = 13 - c_slot
        t_slot = 17 - t_slot
        tab_d = axtab[d, :m_out, :K]
        # Pure shifts on the last axis: one long loop per row (the runs are one per image row
        # there); on the other axes the runs are already long.
        shifted = inner == 1 and pure_shifts(tab_d, n_in, shifts)
        if shifted:
            masks = shift_masks(tab_d, bj * outer * n_in)
        dst_c = nr if d == 0 else work_view(W, c_slot, bi * P_new, bj * P_new)
        with_t = want_ntk and not t_zero
        dst_t = (nt if d == 0 else work_view(W, t_slot, bi * P_new, bj * P_new)) if with_t else dst_c
        if shifted:
            shift_pass_full(src_c, dst_c, src_t if with_t else src_c, dst_t, with_t, bi, outer, n_in, tab_d, shifts,
                            masks)
        else:
            axis_pass_full(src_c, dst_c, bi, bj, outer, n_in, m_out, inner, tab_d, runs[d], nruns[d])
            if with_t:
                axis_pass_full(src_t, dst_t, bi, bj, outer, n_in, m_out, inner, tab_d, runs[d], nruns[d])
        src_c = dst_c
        if with_t:
            src_t = dst_t
        shape[d] = m_out
    if want_ntk and t_zero:
        nt[:, :] = 0.0
    normalise_full(rho, sn2, t, nr, nt, ns, tab, k, Pi, Po, sqa, sqb, sqa_o, sqb_o, I0, J0, bi, bj,
                   w2, b2, ta, tb, want_ntk, self_pair)


@nb.njit(**JIT_INLINE)
def _summed_variances(sq, base, P, tab, out, count):
    """out[a·Po + u] = Σ_o q[tab[u, o]] of ``count`` images (√q image-major from ``base``)."""
    Po = tab.shape[0]
    for a in range(count):
        for u in range(Po):
            acc = 0.0
            for o in range(tab.shape[1]):
                p = tab[u, o]
                if p >= 0:
                    v = sq[base + a * P + p]
                    acc += v * v
            out[a * Po + u] = acc


@nb.njit(**JIT_OPTIONS)
def normalise_full(rho, sn2, t, sc, st, out_s, tab, k, Pi, Po, sqa, sqb, sqa_o, sqb_o, I0, J0, bi, bj,
                   w2, b2, ta, tb, want_ntk, self_pair=False):
    """(ρ', sin²θ', Θ') from the offset sums sc = Σ c, st = Σ Θ (overwritten by ρ' and Θ';
    sin²θ' into ``out_s``). sin²θ' from the Gram determinant q̃₁q̃₂ − c̃² where it is at least
    NEAR_COLLINEAR of q̃₁q̃₂ (a relative error ~1e-13); nearly collinear entries are redone from
    the cancellation-free sums of :func:`_same_offset_entry`. ``self_pair``: one image with
    itself, whose same-position entries are exactly collinear (ρ' = 1, sin²θ' = 0) and are set so
    rather than redone."""
    K = tab.shape[1]
    qa = np.empty(bi * Po)
    qb = np.empty(bj * Po)
    _summed_variances(sqa, I0 * Pi, Pi, tab, qa, bi)
    _summed_variances(sqb, J0 * Pi, Pi, tab, qb, bj)
    invb = np.empty(bj * Po)
    for col in range(bj * Po):
        invb[col] = reciprocal(sqb_o[J0 * Po + col])
    gap = np.empty(bj * Po)
    scratch = np.empty((5, K))  # per-offset values of one nearly collinear entry
    ik = 1.0 / k
    for r in range(bi * Po):
        q1 = qa[r]
        ia = reciprocal(sqa_o[I0 * Po + r])
        crow = sc[r]
        srow = out_s[r]
        trow = st[r] if want_ntk else st[0]
        near = 0
        for col in range(bj * Po):
            q2 = qb[col]
            s = crow[col]
            if want_ntk:  # loop-invariant: LLVM keeps two versions of the loop
                trow[col] = w2 * (trow[col] * ik) + ta * (s * ik) + tb
            det = q1 * q2 - s * s
            g = det - NEAR_COLLINEAR * (q1 * q2)
            gap[col] = g
            near += 1 if g < 0.0 else 0  # a vectorised count: the scan below is scalar
            ib = invb[col]
            c_new = w2 * (s * ik) + b2
            d_new = (w2 * w2) * (max(det, 0.0) * ik * ik) + (w2 * b2) * ((q1 + q2 - 2.0 * s) * ik)
            srow[col] = min(((d_new * ia) * ib) * (ia * ib), 1.0)
            crow[col] = min(max((c_new * ia) * ib, -1.0), 1.0)
        if self_pair:
            crow[r] = 1.0
            srow[r] = 0.0
            near -= 1 if gap[r] < 0.0 else 0
            gap[r] = 0.0
        for col in range(bj * Po if near > 0 else 0):
            if gap[col] < 0.0:
                a = r // Po
                u = r - a * Po
                b = col // Po
                v = col - b * Po
                e_sc, e_det, e_delta, e_st = _same_offset_entry(
                    scratch, rho, sn2, t, a * Pi, b * Pi, tab[u], tab[v], K, sqa, sqb, (I0 + a) * Pi, (J0 + b) * Pi, want_ntk)
                r_, s_, t_ = _affine_normalise(e_sc, e_det, e_delta, e_st, k, w2, b2, ia, invb[col], ta, tb)
                crow[col] = r_
                srow[col] = s_
                if want_ntk:
                    st[r, col] = t_


@nb.njit(**JIT_OPTIONS)
def conv_diag(rho, sn2, t, nr, ns, nt, c, tab, k, n1, n2, sqa, sqb, sqa_o, sqb_o, I0, J0, bi, bj, w2, b2, ta, tb,
              want_ntk, t_zero):
    """Same-offset sum on a diagonal tile (Pi, bi, bj) -> (Po, bi, bj) into (nr, ns, nt), per-point
    arrays position-major; ``c`` a (Pi, bi·bj) work array. Only same-position entries are read,
    so output slice u is the sum of the input slices tab[u, o] (contiguous adds), normalised as
    in :func:`normalise_full`. ``t_zero``: Θ is 0, so are its sums (not computed)."""
    Pi = rho.shape[0]
    Po = tab.shape[0]
    m = bi * bj
    for p in range(Pi):
        sb = sqb[p * n2 + J0:p * n2 + J0 + bj]  # views: non-negative loop indices vectorise
        for a in range(bi):
            s = sqa[p * n1 + I0 + a]
            rr = rho[p, a]
            cr = c[p, a * bj:(a + 1) * bj]
            for b in range(bj):
                cr[b] = (rr[b] * s) * sb[b]
    tf = t.reshape(t.shape[0], t.shape[1] * t.shape[2])
    oc = nr.reshape(Po, m)
    ot = nt.reshape(Po, m) if want_ntk else tf
    slice_sums(c, oc, tab)
    if want_ntk:
        if t_zero:
            ot[:, :] = 0.0
        else:
            slice_sums(tf, ot, tab)
    out_s = ns.reshape(Po, m)
    qa = np.empty(bi)
    qb = np.empty(bj)
    ia = np.empty(bi)
    ib = np.empty(bj)
    gap = np.empty(m)
    scratch = np.empty((5, tab.shape[1]))  # per-offset values of one nearly collinear entry
    ik = 1.0 / k
    for u in range(Po):
        for a in range(bi):
            qa[a] = _summed_diag(sqa, tab[u], n1, I0 + a)
            ia[a] = reciprocal(sqa_o[u * n1 + I0 + a])
        for b in range(bj):
            qb[b] = _summed_diag(sqb, tab[u], n2, J0 + b)
            ib[b] = reciprocal(sqb_o[u * n2 + J0 + b])
        crow = oc[u]
        srow = out_s[u]
        trow = ot[u] if want_ntk else ot[0]
        near = 0
        for a in range(bi):
            q1 = qa[a]
            iaa = ia[a]
            ca = crow[a * bj:(a + 1) * bj]
            sa = srow[a * bj:(a + 1) * bj]
            ga = gap[a * bj:(a + 1) * bj]
            tr = trow[a * bj:(a + 1) * bj] if want_ntk else trow[:bj]
            for b in range(bj):
                q2 = qb[b]
                sm = ca[b]
                if want_ntk:  # loop-invariant: LLVM keeps two versions of the loop
                    tr[b] = w2 * (tr[b] * ik) + ta * (sm * ik) + tb
                det = q1 * q2 - sm * sm
                g = det - NEAR_COLLINEAR * (q1 * q2)
                ga[b] = g
                near += 1 if g < 0.0 else 0  # a vectorised count: the scan below is scalar
                c_new = w2 * (sm * ik) + b2
                d_new = (w2 * w2) * (max(det, 0.0) * ik * ik) + (w2 * b2) * ((q1 + q2 - 2.0 * sm) * ik)
                sa[b] = min(((d_new * iaa) * ib[b]) * (iaa * ib[b]), 1.0)
                ca[b] = min(max((c_new * iaa) * ib[b], -1.0), 1.0)
        for x in range(m if near > 0 else 0):
            if gap[x] < 0.0:
                a = x // bj
                b = x - a * bj
                e_sc, e_det, e_delta, e_st = _same_offset_entry_diag(scratch, rho, sn2, t, tab[u], n1, n2, sqa, sqb,
                                                                     I0 + a, J0 + b, a, b, want_ntk)
                r_, s_, t_ = _affine_normalise(e_sc, e_det, e_delta, e_st, k, w2, b2, ia[a], ib[b], ta, tb)
                crow[x] = r_
                srow[x] = s_
                if want_ntk:
                    ot[u, x] = t_


@nb.njit(**JIT_INLINE)
def _summed_diag(sq, tu, n, i):
    """Σ_o q[tu[o]] of point i, √q position-major (p·n + i)."""
    acc = 0.0
    for o in range(tu.shape[0]):
        p = tu[o]
        if p >= 0:
            v = sq[p * n + i]
            acc += v * v
    return acc


@nb.njit(**JIT_INLINE)
def _same_offset_entry_diag(v, rho, sn2, t, tu, n1, n2, sqa, sqb, i, j, a, b, want_ntk):
    """:func:`_collinear_sums` of one diagonal-layout entry (points i, j; tile entry a, b)."""
    K = tu.shape[0]
    v[:, :] = 0.0
    for o in range(K):
        p = tu[o]
        if p >= 0:
            v[0, o] = sqa[p * n1 + i]
            v[1, o] = sqb[p * n2 + j]
            v[2, o] = rho[p, a, b]
            v[3, o] = sn2[p, a, b]
            if want_ntk:
                v[4, o] = t[p, a, b]
    return _collinear_sums(v[0], v[1], v[2], v[3], v[4], want_ntk)


@nb.njit(nogil=True, **JIT_OPTIONS)
def pool_full(rho, sn2, t, out_r, out_s, out_t, tab, k, Pi, Po, sqa, sqb, sqa_o, sqb_o, I0, J0, bi, bj, want_ntk,
              self_pair=False):
    """Independent-offset average on a full tile: c̃[u, v] = (1/k²) Σ_{o, o'} c[tab[u, o], tab[v, o']]
    (separably: first over the columns, then over the rows), Θ alike. ``self_pair``: the tile is
    one image with itself, whose same-position entries are exactly collinear (ρ = 1, sin²θ = 0),
    where the renormalised sum is only within rounding of it."""
    K = tab.shape[1]
    ik2 = 1.0 / (k * k)
    if Po == 1 and _is_all_positions(tab[0], Pi):
        _global_pool_full(rho, t, out_r, out_s, out_t, ik2, Pi, sqa, sqb, sqa_o, sqb_o, I0, J0, bi, bj, want_ntk,
                          self_pair)
        return
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
                    if self_pair and u == v:
                        out_r[a * Po + u, b * Po + v] = 1.0
                        out_s[a * Po + u, b * Po + v] = 0.0
                    if want_ntk:
                        out_t[a * Po + u, b * Po + v] = acct * ik2


@nb.njit(**JIT_INLINE)
def _is_all_positions(row, P):
    """True when a pooling table's row reads positions 0, 1, …, P − 1 in order (GlobalAvgPool)."""
    if row.shape[0] != P:
        return False
    for o in range(P):
        if row[o] != o:
            return False
    return True


@nb.njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract", "arcp", "reassoc"})
def _dot_sum(x, w, y):
    """(Σ x·w, Σ y) with reassociation allowed, so both sums vectorise (a fixed order of
    partial sums: the same inputs give the same rounding)."""
    acc = 0.0
    acct = 0.0
    for i in range(x.shape[0]):
        acc += x[i] * w[i]
        acct += y[i]
    return acc, acct


@nb.njit(**JIT_OPTIONS)
def _global_pool_full(rho, t, out_r, out_s, out_t, ik2, Pi, sqa, sqb, sqa_o, sqb_o, I0, J0, bi, bj, want_ntk,
                      self_pair):
    """:func:`pool_full` for GlobalAvgPool: c̃ = (1/P²) Σ_p √q₁[p] Σ_p' ρ[p, p'] √q₂[p'], Θ alike,
    one vectorised row sum per position instead of an indexed loop over the table."""
    for a in range(bi):
        ia0 = (I0 + a) * Pi
        inv_a = reciprocal(sqa_o[I0 + a])
        for b in range(bj):
            jb0 = (J0 + b) * Pi
            sb = sqb[jb0:jb0 + Pi]
            acc = 0.0
            acct = 0.0
            for p in range(Pi):
                row_t = t[a * Pi + p, b * Pi:(b + 1) * Pi] if want_ntk else sb
                dc, dt = _dot_sum(rho[a * Pi + p, b * Pi:(b + 1) * Pi], sb, row_t)
                acc += sqa[ia0 + p] * dc
                acct += dt
            r_ = min(max((acc * ik2 * inv_a) * reciprocal(sqb_o[J0 + b]), -1.0), 1.0)
            out_r[a, b] = 1.0 if self_pair else r_
            out_s[a, b] = 0.0 if self_pair else (1.0 - r_) * (1.0 + r_)
            if want_ntk:
                out_t[a, b] = acct * ik2


@nb.njit(nogil=True, **JIT_OPTIONS)
def norm_full(t, fa, fb, I0, J0, bi, bj, P):
    """LayerNorm on a full tile: Θ[(a, p), (b, p')] *= f_a[p] f_b[p'], f = 1/√(q + ε) per image
    and position (image-major); the correlations do not change."""
    fbb = fb[J0 * P:J0 * P + bj * P]
    for r in range(bi * P):
        g = fa[I0 * P + r]
        row = t[r]
        for col in range(bj * P):
            row[col] = (row[col] * g) * fbb[col]


@nb.njit(nogil=True, **JIT_OPTIONS)
def norm_diag(t, fa, fb, n1, n2, I0, J0, bi, bj, P):
    """LayerNorm on a diagonal tile (P, bi, bj): Θ[p, a, b] *= f_a[p] f_b[p] (position-major)."""
    for p in range(P):
        fbb = fb[p * n2 + J0:p * n2 + J0 + bj]
        for a in range(bi):
            g = fa[p * n1 + I0 + a]
            row = t[p, a]
            for b in range(bj):
                row[b] = (row[b] * g) * fbb[b]
