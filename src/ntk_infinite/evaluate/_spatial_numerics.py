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

__all__ = ["init_full", "init_diag", "conv_full", "conv_diag", "pool_full", "norm_full",
           "norm_diag"]

#: Summed determinants below this fraction of q̃₁q̃₂ get the Lagrange term from its sum of squares.
NEAR_COLLINEAR = 1e-3
_NEAR_INPUT = 1e-4


@nb.njit(**JIT_INLINE)
def _input_row(rr, ss, dm, dp, x1, i1, V2, start):
    """One row of Σ⁰ in normalised form, against a row of unit channel vectors of X2
    (``V2[c, start + col]``, transposed so every loop over columns vectorises): ρ = u·v, and
    sin²θ = (1 − ρ)(1 + ρ) or, for nearly collinear pairs, ¼|u − v|²|u + v|² (no cancellation;
    exactly 0 for collinear ones, e.g. every pair of a one-channel input). ``dm``, ``dp``: scratch."""
    m = rr.shape[0]
    for col in range(m):
        rr[col] = 0.0
        dm[col] = 0.0
        dp[col] = 0.0
    for c in range(V2.shape[0]):
        u = x1[c] * i1
        vc = V2[c, start:start + m]
        for col in range(m):
            v = vc[col]
            rr[col] += u * v
            dm[col] += (u - v) * (u - v)
            dp[col] += (u + v) * (u + v)
    for col in range(m):
        r = min(max(rr[col], -1.0), 1.0)
        rr[col] = r
        direct = (1.0 - r) * (1.0 + r)
        ss[col] = direct if direct >= _NEAR_INPUT else min(0.25 * dm[col] * dp[col], 1.0)


@nb.njit(nogil=True, **JIT_OPTIONS)
def init_full(rho, sn2, t, X1, inv1, V2, I0, J0, bi, bj, P, want_ntk):
    """Σ⁰ of a full tile: X1 (n1, P, C), inverse channel norms inv1 (n1, P), V2 (C, n2·P) the unit
    channel vectors of X2 image-major."""
    dm = np.empty(bj * P)
    dp = np.empty(bj * P)
    for a in range(bi):
        for p in range(P):
            r = a * P + p
            _input_row(rho[r], sn2[r], dm, dp, X1[I0 + a, p], inv1[I0 + a, p], V2, J0 * P)
    if want_ntk:
        t[:, :] = 0.0


@nb.njit(**JIT_OPTIONS)
def init_diag(rho, sn2, t, X1, inv1, V2, n2, I0, J0, bi, bj, P, want_ntk):
    """Σ⁰ of a diagonal tile (P, bi, bj); V2 (C, P·n2) position-major."""
    dm = np.empty(bj)
    dp = np.empty(bj)
    for p in range(P):
        for a in range(bi):
            _input_row(rho[p, a], sn2[p, a], dm, dp, X1[I0 + a, p], inv1[I0 + a, p], V2, p * n2 + J0)
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
def _same_offset_entry(rho, sn2, t, ra, cb, ta, tb, K, sqa, sqb, ia0, jb0, want_ntk):
    """:func:`_collinear_sums` of one full-layout entry: ``ta``/``tb`` the source positions of
    its two output positions (−1: padding), ``ra``/``cb`` the row/column offsets of the pair's
    block, ``ia0``/``jb0`` those of its points in the per-point arrays."""
    v = np.zeros((5, K))
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
              want_ntk, meta, axtab, runs, nruns, grid):
    """Same-offset sum on a full tile (bi·Pi, bj·Pi) -> (bi·Po, bj·Po) into (nr, ns, nt),
    per-point arrays image-major. The covariances c = ρ√q₁√q₂ and Θ are summed axis by axis
    (:func:`axis_pass_full`) through workspace rows 6–9, then normalised (:func:`normalise_full`)."""
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
        dst_c = nr if d == 0 else work_view(W, c_slot, bi * P_new, bj * P_new)
        axis_pass_full(src_c, dst_c, bi, bj, outer, n_in, m_out, inner, axtab[d, :m_out, :K], runs[d], nruns[d])
        src_c = dst_c
        if want_ntk:
            dst_t = nt if d == 0 else work_view(W, t_slot, bi * P_new, bj * P_new)
            axis_pass_full(src_t, dst_t, bi, bj, outer, n_in, m_out, inner, axtab[d, :m_out, :K], runs[d], nruns[d])
            src_t = dst_t
        shape[d] = m_out
    normalise_full(rho, sn2, t, nr, nt, ns, tab, k, Pi, Po, sqa, sqb, sqa_o, sqb_o, I0, J0, bi, bj,
                   w2, b2, ta, tb, want_ntk)


@nb.njit(**JIT_OPTIONS)
def axis_pass_full(src, dst, bi, bj, outer, n_in, m_out, inner, tab, runs, nruns):
    """One spatial axis of a same-offset sum on a full tile: with each image's positions split
    as (o, x, i) around the axis x (``outer`` and ``inner`` positions before and after it),
    dst[(a, o, u, i), (b, o', v, i')] = Σ_k src[(a, o, tab[u, k], i), (b, o', tab[v, k], i')].
    ``runs[k]`` lists (v₀, v₁, s₀, step): tab[v, k] = s₀ + (v − v₀)·step on [v₀, v₁), so a run of
    step 1 is one contiguous add (a vectorised loop) of (v₁ − v₀)·inner entries."""
    K = tab.shape[1]
    Pin = outer * n_in * inner
    Pout = outer * m_out * inner
    for a in range(bi):
        for o1 in range(outer):
            for u in range(m_out):
                for i1 in range(inner):
                    drow = dst[a * Pout + (o1 * m_out + u) * inner + i1]
                    for x in range(drow.shape[0]):
                        drow[x] = 0.0
                    for kk in range(K):
                        tu = tab[u, kk]
                        if tu < 0:
                            continue
                        srow = src[a * Pin + (o1 * n_in + tu) * inner + i1]
                        for b in range(bj):
                            for o2 in range(outer):
                                dbase = b * Pout + o2 * m_out * inner
                                sbase = b * Pin + o2 * n_in * inner
                                for r in range(nruns[kk]):
                                    v0 = runs[kk, r, 0]
                                    v1 = runs[kk, r, 1]
                                    s0 = runs[kk, r, 2]
                                    step = runs[kk, r, 3]
                                    if step == 1:
                                        # Views, so the loop index is non-negative and the add vectorises.
                                        length = (v1 - v0) * inner
                                        dv = drow[dbase + v0 * inner:dbase + v0 * inner + length]
                                        sv = srow[sbase + s0 * inner:sbase + s0 * inner + length]
                                        for x in range(length):
                                            dv[x] += sv[x]
                                    else:
                                        for v in range(v0, v1):
                                            dd = dbase + v * inner
                                            ss = sbase + (s0 + (v - v0) * step) * inner
                                            dv = drow[dd:dd + inner]
                                            sv = srow[ss:ss + inner]
                                            for x in range(inner):
                                                dv[x] += sv[x]


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
                   w2, b2, ta, tb, want_ntk):
    """(ρ', sin²θ', Θ') from the offset sums sc = Σ c, st = Σ Θ (overwritten by ρ' and Θ';
    sin²θ' into ``out_s``). sin²θ' from the Gram determinant q̃₁q̃₂ − c̃² where it is at least
    NEAR_COLLINEAR of q̃₁q̃₂ (a relative error ~1e-13); nearly collinear entries are redone from
    the cancellation-free sums of :func:`_same_offset_entry`."""
    K = tab.shape[1]
    qa = np.empty(bi * Po)
    qb = np.empty(bj * Po)
    _summed_variances(sqa, I0 * Pi, Pi, tab, qa, bi)
    _summed_variances(sqb, J0 * Pi, Pi, tab, qb, bj)
    invb = np.empty(bj * Po)
    for col in range(bj * Po):
        invb[col] = reciprocal(sqb_o[J0 * Po + col])
    gap = np.empty(bj * Po)
    ik = 1.0 / k
    for r in range(bi * Po):
        q1 = qa[r]
        ia = reciprocal(sqa_o[I0 * Po + r])
        crow = sc[r]
        srow = out_s[r]
        trow = st[r] if want_ntk else st[0]
        if want_ntk:
            for col in range(bj * Po):
                trow[col] = w2 * (trow[col] * ik) + ta * (crow[col] * ik) + tb
        for col in range(bj * Po):
            q2 = qb[col]
            s = crow[col]
            det = q1 * q2 - s * s
            gap[col] = det - NEAR_COLLINEAR * (q1 * q2)
            ib = invb[col]
            c_new = w2 * (s * ik) + b2
            d_new = (w2 * w2) * (max(det, 0.0) * ik * ik) + (w2 * b2) * ((q1 + q2 - 2.0 * s) * ik)
            srow[col] = min(((d_new * ia) * ib) * (ia * ib), 1.0)
            crow[col] = min(max((c_new * ia) * ib, -1.0), 1.0)
        for col in range(bj * Po):
            if gap[col] < 0.0:
                a = r // Po
                u = r - a * Po
                b = col // Po
                v = col - b * Po
                e_sc, e_det, e_delta, e_st = _same_offset_entry(
                    rho, sn2, t, a * Pi, b * Pi, tab[u], tab[v], K, sqa, sqb, (I0 + a) * Pi, (J0 + b) * Pi, want_ntk)
                r_, s_, t_ = _affine_normalise(e_sc, e_det, e_delta, e_st, k, w2, b2, ia, invb[col], ta, tb)
                crow[col] = r_
                srow[col] = s_
                if want_ntk:
                    st[r, col] = t_


@nb.njit(**JIT_OPTIONS)
def conv_diag(rho, sn2, t, nr, ns, nt, c, tab, k, n1, n2, sqa, sqb, sqa_o, sqb_o, I0, J0, bi, bj, w2, b2, ta, tb,
              want_ntk):
    """Same-offset sum on a diagonal tile (Pi, bi, bj) -> (Po, bi, bj) into (nr, ns, nt), per-point
    arrays position-major; ``c`` a (Pi, bi·bj) work array. Only same-position entries are read,
    so output slice u is the sum of the input slices tab[u, o] (contiguous adds), normalised as
    in :func:`normalise_full`."""
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
        slice_sums(tf, ot, tab)
    out_s = ns.reshape(Po, m)
    qa = np.empty(bi)
    qb = np.empty(bj)
    ia = np.empty(bi)
    ib = np.empty(bj)
    gap = np.empty(m)
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
        if want_ntk:
            trow = ot[u]
            for x in range(m):
                trow[x] = w2 * (trow[x] * ik) + ta * (crow[x] * ik) + tb
        for a in range(bi):
            q1 = qa[a]
            iaa = ia[a]
            ca = crow[a * bj:(a + 1) * bj]
            sa = srow[a * bj:(a + 1) * bj]
            ga = gap[a * bj:(a + 1) * bj]
            for b in range(bj):
                q2 = qb[b]
                sm = ca[b]
                det = q1 * q2 - sm * sm
                ga[b] = det - NEAR_COLLINEAR * (q1 * q2)
                c_new = w2 * (sm * ik) + b2
                d_new = (w2 * w2) * (max(det, 0.0) * ik * ik) + (w2 * b2) * ((q1 + q2 - 2.0 * sm) * ik)
                sa[b] = min(((d_new * iaa) * ib[b]) * (iaa * ib[b]), 1.0)
                ca[b] = min(max((c_new * iaa) * ib[b], -1.0), 1.0)
        for x in range(m):
            if gap[x] < 0.0:
                a = x // bj
                b = x - a * bj
                e_sc, e_det, e_delta, e_st = _same_offset_entry_diag(rho, sn2, t, tab[u], n1, n2, sqa, sqb,
                                                                     I0 + a, J0 + b, a, b, want_ntk)
                r_, s_, t_ = _affine_normalise(e_sc, e_det, e_delta, e_st, k, w2, b2, ia[a], ib[b], ta, tb)
                crow[x] = r_
                srow[x] = s_
                if want_ntk:
                    ot[u, x] = t_


@nb.njit(**JIT_OPTIONS)
def slice_sums(src, dst, tab):
    """dst[u] = Σ_o src[tab[u, o]] (rows of contiguous entries; −1 skipped). Source rows are
    added three at a time, so dst is loaded and stored once per three rows rather than once
    per row (15% faster for 3×3 filters). A function of its own: inside the larger loop nest
    LLVM did not vectorise the add."""
    m = dst.shape[1]
    K = tab.shape[1]
    rows = np.empty(K, dtype=np.int64)
    for u in range(dst.shape[0]):
        d = dst[u]
        count = 0
        for kk in range(K):
            if tab[u, kk] >= 0:
                rows[count] = tab[u, kk]
                count += 1
        if count == 0:
            for x in range(m):
                d[x] = 0.0
        g = 0
        while g < count:
            s0 = src[rows[g]]
            # Short groups repeat a row with weight 0, so every group is one loop of three adds.
            s1 = src[rows[g + 1]] if g + 1 < count else s0
            s2 = src[rows[g + 2]] if g + 2 < count else s0
            w1 = 1.0 if g + 1 < count else 0.0
            w2 = 1.0 if g + 2 < count else 0.0
            if g == 0:
                for x in range(m):
                    d[x] = s0[x] + w1 * s1[x] + w2 * s2[x]
            else:
                for x in range(m):
                    d[x] += s0[x] + w1 * s1[x] + w2 * s2[x]
            g += 3


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
def _same_offset_entry_diag(rho, sn2, t, tu, n1, n2, sqa, sqb, i, j, a, b, want_ntk):
    """:func:`_collinear_sums` of one diagonal-layout entry (points i, j; tile entry a, b)."""
    K = tu.shape[0]
    v = np.zeros((5, K))
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
