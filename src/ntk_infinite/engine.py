"""The two passes of the evaluation (DESIGN.md, "Evaluate").

* Point pass, O(n·L), NumPy: each input's variance q_l(x) through all layers, the NTK
  diagonal, and any per-point data a dual needs (e.g. Hermite coefficients).
* Pair pass, O(n₁·n₂·L), Numba: Σ⁰ for all pairs by one BLAS product written straight into
  an output buffer, then tiles of pairs in parallel (``numba.get_num_threads()`` threads
  running the GIL-free jitted tile loop on chunks of tiles), the whole recursion per entry,
  written back in place. In the symmetric case only the lower triangle of tiles is
  computed (``dsyrk`` fills Σ⁰'s lower triangle) and mirrored.

Peak memory: the requested output arrays, per-point data O(n·L·K), and one tile of
state per thread.

Thread safety: a :class:`Program` is immutable once its engine is built (the build is
locked, so it happens once even when several threads call first), and both passes keep
every per-call quantity (truncations, parameter vectors, error estimates) in their own
:class:`PointData`, so one program may be evaluated from several threads at once.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
from scipy.linalg.blas import dsyrk

from .codegen import load_module
from .duals.base import Dual
from .engine_source import build_engine_source

__all__ = ["Affine", "Program", "PointData", "point_pass", "pair_pass", "DEFAULT_TILE"]

#: Default tile edge: 3 state buffers of 128×128 float64 (384 KiB) stay in L2.
DEFAULT_TILE = 128
#: Entry-layers below which the pair pass runs on the calling thread only.
_MIN_PARALLEL_WORK = 2e5


@dataclass(frozen=True)
class Affine:
    """A Dense layer in the program: Σ ← w²Σ + b², Θ ← w²Θ + Σ."""

    w2: float
    b2: float


class Program:
    """Validated, resolved sequence of steps (``Affine`` or a :class:`Dual`)."""

    def __init__(self, steps):
        self.steps = tuple(steps)
        self.duals = [s for s in self.steps if isinstance(s, Dual)]
        keys = []
        for dual in self.duals:
            if dual.key not in keys:
                keys.append(dual.key)
        self._codes = {key: i + 1 for i, key in enumerate(keys)}
        self.ops = np.array([0 if isinstance(s, Affine) else self._codes[s.key] for s in self.steps], dtype=np.int64)
        self.wb = np.array([[s.w2, s.b2] if isinstance(s, Affine) else [0.0, 0.0] for s in self.steps], dtype=np.float64)
        self._module = None
        self._build_lock = threading.Lock()

    @property
    def engine(self):
        """The generated, jitted pair pass (built once on first use, thread-safe; cached on disk)."""
        module = self._module
        if module is not None:
            return module.pair_tiles
        with self._build_lock:
            if self._module is None:
                self._module = self._build()
            return self._module.pair_tiles

    def __getstate__(self):
        # The lock and the imported module cannot be pickled or copied; a copy rebuilds them.
        state = self.__dict__.copy()
        state["_module"] = None
        del state["_build_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._build_lock = threading.Lock()

    def _build(self):
        sources = []
        seen = set()
        for dual in self.duals:
            if dual.key in seen:
                continue
            seen.add(dual.key)
            fname = f"tile_{dual.key}".replace("-", "_")
            sources.append((self._codes[dual.key], fname, dual.tile_source(fname)))
        return load_module(build_engine_source(sources), prefix="engine")


@dataclass(frozen=True)
class PointData:
    """Per-point quantities of one point pass over the stacked inputs."""

    sqrt_q: np.ndarray  # (L+1, n): √q before the first step and after each step
    nngp_diag: np.ndarray  # (n,)
    ntk_diag: np.ndarray  # (n,)
    point_data: np.ndarray  # (L, K, n) per-point dual data (K may be 0)
    params: np.ndarray  # (L, P) dual parameter vectors of this pass
    error_estimate: float = 0.0  # largest relative error estimate of the duals in this pass
    terms: tuple = ()  # (L,) per step: the series truncation (Ka, Kb) of this pass, or None


def point_pass(program: Program, q0: np.ndarray, want_data: bool = True) -> PointData:
    """Run the per-point recursion for input variances ``q0`` (n,)."""
    n = q0.shape[0]
    L = len(program.steps)
    sqrt_q = np.empty((L + 1, n))
    sqrt_q[0] = np.sqrt(q0)
    q = q0.copy()
    td = np.zeros(n)
    data, params, terms = [], [], []
    err = 0.0
    for l, step in enumerate(program.steps):
        if isinstance(step, Affine):
            q = step.w2 * q + step.b2
            td = step.w2 * td + q
            data.append(None)
            params.append(np.zeros(0))
            terms.append(None)
        else:
            # Everything that depends on this call comes from the result, never from the
            # (shared) dual: another thread may be evaluating it at other variances.
            res = step.point(q)
            q = np.asarray(res.q_out, dtype=np.float64)
            td = res.tdot * td
            data.append(res.data)
            params.append(np.asarray(step.params if res.params is None else res.params, dtype=np.float64))
            terms.append(res.terms)
            err = max(err, float(res.error_estimate))
        sqrt_q[l + 1] = np.sqrt(q)
    K = max([d.shape[0] for d in data if d is not None], default=0) if want_data else 0
    pp = np.zeros((L, K, n))
    if K:
        for l, d in enumerate(data):
            if d is not None:
                pp[l, : d.shape[0]] = d
    P = max([p.size for p in params], default=0)
    prm = np.zeros((L, max(P, 1)))
    for l, p in enumerate(params):
        prm[l, : p.size] = p
    return PointData(sqrt_q, q, td, pp, prm, err, tuple(terms))


def _tiles(n1: int, n2: int, tile: int, symmetric: bool) -> np.ndarray:
    rows = np.arange(0, n1, tile)
    cols = np.arange(0, n2, tile)
    ii, jj = np.meshgrid(rows, cols, indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    if symmetric:
        keep = ii >= jj
        ii, jj = ii[keep], jj[keep]
    # Larger-work tiles first would help balance; tiles are equal-sized except at edges.
    return np.ascontiguousarray(np.stack([ii, jj], axis=1).astype(np.int64))


def _inverse_norms(X: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    with np.errstate(divide="ignore"):
        return np.where(norms > 0, 1.0 / norms, 0.0)


def pair_pass(
    program: Program,
    X1: np.ndarray,
    X2: np.ndarray | None,
    want_nngp: bool,
    want_ntk: bool,
    tile: int = DEFAULT_TILE,
    progress=None,
):
    """Evaluate the Gram matrices. Returns (nngp or None, ntk or None, point data)."""
    symmetric = X2 is None
    Xb = X1 if symmetric else X2
    n1, n2, d = X1.shape[0], Xb.shape[0], X1.shape[1]
    q1 = np.einsum("ij,ij->i", X1, X1) / d
    q0 = q1 if symmetric else np.concatenate([q1, np.einsum("ij,ij->i", Xb, Xb) / d])
    pts = point_pass(program, q0)
    out_s = np.empty((n1, n2)) if want_nngp else None
    out_t = np.empty((n1, n2)) if want_ntk else None
    if n1 == 0 or n2 == 0:
        return out_s, out_t, pts
    src = out_s if want_nngp else out_t
    if symmetric:
        dsyrk(1.0 / d, X1, c=src.T, overwrite_c=1, lower=0)  # lower triangle of src (C order)
    else:
        np.matmul(X1 * (1.0 / d), Xb.T, out=src)
    SQ1, SQ2 = pts.sqrt_q[:, :n1], pts.sqrt_q[:, n1:] if not symmetric else pts.sqrt_q
    PP1 = pts.point_data[:, :, :n1]
    PP2 = pts.point_data[:, :, n1:] if not symmetric else pts.point_data
    inv1 = _inverse_norms(X1)
    inv2 = inv1 if symmetric else _inverse_norms(Xb)
    dummy = np.empty((1, 1))
    tiles = _tiles(n1, n2, tile, symmetric)
    engine = program.engine
    args_before = (src, out_s if want_nngp else dummy, out_t if want_ntk else dummy, X1, Xb, inv1, inv2,
                   np.ascontiguousarray(SQ1), np.ascontiguousarray(SQ2), program.ops, program.wb,
                   np.ascontiguousarray(PP1), np.ascontiguousarray(PP2), pts.params)

    def run(chunk):
        engine(*args_before, chunk, tile, want_nngp, want_ntk, symmetric)
        return len(chunk)

    # Threads only pay off when each has real work: below ~2e5 entry-layers one thread wins.
    work = (n1 * n2 / (2 if symmetric else 1)) * max(len(program.steps), 1)
    n_threads = max(1, min(numba.get_num_threads(), len(tiles) // 2)) if work > _MIN_PARALLEL_WORK else 1
    # Several chunks per thread balance the load (edge tiles are smaller) and pace the progress bar.
    n_chunks = min(len(tiles), n_threads * 8 if (n_threads > 1 or progress is not None) else 1)
    chunks = [np.ascontiguousarray(c) for c in np.array_split(tiles, n_chunks)]
    if n_threads == 1:
        results = map(run, chunks)
        for done in results:
            if progress is not None:
                progress(done, len(tiles))
    else:
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            for done in pool.map(run, chunks):
                if progress is not None:
                    progress(done, len(tiles))
    if symmetric:
        idx = np.arange(n1)
        if want_nngp:
            out_s[idx, idx] = pts.nngp_diag
        if want_ntk:
            out_t[idx, idx] = pts.ntk_diag
    return out_s, out_t, pts
