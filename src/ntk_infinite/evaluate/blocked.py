"""Blocked Gram matrices: out of core and resumable (:func:`gram_to`), or in memory as float32 (:func:`gram_rounded`).

The (n1, n2) NNGP/NTK matrices are cut into ``block × block`` blocks. Each block is one
independent kernel call on the slices of the inputs it needs,

.. math::

    K[I, J] = \\mathrm{kernel}(X_1[I], X_2[J]), \\qquad
    I = [i b, \\min((i+1) b, n_1)),\\; J = [j b, \\min((j+1) b, n_2)),

written whole into an on-disk store (:mod:`ntk_infinite.evaluate.store`) and then marked done.
With ``X2 = None`` the matrix is symmetric: only blocks with i ≥ j are computed; a diagonal block
is ``kernel(X1[I])`` (symmetric exactly, as ``kernel(X)`` makes its output: it computes one
triangle and mirrors it, with the diagonal from the point pass), and an off-diagonal block is
``kernel(X1[I], X1[J])``, written at (i, j) and, transposed, at (j, i). Each block's values depend
only on its own slices, so a job resumed after an interruption writes bit for bit what an
uninterrupted one writes. They equal the in-memory ``kernel(X1, X2)`` to rounding (the product
X1 X2ᵀ of a block is summed like that of the whole matrix up to the BLAS blocking) for exact
routes; numerical duals (series, quadrature) pick their truncation per call, so there blocks
agree with the in-memory call within the requested ``tol``.

Memory: the inputs, plus O(block²) per block (the two float64 outputs of the kernel call and a
copy of each for the storage dtype or the mirror), for any n; no n1 × n2 array is ever held.

:func:`compute_block` and :func:`write_block` are module-level and take only picklable arguments
(a compiled kernel pickles as its description, a store as its path), so a scheduler (Dask, a
process pool) can compute and write blocks on several workers: every block writes its own chunks
and its own marker only.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import KernelOverflowError, KernelUnderflowWarning, ParameterError, check_param
from ..results import parse_get
from .store import (GramStore, check_store_path, fingerprint_array, open_gram_store, open_or_create_store,
                    store_format)

__all__ = ["gram_to", "gram_rounded", "check_output_dtype", "compute_block", "write_block", "BlockResult", "default_block",
           "DEFAULT_BLOCK_BYTES"]

#: Memory budget of one block: its entries × 8 bytes × 2 per stored kernel (the kernel call's float64
#: output and one copy, for the storage dtype or the mirror) stay below this.
DEFAULT_BLOCK_BYTES = 512 * 2**20
#: Spatial blocks are rounded down to a multiple of this (and are at least this, or n).
_SPATIAL_BLOCK_STEP = 16
_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


@dataclass(frozen=True)
class BlockResult:
    """One computed block: its index (i, j), the float64 arrays of the requested kernels
    (``values["nngp"]``, ``values["ntk"]``) and the kernel call's error estimate."""

    index: tuple
    values: dict
    error_estimate: float


def default_block(kernel, X1, get=("nngp", "ntk"), n2=None) -> int:
    """The block edge used when ``block=None``.

    Rule: the largest b with ``2 · k · 8 · b² ≤ DEFAULT_BLOCK_BYTES`` (k kernels stored: each block
    holds its float64 output and one copy), rounded down to a power of two: 4096 with the default
    512 MiB budget, for one kernel or both. Spatial kernels cost more per entry (a state of P position entries per
    pair in the "diagonal" layout, P² in the "full" one, P the input positions): their block is
    that edge divided by √(entries per pair), so that a block does about as much work as a dense
    one (and progress, resumption and workers stay fine-grained), rounded down to a multiple of 16,
    at least 16. Never more than max(n1, n2) (one block for small problems; ``n2`` defaults to n1).
    """
    want_nngp, want_ntk = parse_get(get)
    k = int(want_nngp) + int(want_ntk)
    edge = 2 ** int(math.floor(math.log2(math.sqrt(DEFAULT_BLOCK_BYTES / (2 * k * 8)))))
    X1 = np.asarray(X1)
    if kernel.spatial:
        positions = int(np.prod(X1.shape[1:-1])) if X1.ndim > 2 else 1
        per_pair = positions * positions if kernel.layout == "full" else positions
        edge = max(_SPATIAL_BLOCK_STEP, int(edge / math.sqrt(per_pair)) // _SPATIAL_BLOCK_STEP * _SPATIAL_BLOCK_STEP)
    return max(1, min(edge, max(X1.shape[0], X1.shape[0] if n2 is None else n2)))


def _block_rows(index_part: int, block: int, n: int) -> slice:
    return slice(index_part * block, min((index_part + 1) * block, n))


def compute_block(kernel, X1, X2, block_index, *, block: int, get=("nngp", "ntk"), progress=None) -> BlockResult:
    """Compute block ``block_index = (i, j)`` of the Gram matrices of X1 and X2 (X1 itself when None).

    Parameters
    ----------
    kernel : CompiledKernel
    X1, X2 : array_like
        The full inputs (only the block's rows are read); ``X2=None`` is the symmetric case, where
        only blocks with i ≥ j exist.
    block_index : (int, int)
    block : int
        Block edge (as in the store).
    get : {"nngp", "ntk"} or tuple of them
    progress : callable(done, total), optional
        Passed to the kernel call (its tiles).

    Returns
    -------
    BlockResult
        float64 blocks of shape (len(rows), len(cols)); a diagonal block of the symmetric case is
        exactly symmetric.
    """
    i, j = (int(v) for v in block_index)
    symmetric = X2 is None
    if symmetric and j > i:
        raise ParameterError(
            f"Block {(i, j)} lies above the diagonal; with X2=None only blocks (i, j) with i >= j are computed (the "
            f"others are their transposes). Compute block {(j, i)} and transpose it."
        )
    rows = _block_rows(i, block, len(X1))
    cols = _block_rows(j, block, len(X1) if symmetric else len(X2))
    A = np.asarray(X1[rows])
    if symmetric and i == j:
        k = kernel(A, get=get, progress=progress)
    else:
        B = np.asarray(X1[cols] if symmetric else X2[cols])
        k = kernel(A, B, get=get, progress=progress)
    values = {name: getattr(k, name) for name in ("nngp", "ntk") if getattr(k, name) is not None}
    return BlockResult(index=(i, j), values=values, error_estimate=float(k.error_estimate))


def write_block(store, result: BlockResult) -> None:
    """Write a computed block into ``store`` (a :class:`~ntk_infinite.evaluate.store.GramStore` or
    its path), its mirror in the symmetric case, then its done marker."""
    if not isinstance(store, GramStore):
        store = open_gram_store(store)
    store.write_block(result.index, result.values, result.error_estimate)


#: In-memory float32 Gram matrices are computed in blocks of about n / this rows and columns, so one
#: block's float64 values take an eighth of the float32 output (fewer, larger blocks: less per-call work).
_ROUNDED_BLOCKS_PER_SIDE = 4


def gram_rounded(kernel, X1, X2, *, get, dtype, progress=None):
    """``kernel(X1, X2, get=get)`` stored as ``dtype`` (float32) without an n1 × n2 float64 array.

    The matrices are computed block by block in float64 (:func:`compute_block`, so every value
    is what the float64 call gives up to the BLAS blocking of X1 X2ᵀ) and rounded once into the
    float32 output. Blocks have edge ≥ 256 and about a quarter of the rows, so one block's
    float64 values take about an eighth of the output. Peak memory: the float32 outputs, plus
    that, plus O(threads × tile).

    Returns (nngp, ntk, error_estimate). Raises :class:`~ntk_infinite.errors.KernelOverflowError`
    when a value exceeds float32's range (~3.4e38) and warns
    (:class:`~ntk_infinite.errors.KernelUnderflowWarning`) when nonzero values fall below its
    normal range (~1.2e-38).
    """
    want_nngp, want_ntk = parse_get(get)
    symmetric = X2 is None
    n1 = len(X1)
    n2 = n1 if symmetric else len(X2)
    out = {name: np.empty((n1, n2), dtype=dtype)
           for name, wanted in (("nngp", want_nngp), ("ntk", want_ntk)) if wanted}
    block = max(256, -(-max(n1, n2) // _ROUNDED_BLOCKS_PER_SIDE))
    block = min(block, default_block(kernel, X1, get=get, n2=n2))
    nb1, nb2 = -(-n1 // block), -(-n2 // block)
    index = [(i, j) for i in range(nb1) for j in range(nb2) if not symmetric or j <= i]
    total = sum(_block_size(ij, block, n1, n2) for ij in index)
    done, err, tiny = 0, 0.0, {name: 0 for name in out}
    for ij in index:
        res = compute_block(kernel, X1, X2, ij, block=block, get=get)
        rows, cols = _block_rows(ij[0], block, n1), _block_rows(ij[1], block, n2)
        for name, values in res.values.items():
            tiny[name] += _check_range32(name, values, np.finfo(dtype))
            out[name][rows, cols] = values
            if symmetric and ij[0] != ij[1]:
                out[name][cols, rows] = out[name][rows, cols].T
        err = max(err, res.error_estimate)
        done += _block_size(ij, block, n1, n2)
        if progress is not None:
            progress(done, total)
    for name, count in tiny.items():
        if count:
            warnings.warn(
                f"{count} {name.upper()} values fall below float32's normal range ({float(np.finfo(dtype).tiny):.3g}) "
                "and lost relative precision; use dtype=np.float64 to keep them.", KernelUnderflowWarning,
                stacklevel=3)
    return out.get("nngp"), out.get("ntk"), err


def _check_range32(name, values, info) -> int:
    """Raise when a float64 block does not fit the storage type; return its count of nonzero
    values below the storage type's normal range (checked per block: no n1 × n2 temporaries)."""
    magnitude = np.abs(values)
    if magnitude.max(initial=0.0) > info.max:
        raise KernelOverflowError(
            f"The {name.upper()} has values up to {float(magnitude.max()):.3g}, beyond float32's range "
            f"(±{float(info.max):.3g}); they are finite in float64. Call the kernel with dtype=np.float64 (the "
            "default), or rescale the inputs or weights."
        )
    return int(np.count_nonzero((magnitude < info.tiny) & (magnitude > 0)))


def _block_size(index, block, n1, n2) -> int:
    r = _block_rows(index[0], block, n1)
    c = _block_rows(index[1], block, n2)
    return (r.stop - r.start) * (c.stop - c.start)


def check_output_dtype(dtype) -> np.dtype:
    """``dtype`` as a NumPy dtype: float64 or float32, else a :class:`~ntk_infinite.errors.ParameterError`."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in _DTYPES:  # (np.dtype(x) == None holds for float64)
        raise ParameterError(
            f"dtype must be np.float64 (default) or np.float32 (half the memory or disk; values are computed in float64 and "
            f"rounded once when stored); got {dtype!r}."
        )
    return dt


def progress_callback(progress, label: str = "gram_to"):
    if progress is None or progress is False:
        return None
    if progress is True:
        from ..cli import ProgressBar

        return ProgressBar(label, unit="entries")
    if not callable(progress):
        raise TypeError(
            f"progress must be True (a bar with rate and ETA on stderr), a callable(done_entries, total_entries) or "
            f"None; got {type(progress).__name__}."
        )
    return progress


def _fingerprint(kernel, X1, X2, want, dtype, block) -> dict:
    from .. import __version__

    arch = kernel.architecture
    text = arch.to_text() if all(getattr(layer, "textual", True) for layer in arch) else repr(arch)
    n1 = X1.shape[0]
    n2 = n1 if X2 is None else X2.shape[0]
    return {
        "architecture": text,
        "tol": float(kernel.tol),
        "X1": fingerprint_array(X1),
        "X2": fingerprint_array(X2),
        "get": [name for name, w in zip(("nngp", "ntk"), want) if w],
        "dtype": dtype.name,
        "block": int(block),
        "shape": [n1, n2],
        "grid": [-(-n1 // block), -(-n2 // block)],
        "library_version": __version__,
        "layout_version": 1,
    }


def gram_to(kernel, store, X1, X2=None, *, get=("nngp", "ntk"), block=None, dtype=np.float64, resume=True,
            overwrite=False, format=None, progress=None) -> GramStore:  # noqa: A002 - public keyword
    """Write the NNGP/NTK Gram matrices of X1 and X2 block by block into an on-disk store.

    Parameters
    ----------
    kernel : CompiledKernel
    store : str or os.PathLike
        The store's folder: a zarr v3 group when it ends in ``.zarr`` (needs the optional zarr), else
        a folder of .npy memmaps (``format`` overrides the choice). Its parent folder must exist.
    X1, X2 : array_like
        As for ``kernel(X1, X2)``; ``X2=None`` computes the blocks on and below the diagonal only and
        writes each off-diagonal one's transpose above it.
    get : {"nngp", "ntk"} or tuple of them
    block : int, optional
        Block (and chunk) edge, in inputs. Default :func:`default_block` (4096 for a dense network's
        NNGP and NTK; smaller for convolutional ones), or the stored one when resuming.
    dtype : np.float64 or np.float32
        Storage dtype. Blocks are always computed in float64; float32 rounds them once when written.
    resume : bool
        True (default): continue an existing store of the same computation, computing only the
        blocks without a done marker. False: a new store is required; an existing one raises
        :class:`~ntk_infinite.evaluate.store.StoreExistsError` unless ``overwrite=True``.
    overwrite : bool
        Delete an existing Gram store at ``store`` and start again (a folder that is not a Gram
        store is never deleted).
    format : {"zarr", "npy"}, optional
    progress : True or callable(done_entries, total_entries), optional
        True shows a bar with rate (entries/s) and ETA on stderr; a callable is called after every
        chunk of tiles and after every block, counting the entries of the full matrix written.

    Returns
    -------
    GramStore
        ``.nngp``/``.ntk`` (array-likes on disk), ``.complete``, ``.done``, ``.load()``.

    Raises
    ------
    StoreMismatchError
        The store exists for another architecture, tol, inputs, get, dtype, block or version.
    MissingExtraError
        A ``.zarr`` store without zarr installed.

    Examples
    --------
    >>> import numpy as np, os, tempfile, ntk_infinite as nk
    >>> kernel = nk.compile("Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)")
    >>> X = np.random.default_rng(0).normal(size=(10, 3))
    >>> store = kernel.gram_to(os.path.join(tempfile.mkdtemp(), "K"), X, block=4)
    >>> store.complete, bool(np.allclose(store.load().ntk, kernel(X).ntk, rtol=1e-12, atol=0))
    (True, True)
    """
    callback = progress_callback(progress)
    gram, X1, X2, get = open_block_store(kernel, store, X1, X2, get=get, block=block, dtype=dtype, resume=resume,
                                         overwrite=overwrite, format=format)
    _fill(gram, kernel, X1, X2, get, callback)
    return gram


def open_block_store(kernel, store, X1, X2=None, *, get=("nngp", "ntk"), block=None, dtype=np.float64, resume=True,
                     overwrite=False, format=None):  # noqa: A002 - public keyword
    """Check the arguments of a blocked Gram job and open (or create) its store.

    Shared by :func:`gram_to` and :func:`ntk_infinite.evaluate.distributed.gram`, so that both
    accept the same arguments and write stores that either one can resume. Returns
    ``(store, X1, X2, get)``: the :class:`GramStore`, the checked float64 inputs and the tuple
    of kernel names to compute.
    """
    want = parse_get(get)
    get = tuple(name for name, w in zip(("nngp", "ntk"), want) if w)
    dtype = check_output_dtype(dtype)
    if block is not None:
        block = check_param("gram_to", "block", block, low=1, integer=True)
    store = check_store_path(store)
    store_format(store, format)  # a bad path or format is reported before the inputs are hashed
    X1 = kernel.check_inputs(X1, "X1")
    if X2 is not None:
        X2 = kernel.check_inputs(X2, "X2", like=X1, like_name="X1")
    if block is None:
        n2 = None if X2 is None else len(X2)
        block = _stored_block(store, resume, overwrite) or default_block(kernel, X1, get, n2)
    meta = _fingerprint(kernel, X1, X2, want, dtype, block)
    gram = open_or_create_store(store, meta, format=format, resume=resume, overwrite=overwrite)
    return gram, X1, X2, get


def _stored_block(store, resume, overwrite):
    """The block size of an existing Gram store that this call would resume, else None."""
    if not resume or overwrite:
        return None
    try:
        return open_gram_store(store).block
    except (ValueError, OSError):
        return None


def block_entries_done(gram: GramStore, missing) -> tuple[int, int]:
    """(entries already written, entries of the full matrix) of a store with ``missing`` blocks."""
    total = gram.shape[0] * gram.shape[1]
    return total - sum(block_entries(gram, index) for index in missing), total


def _fill(gram: GramStore, kernel, X1, X2, get, progress) -> None:
    """Compute and write every missing block of ``gram``, reporting entries written to ``progress``."""
    missing = gram.missing_blocks()
    gram.skipped_blocks = len(gram.required_blocks()) - len(missing)
    gram.computed_blocks = 0
    done, total = block_entries_done(gram, missing)
    state = {"done": done}
    if progress is not None:
        if hasattr(progress, "done_before"):
            progress.done_before = state["done"]  # the bar's rate counts this run's entries only
        progress(state["done"], total)
    for index in missing:
        entries = block_entries(gram, index)

        def within(d, t, base=state["done"], entries=entries):
            # Entries count as written only once the block is: until then at most entries - 1.
            progress(base + min(int(entries * d / max(t, 1)), entries - 1), total)

        result = compute_block(kernel, X1, X2, index, block=gram.block, get=get,
                               progress=within if progress is not None else None)
        write_block(gram, result)
        gram.computed_blocks += 1
        state["done"] += entries
        if progress is not None:
            progress(state["done"], total)


def block_entries(gram: GramStore, index) -> int:
    """Entries of the full matrix a block fills (twice its area off the diagonal when symmetric)."""
    rows, cols = gram.block_slices(index)
    area = (rows.stop - rows.start) * (cols.stop - cols.start)
    return 2 * area if gram.symmetric and index[0] != index[1] else area

