"""Source template of the jitted spatial pair pass, specialised to the duals of one program.

Two drivers, one per layout (:mod:`ntk_infinite.evaluate._spatial_numerics`): ``full_tiles``
(a (bi·P, bj·P) state per tile) and ``diag_tiles`` (a (P, bi, bj) state). Each runs, for a
list of tiles of image pairs, Σ⁰ from the inputs, then every step (op codes: 0 Dense,
−1 Conv and −3 Flatten (same-offset sums), −2 AvgPool or GlobalAvgPool (independent-offset sums),
−12 LayerNorm (Θ rescaled per image and position), ≥ 1 an activation's tile function), and stores Σ and Θ of the final dense state, mirroring
off-diagonal tiles in the symmetric case. Tables are padded to the widest step; step l reads its
first ``kdiv[l]`` columns (its divisor is its number of offsets). Only the activation dispatch is generated; the
position maps are ordinary jitted functions.
"""

from __future__ import annotations

from .engine_source import tile_imports

__all__ = ["build_spatial_source"]

_PRELUDE = '''
from ntk_infinite.evaluate._spatial_numerics import (init_full, init_diag, conv_full, conv_diag, pool_full, work_view,
                                                    FULL_SLOTS, norm_full, norm_diag)
'''

_FULL = '''

@nb.njit(**JIT_OPTIONS)
def full_join(S, rho, sn2, t, prm, sq1, sq2, pp1, pp2, I0, J0, P, bi, bj, want_ntk):
    """A join on a full tile: the branch's state is added to the running sum S (3, ·); after the
    last branch the sum becomes the state."""
    m = bi * P * bj * P
    ar = S[0, :m].reshape((bi * P, bj * P))
    asn = S[1, :m].reshape((bi * P, bj * P))
    at = S[2, :m].reshape((bi * P, bj * P))
    join_tile(rho, sn2, t, ar, asn, at, I0 * P, J0 * P, sq1, sq2, pp1, pp2, prm[3], prm[1] == 0.0, want_ntk)
    if prm[2] != 0.0:
        copy_state(rho, sn2, t, ar, asn, at, want_ntk)


@nb.njit(nogil=True, **JIT_OPTIONS)
def full_tiles(X1, inv1, V2, SQ1, SQ2, ops, wb, tabs, kdiv, pin, pout, AXM, AXT, AXR, AXN, GRID,
               PP1, PP2, PRM, n_levels, out_s, out_t, tiles, tile, want_nngp, want_ntk, symmetric):
    n1 = out_s.shape[0] if want_nngp else out_t.shape[0]
    n2 = out_s.shape[1] if want_nngp else out_t.shape[1]
    L = ops.shape[0]
    P0 = X1.shape[1]
    # One workspace per call, reused by every tile and layer: two state sets and the sums.
    W = np.empty((FULL_SLOTS, min(tile, n1) * min(tile, n2) * P0 * P0))
    # Parallel blocks: per nesting level the fork's state and the running sum (and the fork's P).
    STK = np.empty((2 * n_levels, 3, min(tile, n1) * min(tile, n2) * P0 * P0))
    PK = np.empty(max(n_levels, 1), dtype=np.int64)
    dummy = np.empty((1, 1))
    for it in range(tiles.shape[0]):
        I0 = tiles[it, 0]
        J0 = tiles[it, 1]
        bi = min(tile, n1 - I0)
        bj = min(tile, n2 - J0)
        cur = 0
        rho = work_view(W, 0, bi * P0, bj * P0)
        sn2 = work_view(W, 1, bi * P0, bj * P0)
        t = work_view(W, 2, bi * P0, bj * P0) if want_ntk else dummy
        init_full(rho, sn2, t, X1, inv1, V2, I0, J0, bi, bj, P0, want_ntk, symmetric and I0 == J0)
        P = P0
        t_zero = True  # Θ stays 0 until the first affine step
        for l in range(L):
            op = ops[l]
            if op == 0 or op == OP_FORK or op == OP_JOIN:
                t_zero = False
            if op == 0:
                if wb[l, 2] != 0.0:
                    affine_standard_tile(rho, sn2, t, I0, J0, SQ1[l], SQ2[l], SQ1[l + 1], SQ2[l + 1], wb[l, 0],
                                         wb[l, 1], wb[l, 2], wb[l, 3], want_ntk)
                else:
                    affine_tile(rho, sn2, t, I0, J0, SQ1[l], SQ2[l], SQ1[l + 1], SQ2[l + 1], wb[l, 0], wb[l, 1],
                                want_ntk)
            elif op == OP_NORM:
                if want_ntk:
                    norm_full(t, PP1[l, 0], PP2[l, 0], I0, J0, bi, bj, P)
            elif op == OP_FORK:
                k = int(PRM[l, 0])
                PK[k] = P
                m = bi * P * bj * P
                copy_state(STK[2 * k, 0, :m].reshape((bi * P, bj * P)), STK[2 * k, 1, :m].reshape((bi * P, bj * P)),
                           STK[2 * k, 2, :m].reshape((bi * P, bj * P)), rho, sn2, t, want_ntk)
            elif op == OP_JOIN:
                k = int(PRM[l, 0])
                full_join(STK[2 * k + 1], rho, sn2, t, PRM[l], SQ1[l], SQ2[l], PP1[l], PP2[l], I0, J0, P, bi, bj,
                          want_ntk)
                if PRM[l, 2] == 0.0:  # the next branch starts from the fork's state (and its number of positions)
                    P = PK[k]
                    m = bi * P * bj * P
                    rho = work_view(W, cur, bi * P, bj * P)
                    sn2 = work_view(W, cur + 1, bi * P, bj * P)
                    t = work_view(W, cur + 2, bi * P, bj * P) if want_ntk else dummy
                    copy_state(rho, sn2, t, STK[2 * k, 0, :m].reshape((bi * P, bj * P)),
                               STK[2 * k, 1, :m].reshape((bi * P, bj * P)), STK[2 * k, 2, :m].reshape((bi * P, bj * P)),
                               want_ntk)
            elif op < 0:
                Po = pout[l]
                tab = tabs[l, :Po, :int(kdiv[l])]
                cur = 3 - cur
                nr = work_view(W, cur, bi * Po, bj * Po)
                ns = work_view(W, cur + 1, bi * Po, bj * Po)
                nt = work_view(W, cur + 2, bi * Po, bj * Po) if want_ntk else dummy
                if op != -2:
                    conv_full(rho, sn2, t, nr, ns, nt, W, tab, kdiv[l], P, Po, SQ1[l], SQ2[l], SQ1[l + 1], SQ2[l + 1],
                              I0, J0, bi, bj, wb[l, 0], wb[l, 1], wb[l, 2], wb[l, 3], want_ntk,
                              AXM[l], AXT[l], AXR[l], AXN[l], GRID[l], t_zero)
                    t_zero = False
                else:
                    pool_full(rho, sn2, t, nr, ns, nt, tab, kdiv[l], P, Po, SQ1[l], SQ2[l], SQ1[l + 1], SQ2[l + 1],
                              I0, J0, bi, bj, want_ntk)
                rho = nr
                sn2 = ns
                t = nt
                P = Po
__FULL_DISPATCH__
        _store(rho, t, out_s, out_t, SQ1[L], SQ2[L], I0, J0, bi, bj, want_nngp, want_ntk, symmetric)


@nb.njit(**JIT_INLINE)
def _store(rho, t, out_s, out_t, sqf1, sqf2, I0, J0, bi, bj, want_nngp, want_ntk, symmetric):
    if want_nngp:
        for a in range(bi):
            sa = sqf1[I0 + a]
            rr = rho[a]
            for b in range(bj):
                rr[b] = rr[b] * (sa * sqf2[J0 + b])
        store_tile(out_s, rho, I0, J0, symmetric)
    if want_ntk:
        store_tile(out_t, t, I0, J0, symmetric)
'''

_DIAG = '''

@nb.njit(**JIT_INLINE)
def _stack_slice(S, j, p, bi, bj):
    return S[j, p * bi * bj:(p + 1) * bi * bj].reshape((bi, bj))


@nb.njit(**JIT_OPTIONS)
def diag_stack_copy(S, rho, sn2, t, P, bi, bj, want_ntk, to_stack):
    """A diagonal tile's state into the stack entry S (3, ·) at a fork (``to_stack``), or back."""
    for p in range(P):
        sr = _stack_slice(S, 0, p, bi, bj)
        ss = _stack_slice(S, 1, p, bi, bj)
        st = _stack_slice(S, 2, p, bi, bj)
        tp = t[p] if want_ntk else t[0]
        if to_stack:
            copy_state(sr, ss, st, rho[p], sn2[p], tp, want_ntk)
        else:
            copy_state(rho[p], sn2[p], tp, sr, ss, st, want_ntk)


@nb.njit(**JIT_OPTIONS)
def diag_join(S, rho, sn2, t, prm, sq1, sq2, pp1, pp2, n1, n2, I0, J0, P, bi, bj, want_ntk):
    """A join on a diagonal tile, position by position: the branch's state is added to the running
    sum S (3, ·); after the last branch the sum becomes the state."""
    for p in range(P):
        ar = _stack_slice(S, 0, p, bi, bj)
        asn = _stack_slice(S, 1, p, bi, bj)
        at = _stack_slice(S, 2, p, bi, bj)
        tp = t[p] if want_ntk else t[0]
        join_tile(rho[p], sn2[p], tp, ar, asn, at, p * n1 + I0, p * n2 + J0, sq1, sq2, pp1, pp2, prm[3], prm[1] == 0.0,
                  want_ntk)
        if prm[2] != 0.0:
            copy_state(rho[p], sn2[p], tp, ar, asn, at, want_ntk)


@nb.njit(nogil=True, **JIT_OPTIONS)
def diag_tiles(X1, inv1, V2, SQ1, SQ2, ops, wb, tabs, kdiv, pin, pout, AXM, AXT, AXR, AXN, GRID,
               PP1, PP2, PRM, n_levels, out_s, out_t, tiles, tile, want_nngp, want_ntk, symmetric):
    n1 = out_s.shape[0] if want_nngp else out_t.shape[0]
    n2 = out_s.shape[1] if want_nngp else out_t.shape[1]
    L = ops.shape[0]
    P0 = X1.shape[1]
    S = min(tile, n1) * min(tile, n2) * P0
    W = np.empty((7, S))
    STK = np.empty((2 * n_levels, 3, S))
    PK = np.empty(max(n_levels, 1), dtype=np.int64)
    dummy = np.empty((1, 1, 1))
    for it in range(tiles.shape[0]):
        I0 = tiles[it, 0]
        J0 = tiles[it, 1]
        bi = min(tile, n1 - I0)
        bj = min(tile, n2 - J0)
        cur = 0
        rho = W[0, :P0 * bi * bj].reshape((P0, bi, bj))
        sn2 = W[1, :P0 * bi * bj].reshape((P0, bi, bj))
        t = W[2, :P0 * bi * bj].reshape((P0, bi, bj)) if want_ntk else dummy
        init_diag(rho, sn2, t, X1, inv1, V2, n2, I0, J0, bi, bj, P0, want_ntk, symmetric and I0 == J0)
        P = P0
        t_zero = True  # Θ stays 0 until the first affine step
        for l in range(L):
            op = ops[l]
            if op == 0 or op == OP_FORK or op == OP_JOIN:
                t_zero = False
            if op == 0:
                if wb[l, 2] != 0.0:
                    affine_standard_tile(rho[0], sn2[0], t[0], I0, J0, SQ1[l], SQ2[l], SQ1[l + 1], SQ2[l + 1],
                                         wb[l, 0], wb[l, 1], wb[l, 2], wb[l, 3], want_ntk)
                else:
                    affine_tile(rho[0], sn2[0], t[0], I0, J0, SQ1[l], SQ2[l], SQ1[l + 1], SQ2[l + 1], wb[l, 0],
                                wb[l, 1], want_ntk)
            elif op == OP_NORM:
                if want_ntk:
                    norm_diag(t, PP1[l, 0], PP2[l, 0], n1, n2, I0, J0, bi, bj, P)
            elif op == OP_FORK:
                k = int(PRM[l, 0])
                PK[k] = P
                diag_stack_copy(STK[2 * k], rho, sn2, t, P, bi, bj, want_ntk, True)
            elif op == OP_JOIN:
                k = int(PRM[l, 0])
                diag_join(STK[2 * k + 1], rho, sn2, t, PRM[l], SQ1[l], SQ2[l], PP1[l], PP2[l], n1, n2, I0, J0, P, bi,
                          bj, want_ntk)
                if PRM[l, 2] == 0.0:  # the next branch starts from the fork's state (and its number of positions)
                    P = PK[k]
                    m = P * bi * bj
                    rho = W[cur, :m].reshape((P, bi, bj))
                    sn2 = W[cur + 1, :m].reshape((P, bi, bj))
                    t = W[cur + 2, :m].reshape((P, bi, bj)) if want_ntk else dummy
                    diag_stack_copy(STK[2 * k], rho, sn2, t, P, bi, bj, want_ntk, False)
            elif op < 0:
                Po = pout[l]
                cur = 3 - cur
                m = Po * bi * bj
                nr = W[cur, :m].reshape((Po, bi, bj))
                ns = W[cur + 1, :m].reshape((Po, bi, bj))
                nt = W[cur + 2, :m].reshape((Po, bi, bj)) if want_ntk else dummy
                conv_diag(rho, sn2, t, nr, ns, nt, W[6, :P * bi * bj].reshape((P, bi * bj)), tabs[l, :Po, :int(kdiv[l])], kdiv[l],
                          n1, n2, SQ1[l], SQ2[l], SQ1[l + 1], SQ2[l + 1], I0, J0, bi, bj, wb[l, 0], wb[l, 1], wb[l, 2],
                          wb[l, 3], want_ntk, t_zero)
                t_zero = False
                rho = nr
                sn2 = ns
                t = nt
                P = Po
__DIAG_DISPATCH__
        _store(rho[0], t[0], out_s, out_t, SQ1[L], SQ2[L], I0, J0, bi, bj, want_nngp, want_ntk, symmetric)
'''

_FULL_CASE = '''            elif op == {code}:
                {fname}(rho, sn2, t, I0 * P, J0 * P, SQ1[l], SQ2[l], SQ1[l + 1], SQ2[l + 1], PP1[l], PP2[l], PRM[l],
                        want_ntk)'''

# A tile that reads no per-point array maps all positions of the tile in one call, as rows of
# bi·bj entries (long rows vectorise better than the bj of one tile row).
_DIAG_STACKED_CASE = '''            elif op == {code}:
                {fname}(rho.reshape((P, bi * bj)), sn2.reshape((P, bi * bj)),
                        t.reshape((P, bi * bj)) if want_ntk else t[0], 0, 0, SQ1[l], SQ2[l], SQ1[l + 1], SQ2[l + 1],
                        PP1[l], PP2[l], PRM[l], want_ntk)'''

_DIAG_CASE = '''            elif op == {code}:
                for p in range(P):
                    {fname}(rho[p], sn2[p], t[p] if want_ntk else t[0], p * n1 + I0, p * n2 + J0, SQ1[l], SQ2[l],
                            SQ1[l + 1], SQ2[l + 1], PP1[l], PP2[l], PRM[l], want_ntk)'''


def build_spatial_source(header: str, dual_sources: list[tuple[int, str, str]], stacked=frozenset()) -> str:
    """Module source of both spatial drivers for the given duals (op code, name, tile source);
    ``header`` is the dense engine's header (prelude, affine and store tiles). ``stacked``: op
    codes of tiles that read no per-point array (``Dual.tile_reads_points`` false), which the
    diagonal driver applies to all positions of a tile at once."""
    parts = [header, _PRELUDE, tile_imports(dual_sources)]
    full = "\n".join(_FULL_CASE.format(code=c, fname=f) for c, f, _ in dual_sources)
    diag = "\n".join((_DIAG_STACKED_CASE if c in stacked else _DIAG_CASE).format(code=c, fname=f)
                     for c, f, _ in dual_sources)
    parts.append(_FULL.replace("__FULL_DISPATCH__", full))
    parts.append(_DIAG.replace("__DIAG_DISPATCH__", diag))
    return "".join(parts)
