"""Each image's own P × P block, for the per-point variances after pooling (full layout).

A pooling step averages covariances over *different* positions of one image, so the variance
of a pooled position needs the image's whole self block Σ(x, x)[p, p'], not only its
diagonal (Novak et al. 2019, section on pooling; docs/DESIGN.md, "Spatial layers"). The
blocks are carried by the same jitted maps as the pair pass (:mod:`._spatial_numerics` and
the activations' tile functions) with a tile of one image pair (x, x), one image at a time,
so memory is one block per image only where a later pooling step still needs it.

The point pass is split into stages at the pooling steps: per-point maps (vectorised over
all points, as a series dual needs one call per layer) run up to a pooling step; then each
image's block is advanced through the stage and pooled, which gives the pooled variances
and NTK diagonal that the next stage starts from.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numba as nb
import numpy as np

from ..compiler.duals.base import Dual
from ..compiler.steps import ForkStep, JoinStep, LayerNormStep
from ._numerics import JIT_OPTIONS
from ._spatial_numerics import FULL_SLOTS, conv_full, init_full, norm_full, pool_full

__all__ = ["SelfBlocks"]


@nb.njit(nogil=True, **JIT_OPTIONS)
def pooled_variances(rho, sq, base, tab, k, out):
    """out[u] = (1/k²) Σ_{o,o'} c[tab[u,o], tab[u,o']] of one image's block in normalised form
    (c = ρ √q √q', √q from ``sq[base + p]``): its pooled variances."""
    ik2 = 1.0 / (k * k)
    for u in range(tab.shape[0]):
        acc = 0.0
        for o in range(tab.shape[1]):
            p = tab[u, o]
            if p < 0:
                continue
            sp = sq[base + p]
            row = rho[p]
            for o2 in range(tab.shape[1]):
                p2 = tab[u, o2]
                if p2 >= 0:
                    acc += row[p2] * (sp * sq[base + p2])
        out[u] = acc * ik2


class SelfBlocks:
    """The self blocks of images F (n, P, C) through the steps of a spatial program.

    :meth:`pool` advances every image's block from the previous pooling step (or the inputs)
    through the steps before pooling step ``l`` and pools it, returning the pooled per-point
    variances and NTK diagonal. ``keep`` says whether a later pooling step needs the pooled
    blocks (otherwise they are dropped image by image).
    """

    def __init__(self, program, plan, F, inv, V, want_ntk):
        self.program, self.plan, self.F, self.inv, self.V = program, plan, F, inv, V
        self.want_ntk = want_ntk
        self.start = 0
        self.stored = None
        self.dummy = np.empty((1, 1))

    def pool(self, l, qs, tds, data, params, keep):
        n = self.F.shape[0]
        m = self.plan.maps[l]
        Pi, Po = qs[l].shape[1], m.table.shape[0]
        sq = [np.sqrt(q).ravel() for q in qs]
        q_out = np.empty((n, Po))
        td_out = np.zeros((n, Po))
        sq_out = np.empty(n * Po)
        stored = [None] * n if keep else None

        def images(first, stop):
            # The jitted maps release the GIL, so images split over threads run in parallel;
            # each thread has its own workspace and writes only its own images' rows.
            W = np.empty((FULL_SLOTS, self.F.shape[1] ** 2))
            states = np.empty((2, 3, self.F.shape[1] ** 2))  # reused by every image and layer
            for i in range(first, stop):
                rho, sn2, t = self._advance(i, l, sq, data, params, W, states)
                pooled_variances(rho, sq[l], i * Pi, m.table, m.divisor, q_out[i])
                sq_out[i * Po:(i + 1) * Po] = np.sqrt(q_out[i])
                nr, ns = np.empty((Po, Po)), np.empty((Po, Po))
                nt = np.empty((Po, Po)) if self.want_ntk else self.dummy
                pool_full(rho, sn2, t, nr, ns, nt, m.table, m.divisor, Pi, Po, sq[l], sq[l], sq_out, sq_out,
                          i, i, 1, 1, self.want_ntk, True)
                if self.want_ntk:
                    td_out[i] = np.diagonal(nt)
                if keep:
                    stored[i] = (nr, ns, nt)

        threads = max(1, min(numba.get_num_threads(), n))
        bounds = np.linspace(0, n, threads + 1).astype(int)
        if threads == 1:
            images(0, n)
        else:
            with ThreadPoolExecutor(threads) as pool:
                for f in [pool.submit(images, a, b) for a, b in zip(bounds[:-1], bounds[1:])]:
                    f.result()
        self.stored = stored
        self.start = l + 1
        return q_out, td_out

    def _advance(self, i, l_pool, sq, data, params, W, states):
        """Image i's block in normalised form (ρ, sin²θ, Θ) just before step ``l_pool``, in
        views of ``states`` (two state sets that the steps alternate between: fresh arrays per
        layer cost more in page faults than the layer's arithmetic)."""
        want_ntk, plan = self.want_ntk, self.plan
        cur = 0

        def state(P):
            rho, sn2, t = (states[cur, j, :P * P].reshape((P, P)) for j in range(3))
            return rho, sn2, (t if want_ntk else self.dummy)

        if self.stored is None:
            P = self.F.shape[1]
            rho, sn2, t = state(P)
            init_full(rho, sn2, t, self.F, self.inv, self.V, i, i, 1, 1, P, want_ntk)
        else:
            P = self.stored[i][0].shape[0]
            rho, sn2, t = state(P)
            for dst, src in zip((rho, sn2, t), self.stored[i]):
                dst[...] = src
        stack = []  # open parallel blocks: [the fork's state, the running sum]
        t_zero = self.stored is None  # Θ of the inputs is 0 until the first affine step
        for l in range(self.start, l_pool):
            step, m = self.program.steps[l], plan.maps[l]
            Pi = int(plan.pin[l])
            if isinstance(step, (ForkStep, JoinStep)):
                t_zero = False
                rho, sn2, t = self._branch_step(step, stack, rho, sn2, t, i * Pi, sq[l], data[l], params[l])
                continue
            if isinstance(step, Dual):
                fn = getattr(self.program.module, self.program.tile_name(step))
                pp = data[l] if data[l] is not None else self.dummy  # contiguous (point pass)
                fn(rho, sn2, t, i * Pi, i * Pi, sq[l], sq[l], sq[l + 1], sq[l + 1], pp, pp, params[l], want_ntk)
                continue
            if isinstance(step, LayerNormStep):
                if want_ntk:
                    norm_full(t, data[l][0], data[l][0], i, i, 1, 1, Pi)
                continue
            Po = int(plan.pout[l])
            cur = 1 - cur
            nr, ns, nt = state(Po)
            AXM, AXT, AXR, AXN, GRID = plan.axes
            conv_full(rho, sn2, t, nr, ns, nt, W, m.table, m.divisor, Pi, Po, sq[l], sq[l], sq[l + 1],
                      sq[l + 1], i, i, 1, 1, plan.wb[l, 0], plan.wb[l, 1], plan.wb[l, 2], plan.wb[l, 3],
                      want_ntk, AXM[l], AXT[l], AXR[l], AXN[l], GRID[l], t_zero, True)
            t_zero = False
            rho, sn2, t = nr, ns, nt
        return rho, sn2, t

    def _branch_step(self, step, stack, rho, sn2, t, base, sq, data, params):
        """A fork keeps the block; a join adds it to the running sum (the pair pass's own
        ``join_tile``) and starts the next branch from the fork's block, or ends with the sum."""
        if isinstance(step, ForkStep):
            stack.append([(rho.copy(), sn2.copy(), t.copy()), None])
            return rho, sn2, t
        saved, acc = stack[-1]
        if acc is None:
            acc = stack[-1][1] = tuple(np.empty_like(a) for a in (rho, sn2, t))
        self.program.module.join_tile(rho, sn2, t, *acc, base, base, sq, sq, data, data, params[3], params[1] == 0.0,
                                      self.want_ntk)
        if step.last:
            stack.pop()
            return tuple(a.copy() for a in acc)
        return tuple(a.copy() for a in saved)
