"""On-disk Gram stores: fingerprints, refusals, formats, arguments, blocks written on their own."""

import json
import os
import pickle
import sys

import numpy as np
import pytest

import ntk_infinite as nk
from ntk_infinite.errors import InputError, ParameterError
from ntk_infinite.evaluate.blocked import compute_block, default_block, write_block
from ntk_infinite.evaluate.store import (
    GramStore,
    IncompleteStoreError,
    MissingExtraError,
    StoreExistsError,
    StoreMismatchError,
    open_gram_store,
)
from tolerances import ROUNDING_RTOL

ARCH = "Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)"


@pytest.fixture(scope="module")
def kernel():
    return nk.compile(ARCH)


@pytest.fixture
def X():
    return np.random.default_rng(0).normal(size=(11, 4))


@pytest.fixture
def started(kernel, X, tmp_path):
    path = tmp_path / "K.zarr"
    kernel.gram_to(path, X, block=4)
    return path


@pytest.mark.parametrize("change, what", [
    (dict(X1=lambda X: X + 1e-9), "the inputs X1"),
    (dict(X2=lambda X: X[:5]), "the inputs X2"),
    (dict(block=5), "the block size"),
    (dict(dtype=np.float32), "the storage dtype"),
    (dict(get="ntk"), "get"),
    (dict(arch="Dense(1.5, 0.1) > Erf > Dense(1.5, 0.1)"), "the architecture"),
    (dict(tol=1e-8), "tol"),
])
def test_reopening_for_another_computation_is_refused(kernel, X, started, change, what):
    k = nk.compile(change.get("arch", ARCH), tol=change.get("tol", 1e-10))
    X1 = change.get("X1", lambda X: X)(X)
    X2 = change["X2"](X) if "X2" in change else None
    with pytest.raises(StoreMismatchError, match=rf"Differences: .*{what}.*another path, or overwrite=True"):
        k.gram_to(started, X1, X2, block=change.get("block", 4), dtype=change.get("dtype", np.float64),
                  get=change.get("get", ("nngp", "ntk")))
    assert open_gram_store(started).complete  # the store is left as it was


def test_mismatch_message_names_both_sides(kernel, X, started):
    with pytest.raises(StoreMismatchError, match=r"store has 4, this call 6"):
        kernel.gram_to(started, X, block=6)


def test_another_library_version_is_refused(kernel, X, started, monkeypatch):
    monkeypatch.setattr(nk, "__version__", "99.0")
    with pytest.raises(StoreMismatchError, match=r"ntk_infinite version.*'99.0'"):
        kernel.gram_to(started, X, block=4)


def test_resume_takes_the_stored_block_size(kernel, X, started):
    store = kernel.gram_to(started, X)  # block=None: the store's 4, not the default
    assert store.block == 4 and store.computed_blocks == 0 and store.skipped_blocks == 6


def test_resume_false_refuses_an_existing_store_unless_overwrite(kernel, X, started):
    with pytest.raises(StoreExistsError, match=r"resume=False \(--no-resume\) asks for a new one.*overwrite=True"):
        kernel.gram_to(started, X, block=4, resume=False)
    fresh = kernel.gram_to(started, X, block=3, resume=False, overwrite=True)
    assert fresh.block == 3 and fresh.computed_blocks == 10 and fresh.skipped_blocks == 0
    again = kernel.gram_to(started, X, block=5, overwrite=True)  # overwrite also discards a mismatch
    assert again.block == 5 and again.complete


def test_a_folder_that_is_not_a_store_is_never_deleted(kernel, X, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    for kwargs in ({}, {"overwrite": True}):
        with pytest.raises(StoreExistsError, match="not an ntk_infinite Gram store; it is left alone"):
            kernel.gram_to(folder, X, **kwargs)
    assert (folder / "notes.txt").read_text() == "keep me"


def test_an_empty_folder_is_used(kernel, X, tmp_path):
    (tmp_path / "K").mkdir()
    assert kernel.gram_to(tmp_path / "K", X, block=4).complete


def test_missing_zarr_names_the_extra_and_the_npy_alternative(kernel, X, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr raises ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "ntk_infinite\[distributed\]".*format=\'npy\'') as info:
        kernel.gram_to(tmp_path / "K.zarr", X)
    assert isinstance(info.value, ImportError) and isinstance(info.value, InputError)
    assert not (tmp_path / "K.zarr").exists()
    assert kernel.gram_to(tmp_path / "K", X, block=4).complete  # the .npy folder needs no zarr


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(block=0), ParameterError, r"'block' parameter of gram_to must be an integer in the range \[1, inf\)"),
    (dict(block=2.5), ParameterError, r"'block' parameter of gram_to.*pass a whole number"),
    (dict(dtype=np.int32), ParameterError, r"dtype must be np.float64 \(default\) or np.float32.*int32"),
    (dict(dtype=np.float16), ParameterError, r"dtype must be np.float64"),
    (dict(dtype="complex"), ParameterError, r"dtype must be np.float64"),
    (dict(format="hdf5"), ParameterError, r"format must be one of \('zarr', 'npy'\).*'hdf5'"),
    (dict(progress="yes"), TypeError, r"progress must be True.*callable\(done_entries, total_entries\).*str"),
    (dict(get="gp"), ParameterError, r"get must be 'nngp', 'ntk'"),
])
def test_bad_arguments(kernel, X, tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        kernel.gram_to(tmp_path / "K", X, **kwargs)
    assert not (tmp_path / "K").exists()


def test_store_path_checks(kernel, X, tmp_path):
    missing = tmp_path / "no" / "such" / "K.zarr"
    with pytest.raises(InputError, match=r"folder .*such' that should hold the store .* does not exist.*mkdir -p"):
        kernel.gram_to(missing, X)
    with pytest.raises(TypeError, match=r"store must be a path .*got int"):
        kernel.gram_to(3, X)
    with pytest.raises(InputError, match="2-D array"):
        kernel.gram_to(tmp_path / "K", X[0])


def test_load_of_an_incomplete_store_says_how_to_finish(kernel, X, tmp_path):
    path = tmp_path / "K"
    kernel.gram_to(path, X, block=4)
    os.remove(path / "done" / "2-1.json")
    store = open_gram_store(path)
    assert not store.complete and store.missing_blocks() == [(2, 1)]
    with pytest.raises(IncompleteStoreError, match=r"1 of 6 blocks still to compute.*run the same gram_to call"):
        store.load()


def test_open_gram_store_of_something_else(tmp_path):
    with pytest.raises(InputError, match=r"not an ntk_infinite Gram store.*gram_to"):
        open_gram_store(tmp_path)


def test_zarr_layout_chunks_are_blocks(kernel, X, tmp_path):
    import zarr

    kernel.gram_to(tmp_path / "K.zarr", X, X[:7], block=4, dtype=np.float32)
    group = zarr.open_group(tmp_path / "K.zarr", mode="r")
    assert group["nngp"].chunks == (4, 4) and group["ntk"].shape == (11, 7) and group["ntk"].dtype == np.float32
    assert group["done"].shape == (3, 2) and group["done"].chunks == (1, 1)
    meta = dict(group.attrs)["ntk_infinite_gram"]
    assert meta["architecture"] == nk.compile(ARCH).architecture.to_text() and meta["block"] == 4
    assert meta["X2"]["shape"] == [7, 4] and meta["dtype"] == "float32" and meta["library_version"] == nk.__version__
    # A block larger than the matrix: one chunk of the matrix's size, not of the block's.
    kernel.gram_to(tmp_path / "L.zarr", X, block=50)
    assert zarr.open_group(tmp_path / "L.zarr", mode="r")["ntk"].chunks == (11, 11)


def test_npy_layout(kernel, X, tmp_path):
    store = kernel.gram_to(tmp_path / "K", X, get="ntk", block=4)
    assert sorted(os.listdir(tmp_path / "K")) == ["done", "gram.json", "ntk.npy"]
    assert len(os.listdir(tmp_path / "K" / "done")) == 6
    assert store.nngp is None and np.load(tmp_path / "K" / "ntk.npy").shape == (11, 11)
    assert json.loads((tmp_path / "K" / "gram.json").read_text())["get"] == ["ntk"]
    assert store.load().nngp is None


class _Stop(Exception):
    pass


def _stop_at_start(done, total):
    raise _Stop  # gram_to reports (0, total) once the store exists, before the first block


@pytest.mark.parametrize("fmt", ["zarr", "npy"])
def test_blocks_computed_and_written_on_their_own_in_any_order(kernel, X, tmp_path, fmt):
    # What a scheduler does: compute_block/write_block per block, kernel and store passed by pickle.
    whole = kernel.gram_to(tmp_path / f"whole.{fmt}", X, block=3, format=fmt).load()
    with pytest.raises(_Stop):
        kernel.gram_to(tmp_path / f"parts.{fmt}", X, block=3, format=fmt, progress=_stop_at_start)
    store = open_gram_store(tmp_path / f"parts.{fmt}")
    assert store.done.sum() == 0
    remote_kernel, remote_store = pickle.loads(pickle.dumps((kernel, store)))
    for index in reversed(store.required_blocks()):
        write_block(remote_store, compute_block(remote_kernel, X, None, index, block=3))
    assert store.complete
    for name in ("nngp", "ntk"):
        assert np.array_equal(store.load()[name], whole[name])


def test_compute_block_refuses_blocks_above_the_diagonal(kernel, X):
    with pytest.raises(ParameterError, match=r"Block \(0, 1\) lies above the diagonal.*Compute block \(1, 0\)"):
        compute_block(kernel, X, None, (0, 1), block=4)


def test_write_block_checks_the_shape(kernel, X, tmp_path):
    store = kernel.gram_to(tmp_path / "K", X, block=4)
    with pytest.raises(InputError, match=r"Block \(2, 0\) of nngp must have shape \(3, 4\).*got \(4, 4\)"):
        store.write_block((2, 0), {"nngp": np.zeros((4, 4)), "ntk": np.zeros((4, 4))}, 0.0)


def test_stored_values_are_the_kernels(kernel, X, tmp_path):
    store = kernel.gram_to(tmp_path / "K.zarr", X, block=4)
    ref = kernel(X)
    np.testing.assert_allclose(np.asarray(store.ntk[...]), ref.ntk, rtol=ROUNDING_RTOL, atol=0)
    assert isinstance(store, GramStore) and store.error_estimate == 0.0 and "6/6 blocks done" in repr(store)


def test_default_block_rule():
    dense = nk.compile(ARCH)
    # 2 kernels × 2 copies × 8 bytes × 4096² = 512 MiB.
    assert default_block(dense, np.broadcast_to(0.0, (10_000, 3))) == 4096
    assert default_block(dense, np.broadcast_to(0.0, (10_000, 3)), get="ntk") == 4096  # 5792 -> power of two
    assert default_block(dense, np.broadcast_to(0.0, (100, 3))) == 100
    assert default_block(dense, np.broadcast_to(0.0, (10, 3)), n2=300) == 300  # not 10 × 10 blocks
    flat = nk.compile("Conv(filter_shape=(3, 3), padding='SAME') > ReLU > Flatten > Dense")
    assert flat.layout == "diagonal"
    assert default_block(flat, np.broadcast_to(0.0, (60_000, 28, 28, 1))) == 144  # 4096/√784 = 146 -> 144
    gap = nk.compile("Conv(filter_shape=(3, 3), padding='SAME') > ReLU > GlobalAvgPool > Dense")
    assert gap.layout == "full"
    assert default_block(gap, np.broadcast_to(0.0, (60_000, 8, 8, 1))) == 64  # 4096 / √(64²)
    assert default_block(gap, np.broadcast_to(0.0, (60_000, 32, 32, 3))) == 16  # 4 -> at least 16
