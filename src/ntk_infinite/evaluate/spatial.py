"""Evaluation of spatial (convolutional) programs: layout, point pass, pair pass.

Layouts (docs/DESIGN.md, "Spatial layers"; Novak et al. 2019): with a Flatten readout and no
pooling before it only same-position entries K[p, p] ever reach the output, so the
*diagonal* layout (P entries per pair of images) is exact; pooling (AvgPool,
GlobalAvgPool) needs the *full* P × P block per pair. :func:`choose_layout` picks the
cheaper one that is exact.

Point pass. Per (image, position) variances q(x)[p] = Σ(x, x)[p, p] at every layer, the NTK
diagonal and each activation's per-point data. Convolutions and Flatten need only the
per-position variances; pooling needs the off-diagonal entries of each image's own block,
which :mod:`._self_blocks` carries image by image with the pair pass's own jitted maps.

Pair pass. Tiles of image pairs, the whole recursion per tile in jitted code
(:mod:`ntk_infinite.compiler.spatial_source`), on ``numba.get_num_threads()`` threads;
only the lower triangle of tiles when X2 is None. Peak memory: the outputs, the per-point
arrays O(n·P·L), and per thread one workspace of 10·(tile·P)² floats (full: two states and
the offset sums) or 7·tile²·P (diagonal); the default tile keeps the full layout's near
24–80 MiB (single image pairs once P ≥ 256) and the diagonal layout's near 3.5 MiB
(tile² · P ≈ 2¹⁶, at least 16 × 16 images).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numba
import numpy as np

from ..compiler.codegen import load_module
from ..compiler.duals.base import Dual
from ..compiler.engine_source import _HEADER
from ..compiler.spatial_source import build_spatial_source
from ..compiler.steps import (FAN_IN_DATA, OP_DENSE, OP_FLATTEN, OP_INDEPENDENT, OP_SAME_OFFSET, Affine,
                              ForkStep, JoinStep, LayerNormStep)
from ..errors import ArchitectureError, InputError, KernelOverflowError
from ._self_blocks import SelfBlocks
from .engine import _tiles, run_tile_chunks

__all__ = ["SpatialProgram", "choose_layout"]

#: Per-thread tile state budget (floats): 3 arrays of state stay within ~24 MiB.
_TILE_BUDGET = 1 << 20
#: Diagonal layout: floats per state array of a tile by default, and the smallest default tile.
_DIAG_TILE_STATE = 1 << 16
_DIAG_MIN_TILE = 16
#: Op codes of the control steps in the spatial drivers (compiler/engine_source.py's OP_*).
OP_FORK, OP_JOIN, OP_NORM = -10, -11, -12
#: Largest variance a spatial program carries (its products of two variances stay finite).
_MAX_VARIANCE = 1e150


def choose_layout(steps) -> str:
    """"diagonal" when the readout is Flatten and no pooling precedes it, else "full"."""
    for step in steps:
        if getattr(step, "role", None) in ("linear", "readout"):
            return "diagonal" if type(step).__name__ == "FlattenStep" else "full"
    return "full"


@dataclass(frozen=True)
class _Plan:
    """The position maps of one input spatial shape: per step (P_in, P_out, table, divisor)."""

    shapes: tuple
    pin: np.ndarray
    pout: np.ndarray
    tabs: np.ndarray
    kdiv: np.ndarray
    ops: np.ndarray
    wb: np.ndarray
    maps: tuple
    axes: tuple  # (AXM, AXT, AXR, AXN, GRID): per-axis factors of the same-offset maps


class SpatialProgram:
    """Resolved steps of a spatial network (Conv/AvgPool, activations, a readout, Dense)."""

    def __init__(self, steps, n_spatial: int):
        self.steps = tuple(steps)
        self.n_spatial = n_spatial
        self.layout = choose_layout(self.steps)
        self.duals = [s for s in self.steps if isinstance(s, Dual)]
        keys = []
        for dual in self.duals:
            if dual.key not in keys:
                keys.append(dual.key)
        self._codes = {key: i + 1 for i, key in enumerate(keys)}
        self.n_levels = 1 + max((s.level for s in self.steps if isinstance(s, ForkStep)), default=-1)
        self._module = None
        self._lock = threading.Lock()
        self._plans = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_module"] = None
        state["_plans"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def module(self):
        if self._module is None:
            with self._lock:
                if self._module is None:
                    sources, seen, stacked = [], set(), set()
                    for dual in self.duals:
                        if dual.key not in seen:
                            seen.add(dual.key)
                            fname = self.tile_name(dual)
                            sources.append((self._codes[dual.key], fname, dual.tile_source(fname)))
                            if not dual.tile_reads_points:
                                stacked.add(self._codes[dual.key])
                    from ..compiler.duals.arccos import SERIES_SWITCH

                    header = _HEADER.replace("__SWITCH__", repr(SERIES_SWITCH))
                    self._module = load_module(build_spatial_source(header, sources, stacked), prefix="spatial")
        return self._module

    # ------------------------------------------------------------------ plans
    def plan(self, shape: tuple, channels: int | None = None) -> _Plan:
        """Position maps for inputs of spatial shape ``shape`` with ``channels`` channels (the
        fan-in of a first Conv in standard parameterisation), cached per (shape, channels)."""
        key = (shape, channels if self._reads_channels else None)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._make_plan(shape, channels)
            with self._lock:
                self._plans[key] = plan
        return plan

    @property
    def _reads_channels(self) -> bool:
        return any(getattr(step, "fan_in", 0) == FAN_IN_DATA for step in self.steps)

    def _make_plan(self, shape, channels=None):
        L = len(self.steps)
        shapes, maps = [shape], []
        pin = np.zeros(L, dtype=np.int64)
        pout = np.zeros(L, dtype=np.int64)
        kdiv = np.ones(L)
        ops = np.zeros(L, dtype=np.int64)
        # Per step (w², b², then Θ's gain from Σ_in and its constant: ta·mean(Σ_in) + tb).
        wb = np.zeros((L, 4))
        flattened = 1  # positions a Flatten turned into features (a Dense after it has P·C inputs)
        forks = []  # per open parallel block: its input shape and its branches' output shapes
        for l, step in enumerate(self.steps):
            cur = shapes[-1]
            pin[l] = math.prod(cur)
            new = cur
            maps.append(None)
            if isinstance(step, ForkStep):
                ops[l] = OP_FORK
                forks.append((cur, []))
            elif isinstance(step, JoinStep):
                ops[l] = OP_JOIN
                new = _join_shape(step, forks, cur)
            elif isinstance(step, Dual):
                ops[l] = self._codes[step.key]
            elif isinstance(step, LayerNormStep):
                ops[l] = OP_NORM
            elif isinstance(step, Affine):
                ops[l] = OP_DENSE
                gw, gb = step.ntk_terms(channels or 0) if step.standard else (0.0, 0.0)
                if step.standard and gw <= 0.0:
                    raise InputError(f"{step.layer!r} uses standard parameterisation on the data, but the evaluation "
                                     "was not given the number of input channels; call the compiled kernel on images.")
                wb[l] = step.w2, step.b2, gw * flattened, gb
                flattened = 1
            else:
                pm = step.plan(cur)
                ops[l] = pm.op
                wb[l, :2] = step.w2, step.b2
                wb[l, 2:] = _theta_gains(step, pm, channels)
                kdiv[l] = pm.divisor
                maps[l] = pm
                new = pm.out_shape
                if pm.op == OP_FLATTEN:
                    flattened = math.prod(cur)
            pout[l] = math.prod(new)
            shapes.append(new)
        kmax = max([m.table.shape[1] for m in maps if m is not None], default=1)
        pmax = max([m.table.shape[0] for m in maps if m is not None], default=1)
        tabs = np.full((L, pmax, kmax), -1, dtype=np.int64)
        for l, m in enumerate(maps):
            if m is not None:
                tabs[l, : m.table.shape[0], : m.table.shape[1]] = m.table
        axes = _axis_arrays(maps, shapes, self.n_spatial)
        return _Plan(tuple(shapes), pin, pout, tabs, kdiv, ops, wb, tuple(maps), axes)

    # ------------------------------------------------------------------ point pass
    def tile_name(self, dual) -> str:
        """Name of a dual's tile function in :attr:`module`."""
        return f"tile_{dual.key}".replace("-", "_")

    def point_pass(self, X: np.ndarray, shape: tuple, want_ntk: bool = True):
        """Per-point quantities of images X (n, P, C) of spatial shape ``shape``: returns a dict with ``q`` (list of
        (n, P_l) variances before each step and after the last), ``td`` (NTK diagonal per
        layer), ``data``/``params`` per step, ``error_estimate``."""
        plan = self.plan(shape, X.shape[2])
        n = X.shape[0]
        q = np.einsum("npc,npc->np", X, X) / X.shape[2]
        td = np.zeros_like(q)
        # Pooling reads each image's own P × P block (:mod:`._self_blocks`).
        pools = [l for l, m in enumerate(plan.maps) if m is not None and m.op == OP_INDEPENDENT]
        blocks = None
        if self.layout == "full" and pools:
            inv = _inverse_norms(X)
            blocks = SelfBlocks(self, plan, X, inv, _unit_columns(X, inv, False), want_ntk)
        qs, tds, data, params, err = [q], [td], [], [], 0.0
        forks = []
        for l, step in enumerate(self.steps):
            m = plan.maps[l]
            if isinstance(step, Dual):
                res = step.point(q.ravel())
                q = np.asarray(res.q_out, dtype=np.float64).reshape(q.shape)
                td = res.tdot.reshape(q.shape) * td
                data.append(None if res.data is None else np.ascontiguousarray(res.data, dtype=np.float64))
                params.append(np.asarray(step.params if res.params is None else res.params, dtype=np.float64))
                err = max(err, float(res.error_estimate))
            elif isinstance(step, LayerNormStep):
                q, td, factor = _layer_norm_point(step, q, td)
                data.append(factor)
                params.append(np.zeros(0))
            elif isinstance(step, ForkStep):
                forks.append((q, td, []))
                data.append(None)
                params.append(np.array([float(step.level)]))
            elif isinstance(step, JoinStep):
                q, td = _join_point(step, forks, l, q, td, data, params)
            else:
                w2, b2, ta, tb = plan.wb[l]
                if m is None:  # Dense after the readout
                    q_new = w2 * q + b2
                    td = w2 * td + (q_new if ta == 0.0 else ta * q + tb)
                    q = q_new
                elif m.op == OP_INDEPENDENT:
                    q, td = blocks.pool(l, qs, tds, data, params, keep=l != pools[-1])
                else:  # Θ' = w²·mean(Θ) + ta·mean(Σ) + tb (see _theta_gains)
                    mean_q = _conv_vector(q, m)
                    td = w2 * _conv_vector(td, m) + ta * mean_q + tb
                    q = w2 * mean_q + b2
                data.append(None)
                params.append(np.zeros(0))
            if not np.all(q <= _MAX_VARIANCE):
                raise KernelOverflowError(
                    f"The variances after layer {l} ({getattr(step, 'layer', step)!r}) reach "
                    f"{float(np.max(q)):.3g}, beyond what a spatial network carries ({_MAX_VARIANCE:.0e}). Rescale the "
                    "inputs (divide X by a large factor) or the weights (smaller w_std)."
                )
            qs.append(q)
            tds.append(td)
        return dict(q=qs, td=tds, data=data, params=params, error_estimate=err, plan=plan, n=n)

    # ------------------------------------------------------------------ pair pass
    def pair_pass(self, X1, X2, want_nngp, want_ntk, tile=None, progress=None):
        """NNGP/NTK Gram matrices of images X1 (n1, *S, C) and X2 (or X1 when None)."""
        symmetric = X2 is None
        shape = X1.shape[1:-1]
        F1 = np.ascontiguousarray(X1.reshape(X1.shape[0], -1, X1.shape[-1]))
        F2 = F1 if symmetric else np.ascontiguousarray(X2.reshape(X2.shape[0], -1, X2.shape[-1]))
        stacked = F1 if symmetric else np.concatenate([F1, F2])
        pts = self.point_pass(stacked, shape, want_ntk)
        n1, n2 = F1.shape[0], F2.shape[0]
        out_s = np.empty((n1, n2)) if want_nngp else None
        out_t = np.empty((n1, n2)) if want_ntk else None
        if n1 == 0 or n2 == 0:
            return out_s, out_t, pts
        plan = pts["plan"]
        position_major = self.layout == "diagonal"
        SQ1, SQ2 = _point_arrays(pts["q"], n1, None if symmetric else n2, position_major)
        PP1, PP2 = _data_arrays(pts["data"], pts["q"], n1, None if symmetric else n2, position_major)
        P = max((p.size for p in pts["params"]), default=0)
        prm = np.zeros((len(self.steps), max(P, 1)))
        for l, p in enumerate(pts["params"]):
            prm[l, : p.size] = p
        inv1 = _inverse_norms(F1)
        inv2 = inv1 if symmetric else _inverse_norms(F2)
        P0 = F1.shape[1]
        per = 3 * (P0 * P0 if self.layout == "full" else P0)
        tile = max(1, min(tile or 1 << 30, int(math.sqrt(_TILE_BUDGET / max(per, 1)))))
        if self.layout == "full":
            # Rows of ~256 entries vectorise well; larger tiles only add the redundant half of
            # the diagonal tiles (pairs (a, b) and (b, a) of one tile) in the symmetric case.
            tile = min(tile, max(1, -(-256 // P0)))
        else:
            # One state array of ~2**16 floats (512 KiB) keeps a layer's passes near the core's
            # cache (measured 1.4× faster than 2**20 at 16×16); rows under 16 entries vectorise poorly.
            tile = min(tile, max(_DIAG_MIN_TILE, int(math.sqrt(_DIAG_TILE_STATE / P0))))
        tiles = _tiles(n1, n2, tile, symmetric)
        if symmetric and tile == 1:
            tiles = tiles[tiles[:, 0] != tiles[:, 1]]  # each image with itself comes from the point pass
        driver = self.module.diag_tiles if position_major else self.module.full_tiles
        dummy = np.empty((1, 1))
        args = (F1, inv1, _unit_columns(F2, inv2, position_major), SQ1, SQ2, plan.ops, plan.wb, plan.tabs, plan.kdiv, plan.pin, plan.pout,
                *plan.axes, PP1, PP2, prm, self.n_levels, out_s if want_nngp else dummy, out_t if want_ntk else dummy)

        def run(chunk):
            driver(*args, chunk, tile, want_nngp, want_ntk, symmetric)
            return len(chunk)

        if len(tiles):
            run_tile_chunks(run, tiles, max(1, min(numba.get_num_threads(), len(tiles))), progress, per_thread=4)
        # Identical images (each image with itself, and repeated images): the point pass knows
        # ρ = 1 at equal positions exactly, where the pair pass re-derives it from pooled sums
        # (off by rounding, which an activation after pooling would amplify to ~1e-9 in Ṫ).
        _fill_identical(out_s, out_t, F1, F1 if symmetric else F2, pts)
        return out_s, out_t, pts

    def diag(self, X, want_ntk=True):
        """(NNGP diagonal, NTK diagonal, error estimate) of images X (n, *S, C)."""
        F = np.ascontiguousarray(X.reshape(X.shape[0], -1, X.shape[-1]))
        pts = self.point_pass(F, X.shape[1:-1], want_ntk)
        return pts["q"][-1][:, 0], pts["td"][-1][:, 0], pts["error_estimate"]


def _join_shape(step, forks, cur):
    """The spatial shape after a branch's end: the fork's input shape for the next branch, the
    common output shape after the last (an ArchitectureError when the branches disagree)."""
    start, ends = forks[-1]
    ends.append(cur)
    if not step.last:
        return start
    forks.pop()
    if len(set(ends)) > 1:
        what = "adds" if step.mode == "sum" else "concatenates the channels of"
        raise ArchitectureError(
            f"A FanIn{'Sum' if step.mode == 'sum' else 'Concat'} {what} branches of different spatial shapes {ends} "
            f"on inputs of spatial shape {forks[0][0] if forks else start}: every branch must keep the same positions. "
            "Use padding='SAME' and equal strides in every branch (or a strided 1×1 Conv on the identity branch)."
        )
    return cur


def _join_point(step, forks, l, q, td, data, params):
    """A branch's end in the point pass: the fork's (q, td) for the next branch, or after the
    last the weighted sums; each join's data is the running sum's √Q before and after it (per
    image and position, image-major), its parameters (level, branch, last, weight)."""
    q0, td0, ends = forks[-1]
    ends.append((l, q, td, step.weight))
    data.append(None)
    params.append(None)
    if not step.last:
        return q0, td0
    forks.pop()
    q_acc, td_acc = np.zeros_like(q), np.zeros_like(td)
    for branch, (lj, qb, tdb, weight) in enumerate(ends):
        before = np.sqrt(q_acc).ravel()
        q_acc = q_acc + weight * qb
        td_acc = td_acc + weight * tdb
        data[lj] = np.ascontiguousarray(np.stack([before, np.sqrt(q_acc).ravel()]))
        params[lj] = np.array([step.level, branch, float(branch == step.num - 1), weight])
    return q_acc, td_acc


def _layer_norm_point(step, q, td):
    """LayerNorm on per-position variances q (n, P): (q/(q + ε), td/(q + ε), the factors
    1/√(q + ε) as one data row (image-major) for the pair pass)."""
    denom = q + step.eps
    if np.any(denom == 0.0):
        raise InputError(
            f"{step.layer!r} normalises a position whose variance is exactly 0 with eps = 0: x/|x| has no limit at "
            "x = 0. Give LayerNorm a positive eps (neural-tangents' default is 1e-12), or remove the zero inputs."
        )
    inv = 1.0 / denom
    return q * inv, td * inv, np.ascontiguousarray(np.sqrt(inv).reshape(1, -1))


def _theta_gains(step, pm, channels):
    """(ta, tb) of a window step: Θ' = w²·mean(Θ) + ta·mean(Σ_in) + tb. A Conv in NTK
    parameterisation gains its new Σ, (w², b²); in standard parameterisation (C_in|k|, [σb > 0])
    (neural-tangents' ``parameterization="standard"``); pooling and readouts only average."""
    if pm.op != OP_SAME_OFFSET:
        return 0.0, 0.0
    if not getattr(step, "fan_in", 0):
        return step.w2, step.b2
    c_in = channels if step.fan_in == FAN_IN_DATA else step.fan_in
    if not c_in:
        raise InputError(f"{step.layer!r} uses standard parameterisation on the data, but the evaluation was not given "
                         "the number of input channels; call the compiled kernel on the images.")
    return float(c_in) * pm.divisor, (1.0 if step.b2 > 0.0 else 0.0)


def _runs(table):
    """Runs of one axis table: per offset k, maximal (v₀, v₁, s₀, step) with
    table[v, k] = s₀ + (v − v₀)·step on [v₀, v₁) (padding entries split runs)."""
    out = []
    for k in range(table.shape[1]):
        col, runs, v = table[:, k], [], 0
        while v < len(col):
            if col[v] < 0:
                v += 1
                continue
            step = int(col[v + 1] - col[v]) if v + 1 < len(col) and col[v + 1] >= 0 else 1
            end = v + 1
            while end < len(col) and col[end] >= 0 and col[end] - col[end - 1] == step:
                end += 1
            if end == v + 1:
                step = 1
            runs.append((v, end, int(col[v]), step))
            v = end
        out.append(runs)
    return out


def _axis_arrays(maps, shapes, D):
    """Pack the per-axis factors of every same-offset map into arrays for the jitted pass:
    AXM[l, d] = (n_in, m_out, K_d), AXT[l, d] the axis table, AXR/AXN its runs (:func:`_runs`),
    GRID[l] the input spatial shape of step l."""
    L = len(maps)
    D = max(D, 1)
    factors = [m.axes if m is not None and m.op != OP_INDEPENDENT else () for m in maps]
    all_tabs = [t for f in factors for _, t in f]
    M = max([t.shape[0] for t in all_tabs], default=1)
    K = max([t.shape[1] for t in all_tabs], default=1)
    runs = [[_runs(t) for _, t in f] for f in factors]
    R = max([len(r) for f in runs for a in f for r in a], default=1)
    AXM = np.zeros((L, D, 3), dtype=np.int64)
    AXT = np.full((L, D, M, K), -1, dtype=np.int64)
    AXR = np.zeros((L, D, K, max(R, 1), 4), dtype=np.int64)
    AXN = np.zeros((L, D, K), dtype=np.int64)
    GRID = np.ones((L, D), dtype=np.int64)
    for l, f in enumerate(factors):
        if len(shapes[l]) == D:
            GRID[l] = shapes[l]
        for d, (n_in, t) in enumerate(f):
            AXM[l, d] = n_in, t.shape[0], t.shape[1]
            AXT[l, d, : t.shape[0], : t.shape[1]] = t
            for k, rk in enumerate(runs[l][d]):
                AXN[l, d, k] = len(rk)
                for r, run in enumerate(rk):
                    AXR[l, d, k, r] = run
    return AXM, AXT, AXR, AXN, GRID


def _fill_identical(out_s, out_t, F1, F2, pts):
    """Every entry of an image of X1 with an identical image of X2 from the point pass (exact,
    as on the diagonal of K(X)), so K(X, X) equals K(X) and repeated images agree exactly."""
    rows = {}
    for i in range(F1.shape[0]):
        rows.setdefault(F1[i].tobytes(), []).append(i)
    q, td = pts["q"][-1][:, 0], pts["td"][-1][:, 0]
    for j in range(F2.shape[0]):
        for i in rows.get(F2[j].tobytes(), ()):
            if out_s is not None:
                out_s[i, j] = q[i]
            if out_t is not None:
                out_t[i, j] = td[i]


def _conv_vector(v, m):
    """Same-offset sum of per-position values v (n, P) over the table: (1/k) Σ_o v[tab[u, o]]."""
    tab = m.table
    valid = tab >= 0
    gathered = np.where(valid[None], v[:, np.where(valid, tab, 0)], 0.0)
    return gathered.sum(axis=2) / m.divisor


def _point_arrays(qs, n1, n2, position_major):
    """(SQ1, SQ2): (L+1, n·P_max) √q per layer, image-major (i·P + p) or position-major (p·n + i)."""
    def arrange(sel):
        rows = []
        for q in qs:
            part = q[sel]
            v = np.sqrt(part)
            rows.append((v.T if position_major else v).ravel())
        out = np.zeros((len(rows), max(r.size for r in rows)))
        for l, r in enumerate(rows):
            out[l, : r.size] = r
        return out

    a = arrange(slice(0, n1))
    b = a if n2 is None else arrange(slice(n1, n1 + n2))
    return a, b


def _data_arrays(data, qs, n1, n2, position_major):
    """(PP1, PP2): (L, K, n·P_max) per-point dual data in the layout's point order."""
    L = len(data)
    K = max([d.shape[0] for d in data if d is not None], default=0)
    width = max(q.shape[1] for q in qs)

    def arrange(start, count):
        out = np.zeros((L, K, count * width))
        for l, d in enumerate(data):
            if d is None:
                continue
            P = qs[l].shape[1]
            block = d.reshape(d.shape[0], -1, P)[:, start:start + count, :]  # (K, n, P)
            flat = (block.transpose(0, 2, 1) if position_major else block).reshape(d.shape[0], -1)
            out[l, : d.shape[0], : flat.shape[1]] = flat
        return out

    a = arrange(0, n1)
    b = a if n2 is None else arrange(n1, n2)
    return a, b


def _unit_columns(F, inv, position_major):
    """The unit channel vectors of images F (n, P, C) as columns V[c, point], image-major
    (i·P + p) or position-major (p·n + i)."""
    C = F.shape[2]
    U = F * inv[:, :, None]
    if position_major:
        U = U.transpose(1, 0, 2)
    return np.ascontiguousarray(U.reshape(-1, C).T)


def _inverse_norms(F):
    norms = np.sqrt(np.einsum("npc,npc->np", F, F))
    with np.errstate(divide="ignore"):
        return np.where(norms > 0, 1.0 / norms, 0.0)


def check_images(X, name, n_spatial, channels=None):
    """Coerce X to a finite float64 array (n, S₁, …, S_k, C) or raise InputError."""
    arr = np.asarray(X)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must contain real numbers; got dtype {arr.dtype}.")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real; got complex dtype {arr.dtype}.")
    want = n_spatial + 2
    if arr.ndim != want:
        layout = {1: "(n, L, C)", 2: "(n, H, W, C) (NHWC)"}.get(n_spatial, f"(n, S1, …, S{n_spatial}, C)")
        hint = ""
        if arr.ndim == 2:
            hint = (f" A convolutional architecture needs images, not flat rows: reshape them, e.g. "
                    f"{name}.reshape(len({name}), H, W, C), or use a dense architecture.")
        raise InputError(
            f"{name} must be a {want}-D array of shape {layout} for this {n_spatial}-D convolutional architecture; "
            f"got shape {arr.shape}.{hint}"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if arr.shape[-1] == 0 or any(s == 0 for s in arr.shape[1:-1]):
        raise InputError(f"{name} has an empty spatial axis or no channels: shape {arr.shape}.")
    if channels is not None and arr.shape[-1] != channels:
        raise InputError(
            f"{name} has {arr.shape[-1]} channels but X1 has {channels}; pass images with the same number of "
            "channels (the last axis)."
        )
    if arr.size and not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise InputError(f"{name} contains NaN or infinite values (first at index {bad}); the kernels need finite "
                         "inputs. Remove or impute them first.")
    return arr
