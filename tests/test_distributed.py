"""Dask-distributed Gram matrices (nk.distributed.gram) on a LocalCluster of two worker processes.

References: the single-process blocked store of ``kernel.gram_to`` (the same blocks, so the
stored arrays must be bit for bit equal) and the in-memory ``kernel(X1, X2)`` (one call, no blocks).
"""

import builtins
import os
import signal

import numpy as np
import pytest

import ntk_infinite as nk
from ntk_infinite.evaluate import blocked
from ntk_infinite.evaluate.store import MissingExtraError
from tolerances import ROUNDING_RTOL

distributed = pytest.importorskip("distributed")
pytest.importorskip("zarr")

DENSE = "3*(Dense(1.4142135623730951, 0.1) > ReLU) > Dense(1.4142135623730951, 0.1)"
CNN = "Conv(filter_shape=(2, 2), padding='SAME', w_std=1.4, b_std=0.1) > ReLU > GlobalAvgPool > Dense(1.2, 0.1)"
#: A numerical route (kink-aware quadrature): slow enough per block to kill a worker mid-job.
SLOW = "Dense(1.3, 0.2) > ELU > Dense(1.3, 0.2) > ELU > Dense(1.3, 0.2)"


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       env={"NUMBA_NUM_THREADS": "1"})
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def dense():
    return nk.compile(DENSE)


def _data(n1, n2, seed=0, shape=(5,)):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n1,) + shape), (None if n2 is None else rng.standard_normal((n2,) + shape))


@pytest.mark.parametrize("fmt, n2, dtype", [("zarr", None, np.float64), ("npy", 37, np.float64),
                                           ("zarr", 37, np.float32)])
def test_stored_blocks_equal_the_single_process_store_bit_for_bit(client, dense, tmp_path, fmt, n2, dtype):
    X1, X2 = _data(70, n2)
    suffix = ".zarr" if fmt == "zarr" else ""
    ref = dense.gram_to(tmp_path / f"ref{suffix}", X1, X2, block=16, dtype=dtype).load()
    out = nk.distributed.gram(dense, X1, X2, store=tmp_path / f"K{suffix}", block=16, dtype=dtype, client=client)
    assert out.store.complete and out.store.format == fmt and out.computed_blocks == len(out.store.required_blocks())
    got = out.load()
    for name in ("nngp", "ntk"):
        assert getattr(got, name).dtype == dtype
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))
        np.testing.assert_array_equal(getattr(out, name).compute(), getattr(ref, name))  # the dask view of the store
    whole = dense(X1, X2)
    rtol = ROUNDING_RTOL if dtype == np.float64 else 2e-7
    np.testing.assert_allclose(got.ntk, whole.ntk, rtol=rtol, atol=0)


def test_resuming_computes_only_the_missing_blocks(client, dense, tmp_path):
    """A store left half done (as by a killed job) is finished by the cluster; the arrays are
    those of an uninterrupted single-process run, and a second call computes nothing."""
    X1, _ = _data(64, None, seed=1)
    path = tmp_path / "K.zarr"
    half, _, _, get = blocked.open_block_store(dense, path, X1, block=16)
    for index in half.required_blocks()[::2]:
        blocked.write_block(half, blocked.compute_block(dense, X1, None, index, block=16, get=get))
    missing = len(half.missing_blocks())
    assert 0 < missing < len(half.required_blocks())
    out = nk.distributed.gram(dense, X1, store=path, client=client)  # the stored block size is taken
    assert out.computed_blocks == missing and out.store.skipped_blocks == len(half.required_blocks()) - missing
    ref = dense.gram_to(tmp_path / "ref.zarr", X1, block=16).load()
    np.testing.assert_array_equal(out.load().ntk, ref.ntk)
    np.testing.assert_array_equal(out.load().nngp, ref.nngp)
    assert nk.distributed.gram(dense, X1, store=path, client=client).computed_blocks == 0
    # and gram_to resumes a store the cluster began
    assert dense.gram_to(path, X1).computed_blocks == 0


def test_in_memory_blocks_equal_the_kernel(client, dense):
    X1, X2 = _data(50, 23, seed=2)
    for x2 in (None, X2):
        whole = dense(X1, x2)
        out = nk.distributed.gram(dense, X1, x2, block=12, client=client)
        assert out.store is None and out.client is None and out.ntk.chunks[0] == (12, 12, 12, 12, 2)
        np.testing.assert_allclose(out.ntk.compute(), whole.ntk, rtol=ROUNDING_RTOL, atol=0)
        np.testing.assert_allclose(out.load().nngp, whole.nngp, rtol=ROUNDING_RTOL, atol=0)
    sym = nk.distributed.gram(dense, X1, get="ntk", block=12, client=client, compute=False).ntk.compute()
    np.testing.assert_array_equal(sym, sym.T)  # blocks above the diagonal are the transposes of those below


@pytest.mark.slow
def test_convolutional_kernels_on_the_cluster(client, tmp_path):
    cnn = nk.compile(CNN)
    X1, _ = _data(20, None, seed=3, shape=(3, 4, 2))
    out = nk.distributed.gram(cnn, X1, store=tmp_path / "cnn.zarr", block=8, client=client)
    np.testing.assert_array_equal(out.load().ntk, cnn.gram_to(tmp_path / "ref", X1, block=8).load().ntk)


def test_a_local_cluster_is_started_and_closed(dense, tmp_path):
    X1, _ = _data(30, None, seed=4)
    with nk.distributed.gram(dense, X1, n_workers=1, block=10) as out:
        assert out.client is not None and len(out.client.scheduler_info()["workers"]) == 1
        # the module's client is the current one here, so the load goes through the call's own client
        np.testing.assert_allclose(out.load().ntk, dense(X1).ntk, rtol=ROUNDING_RTOL, atol=0)
    assert out.client is None
    stored = nk.distributed.gram(dense, X1, store=tmp_path / "K", n_workers=1)
    assert stored.client is None and stored.store.complete


def _squash(t):  # a module-level user activation that cannot be pickled: it is hidden below
    return np.tanh(t)


def test_error_messages(client, dense, tmp_path, monkeypatch):
    X1, _ = _data(10, None)
    with pytest.raises(nk.ParameterError, match=r"Pass client or address, not both.*Drop one of them"):
        nk.distributed.gram(dense, X1, client=client, address="tcp://127.0.0.1:1")
    with pytest.raises(nk.ParameterError, match=r"n_workers sizes the LocalCluster .* Got n_workers=2 with a client"):
        nk.distributed.gram(dense, X1, client=client, n_workers=2)
    with pytest.raises(ValueError, match=r"The 'n_workers' parameter of distributed\.gram must be an integer in the "
                                         r"range \[1, inf\)\. Got 0 instead"):
        nk.distributed.gram(dense, X1, n_workers=0)
    with pytest.raises(nk.ParameterError, match=r"compute=False builds a lazy in-memory graph, but store= writes"):
        nk.distributed.gram(dense, X1, store=tmp_path / "K", client=client, compute=False)
    with pytest.raises(nk.ParameterError, match=r"In memory the blocks are float64 .* Pass store= to keep float32"):
        nk.distributed.gram(dense, X1, dtype=np.float32, client=client)
    with pytest.raises(TypeError, match=r"progress must be True"):
        nk.distributed.gram(dense, X1, store=tmp_path / "K2", client=client, progress="yes")
    unpicklable = nk.compile(nk.serial(nk.Dense(w_std=1.4), nk.Activation(lambda t: np.tanh(t)), nk.Dense(w_std=1.4)))
    with pytest.raises(nk.NotPicklableError, match=r"layer 1, Activation\(<lambda>\).*with 'def' at module level"):
        nk.distributed.gram(unpicklable, X1, n_workers=1)  # refused before a cluster starts

    real_import = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name == "distributed" or name.startswith("dask"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(MissingExtraError, match=r'nk\.distributed needs the optional packages dask\[distributed\].*'
                                                r'pip install "ntk_infinite\[distributed\]"'):
        nk.distributed.gram(dense, X1)


def test_importing_the_package_does_not_import_dask():
    import subprocess
    import sys

    code = "import sys, ntk_infinite as nk; nk.distributed; print('dask' in sys.modules or 'distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_worker_killed_mid_job_is_retried_and_the_store_is_unchanged(client, tmp_path):
    """SIGKILL one worker process after the first block lands: Dask reruns its task elsewhere (the
    nanny restarts the worker), and the store equals an uninterrupted single-process one."""
    slow = nk.compile(SLOW)
    X1, _ = _data(24, None, seed=5)
    pids = list(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids
    killed = []

    def kill_after_first_block(done, total):
        if done > 0 and not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(done)

    out = nk.distributed.gram(slow, X1, store=tmp_path / "K.zarr", block=4, client=client,
                              progress=kill_after_first_block)
    assert killed and killed[0] < 24 * 24  # the kill came mid-job
    ref = slow.gram_to(tmp_path / "ref.zarr", X1, block=4).load()
    np.testing.assert_array_equal(out.load().ntk, ref.ntk)
    np.testing.assert_array_equal(out.load().nngp, ref.nngp)
    client.wait_for_workers(2, timeout=60)
