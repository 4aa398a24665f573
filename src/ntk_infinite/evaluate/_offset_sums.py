"""Same-offset sums of the spatial pair pass (docs/DESIGN.md, "Spatial layers"): a convolution
adds the pair state at the same filter offset on both positions.

* full layout, one spatial axis at a time: :func:`axis_pass_full` (runs of a general axis
  table: strides, VALID, SAME, CIRCULAR) and :func:`shift_pass_full` (an axis whose every
  offset is a pure shift, e.g. stride 1 with SAME padding: masked shifted rows);
* diagonal layout: :func:`slice_sums` (whole slices of same-position entries).

:mod:`._spatial_numerics` normalises the sums and holds the other maps of the pass.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._numerics import JIT_INLINE, JIT_OPTIONS

__all__ = ["axis_pass_full", "pure_shifts", "shift_masks", "shift_pass_full", "slice_sums"]


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
    # An offset whose one run covers every output position (the centre of a SAME filter) is
    # copied rather than added to zeros: one pass less over each row.
    first = -1
    for kk in range(K):
        if first < 0 and nruns[kk] == 1 and runs[kk, 0, 0] == 0 and runs[kk, 0, 1] == m_out and runs[kk, 0, 3] == 1:
            first = kk
    for a in range(bi):
        for o1 in range(outer):
            for u in range(m_out):
                for i1 in range(inner):
                    drow = dst[a * Pout + (o1 * m_out + u) * inner + i1]
                    copied = first >= 0 and tab[u, first] >= 0
                    if copied:
                        srow = src[a * Pin + (o1 * n_in + tab[u, first]) * inner + i1]
                        s0 = runs[first, 0, 2]
                        for b in range(bj):
                            for o2 in range(outer):
                                dbase = b * Pout + o2 * m_out * inner
                                sbase = b * Pin + (o2 * n_in + s0) * inner
                                dv = drow[dbase:dbase + m_out * inner]
                                sv = srow[sbase:sbase + m_out * inner]
                                for x in range(m_out * inner):
                                    dv[x] = sv[x]
                    else:
                        for x in range(drow.shape[0]):
                            drow[x] = 0.0
                    for kk in range(K):
                        tu = tab[u, kk]
                        if tu < 0 or (copied and kk == first):
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
def pure_shifts(tab, n_in, shifts):
    """True when every offset k of an axis table maps v to v + shifts[k] wherever it is not
    padding (stride 1, SAME padding: no wrap-around, as many outputs as inputs); fills ``shifts``."""
    if tab.shape[0] != n_in:
        return False
    for kk in range(tab.shape[1]):
        shift = 0
        seen = False
        for v in range(tab.shape[0]):
            p = tab[v, kk]
            if p >= 0:
                if not seen:
                    shift = p - v
                    seen = True
                elif p - v != shift:
                    return False
        shifts[kk] = shift
    return True


@nb.njit(**JIT_OPTIONS)
def shift_masks(tab, length):
    """masks[k, x] = 1 where column x = (…, v) of a tile row reads a position at offset k
    (tab[v, k] ≥ 0, v = x mod n), else 0."""
    n, K = tab.shape
    masks = np.empty((K, length))
    for kk in range(K):
        for x in range(length):
            masks[kk, x] = 1.0 if tab[x % n, kk] >= 0 else 0.0
    return masks


@nb.njit(**JIT_OPTIONS)
def shift_pass_full(src, dst, src_t, dst_t, with_t, bi, outer, n, tab, shifts, masks):
    """:func:`axis_pass_full` on the last axis (inner = 1) when every offset is a pure shift
    (:func:`pure_shifts`), of the covariances and (``with_t``) of Θ in the same loops. A tile
    row's columns x = (b, o', v) are flat, so offset k adds masks[k, x]·src[x + s_k] over the
    whole row in one vectorised loop (the mask is 0 where v + s_k leaves the image), where the
    runs of :func:`axis_pass_full` are one short loop per image row (2.1× slower for 16×16
    images). Offsets are added three at a time, as in :func:`slice_sums`; a mask of 0 or 1
    multiplies exactly."""
    K = tab.shape[1]
    P = outer * n
    L = dst.shape[1]
    rows = np.empty(K, dtype=np.int64)
    ks = np.empty(K, dtype=np.int64)
    for a in range(bi):
        for o1 in range(outer):
            for u in range(n):
                r = a * P + o1 * n + u
                count = 0
                for kk in range(K):
                    if tab[u, kk] >= 0:
                        rows[count] = a * P + o1 * n + tab[u, kk]
                        ks[count] = kk
                        count += 1
                if count == 0:
                    for x in range(L):
                        dst[r, x] = 0.0
                        dst_t[r, x] = 0.0
                g = 0
                while g < count:
                    _shift_group(dst[r], src, dst_t[r], src_t, with_t, rows, ks, shifts, masks, g, count, L)
                    g += 3


@nb.njit(**JIT_INLINE)
def _shift_group(drow, src, trow, src_t, with_t, rows, ks, shifts, masks, g, count, L):
    """Offsets g, g+1, g+2 (fewer at the end: weight 0) of :func:`shift_pass_full` into ``drow``
    and (``with_t``) ``trow``, assigned for the first group, added after."""
    k0 = ks[g]
    k1 = ks[g + 1] if g + 1 < count else k0
    k2 = ks[g + 2] if g + 2 < count else k0
    w1 = 1.0 if g + 1 < count else 0.0
    w2 = 1.0 if g + 2 < count else 0.0
    i0 = rows[g]
    i1 = rows[g + 1] if g + 1 < count else i0
    i2 = rows[g + 2] if g + 2 < count else i0
    s0 = shifts[k0]
    s1 = shifts[k1]
    s2 = shifts[k2]
    lo = max(max(0, -s0), max(-s1, -s2))
    hi = min(min(L, L - s0), min(L - s1, L - s2))
    hi = max(hi, lo)
    # Views: non-negative loop indices, so the loops vectorise.
    d_ = drow[lo:hi]
    a0 = src[i0, lo + s0:hi + s0]
    a1 = src[i1, lo + s1:hi + s1]
    a2 = src[i2, lo + s2:hi + s2]
    m0 = masks[k0, lo:hi]
    m1 = masks[k1, lo:hi]
    m2 = masks[k2, lo:hi]
    if with_t:
        e_ = trow[lo:hi]
        b0 = src_t[i0, lo + s0:hi + s0]
        b1 = src_t[i1, lo + s1:hi + s1]
        b2 = src_t[i2, lo + s2:hi + s2]
        if g == 0:
            for x in range(hi - lo):
                f0 = m0[x]
                f1 = w1 * m1[x]
                f2 = w2 * m2[x]
                d_[x] = f0 * a0[x] + f1 * a1[x] + f2 * a2[x]
                e_[x] = f0 * b0[x] + f1 * b1[x] + f2 * b2[x]
        else:
            for x in range(hi - lo):
                f0 = m0[x]
                f1 = w1 * m1[x]
                f2 = w2 * m2[x]
                d_[x] += f0 * a0[x] + f1 * a1[x] + f2 * a2[x]
                e_[x] += f0 * b0[x] + f1 * b1[x] + f2 * b2[x]
    elif g == 0:
        for x in range(hi - lo):
            d_[x] = m0[x] * a0[x] + (w1 * m1[x]) * a1[x] + (w2 * m2[x]) * a2[x]
    else:
        for x in range(hi - lo):
            d_[x] += m0[x] * a0[x] + (w1 * m1[x]) * a1[x] + (w2 * m2[x]) * a2[x]
    for e in range(lo + L - hi):  # the few columns at the row's ends, where some x + s leaves it
        x = e if e < lo else hi + (e - lo)
        _shift_edge(drow, src, x, i0, i1, i2, s0, s1, s2, masks[k0, x], w1 * masks[k1, x], w2 * masks[k2, x], g)
        if with_t:
            _shift_edge(trow, src_t, x, i0, i1, i2, s0, s1, s2, masks[k0, x], w1 * masks[k1, x],
                        w2 * masks[k2, x], g)


@nb.njit(**JIT_INLINE)
def _shift_edge(drow, src, x, i0, i1, i2, s0, s1, s2, f0, f1, f2, g):
    """One column of :func:`_shift_group` near a row end: offsets whose factor is 0 are not read
    (their x + s may leave the row)."""
    acc = src[i0, x + s0] if f0 != 0.0 else 0.0
    if f1 != 0.0:
        acc += src[i1, x + s1]
    if f2 != 0.0:
        acc += src[i2, x + s2]
    if g == 0:
        drow[x] = acc
    else:
        drow[x] += acc


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
