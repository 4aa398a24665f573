"""Gram matrices computed as tasks on a Dask cluster: :func:`gram`.

The matrices are cut into the blocks of :mod:`ntk_infinite.evaluate.blocked`; each block is one
task, ``compute_block(kernel, X1, X2, (i, j))``, run on a ``dask.distributed`` worker. What travels:

- the inputs, scattered once to every worker (``Client.scatter(..., broadcast=True)``);
- the compiled kernel, also scattered once: a :class:`~ntk_infinite.CompiledKernel` pickles as
  its description (architecture and tol), and each worker compiles it again on unpickling, taking
  the jitted engine from its disk cache (the first worker on a fresh machine compiles it);
- each block's result, or with a store only its index and error estimate: workers write their
  blocks straight into the store (a zarr group or a folder of .npy memmaps on a file system they
  all see), each block into its own chunks and its own done marker, so writers never collide.

Dask reschedules the task of a worker that dies (up to ``distributed.scheduler.allowed-failures``
times, 3 by default). A block's values depend only on its slices of the inputs, so a rerun block is
bit for bit the first one, and a store filled by any mix of workers, retries and resumed runs
equals the store :func:`~ntk_infinite.evaluate.blocked.gram_to` writes in one process. The stores
are the same: either function resumes a store the other began.

Dask and zarr are the optional extra ``ntk_infinite[distributed]``; this module imports them only
when :func:`gram` runs.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass, field

import numpy as np

from ..errors import ParameterError, check_param
from ..results import Kernels, parse_get
from .blocked import (block_entries, block_entries_done, compute_block, default_block, open_block_store,
                      progress_callback, write_block)
from .store import GramStore, MissingExtraError, check_store_path, open_gram_store

__all__ = ["gram", "DistributedGram", "import_dask"]


def import_dask():
    """``(dask, dask.array, distributed)``, or :class:`MissingExtraError` saying how to get them."""
    try:
        import dask
        import dask.array
        import distributed
    except ImportError as exc:
        raise MissingExtraError(
            "nk.distributed needs the optional packages dask[distributed] (and zarr for .zarr stores), which are not "
            f'installed ({exc}). Install them with pip install "ntk_infinite[distributed]", or compute on one machine '
            "with kernel(X) or kernel.gram_to(path, X)."
        ) from exc
    return dask, dask.array, distributed


@dataclass
class DistributedGram:
    """What :func:`gram` returns.

    Attributes
    ----------
    nngp, ntk : dask.array.Array or None
        The requested Gram matrices as dask arrays chunked by block: read from the store when one
        was given, else the blocks held in the cluster's memory (or, with ``compute=False``, the
        graph that computes them). None when not requested.
    store : GramStore or None
        The on-disk store (``.complete``, ``.load()``, ``.done``).
    computed_blocks : int
        Blocks computed by this call (0 when resuming a complete store; all of them when lazy).
    client : distributed.Client or None
        The client of a cluster this call started and that the in-memory arrays still live on;
        :meth:`close` (or leaving a ``with`` block) shuts it down. None when the call used your
        client or wrote a store (its cluster is closed when it returns).
    """

    nngp: object
    ntk: object
    store: GramStore | None
    computed_blocks: int
    client: object = field(default=None, repr=False)

    def load(self) -> Kernels:
        """The matrices as NumPy arrays in a :class:`~ntk_infinite.Kernels` (computing them if lazy)."""
        if self.store is not None:
            return self.store.load()
        import dask

        if self.client is not None:  # the blocks live on this call's cluster, whichever client is current
            nngp, ntk = self.client.gather(self.client.compute([self.nngp, self.ntk]))
        else:
            nngp, ntk = dask.compute(self.nngp, self.ntk)
        return Kernels(nngp=nngp, ntk=ntk, error_estimate=0.0)

    def close(self) -> None:
        """Shut down the cluster this call started (a no-op otherwise)."""
        if self.client is not None:
            cluster = self.client.cluster
            self.client.close()
            if cluster is not None:
                cluster.close()
            self.client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _block_values(kernel, X1, X2, index, block, get):
    """Task: the float64 blocks of ``get`` at ``index``, as a tuple in ``get``'s order."""
    result = compute_block(kernel, X1, X2, index, block=block, get=get)
    return tuple(result.values[name] for name in get)


def _block_to_store(kernel, X1, X2, index, block, get, store_path):
    """Task: compute block ``index``, write it (and its mirror) into the store, mark it done."""
    result = compute_block(kernel, X1, X2, index, block=block, get=get)
    write_block(store_path, result)
    return tuple(result.index), result.error_estimate


def _read_block(store_path, name, rows, cols):
    """Task: one stored block read from disk (opened by path, so no array is pickled)."""
    return np.asarray(getattr(open_gram_store(store_path), name)[rows, cols])


def gram(kernel, X1, X2=None, *, store=None, get=("nngp", "ntk"), block=None, dtype=np.float64, client=None,
         address=None, n_workers=None, threads_per_worker=1, resume=True, overwrite=False, compute=True,
         progress=None, format=None) -> DistributedGram:  # noqa: A002 - public keyword
    """NNGP/NTK Gram matrices of X1 and X2, computed block by block on a Dask cluster.

    Parameters
    ----------
    kernel : CompiledKernel
    X1, X2 : array_like
        As for ``kernel(X1, X2)``; ``X2=None`` computes only the blocks on and below the diagonal
        (the ones above are their transposes).
    store : str or os.PathLike, optional
        Write the blocks into this store (a zarr group for a ``.zarr`` path, else a folder of .npy
        memmaps; ``format`` overrides), as :meth:`CompiledKernel.gram_to` does, resumably: the
        workers must see the path. Without it the blocks stay in the workers' memory.
    get : {"nngp", "ntk"} or tuple of them
    block : int, optional
        Block edge (one task per block). Default: the stored one when resuming, else
        :func:`~ntk_infinite.evaluate.blocked.default_block`, lowered so that there are at least
        four tasks per worker.
    dtype : np.float64 or np.float32
        Storage dtype of a store (blocks are computed in float64). In memory: float64 only.
    client : distributed.Client, optional
        Use this client's cluster. Exclusive with ``address``.
    address : str, optional
        Connect to the scheduler at this address (e.g. ``"tcp://10.0.0.1:8786"``).
    n_workers, threads_per_worker : int
        With neither ``client`` nor ``address``: start a ``LocalCluster`` of ``n_workers`` worker
        processes (default: the usable cores) with ``threads_per_worker`` task threads each (default
        1). Each task runs its kernel call on one Numba thread (``NUMBA_NUM_THREADS=1`` in the
        workers), so n_workers × threads_per_worker should not exceed the cores.
    resume, overwrite, format
        As for :func:`~ntk_infinite.evaluate.blocked.gram_to` (a store only).
    compute : bool
        Without a store: True (default) computes the blocks now and keeps them in the cluster's
        memory (``Client.persist``); False returns the lazy graph, computed by ``.compute()``. A
        store is always filled before :func:`gram` returns.
    progress : True or callable(done_entries, total_entries), optional
        With a store: True shows a bar with rate and ETA on stderr, updated as blocks finish.

    Returns
    -------
    DistributedGram
        ``.nngp``/``.ntk`` dask arrays, ``.store``, ``.computed_blocks``, ``.load()``, ``.close()``.

    Raises
    ------
    MissingExtraError
        Dask (or zarr for a .zarr store) is not installed.
    NotPicklableError
        The architecture holds a user function that cannot be sent to worker processes.
    StoreMismatchError, StoreExistsError
        As for :func:`~ntk_infinite.evaluate.blocked.gram_to`.

    Examples
    --------
    A 20,000-point job on two local worker processes (not run as a doctest: it takes a minute)::

        import numpy as np, ntk_infinite as nk
        kernel = nk.compile("Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)")
        X = np.random.default_rng(0).normal(size=(20000, 64))
        K = nk.distributed.gram(kernel, X, store="K.zarr", n_workers=2, progress=True)
        K.ntk[:5, :5].compute()
    """
    _, da, distributed = import_dask()
    _check_cluster_arguments(client, address, n_workers, threads_per_worker)
    pickle.dumps(kernel)  # a NotPicklableError names the user function before any cluster starts
    if store is None:
        return _in_memory(da, distributed, kernel, X1, X2, get=get, block=block, dtype=dtype, client=client,
                          address=address, n_workers=n_workers, threads_per_worker=threads_per_worker,
                          compute=compute)
    if not compute:
        raise ParameterError(
            "compute=False builds a lazy in-memory graph, but store= writes the blocks to disk as the job runs. Drop "
            "compute=False (the store is filled before gram returns), or drop store to get lazy dask arrays."
        )
    return _gram_into_store(da, distributed, kernel, X1, X2, store=store, get=get, block=block, dtype=dtype,
                            client=client, address=address, n_workers=n_workers,
                            threads_per_worker=threads_per_worker, resume=resume, overwrite=overwrite,
                            progress=progress, format=format)


def _gram_into_store(da, distributed, kernel, X1, X2, *, store, get, block, dtype, client, address, n_workers,
                     threads_per_worker, resume, overwrite, progress, format):  # noqa: A002
    """The store route of :func:`gram`: open (or resume) the store, fill its missing blocks on the cluster."""
    if block is None:
        block = _stored_or_default_block(kernel, store, X1, X2, get, resume, overwrite, n_workers, client, address)
    gram_store, X1, X2, get = open_block_store(kernel, store, X1, X2, get=get, block=block, dtype=dtype,
                                               resume=resume, overwrite=overwrite, format=format)
    progress_callback(progress)  # a bad progress argument is reported before a cluster starts
    own, client = _connect(distributed, client, address, n_workers, threads_per_worker)
    callback = progress_callback(progress, "distributed.gram")  # its clock starts once the workers are up
    try:
        computed = _fill_on_cluster(client, distributed, gram_store, kernel, X1, X2, get, callback)
    finally:
        if own:
            _shutdown(client)
    arrays = _arrays_from_store(da, gram_store)
    return DistributedGram(nngp=arrays.get("nngp"), ntk=arrays.get("ntk"), store=gram_store,
                           computed_blocks=computed)


def _check_cluster_arguments(client, address, n_workers, threads_per_worker) -> None:
    if client is not None and address is not None:
        raise ParameterError(
            f"Pass client or address, not both: client={client!r} already is connected to a scheduler, "
            f"address={address!r} names another. Drop one of them."
        )
    if (client is not None or address is not None) and n_workers is not None:
        raise ParameterError(
            "n_workers sizes the LocalCluster that gram starts when neither client nor address is given; an existing "
            f"cluster keeps its own workers. Got n_workers={n_workers!r} with a client or an address: drop n_workers."
        )
    if n_workers is not None:
        check_param("distributed.gram", "n_workers", n_workers, low=1, integer=True)
    check_param("distributed.gram", "threads_per_worker", threads_per_worker, low=1, integer=True)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _connect(distributed, client, address, n_workers, threads_per_worker):
    """(owned, client): the given client, one connected to ``address``, or a new LocalCluster's."""
    if client is not None:
        return False, client
    if address is not None:
        return True, distributed.Client(address)
    cluster = distributed.LocalCluster(
        n_workers=n_workers or _usable_cores(), threads_per_worker=threads_per_worker, processes=True,
        dashboard_address=None, env={"NUMBA_NUM_THREADS": "1"},
    )
    return True, distributed.Client(cluster)


def _shutdown(client) -> None:
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()


def _stored_or_default_block(kernel, store, X1, X2, get, resume, overwrite, n_workers, client, address):
    """The block of a store this call resumes; else the default, cut so every worker gets ≥ 4 tasks."""
    from .blocked import _stored_block

    stored = _stored_block(check_store_path(store), resume, overwrite)
    if stored:
        return stored
    return _default_block_for(kernel, X1, X2, get, n_workers if client is None and address is None else None)


def _default_block_for(kernel, X1, X2, get, n_workers) -> int:
    X1 = np.asarray(X1)
    n1 = len(X1)
    n2 = n1 if X2 is None else len(np.asarray(X2))
    edge = default_block(kernel, X1, get, n2)
    workers = n_workers or _usable_cores()
    # blocks of edge b: about n1 n2 / b² of them (half when symmetric); want >= 4 per worker
    tasks_wanted = 4 * workers * (2 if X2 is None else 1)
    fitting = max(1, int(math.sqrt(n1 * n2 / tasks_wanted)))
    return max(1, min(edge, fitting))


def _fill_on_cluster(client, distributed, gram_store, kernel, X1, X2, get, progress) -> int:
    """Submit one task per missing block, wait for all of them, report progress; blocks computed."""
    missing = gram_store.missing_blocks()
    gram_store.skipped_blocks = len(gram_store.required_blocks()) - len(missing)
    done, total = block_entries_done(gram_store, missing)
    if progress is not None:
        if hasattr(progress, "done_before"):
            progress.done_before = done
        progress(done, total)
    if not missing:
        gram_store.computed_blocks = 0
        return 0
    kernel_f, X1_f, X2_f = _scatter(client, kernel, X1, X2)
    futures = {client.submit(_block_to_store, kernel_f, X1_f, X2_f, index, gram_store.block, get, gram_store.path,
                             key=f"ntk-infinite-block-{_job_key(gram_store)}-{index[0]}-{index[1]}"): index
               for index in missing}
    for future in distributed.as_completed(futures):
        future.result()  # a task's exception (after Dask's retries) is raised here, naming the block's error
        done += block_entries(gram_store, futures[future])
        if progress is not None:
            progress(done, total)
    gram_store.computed_blocks = len(missing)
    return len(missing)


def _job_key(gram_store) -> str:
    """A key naming this store's job, so a resubmitted block is recognised as the same task."""
    import hashlib

    text = repr(sorted((k, repr(v)) for k, v in gram_store.metadata.items())) + gram_store.path
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _scatter(client, kernel, X1, X2):
    """Futures of the kernel and inputs, held by every worker (sent once, not once per task)."""
    items = [kernel, X1] + ([] if X2 is None else [X2])
    futures = client.scatter(items, broadcast=True, hash=False)
    return futures[0], futures[1], (None if X2 is None else futures[2])


def _arrays_from_store(da, gram_store) -> dict:
    """Dask arrays reading the stored blocks (one task per block, each opening the store by path)."""
    from dask import delayed

    out = {}
    for name in gram_store.kernels:
        rows_of = [gram_store.block_slices((i, 0))[0] for i in range(gram_store.grid[0])]
        cols_of = [gram_store.block_slices((0, j))[1] for j in range(gram_store.grid[1])]
        grid = [[da.from_delayed(delayed(_read_block, pure=True)(gram_store.path, name, r, c),
                                 shape=(r.stop - r.start, c.stop - c.start), dtype=gram_store.dtype)
                 for c in cols_of] for r in rows_of]
        out[name] = da.block(grid)
    return out


def _in_memory(da, distributed, kernel, X1, X2, *, get, block, dtype, client, address, n_workers,
               threads_per_worker, compute):
    """The blocks as dask arrays held by the cluster (no store)."""
    from dask import delayed

    if np.dtype(dtype) != np.float64:
        raise ParameterError(
            f"In memory the blocks are float64 (the kernel's output); dtype={dtype!r} applies to stored blocks only. "
            "Pass store= to keep float32 blocks on disk, or drop dtype."
        )
    want = parse_get(get)
    get = tuple(name for name, w in zip(("nngp", "ntk"), want) if w)
    X1 = kernel.check_inputs(X1, "X1")
    if X2 is not None:
        X2 = kernel.check_inputs(X2, "X2", like=X1, like_name="X1")
    if block is None:
        block = _default_block_for(kernel, X1, X2, get, n_workers if client is None and address is None else None)
    block = check_param("distributed.gram", "block", block, low=1, integer=True)
    own, client = _connect(distributed, client, address, n_workers, threads_per_worker)
    try:
        kernel_f, X1_f, X2_f = _scatter(client, kernel, X1, X2)
        arrays = _block_graph(da, delayed, kernel_f, X1_f, X2_f, len(X1), len(X1 if X2 is None else X2), block, get)
        if compute:
            names = list(arrays)
            held = client.persist([arrays[name] for name in names])
            distributed.wait(held)
            arrays = dict(zip(names, held))
    except BaseException:
        if own:
            _shutdown(client)
        raise
    n_blocks = sum(1 for _ in _block_indices(len(X1), len(X1 if X2 is None else X2), block, X2 is None))
    return DistributedGram(nngp=arrays.get("nngp"), ntk=arrays.get("ntk"), store=None,
                           computed_blocks=n_blocks, client=client if own else None)


def _block_indices(n1, n2, block, symmetric):
    for i in range(-(-n1 // block)):
        for j in range(-(-n2 // block)):
            if not symmetric or i >= j:
                yield i, j


def _block_graph(da, delayed, kernel_f, X1_f, X2_f, n1, n2, block, get) -> dict:
    """{name: dask array}: one task per block (i ≥ j only when symmetric, the rest transposed)."""
    symmetric = X2_f is None
    results = {index: delayed(_block_values, pure=True, nout=len(get))(kernel_f, X1_f, X2_f, index, block, get)
               for index in _block_indices(n1, n2, block, symmetric)}
    sizes1 = [min(block, n1 - i * block) for i in range(-(-n1 // block))]
    sizes2 = [min(block, n2 - j * block) for j in range(-(-n2 // block))]
    out = {}
    for k, name in enumerate(get):
        def piece(i, j, k=k):
            if symmetric and j > i:
                return da.from_delayed(results[j, i][k], shape=(sizes2[j], sizes1[i]), dtype=np.float64).T
            return da.from_delayed(results[i, j][k], shape=(sizes1[i], sizes2[j]), dtype=np.float64)

        out[name] = da.block([[piece(i, j) for j in range(len(sizes2))] for i in range(len(sizes1))])
    return out
