r"""Derivatives of convolutional NNGP and NTK Gram matrices with respect to every Conv and
Dense layer's ``w_std`` and ``b_std``, in forward mode through the spatial recursion.

The state of a pair of images is the matrix over position pairs of docs/DESIGN.md
("Spatial layers"; Novak et al. 2019 for the CNN-GP, Arora et al. 2019 for the CNTK). Every
map between activations is linear in the state, so it acts on the tangents as on the state:

.. math::

    \text{Conv: } & \tilde K_{a,a'} = \frac1{|k|}\sum_o K_{as+o-p_{lo},\,a's+o-p_{lo}}, \quad
        \Sigma \leftarrow \sigma_w^2\tilde\Sigma + \sigma_b^2, \quad
        \Theta \leftarrow \sigma_w^2\tilde\Theta + \Sigma_{\text{new}},\\
    & d\Sigma \leftarrow \sigma_w^2\, \widetilde{d\Sigma} + 2\sigma_w\tilde\Sigma\,[p = \sigma_w]
        + 2\sigma_b\,[p = \sigma_b], \quad
      d\Theta \leftarrow \sigma_w^2\,\widetilde{d\Theta} + 2\sigma_w\tilde\Theta\,[p = \sigma_w]
        + d\Sigma_{\text{new}},\\
    \text{AvgPool, Flatten, GlobalAvgPool: } & K \leftarrow \tilde K \text{ and } dK \leftarrow \widetilde{dK}
        \text{ (for } \Sigma, \Theta \text{ and their tangents)},\\
    \text{activation: } & d\Sigma_{p,p'} \leftarrow T_{q_1}\, dq_1[p] + T_{q_2}\, dq_2[p'] + T_c\, d\Sigma_{p,p'},
        \quad d\Theta \leftarrow \dot T\, d\Theta + (\dot T_{q_1} dq_1 + \dot T_{q_2} dq_2 + \dot T_c\, d\Sigma)\,\Theta,

with the partials of :mod:`ntk_infinite.compiler.duals.partials` at the per-position variances
q[p] = Σ(x, x)[p, p]. A Dense layer after the readout is the Conv map on one position.

Two passes. The *self pass* carries each image with itself (its own P × P block, the pooling
maps read its off-diagonal entries) and records q and dq before every layer; the *pair pass*
carries tiles of image pairs, the state of a tile being a (m₁·P, m₂·P) matrix whose row
i·P + p is image i at position p, so each activation acts on it with the per-point partials
of the dense case. Pairs of identical images at the same position follow the per-point
recursion (ρ = 1, where ∂Ṫ/∂c is singular). The position maps are the steps' index tables
(:class:`~ntk_infinite.compiler.steps.PositionMap`), so VALID, SAME and CIRCULAR padding and
strides are those of the kernel itself.

Cost: O(P² · n₁ · n₂ · (number of parameters) · L) in NumPy, always over the full P × P block
(also for Flatten networks, whose kernel alone needs only the P same-position entries); tiles
are sized so one tile's state and tangents stay near :data:`_TILE_ELEMENTS` floats.
"""

from __future__ import annotations

import math

import numpy as np

from ..compiler.duals.partials import dual_partials
from ..compiler.steps import OP_INDEPENDENT

__all__ = ["spatial_gradients"]

#: Floats of one tile's state and tangents (about 64 MB); tiles shrink to keep within it.
_TILE_ELEMENTS = 1 << 23


def _gather_offsets(V, idx):
    """V[..., i, idx, j, idx] for a (..., m1, Pi, m2, Pi) view: the same table on both positions."""
    return np.take(np.take(V, idx, axis=-3), idx, axis=-1)


def _apply_map(pm, M, m1, m2):
    """The linear position map of a step on block states M (..., m1·Pi, m2·Pi) -> (..., m1·Po, m2·Po).

    Same offset (Conv, Flatten): (1/k) Σ_o M[t[a, o], t[a', o]]; independent offsets (AvgPool,
    GlobalAvgPool): (1/k²) Σ_{o, o'} M[t[a, o], t[a', o']] = A M Aᵀ with A[a, p] = #{o: t[a, o] = p}/k.
    Padding entries (t = −1) count as 0, the divisor stays k (docs/DESIGN.md)."""
    tab = pm.table
    Po, K = tab.shape
    lead = M.shape[:-2]
    Pi = M.shape[-1] // m2
    V = M.reshape(lead + (m1, Pi, m2, Pi))
    valid = tab >= 0
    idx = np.where(valid, tab, 0)
    if pm.op == OP_INDEPENDENT:
        A = np.zeros((Po, Pi))
        np.add.at(A, (np.repeat(np.arange(Po), K)[valid.ravel()], tab[valid]), 1.0 / pm.divisor)
        W = np.einsum("up,...ipjr->...iujr", A, V, optimize=True)
        out = np.einsum("vr,...iujr->...iujv", A, W, optimize=True)
    else:
        out = np.zeros(lead + (m1, Po, m2, Po))
        for o in range(K):
            mask = valid[:, o][:, None, None] & valid[:, o][None, None, :]
            out += np.where(mask, _gather_offsets(V, idx[:, o]), 0.0)
        out /= pm.divisor
    return out.reshape(lead + (m1 * Po, m2 * Po))


class _Recursion:
    """The forward-mode recursion of one compiled spatial program on block states.

    ``params[l]`` is (w_std, b_std, index of ∂/∂w_std, index of ∂/∂b_std) for steps with
    trainable parameters, else None; ``maps[l]`` the step's PositionMap (None: no position map,
    a Dense layer or an activation)."""

    def __init__(self, steps, maps, params, n_params):
        self.steps, self.maps, self.params, self.P = steps, maps, params, n_params
        self.partials = [dual_partials(s) if s.role == "activation" else None for s in steps]

    def run(self, c, m1, m2, points, same_images, want_ntk):
        """Carry (Σ, dΣ, Θ, dΘ) of block c (m1·P0, m2·P0) through every step.

        points(l, c, dc) -> (q1, dq1, q2, dq2): the per-point variances and tangents before
        step l for the rows and columns; same_images (m1, m2) bool: identical image pairs."""
        dc = np.zeros((self.P,) + c.shape)
        th = np.zeros(c.shape) if want_ntk else None
        dth = np.zeros((self.P,) + c.shape) if want_ntk else None
        for l, step in enumerate(self.steps):
            if step.role == "activation":
                q1, dq1, q2, dq2 = points(l, c, dc)
                Pl = c.shape[0] // m1
                same = np.kron(same_images, np.eye(Pl, dtype=bool)).astype(bool)
                c, dc, th, dth = self._activation(l, step, c, dc, th, dth, q1, dq1, q2, dq2, same)
            else:
                c, dc, th, dth = self._linear(l, step, c, dc, th, dth, m1, m2)
        return c, dc, th, dth

    def _linear(self, l, step, c, dc, th, dth, m1, m2):
        pm = self.maps[l]

        def M(arr):
            return arr if pm is None or arr is None else _apply_map(pm, arr, m1, m2)

        c, dc, th, dth = M(c), M(dc), M(th), M(dth)
        if step.role != "affine":  # pooling and readouts only average
            return c, dc, th, dth
        w, b, pw, pb = self.params[l]
        w2, b2 = w * w, b * b
        dc *= w2
        dc[pw] += 2.0 * w * c
        dc[pb] += 2.0 * b
        c = w2 * c + b2
        if th is not None:
            dth *= w2
            dth[pw] += 2.0 * w * th
            dth += dc
            th = w2 * th + c
        return c, dc, th, dth

    def _activation(self, l, step, c, dc, th, dth, q1, dq1, q2, dq2, same):
        pp = self.partials[l].pair(step, q1, q2, c, same)
        dT = pp.T_q1 * dq1[:, :, None] + pp.T_q2 * dq2[:, None, :] + pp.T_c * dc
        if th is not None:
            dTd = pp.Td_q1 * dq1[:, :, None] + pp.Td_q2 * dq2[:, None, :] + pp.Td_c * dc
            dth = pp.Td * dth + dTd * th
            th = pp.Td * th
        return pp.T, dT, th, dth


def _self_pass(rec, F, n_params):
    """Per image, its own block through the recursion: q (list per step of (n, P_l)) and dq
    (list of (n_params, n, P_l)) before each step, q and dq read off the block's diagonal."""
    n, P0, C = F.shape
    L = len(rec.steps)
    qs = [None] * L
    dqs = [None] * L
    eye = np.ones((1, 1), dtype=bool)
    for i in range(n):
        c = F[i] @ F[i].T / C
        np.fill_diagonal(c, np.einsum("pc,pc->p", F[i], F[i]) / C)

        def points(l, c, dc, i=i):
            q = np.diagonal(c).copy()
            dq = np.diagonal(dc, axis1=1, axis2=2).copy()
            if qs[l] is None:
                qs[l] = np.empty((n, q.size))
                dqs[l] = np.empty((n_params, n, q.size))
            qs[l][i], dqs[l][:, i] = q, dq
            return q, dq, q, dq

        rec.run(c, 1, 1, points, eye, want_ntk=False)
    return qs, dqs


def _tiles(n1, n2, t1, t2, symmetric):
    for a in range(0, n1, t1):
        for b in range(a if symmetric else 0, n2, t2):  # symmetric: t1 == t2, tiles on or above the diagonal
            yield slice(a, min(n1, a + t1)), slice(b, min(n2, b + t2))


def spatial_gradients(rec, F1, F2, ids1, ids2, symmetric, want_ntk, p_max):
    """(Σ, dΣ, Θ, dΘ) of image sets F1 (n1, P0, C) and F2 (n2, P0, C), each (…, n1, n2)."""
    n_params = rec.P
    Fall = F1 if symmetric else np.concatenate([F1, F2])
    qs, dqs = _self_pass(rec, Fall, n_params)
    q0 = np.einsum("npc,npc->np", Fall, Fall) / Fall.shape[2]
    n1, n2, C = F1.shape[0], F2.shape[0], F1.shape[2]
    off = 0 if symmetric else n1
    per_pair = (2 * n_params + 4) * p_max * p_max
    edge = max(1, int(math.sqrt(_TILE_ELEMENTS / per_pair)))
    S = np.empty((n1, n2))
    dS = np.empty((n_params, n1, n2))
    Th = np.empty((n1, n2)) if want_ntk else None
    dTh = np.empty((n_params, n1, n2)) if want_ntk else None
    for rows, cols in _tiles(n1, n2, edge, edge, symmetric):
        A, B = F1[rows], F2[cols]
        m1, m2 = A.shape[0], B.shape[0]
        same = ids1[rows][:, None] == ids2[cols][None, :]
        c = A.reshape(-1, C) @ B.reshape(-1, C).T / C
        # Identical images at the same position: exactly the self pass's variance (ρ = 1).
        big = np.kron(same, np.eye(A.shape[1], dtype=bool)).astype(bool)
        bi = np.arange(rows.start, rows.stop)
        bj = np.arange(cols.start, cols.stop) + off
        c[big] = np.broadcast_to(q0[bi].reshape(-1)[:, None], c.shape)[big]

        def points(l, c, dc):
            return (qs[l][bi].reshape(-1), dqs[l][:, bi].reshape(n_params, -1),
                    qs[l][bj].reshape(-1), dqs[l][:, bj].reshape(n_params, -1))

        c, dc, th, dth = rec.run(c, m1, m2, points, same, want_ntk)
        S[rows, cols], dS[:, rows, cols] = c, dc
        if want_ntk:
            Th[rows, cols], dTh[:, rows, cols] = th, dth
        if symmetric and rows != cols:
            S[cols, rows], dS[:, cols, rows] = c.T, dc.transpose(0, 2, 1)
            if want_ntk:
                Th[cols, rows], dTh[:, cols, rows] = th.T, dth.transpose(0, 2, 1)
    return S, dS, Th, dTh
