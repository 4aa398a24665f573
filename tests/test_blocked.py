"""Blocked, out-of-core, resumable Gram matrices (kernel.gram_to): values, resumption, memory.

The in-memory ``kernel(X1, X2)`` is the independent reference: one call over the whole matrix,
no blocks, no store.
"""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, strategies as st

import ntk_infinite as nk
from ntk_infinite.evaluate import blocked
from ntk_infinite.evaluate.store import NpyGramStore, open_gram_store
from tolerances import ROUNDING_RTOL

DENSE = "3*(Dense(1.4142135623730951, 0.1) > ReLU) > Dense(1.4142135623730951, 0.1)"
CNN = "Conv(filter_shape=(2, 2), padding='SAME', w_std=1.4, b_std=0.1) > ReLU > GlobalAvgPool > Dense(1.2, 0.1)"


@pytest.fixture(scope="module")
def dense():
    return nk.compile(DENSE)


@pytest.fixture(scope="module")
def cnn():
    return nk.compile(CNN)


def _inputs(kind, n1, n2, seed=0):
    rng = np.random.default_rng(seed)
    shape = (5,) if kind == "dense" else (4, 3, 2)
    return rng.normal(size=(n1, *shape)), rng.normal(size=(n2, *shape))


def _assert_matches(store, ref, symmetric):
    for name in ("nngp", "ntk"):
        got = np.asarray(store.load()[name])
        np.testing.assert_allclose(got, ref[name], rtol=ROUNDING_RTOL, atol=0)
        if symmetric:
            assert np.array_equal(got, got.T)


@pytest.mark.parametrize("kind, fmt", [("dense", "zarr"), ("dense", "npy"), ("cnn", "zarr")])
@pytest.mark.parametrize("symmetric", [True, False])
def test_blocks_equal_the_in_memory_kernel(kind, fmt, symmetric, dense, cnn, tmp_path):
    kernel = dense if kind == "dense" else cnn
    X1, X2 = _inputs(kind, 23, 17)
    X2 = None if symmetric else X2
    store = kernel.gram_to(tmp_path / f"K.{fmt}", X1, X2, block=5, format=fmt)  # 5 divides neither 23 nor 17
    assert store.complete and store.format == fmt and store.shape == (23, 23 if symmetric else 17)
    _assert_matches(store, kernel(X1, X2), symmetric)


def test_symmetric_store_computes_only_the_lower_blocks(dense, tmp_path, monkeypatch):
    X, _ = _inputs("dense", 23, 0)
    seen = []
    original = blocked.compute_block
    monkeypatch.setattr(blocked, "compute_block", lambda *a, **k: seen.append(a[3]) or original(*a, **k))
    store = dense.gram_to(tmp_path / "K.zarr", X, block=5)
    # 23 rows in blocks of 5: 5 block rows, 5·6/2 = 15 blocks on or below the diagonal.
    assert sorted(seen) == [(i, j) for i in range(5) for j in range(i + 1)]
    K = store.load().ntk
    assert np.array_equal(K[:5, 10:15], K[10:15, :5].T)


@pytest.mark.parametrize("fmt", ["zarr", "npy"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_float32_storage_is_the_float64_result_rounded_once(fmt, symmetric, dense, tmp_path):
    X1, X2 = _inputs("dense", 19, 11, seed=2)
    X2 = None if symmetric else X2
    wide = dense.gram_to(tmp_path / f"K64.{fmt}", X1, X2, block=4, format=fmt).load()
    narrow = dense.gram_to(tmp_path / f"K32.{fmt}", X1, X2, block=4, format=fmt, dtype=np.float32).load()
    ref = dense(X1, X2)
    for name in ("nngp", "ntk"):
        np.testing.assert_allclose(wide[name], ref[name], rtol=ROUNDING_RTOL, atol=0)
        assert narrow[name].dtype == np.float32
        assert fmt == "zarr" or narrow[name].flags.owndata  # read into memory, not a view of the file
        assert np.array_equal(narrow[name], wide[name].astype(np.float32))


def _stop_after(path, k):
    """A progress callback that raises once the store at ``path`` records k finished blocks."""

    class Stop(Exception):
        pass

    def progress(done, total):
        if os.path.exists(path) and open_gram_store(path).done.sum() >= k:
            raise Stop

    return progress, Stop


@pytest.mark.parametrize("fmt", ["zarr", "npy"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_interrupted_job_resumes_with_only_the_missing_blocks(fmt, symmetric, dense, tmp_path, monkeypatch):
    X1, X2 = _inputs("dense", 26, 14, seed=3)
    X2 = None if symmetric else X2
    path = str(tmp_path / f"K.{fmt}")
    progress, Stop = _stop_after(path, 4)
    with pytest.raises(Stop):
        dense.gram_to(path, X1, X2, block=6, format=fmt, progress=progress)
    interrupted = open_gram_store(path)
    assert interrupted.done.sum() == 4 and not interrupted.complete
    missing = interrupted.missing_blocks()
    seen = []
    original = blocked.compute_block
    monkeypatch.setattr(blocked, "compute_block", lambda *a, **k: seen.append(a[3]) or original(*a, **k))
    resumed = dense.gram_to(path, X1, X2, block=6, format=fmt)
    assert seen == missing and resumed.computed_blocks == len(missing) and resumed.skipped_blocks == 4
    whole = dense.gram_to(tmp_path / f"whole.{fmt}", X1, X2, block=6, format=fmt).load()
    for name in ("nngp", "ntk"):
        assert np.array_equal(resumed.load()[name], whole[name])


def test_a_block_whose_write_failed_is_not_marked_done(dense, tmp_path, monkeypatch):
    X, _ = _inputs("dense", 12, 0, seed=4)
    path = tmp_path / "K"
    original = NpyGramStore._write
    calls = {"n": 0}

    def failing_write(self, name, rows, cols, values):
        calls["n"] += 1
        if calls["n"] == 5:  # block (1, 0): its NNGP (and mirror) are written, its NTK is not
            raise OSError("disk full")
        original(self, name, rows, cols, values)

    monkeypatch.setattr(NpyGramStore, "_write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        dense.gram_to(path, X, block=6)
    store = open_gram_store(path)
    assert store.done.tolist() == [[True, False], [False, False]]
    monkeypatch.setattr(NpyGramStore, "_write", original)
    _assert_matches(dense.gram_to(path, X, block=6), dense(X), symmetric=True)


@given(n1=st.integers(1, 9), n2=st.integers(1, 7), extra=st.integers(0, 12), symmetric=st.booleans())
def test_block_size_invariance(dense, n1, n2, extra, symmetric):
    block = 1 + extra % (n1 + 3)
    X1, X2 = _inputs("dense", n1, n2, seed=n1 * 13 + n2)
    X2 = None if symmetric else X2
    with tempfile.TemporaryDirectory() as folder:
        store = dense.gram_to(os.path.join(folder, "K"), X1, X2, block=block)
        _assert_matches(store, dense(X1, X2), symmetric)


def test_memory_stays_at_the_block_size(dense, tmp_path):
    n, block = 600, 40
    X, _ = _inputs("dense", n, 0, seed=5)
    dense(X[:block])  # the engine is built before measuring
    tracemalloc.start()
    try:
        store = dense.gram_to(tmp_path / "K", X, block=block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert store.complete
    # One n × n float64 array would be 2.9 MB; the blocks are 12.8 kB each.
    assert peak < n * n * 8 / 8, peak


def test_progress_counts_entries_and_reaches_the_total(dense, tmp_path):
    X1, X2 = _inputs("dense", 13, 9, seed=6)
    calls = []
    dense.gram_to(tmp_path / "K", X1, X2, block=4, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 13 * 9) and calls[-1] == (13 * 9, 13 * 9)
    assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))
    calls.clear()
    dense.gram_to(tmp_path / "K", X1, X2, block=4, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(13 * 9, 13 * 9)]  # nothing left to do


def test_progress_bar_on_stderr_shows_rate_and_eta(dense, tmp_path, capsys):
    X, _ = _inputs("dense", 20, 0, seed=7)
    dense.gram_to(tmp_path / "K", X, block=7, progress=True)
    err = capsys.readouterr().err
    assert "100.0%" in err and "entries/s" in err and "left" in err


# A real kill at an arbitrary moment (the child sleeps in its progress callback so that it runs
# long enough; the sleeps do not change what it computes). ~2 s, most of it the child's imports.
_CHILD = textwrap.dedent("""
    import sys, time, numpy as np, ntk_infinite as nk
    kernel = nk.compile(sys.argv[1])
    X = np.random.default_rng(8).normal(size=(300, 6))
    kernel.gram_to(sys.argv[2], X, block=25, progress=lambda d, t: time.sleep(0.01))
""")


@pytest.mark.parametrize("fmt", ["zarr", pytest.param("npy", marks=pytest.mark.slow)])
def test_sigkilled_job_resumes_bit_identically(dense, tmp_path, fmt):
    path = str(tmp_path / ("K.zarr" if fmt == "zarr" else "K"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(os.path.dirname(__file__), "..", "src"),
                                                       os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, DENSE, path], env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if os.path.exists(path) and open_gram_store(path).done.sum() >= 5:
                break
            time.sleep(0.02)
        assert child.poll() is None, "the child finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    killed = open_gram_store(path)
    missing = killed.missing_blocks()
    assert 5 <= killed.done.sum() and missing
    X = np.random.default_rng(8).normal(size=(300, 6))
    resumed = dense.gram_to(path, X, block=25)
    assert resumed.computed_blocks == len(missing)
    whole = dense.gram_to(tmp_path / f"whole.{fmt}", X, block=25, format=fmt).load()
    for name in ("nngp", "ntk"):
        assert np.array_equal(resumed.load()[name], whole[name])
