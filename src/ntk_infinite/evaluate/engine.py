"""The two passes of the evaluation (docs/DESIGN.md, "Data flow", step 3).

* Point pass, O(n·L), NumPy: each input's variance q_l(x) through all layers, the NTK
  diagonal, and any per-point data a dual needs (e.g. Hermite coefficients).
* Pair pass, O(n₁·n₂·L), Numba: Σ⁰ for all pairs by one BLAS product written straight into
  an output buffer, then tiles of pairs in parallel (``numba.get_num_threads()`` threads
  running the GIL-free jitted tile loop on chunks of tiles), the whole recursion per entry,
  written back in place. In the symmetric case only the lower triangle of tiles is
  computed (``dsyrk`` fills Σ⁰'s lower triangle) and mirrored.

Peak memory: the requested output arrays, per-point data O(n·L·K), and one tile of
state per thread.

Extreme scales. Rows whose largest entry lies outside 2^±250 are multiplied by an exact
power of two before any product (:func:`scale_rows`): the initial correlations are
scale-free, and the scale goes into the per-point variances only. Those are carried in
units of 4^e with one integer exponent e per layer: an affine step folds the change of
units into its (w², b²) (exact, powers of two), homogeneous activations (ReLU & co.) map
units 4^e to 4^{ne}, other activations get the actual variances. In the usual range e = 0
throughout and nothing changes. Kernel values beyond float64 raise
:class:`~ntk_infinite.errors.KernelOverflowError`; values below its normal range come out as
subnormals or exact zeros with a :class:`~ntk_infinite.errors.KernelUnderflowWarning`.

Thread safety: a :class:`Program` is immutable once its engine is built (the build is
locked, so it happens once even when several threads call first), and both passes keep
every per-call quantity (truncations, parameter vectors, error estimates) in their own
:class:`PointData`, so one program may be evaluated from several threads at once.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import math
import warnings

import numba
import numpy as np
from scipy.linalg.blas import dsyrk

from ..compiler.codegen import load_module
from ..compiler.duals.base import Dual
from ..compiler.engine_source import build_engine_source
from ..compiler.steps import Affine, ForkStep, JoinStep, LayerNormStep
from ..errors import InputError, KernelOverflowError, KernelUnderflowWarning

__all__ = ["Affine", "Program", "PointData", "point_pass", "pair_pass", "scale_rows", "check_range", "DEFAULT_TILE"]

#: Default tile edge: 3 state buffers of 128×128 float64 (384 KiB) stay in L2.
DEFAULT_TILE = 128
#: Entry-layers below which the pair pass runs on the calling thread only.
_MIN_PARALLEL_WORK = 2e5
#: Rows whose largest |entry| is within 2^±_ROW_SAFE are used as they are (products stay normal).
_ROW_SAFE = 250
#: Scaled variances are renormalised when their maximum leaves 2^±_SAFE_LOG2 (divided by the
#: degree before a homogeneous activation of degree > 1, which raises them to that power).
_SAFE_LOG2 = 300.0
_TINY = np.finfo(np.float64).tiny
#: Smallest √q (in a layer's units) whose variance q is a normal float64 (2^-1022): below it
#: precision is lost, and products of two reciprocals of such √q overflow.
_MIN_PAIR_SQRT_Q = 2.0**-511
#: Largest variance handed to a non-homogeneous dual: their formulas multiply two variances
#: (e.g. (1 + 2q₁)(1 + 2q₂) for Erf), which must not overflow.
_MAX_DUAL_VARIANCE = 2.0**500
#: Op codes of the control steps in the generated driver (compiler/engine_source.py).
_CONTROL_OPS = {ForkStep: -10, JoinStep: -11, LayerNormStep: -12}


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
        self.ops = np.array([self._op(s) for s in self.steps], dtype=np.int64)
        #: Nesting levels of parallel blocks (the pair pass keeps two saved states per level).
        self.n_levels = 1 + max((s.level for s in self.steps if isinstance(s, ForkStep)), default=-1)
        self._module = None
        self._build_lock = threading.Lock()

    def _op(self, step) -> int:
        if isinstance(step, Affine):
            return 0
        if isinstance(step, Dual):
            return self._codes[step.key]
        return _CONTROL_OPS[type(step)]

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
    """Per-point quantities of one point pass over the stacked inputs.

    Variances are in units of 4^e (√q in units of 2^e), one exponent e per layer
    (``exponents``); ``wb`` holds each affine step's (w², b²) in those units. The diagonals
    are actual values (inf/0 beyond float64's range; see :func:`check_range`).
    """

    sqrt_q: np.ndarray  # (L+1, n): √q before the first step and after each step, scaled
    nngp_diag: np.ndarray  # (n,)
    ntk_diag: np.ndarray  # (n,)
    point_data: np.ndarray  # (L, K, n) per-point dual data (K may be 0)
    params: np.ndarray  # (L, P) dual parameter vectors of this pass
    exponents: np.ndarray = None  # (L+1,) int: the variances of layer l are in units of 4**exponents[l]
    wb: np.ndarray = None  # (L, 2): affine (w², b²) in those units (zeros for duals)
    scaled_diag: np.ndarray = None  # (2, n): NNGP and NTK diagonals in units of 4**exponents[-1]
    error_estimate: float = 0.0  # largest relative error estimate of the duals in this pass
    terms: tuple = ()  # (L,) per step: the series truncation (Ka, Kb) of this pass, or None


def point_pass(program: Program, q0: np.ndarray, want_data: bool = True, q0_exp=None,
               n_features: int = 0) -> PointData:
    """Run the per-point recursion for input variances ``q0 · 4**q0_exp`` (n,).

    ``q0_exp`` (int array, default 0) lets inputs beyond float64's range in; see the module
    docstring for the units of the result. ``n_features`` is the inputs' feature count d (the
    fan-in of a first layer in standard parameterisation).
    """
    n = q0.shape[0]
    L = len(program.steps)
    sqrt_q = np.empty((L + 1, n))
    exps = np.zeros(L + 1, dtype=np.int64)
    wb = np.zeros((L, 4))
    q, sqrt_q[0], e = _initial_units(q0, q0_exp)
    exps[0] = e
    td = np.zeros(n)
    data, params, terms = [None] * L, [np.zeros(0)] * L, [None] * L
    forks = []  # per open parallel block: its input (q, td, e) and the branches joined so far
    err = 0.0
    for l, step in enumerate(program.steps):
        nxt = program.steps[l + 1] if l + 1 < L else None
        if isinstance(step, Affine):
            w2, b2, gw, gb, e_new = _affine_units(step, q, e, _units_wanted(nxt), nxt, n_features)
            wb[l] = w2, b2, gw, gb
            q_new = w2 * q + b2
            td = w2 * td + (q_new if gw == 0.0 else gw * q + gb)
            q, e = q_new, e_new
        elif isinstance(step, ForkStep):
            forks.append(_OpenFork(q, td, e))
            params[l] = np.array([float(step.level)])
        elif isinstance(step, JoinStep):
            q, td, e = _join(step, forks, l, q, td, e, data, params, nxt)
        elif isinstance(step, LayerNormStep):
            q, td, e, data[l] = _layer_norm(step, q, td, e)
        else:
            q, td, e, data[l], params[l], terms[l], dual_err = _dual_point(step, q, td, e)
            err = max(err, dual_err)
        exps[l + 1] = e
        sqrt_q[l + 1] = np.sqrt(q)
    pp, prm = _stack_point_data(data, params, n, want_data)
    with np.errstate(over="ignore", under="ignore"):
        nngp_diag, ntk_diag = (np.ldexp(v, 2 * e) if e else v for v in (q, td))
    return PointData(sqrt_q, nngp_diag, ntk_diag, pp, prm, exps, wb, np.stack([q, td]), err, tuple(terms))


def _dual_point(step, q, td, e):
    """One activation's point step: (q, td, e, data, params, terms, error estimate)."""
    # Everything that depends on this call comes from the result, never from the
    # (shared) dual: another thread may be evaluating it at other variances.
    degree = step.homogeneous_degree
    if degree is None and not q.max(initial=0.0) <= _MAX_DUAL_VARIANCE:
        raise KernelOverflowError(
            f"The variance entering {step.layer!r} exceeds float64's range for its dual: it reaches "
            f"{_magnitude(_log2(float(q.max())))}, above {_MAX_DUAL_VARIANCE:.1e} (the dual multiplies two "
            "variances, which must stay below ~1.8e308). Rescale the inputs (divide X by a large "
            "factor) or the weights (smaller w_std) before it."
        )
    res = step.point(q)
    params = np.asarray(step.params if res.params is None else res.params, dtype=np.float64)
    return (np.asarray(res.q_out, dtype=np.float64), res.tdot * td, e * degree if degree is not None else 0,
            res.data, params, res.terms, float(res.error_estimate))


def _stack_point_data(data, params, n, want_data):
    """(L, K, n) per-point dual data and (L, P) parameter vectors, zero-padded."""
    L = len(data)
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
    return pp, prm


@dataclass
class _OpenFork:
    """A parallel block whose branches are being evaluated: the state they all start from,
    and each joined branch's (step index, q, td, e, weight)."""

    q: np.ndarray
    td: np.ndarray
    e: int
    ends: list = None

    def __post_init__(self):
        self.ends = []


def _join(step, forks, l, q, td, e, data, params, nxt):
    """The end of one branch: the fork's state for the next branch, or after the last one the
    weighted sum of the branches, in the units 4^e of the largest (or actual units when a
    non-homogeneous activation follows). Fills each join's per-point data: the sum's √Q
    before and after that branch, and its parameters (level, branch, last, scale)."""
    fork = forks[-1]
    fork.ends.append((l, q, td, e, step.weight))
    if not step.last:
        return fork.q, fork.td, fork.e
    forks.pop()
    e_acc = 0 if _units_wanted(nxt) == 0.0 else max(end[3] for end in fork.ends)
    q_acc = np.zeros_like(q)
    td_acc = np.zeros_like(td)
    for branch, (lj, qb, tdb, eb, weight) in enumerate(fork.ends):
        f2 = _ldexp(weight, 2 * (eb - e_acc))
        if math.isinf(f2):
            raise KernelOverflowError(
                "A branch of a parallel block has variances beyond float64 (largest ~1.8e308) in the units of the "
                "activation after the FanIn. Rescale the inputs (divide X by a large factor) or the weights."
            )
        before = np.sqrt(q_acc)
        with np.errstate(over="ignore", under="ignore"):
            q_acc = q_acc + f2 * qb
            td_acc = td_acc + f2 * tdb
        data[lj] = np.stack([before, np.sqrt(q_acc)])
        params[lj] = np.array([step.level, branch, float(branch == step.num - 1), f2])
    return q_acc, td_acc, e_acc


def _layer_norm(step, q, td, e):
    """LayerNorm on the variances (units 4^e): q/(q + ε), the NTK diagonal alike, in actual
    units; per point the factor 1/√(q + ε) that rescales Θ of every pair."""
    eps = _ldexp(step.eps, -2 * e)
    denom = q + eps
    if np.any(denom == 0.0):
        raise InputError(
            f"{step.layer!r} normalises an input whose variance is exactly 0 with eps = 0: x/|x| has no limit at "
            "x = 0. Give LayerNorm a positive eps (neural-tangents' default is 1e-12), or remove the zero inputs."
        )
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        inv = 1.0 / denom
        scale = np.sqrt(inv)
        q_out = np.where(np.isinf(denom), 0.0, q * inv)
    return q_out, td * inv, 0, scale[None, :]


def _initial_units(q0, q0_exp):
    """(q, √q, e): the input variances q0·4^q0_exp in units of 4^e, e the largest exponent."""
    if q0_exp is None or not np.any(q0_exp):
        return q0.copy(), np.sqrt(q0), 0
    e = int(np.max(q0_exp))
    shift = np.asarray(q0_exp, dtype=np.int64) - e
    with np.errstate(under="ignore"):
        return np.ldexp(q0, 2 * shift), np.ldexp(np.sqrt(q0), shift), e


def _units_wanted(nxt):
    """The bound on log2 of the scaled variances an affine step hands to the step ``nxt``
    (None at the end); 0.0 means actual units (a non-homogeneous activation follows)."""
    if isinstance(nxt, Dual):
        degree = nxt.homogeneous_degree
        return 0.0 if degree is None else _SAFE_LOG2 / max(degree, 1)
    return _SAFE_LOG2


def _affine_units(step, q, e, bound, nxt, n_features=0):
    """(w², b², g_w, g_b, e') of an affine step on variances in units of 4^e, output in units
    of 4^{e'}; g_w, g_b are the standard-parameterisation NTK terms in those units (both 0 in
    NTK parameterisation, where Θ ← w²Θ + Σ_new).

    e' = e while the largest output variance stays within 2^±bound (always in the usual
    range: then w², b² are the layer's own), else the nearest power of 4 to it; e' = 0 for
    ``bound == 0``. The changes of units are exact (powers of two).
    """
    w2, b2 = step.w2, step.b2
    m = float(q.max()) if q.size else 0.0
    if bound == 0.0:
        e_new = 0
    else:
        top = w2 * m + _ldexp(b2, -2 * e)  # w2 * m is finite: w2 is a finite float, m <= 2^bound
        if top == 0.0 or (math.isfinite(top) and -bound <= math.log2(top) <= bound):
            e_new = e
        else:
            log_top = np.logaddexp2(_log2(w2) + _log2(m), _log2(b2) - 2 * e)
            e_new = e + (int(math.floor(log_top / 2)) if math.isfinite(log_top) else 0)
            if e_new < e and w2 > 0.0:
                # Raising subnormal variances into range would need w²·4^(e−e') beyond float64:
                # raise them as far as w² allows; what stays subnormal is reported by check_range.
                e_new = max(e_new, e - (1022 - math.frexp(w2)[1]) // 2)
    w2_new = _ldexp(w2, 2 * (e - e_new))
    if math.isinf(w2_new) and m > 0.0:
        raise KernelOverflowError(
            f"The variance entering {getattr(nxt, 'layer', nxt)!r} exceeds float64 (largest ~1.8e308): "
            f"{_magnitude(_log2(w2) + _log2(m) + 2 * e)}; this activation needs the actual variances. Rescale "
            "the inputs (divide X by a large factor) or the weights (smaller w_std) before it."
        )
    gw, gb = 0.0, 0.0
    if step.standard:
        n_in, bias = step.ntk_terms(n_features)
        if n_in <= 0:
            raise InputError(f"{step.layer!r} uses standard parameterisation on the data, but the evaluation was not "
                             "given the number of input features; call the compiled kernel on the data.")
        gw, gb = _ldexp(n_in, 2 * (e - e_new)), _ldexp(bias, -2 * e_new)
    return min(w2_new, np.finfo(np.float64).max), _ldexp(b2, -2 * e_new), gw, gb, e_new


def _ldexp(x, k):
    """x·2^k for a float x >= 0 and any integer k (inf or 0 beyond float64's range)."""
    if x == 0.0:
        return 0.0
    mant, ex = math.frexp(x)
    k += ex
    if k > 1024:
        return math.inf
    return math.ldexp(mant, max(k, -1100))


def _log2(x):
    return math.log2(x) if x > 0 else -math.inf


def _magnitude(log2_value):
    """'about 1e+NNN' for the value 2^log2_value."""
    if not math.isfinite(log2_value):
        return "beyond 1e+308"
    return f"about 1e{log2_value * math.log10(2):+.0f}"


def check_range(pts: PointData, want_nngp: bool, want_ntk: bool, stacklevel: int = 3) -> None:
    """Raise :class:`KernelOverflowError` when a requested kernel exceeds float64, warn with
    :class:`KernelUnderflowWarning` when it falls below float64's normal range.

    Both kernels are positive semi-definite, so by Cauchy–Schwarz every entry is bounded by
    the largest diagonal value: the diagonals decide. In a cross call K(X1, X2) this refuses
    a point x whose own K(x, x) overflows even where its cross entries would fit: the pair
    pass needs every point's variance at every layer, in one scale per layer.
    """
    e = int(pts.exponents[-1])
    checks = [(name, pts.scaled_diag[i], actual)
              for i, (name, actual, want) in enumerate((("NNGP", pts.nngp_diag, want_nngp), ("NTK", pts.ntk_diag, want_ntk)))
              if want and actual.size]
    for name, scaled, actual in checks:
        if not np.isfinite(actual).all():
            top = float(np.max(scaled)) if np.isfinite(scaled).all() else math.inf
            raise KernelOverflowError(
                f"The {name} kernel values exceed float64 (largest ~1.8e308): its diagonal reaches "
                f"{_magnitude(_log2(top) + 2 * e)}. Rescale the inputs (divide X by a large factor) or the weights "
                "(smaller w_std)."
            )
    for name, scaled, actual in checks:
        small = (actual < _TINY) & (scaled > 0.0)
        if small.any():
            warnings.warn(
                f"{int(small.sum())} {name} diagonal value(s) fall below float64's normal range (2.2e-308), "
                f"down to {_magnitude(_log2(float(scaled[small].min())) + 2 * e)}: they and the kernel values of their "
                "pairs are returned as subnormal numbers (reduced precision) or exact zeros. Rescale the "
                "inputs or the weights (larger w_std) to keep all digits.",
                KernelUnderflowWarning,
                stacklevel=stacklevel,
            )


def _zero_tiny_pairs(outputs, diags, sqrt_q, n1, symmetric, stacklevel=5):
    """Warn (:class:`KernelUnderflowWarning`) when some point's variance is subnormal in a
    layer's units, and set to 0 the non-finite entries whose magnitude is negligible.

    The engine carries one scale per layer, so this happens when the rows of one call have
    variances more than ~2^1000 apart, or a variance below ~1e-300 enters an activation that
    needs actual variances (Erf, Tanh, ...). A subnormal variance keeps 52 − k bits, k the
    number of binary orders it lies below 2^-1022: the entries of such a point keep that
    relative precision. Where the pair pass meets reciprocals whose product overflows, the
    entry is bounded by √(K(x, x) K(x', x')) (the kernels are positive semi-definite); when
    that bound is below 2^-1000 of the largest diagonal, or below float64's normal range, the
    entry is returned as 0.
    """
    tiny = ((sqrt_q > 0.0) & (sqrt_q < _MIN_PAIR_SQRT_Q)).any(axis=0)
    if not tiny.any():
        # Non-finite entries need a product of two reciprocals of √q above 2^1022, hence a
        # tiny √q: without one, the (n1, n2) outputs are not scanned (a hot path).
        return
    zeroed = 0
    for out, diag in zip(outputs, diags):
        if out is None or np.isfinite(out).all():
            continue
        d1, d2 = np.abs(diag[:n1]), np.abs(diag if symmetric else diag[n1:])
        rows, cols = np.nonzero(~np.isfinite(out))
        bound = np.sqrt(d1[rows]) * np.sqrt(d2[cols])
        if np.any(bound > max(2.0**-1000 * np.max(np.abs(diag)), _TINY)):  # pragma: no cover - not seen
            raise FloatingPointError(
                "The pair pass produced non-finite kernel entries that are not negligible; rescale the inputs "
                "so that their norms lie within a few hundred orders of magnitude of each other."
            )
        out[rows, cols] = 0.0
        zeroed += rows.size
    warnings.warn(
        f"{int(tiny.sum())} input(s) have a variance more than ~2^1000 below the largest in this call (at some "
        "layer): their kernel entries keep fewer digits (subnormal intermediates)"
        + (f", and {zeroed} entries below 2^-1000 of the largest diagonal (or below 2.2e-308) are returned as 0"
           if zeroed else "")
        + ". Rescale such inputs, or evaluate rows of very different scales in separate calls, to keep all digits.",
        KernelUnderflowWarning,
        stacklevel=stacklevel,
    )


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


def run_tile_chunks(run, tiles: np.ndarray, n_threads: int, progress=None, per_thread: int = 8) -> None:
    """Call ``run(chunk)`` (which returns the chunk's tile count) over chunks of ``tiles`` on
    ``n_threads`` threads, reporting ``progress(done, total)`` after each chunk. Several chunks
    per thread balance the load (edge tiles are smaller) and pace the progress bar."""
    n_chunks = min(len(tiles), n_threads * per_thread if (n_threads > 1 or progress is not None) else 1)
    chunks = [np.ascontiguousarray(c) for c in np.array_split(tiles, n_chunks)]
    if n_threads == 1:
        results = map(run, chunks)
        for done in results:
            if progress is not None:
                progress(done, len(tiles))
        return
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for done in pool.map(run, chunks):
            if progress is not None:
                progress(done, len(tiles))


def scale_rows(X: np.ndarray):
    """(X̃, k) with X̃ᵢ = Xᵢ·2^{−kᵢ} exactly, so every product of entries of X̃ stays in float64's
    normal range; kᵢ = 0 (and X̃ is X itself) for rows whose largest |entry| is within 2^±250.

    Σ⁰ and the correlations then come from X̃ (scale-free), and ``4**k`` goes with the
    variances (:func:`point_pass`'s ``q0_exp``).
    """
    if X.size == 0:
        return X, np.zeros(X.shape[0], dtype=np.int64)
    _, ex = np.frexp(np.max(np.abs(X), axis=1))  # |x|max = m·2^ex, m in [0.5, 1); 0 for a zero row
    k = np.where(np.abs(ex) > _ROW_SAFE, ex, 0).astype(np.int64)
    if not k.any():
        return X, k
    with np.errstate(under="ignore"):
        return np.ldexp(X, -k[:, None]), k


def input_variances(X: np.ndarray):
    """(X̃, q̃⁰, k): rows scaled by :func:`scale_rows` and their variances |x̃|²/d; q⁰ = q̃⁰·4^k."""
    Xs, k = scale_rows(X)
    return Xs, np.einsum("ij,ij->i", Xs, Xs) / X.shape[1], k


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
    X1, q1, k1 = input_variances(X1)
    Xb, qb, kb = (X1, q1, k1) if symmetric else input_variances(X2)
    n1, n2, d = X1.shape[0], Xb.shape[0], X1.shape[1]
    q0 = q1 if symmetric else np.concatenate([q1, qb])
    k0 = k1 if symmetric else np.concatenate([k1, kb])
    pts = point_pass(program, q0, q0_exp=k0, n_features=d)
    check_range(pts, want_nngp, want_ntk, stacklevel=4)
    out_s = np.empty((n1, n2)) if want_nngp else None
    out_t = np.empty((n1, n2)) if want_ntk else None
    if n1 == 0 or n2 == 0:
        return out_s, out_t, pts
    src = out_s if want_nngp else out_t
    if symmetric:
        dsyrk(1.0 / d, X1, c=src.T, overwrite_c=1, lower=0)  # lower triangle of src (C order)
    else:
        np.matmul(X1 * (1.0 / d), Xb.T, out=src)
    # Per-row √q of the scaled rows normalise Σ⁰ (the same as sqrt_q[0] in the usual range).
    e_out = int(pts.exponents[-1])
    sq_in = pts.sqrt_q[0] if not k0.any() else np.sqrt(q0)
    # The output in actual units: √q per point (normal even where q is not) and 2^e for Θ.
    with np.errstate(over="ignore", under="ignore"):
        sq_out = pts.sqrt_q[-1] if e_out == 0 else np.ldexp(pts.sqrt_q[-1], e_out)
    t_scale = math.ldexp(1.0, max(min(e_out, 1023), -1100))
    SQ1, SQ2 = pts.sqrt_q[:, :n1], pts.sqrt_q[:, n1:] if not symmetric else pts.sqrt_q
    PP1 = pts.point_data[:, :, :n1]
    PP2 = pts.point_data[:, :, n1:] if not symmetric else pts.point_data
    inv1 = _inverse_norms(X1)
    inv2 = inv1 if symmetric else _inverse_norms(Xb)
    dummy = np.empty((1, 1))
    tiles = _tiles(n1, n2, tile, symmetric)
    engine = program.engine
    args_before = (src, out_s if want_nngp else dummy, out_t if want_ntk else dummy, X1, Xb, inv1, inv2,
                   np.ascontiguousarray(sq_in[:n1]), np.ascontiguousarray(sq_in[n1:] if not symmetric else sq_in),
                   np.ascontiguousarray(SQ1), np.ascontiguousarray(SQ2),
                   np.ascontiguousarray(sq_out[:n1]), np.ascontiguousarray(sq_out[n1:] if not symmetric else sq_out),
                   t_scale, program.ops, pts.wb,
                   np.ascontiguousarray(PP1), np.ascontiguousarray(PP2), pts.params, program.n_levels)

    def run(chunk):
        engine(*args_before, chunk, tile, want_nngp, want_ntk, symmetric)
        return len(chunk)

    # Threads only pay off when each has real work: below ~2e5 entry-layers one thread wins.
    work = (n1 * n2 / (2 if symmetric else 1)) * max(len(program.steps), 1)
    n_threads = max(1, min(numba.get_num_threads(), len(tiles) // 2)) if work > _MIN_PARALLEL_WORK else 1
    run_tile_chunks(run, tiles, n_threads, progress)
    _zero_tiny_pairs((out_s, out_t), (pts.nngp_diag, pts.ntk_diag), pts.sqrt_q, n1, symmetric)
    if symmetric:
        idx = np.arange(n1)
        if want_nngp:
            out_s[idx, idx] = pts.nngp_diag
        if want_ntk:
            out_t[idx, idx] = pts.ntk_diag
    return out_s, out_t, pts
