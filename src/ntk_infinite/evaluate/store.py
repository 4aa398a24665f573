"""On-disk, chunked stores of Gram matrices, written block by block and resumable.

Two formats hold the same thing (see :func:`open_or_create_store`):

* ``"zarr"``: a zarr v3 group (a folder whose name ends in ``.zarr``) with arrays ``nngp`` and
  ``ntk`` chunked ``block × block``, so that writing one block touches only its own chunk(s), plus
  two small arrays over the block grid, ``error_estimate`` and ``done``, chunked one entry per
  block. The metadata (the fingerprint, below) is in the group's attributes. zarr is an optional
  extra (``pip install "ntk_infinite[distributed]"``), imported only when used.
* ``"npy"``: for one machine without zarr, a folder with ``nngp.npy`` and ``ntk.npy`` (opened with
  :func:`numpy.lib.format.open_memmap`), the metadata in ``gram.json`` and one marker file per
  finished block in ``done/``.

**What "done" means.** A block is written whole (both kernels, and in the symmetric case its
mirror image above the diagonal), the data is flushed, and only then its marker is written, in one
atomic step: zarr's local store writes every chunk to a temporary file and renames it into place,
the ``.npy`` folder's marker is written to a temporary file, synced and renamed with
:func:`os.replace`. A marker therefore never claims a block whose data is not on disk; a job killed
at any moment (SIGKILL included) leaves at most the blocks in flight unmarked, and those are
computed again on resumption. (The ``.npy`` data is synced with ``msync``; zarr's chunks are not
fsynced, so they survive a killed process, not a power cut.)

**Fingerprint.** The metadata records the architecture, ``tol``, a SHA-256 of each input array
(its float64 bytes and shape), ``get``, the storage dtype, the block size, the library version and
the matrix shape. Reopening a store for different values raises :class:`StoreMismatchError`
naming what differs, so that blocks of two different computations are never mixed.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import shutil
import uuid

import numpy as np

from ..errors import InputError, ParameterError
from ..results import Kernels

__all__ = [
    "GramStore",
    "StoreMismatchError",
    "StoreExistsError",
    "IncompleteStoreError",
    "MissingExtraError",
    "open_gram_store",
    "open_or_create_store",
    "fingerprint_array",
    "store_format",
    "check_store_path",
    "STORE_FORMATS",
]

#: Store formats by name; ``None`` picks by suffix (``.zarr`` -> zarr, anything else -> npy folder).
STORE_FORMATS = ("zarr", "npy")
#: Version of the layout written here (bumped when the layout changes incompatibly).
LAYOUT_VERSION = 1
_ATTR_KEY = "ntk_infinite_gram"
_META_FILE = "gram.json"
_DONE_DIR = "done"
_KERNEL_NAMES = ("nngp", "ntk")
#: Fingerprint fields compared on reopening, in the order they are reported, with their meaning.
_COMPARED = (
    ("architecture", "the architecture"),
    ("tol", "tol"),
    ("X1", "the inputs X1"),
    ("X2", "the inputs X2"),
    ("get", "get (the kernels stored)"),
    ("dtype", "the storage dtype"),
    ("block", "the block size"),
    ("library_version", "the ntk_infinite version (blocks of two versions could differ in the last bits)"),
    ("layout_version", "the store layout version"),
)


class StoreMismatchError(InputError):
    """An existing Gram store was started for another computation (architecture, inputs, get,
    dtype, block size or library version), so its blocks cannot be continued."""


class StoreExistsError(InputError):
    """A store path that exists where a new store was asked for (``resume=False``), or that is not
    a Gram store at all (it is never deleted)."""


class IncompleteStoreError(InputError):
    """A store whose blocks are not all computed yet was asked for its full arrays."""


class MissingExtraError(InputError, ImportError):
    """An optional dependency (an ``ntk_infinite[...]`` extra) is not installed. Also an
    :class:`ImportError`, so code catching either sees it."""


def import_zarr():
    """The ``zarr`` module (version 3 or later), or :class:`MissingExtraError` saying how to get it."""
    try:
        import zarr
    except ImportError as exc:
        raise MissingExtraError(
            "Writing a zarr store (a path ending in .zarr, or format='zarr') needs the optional package zarr (>= 3), "
            'which is not installed. Install it with pip install "ntk_infinite[distributed]", or write a folder of '
            ".npy memmaps instead: a path without the .zarr suffix, or format='npy'."
        ) from exc
    major = int(str(getattr(zarr, "__version__", "0")).split(".")[0] or 0)
    if major < 3:
        raise MissingExtraError(
            f"Writing a zarr store needs zarr >= 3 (zarr v3 groups); zarr {zarr.__version__} is installed. Upgrade "
            'it with pip install "ntk_infinite[distributed]" (or pip install -U zarr), or use format=\'npy\'.'
        )
    return zarr


def fingerprint_array(X) -> dict | None:
    """``{"shape": [...], "sha256": hex}`` of the float64 C-order bytes of ``X`` (None stays None)."""
    if X is None:
        return None
    X = np.ascontiguousarray(X, dtype=np.float64)
    digest = hashlib.sha256()
    digest.update(repr(X.shape).encode())
    digest.update(memoryview(X.reshape(-1)).cast("B"))
    return {"shape": list(X.shape), "sha256": digest.hexdigest()}


def store_format(path, format=None) -> str:  # noqa: A002 - the public keyword is "format"
    """The store format for ``path``: ``format`` when given, else ``"zarr"`` for a ``.zarr`` suffix
    and ``"npy"`` (a folder of .npy memmaps) otherwise."""
    if format is None:
        return "zarr" if os.fspath(path).rstrip("/\\").endswith(".zarr") else "npy"
    if format not in STORE_FORMATS:
        raise ParameterError(
            f"format must be one of {STORE_FORMATS} (or None to choose by suffix: .zarr -> zarr, otherwise a folder of "
            f".npy files); got {format!r}."
        )
    return format


def check_store_path(path) -> str:
    """``path`` as a str, after checking its type and that its parent folder exists (:class:`InputError`)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"The store must be a path (str or os.PathLike) to a folder to create or resume, e.g. 'K.zarr'; got "
            f"{type(path).__name__}."
        )
    path = os.fspath(path).rstrip("/\\") or os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(
            f"The folder {parent!r} that should hold the store {path!r} does not exist; create it first "
            f"(mkdir -p {parent}) or choose another path."
        )
    return path


def _detect_format(path: str) -> str | None:
    """The format of the Gram store at ``path``, or None when no store of ours is there."""
    if os.path.isfile(os.path.join(path, _META_FILE)):
        return "npy"
    if os.path.isfile(os.path.join(path, "zarr.json")):
        try:
            with open(os.path.join(path, "zarr.json")) as fh:
                return "zarr" if _ATTR_KEY in json.load(fh).get("attributes", {}) else None
        except (OSError, ValueError):
            return None
    return None


def open_gram_store(path) -> "GramStore":
    """Open an existing Gram store (either format) to read it, or to continue writing blocks into it.

    Raises :class:`InputError` when ``path`` holds no Gram store.
    """
    path = os.fspath(path).rstrip("/\\") or os.fspath(path)
    fmt = _detect_format(path)
    if fmt is None:
        raise InputError(
            f"{path!r} is not an ntk_infinite Gram store (no {_META_FILE} or zarr.json with its metadata there); "
            "write one with kernel.gram_to(path, X) or `ntk-infinite gram ARCH X.npy -o K.zarr`."
        )
    return ZarrGramStore(path) if fmt == "zarr" else NpyGramStore(path)


def open_or_create_store(path, meta: dict, *, format=None, resume=True, overwrite=False) -> "GramStore":  # noqa: A002
    """A store at ``path`` for the computation described by ``meta`` (the fingerprint).

    * No store there: a new one is created (in ``format``, or by suffix).
    * A store with the same fingerprint and ``resume=True``: it is reopened; its finished blocks stay.
    * ``overwrite=True``: an existing Gram store is deleted and a new one created (a path that
      exists but is not a Gram store is never deleted).
    * ``resume=False`` without ``overwrite``: an existing store raises :class:`StoreExistsError`
      (``resume=False`` asks for a fresh store; pass ``overwrite=True`` to discard the old one).
    * A store of another computation raises :class:`StoreMismatchError`.
    """
    path = check_store_path(path)
    fmt = store_format(path, format)
    found = _detect_format(path) if os.path.exists(path) else None
    if os.path.exists(path) and found is None and not _is_empty_dir(path):
        raise StoreExistsError(
            f"{path!r} exists and is not an ntk_infinite Gram store; it is left alone (never deleted). Choose another "
            "path for the store."
        )
    if found is not None and (overwrite or not resume):
        if not overwrite:
            raise StoreExistsError(
                f"A Gram store already exists at {path!r} and resume=False (--no-resume) asks for a new one. Pass "
                "resume=True to continue it (finished blocks are kept), overwrite=True (--overwrite) to delete it and "
                "start again, or another path."
            )
        shutil.rmtree(path)
        found = None
    if found is None:
        return _create_store(path, fmt, meta)
    if format is not None and found != fmt:
        raise StoreMismatchError(
            f"The store at {path!r} is a {found} store, but format={fmt!r} was asked for. Pass format={found!r} (or "
            "None) to continue it, another path, or overwrite=True to delete it and start again."
        )
    store = open_gram_store(path)
    store.check_matches(meta)
    return store


def _create_store(path: str, fmt: str, meta: dict) -> "GramStore":
    """A new store, built in a temporary sibling folder and renamed into place, so that a creation
    killed halfway never leaves a half-made store at ``path`` (only a ``.partial`` folder beside it)."""
    cls = ZarrGramStore if fmt == "zarr" else NpyGramStore
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.partial")
    try:
        cls.build(tmp, meta)
        if os.path.isdir(path):
            os.rmdir(path)  # an empty folder the user made for the store
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return cls(path)


def _is_empty_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.listdir(path)


def _describe(value) -> str:
    if isinstance(value, dict) and "sha256" in value:
        return f"shape {tuple(value['shape'])}, sha256 {value['sha256'][:12]}…"
    return "none (symmetric, X2=None)" if value is None else repr(value)


class GramStore(abc.ABC):
    """NNGP/NTK Gram matrices on disk, filled block by block (base of the two formats).

    Attributes
    ----------
    path : str
    format : {"zarr", "npy"}
    metadata : dict
        The fingerprint (architecture, tol, input hashes, get, dtype, block, versions, shape).
    shape : (int, int)
        (n1, n2).
    block : int
        Block edge; block (i, j) holds rows ``i·block …`` and columns ``j·block …``.
    grid : (int, int)
        Number of blocks per axis.
    symmetric : bool
        X2 was None: only blocks on or below the diagonal are computed, each written with its mirror.
    computed_blocks, skipped_blocks : int
        Set by :func:`~ntk_infinite.evaluate.blocked.gram_to`: the blocks this call computed and the
        ones it found finished.
    """

    format = ""

    def __init__(self, path: str, metadata: dict):
        self.path = path
        self.metadata = metadata
        self.shape = tuple(metadata["shape"])
        self.block = int(metadata["block"])
        self.grid = tuple(metadata["grid"])
        self.symmetric = metadata["X2"] is None
        self.dtype = np.dtype(metadata["dtype"])
        self.kernels = tuple(metadata["get"])
        self.computed_blocks = 0
        self.skipped_blocks = 0

    def __reduce__(self):
        # A store is its path: a worker process reopens it (open handles are not pickled).
        return (open_gram_store, (self.path,))

    def __repr__(self):
        return (f"{type(self).__name__}({self.path!r}, shape={self.shape}, block={self.block}, "
                f"dtype={self.dtype.name}, {int(self.done.sum())}/{len(self.required_blocks())} blocks done)")

    # ------------------------------------------------------------------ blocks
    def required_blocks(self) -> list[tuple[int, int]]:
        """Every block index (i, j) that has to be computed (symmetric: i >= j only), row by row."""
        nb1, nb2 = self.grid
        return [(i, j) for i in range(nb1) for j in range(nb2) if not self.symmetric or i >= j]

    def missing_blocks(self) -> list[tuple[int, int]]:
        """The required blocks without a done marker."""
        done = self.done
        return [(i, j) for i, j in self.required_blocks() if not done[i, j]]

    def block_slices(self, index) -> tuple[slice, slice]:
        """(rows, columns) of block ``index`` in the full matrix."""
        i, j = index
        b = self.block
        return slice(i * b, min((i + 1) * b, self.shape[0])), slice(j * b, min((j + 1) * b, self.shape[1]))

    @property
    def complete(self) -> bool:
        """True when every required block is done."""
        return not self.missing_blocks()

    @property
    def nngp(self):
        """The NNGP array on disk (read-only array-like; None when not stored)."""
        return self._reader("nngp") if "nngp" in self.kernels else None

    @property
    def ntk(self):
        """The NTK array on disk (read-only array-like; None when not stored)."""
        return self._reader("ntk") if "ntk" in self.kernels else None

    @property
    def error_estimate(self) -> float:
        """The largest error estimate of the finished blocks (0.0 for exact routes)."""
        errs = self._error_estimates()
        return float(errs.max()) if errs.size else 0.0

    def load(self) -> Kernels:
        """Read the finished arrays into memory (the stored dtype) as :class:`~ntk_infinite.Kernels`.

        Raises :class:`IncompleteStoreError` when blocks are missing.
        """
        missing = self.missing_blocks()
        if missing:
            raise IncompleteStoreError(
                f"The store at {self.path!r} has {len(missing)} of {len(self.required_blocks())} blocks still to "
                "compute (an interrupted job); run the same gram_to call (or `ntk-infinite gram ... -o` the same path) "
                "again to finish it, then load it."
            )
        # np.array copies: a memmap's [...] is still a view of the file.
        arrays = {name: np.array(self._reader(name)[...]) for name in self.kernels}
        return Kernels(nngp=arrays.get("nngp"), ntk=arrays.get("ntk"), error_estimate=self.error_estimate)

    def write_block(self, index, values: dict, error_estimate: float) -> None:
        """Write block ``index`` (``values`` maps each stored kernel to its (rows, cols) float64 block),
        its mirror in the symmetric case, flush, then record it as done (atomically, last)."""
        rows, cols = self.block_slices(index)
        expected = (rows.stop - rows.start, cols.stop - cols.start)
        for name in self.kernels:
            block = np.asarray(values[name])
            if block.shape != expected:
                raise InputError(
                    f"Block {tuple(index)} of {name} must have shape {expected} (the block's rows and columns); got "
                    f"{block.shape}. Compute it with compute_block(kernel, X1, X2, {tuple(index)}, block={self.block})."
                )
            stored = block.astype(self.dtype, copy=False)
            self._write(name, rows, cols, stored)
            if self.symmetric and index[0] != index[1]:
                # A contiguous transpose first: writing the strided view costs twice as long (measured).
                self._write(name, cols, rows, np.ascontiguousarray(stored.T))
        self._flush()
        self._mark_done(index, float(error_estimate))

    def check_matches(self, meta: dict) -> None:
        """Raise :class:`StoreMismatchError` naming every fingerprint field where ``meta`` differs."""
        diffs = [f"{what}: store has {_describe(self.metadata.get(key))}, this call {_describe(meta.get(key))}"
                 for key, what in _COMPARED if self.metadata.get(key) != meta.get(key)]
        if diffs:
            raise StoreMismatchError(
                f"The store at {self.path!r} was started for another computation, so its blocks cannot be continued. "
                "Differences: " + "; ".join(diffs) + ". Pass another path, or overwrite=True (--overwrite on the command "
                "line) to delete this store and start again (resume only continues a store with the same "
                "architecture, tol, inputs, get, dtype and block)."
            )

    # Format-specific parts, provided by each format's subclass.
    @abc.abstractmethod
    def _reader(self, name):
        """The array-like ``name`` on disk."""

    @abc.abstractmethod
    def _write(self, name, rows, cols, values):
        """Write one block's values at (rows, cols) of array ``name``."""

    def _flush(self):
        pass

    @abc.abstractmethod
    def _mark_done(self, index, error_estimate):
        """Record block ``index`` as written whole, with its error estimate."""

    @property
    @abc.abstractmethod
    def done(self) -> np.ndarray:
        """(grid) bool: the blocks recorded as done (symmetric stores record only i >= j; the blocks
        above the diagonal are written with, and as the transposes of, their mirrors)."""

    @abc.abstractmethod
    def _error_estimates(self) -> np.ndarray:
        """(grid) float: each done block's error estimate."""


def _chunks(shape, block):
    """Chunk edges: the block, capped by the axis length (a chunk never exceeds the array)."""
    return tuple(max(1, min(block, n)) for n in shape)


class ZarrGramStore(GramStore):
    """A Gram store as a zarr v3 group (see the module docstring)."""

    format = "zarr"

    def __init__(self, path: str, metadata: dict | None = None):
        zarr = import_zarr()
        self._group = zarr.open_group(path, mode="r+")
        super().__init__(path, metadata or dict(self._group.attrs[_ATTR_KEY]))

    @staticmethod
    def build(path: str, meta: dict) -> None:
        """Create the group, its arrays and metadata at ``path`` (a folder that does not exist yet)."""
        zarr = import_zarr()
        group = zarr.open_group(path, mode="w-", attributes={_ATTR_KEY: meta})
        chunks = _chunks(meta["shape"], meta["block"])
        for name in meta["get"]:
            # Kernel values barely compress: raw chunks keep each block write fast and its memory predictable.
            group.create_array(name, shape=tuple(meta["shape"]), chunks=chunks, dtype=meta["dtype"],
                               fill_value=0.0, compressors=None)
        grid = tuple(meta["grid"])
        one = tuple(1 for _ in grid)
        group.create_array("error_estimate", shape=grid, chunks=one, dtype="float64", fill_value=0.0, compressors=None)
        # Written last for each block: one chunk per block, so no two blocks write the same chunk.
        group.create_array("done", shape=grid, chunks=one, dtype="bool", fill_value=False, compressors=None)

    def _reader(self, name):
        return import_zarr().open_array(self.path, path=name, mode="r")

    def _write(self, name, rows, cols, values):
        self._group[name][rows, cols] = values

    def _mark_done(self, index, error_estimate):
        i, j = index
        self._group["error_estimate"][i, j] = error_estimate
        self._group["done"][i, j] = True

    @property
    def done(self) -> np.ndarray:
        """(grid) bool: the blocks recorded as done."""
        return np.asarray(self._group["done"][...], dtype=bool)

    def _error_estimates(self) -> np.ndarray:
        return np.asarray(self._group["error_estimate"][...])[self.done]


class NpyGramStore(GramStore):
    """A Gram store as a folder of .npy memmaps, ``gram.json`` and per-block markers (module docstring)."""

    format = "npy"

    def __init__(self, path: str, metadata: dict | None = None):
        if metadata is None:
            with open(os.path.join(path, _META_FILE)) as fh:
                metadata = json.load(fh)
        super().__init__(path, metadata)

    @staticmethod
    def build(path: str, meta: dict) -> None:
        """Create the arrays (zero-filled sparse files), the markers' folder and ``gram.json`` at ``path``."""
        os.makedirs(os.path.join(path, _DONE_DIR))
        for name in meta["get"]:
            mm = np.lib.format.open_memmap(os.path.join(path, f"{name}.npy"), mode="w+", dtype=meta["dtype"],
                                           shape=tuple(meta["shape"]))
            del mm
        _atomic_write_text(os.path.join(path, _META_FILE), json.dumps(meta, indent=1))

    def _file(self, name):
        return os.path.join(self.path, f"{name}.npy")

    def _reader(self, name):
        return np.lib.format.open_memmap(self._file(name), mode="r")

    def _write(self, name, rows, cols, values):
        # A fresh map per write, closed afterwards: the written pages leave this process's
        # resident set (they stay in the page cache), so memory stays O(block²) for any n.
        mm = np.lib.format.open_memmap(self._file(name), mode="r+")
        try:
            mm[rows, cols] = values
            mm.flush()
        finally:
            del mm

    def _marker(self, index):
        return os.path.join(self.path, _DONE_DIR, f"{index[0]}-{index[1]}.json")

    def _mark_done(self, index, error_estimate):
        _atomic_write_text(self._marker(index), json.dumps({"error_estimate": error_estimate}))

    def _markers(self):
        out = {}
        for entry in os.listdir(os.path.join(self.path, _DONE_DIR)):
            if entry.startswith(".") or not entry.endswith(".json"):
                continue  # temporary files of a write in flight
            i, j = (int(v) for v in entry[:-5].split("-"))
            with open(os.path.join(self.path, _DONE_DIR, entry)) as fh:
                out[i, j] = float(json.load(fh)["error_estimate"])
        return out

    @property
    def done(self) -> np.ndarray:
        """(grid) bool: the blocks recorded as done."""
        mask = np.zeros(self.grid, dtype=bool)
        for i, j in self._markers():
            mask[i, j] = True
        return mask

    def _error_estimates(self) -> np.ndarray:
        return np.array(list(self._markers().values()), dtype=np.float64)


def _atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` all at once: a synced temporary file renamed into place."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
