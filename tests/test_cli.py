"""The ntk-infinite command line: gram and demo."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ntk_infinite as nk
from ntk_infinite.cli import ProgressBar, main
from tolerances import ULP_RTOL

ARCH = "Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)"


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    X1, X2 = rng.normal(size=(7, 3)), rng.normal(size=(4, 3))
    np.save(tmp_path / "x1.npy", X1)
    np.savetxt(tmp_path / "x2.csv", X2, delimiter=",", header="a,b,c", comments="")
    return tmp_path, X1, X2


def test_gram_npy_symmetric(data, capsys):
    tmp, X1, _ = data
    out = tmp / "k.npz"
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "-o", str(out)]) == 0
    saved = np.load(out)
    ref = nk.compile(ARCH)(X1)
    np.testing.assert_array_equal(saved["nngp"], ref.nngp)
    np.testing.assert_array_equal(saved["ntk"], ref.ntk)
    assert "wrote nngp, ntk (7, 7)" in capsys.readouterr().out


def test_gram_csv_with_header_and_get(data):
    tmp, X1, X2 = data
    out = tmp / "k.npz"
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "--x2", str(tmp / "x2.csv"), "--get", "nngp", "-o", str(out), "-q"]) == 0
    saved = np.load(out)
    assert list(saved.keys()) == ["nngp"]
    np.testing.assert_allclose(saved["nngp"], nk.compile(ARCH)(X1, X2).nngp, rtol=ULP_RTOL, atol=0)


def test_gram_reports_user_errors(data, capsys):
    tmp, _, _ = data
    assert main(["gram", "Dense > Relu6 > Dense", str(tmp / "x1.npy"), "-o", str(tmp / "k.npz")]) == 2
    assert "Unknown layer 'Relu6'" in capsys.readouterr().err
    bad = tmp / "bad.npy"
    np.save(bad, np.array([[1.0, np.nan]]))
    assert main(["gram", ARCH, str(bad), "-o", str(tmp / "k.npz")]) == 2
    assert "contains NaN" in capsys.readouterr().err


def test_version_is_the_package_version(capsys):
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"$', pyproject, re.M).group(1)
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ntk-infinite {version}"


@pytest.fixture
def no_compile(monkeypatch):
    """Files must be checked before compiling: compiling here fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("compile() was called before the files were checked")

    monkeypatch.setattr(nk, "compile", refuse)


def test_missing_files_and_folders_fail_before_compiling(data, capsys, no_compile):
    tmp, _, _ = data
    missing = tmp / "nope.npy"
    assert main(["gram", ARCH, str(missing), "-o", str(tmp / "k.npz")]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"The input file '{re.escape(str(missing))}' does not exist .* check the path", err), err
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "--x2", str(tmp / "x2.npy"), "-o", str(tmp / "k.npz")]) == 2
    assert "The --x2 file" in capsys.readouterr().err
    out = tmp / "no_such_folder" / "k.npz"
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"The output folder '{out.parent}'" in err and "does not exist" in err and "mkdir -p" in err
    assert main(["gram", ARCH, str(tmp), "-o", str(tmp / "k.npz")]) == 2
    assert "is a folder, not a file" in capsys.readouterr().err
    (tmp / "x.dat").write_text("1,2\n")
    assert main(["gram", ARCH, str(tmp / "x.dat"), "-o", str(tmp / "k.npz")]) == 2
    assert "expected a .npy file or a comma-separated .csv/.txt file" in capsys.readouterr().err
    assert not list(tmp.glob("k*.npz"))


def test_output_without_suffix_reports_the_file_written(data, capsys):
    tmp, X1, _ = data
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "-o", str(tmp / "grams")]) == 0
    written = sorted(p.name for p in tmp.glob("grams*"))
    assert written == ["grams.npz"]
    assert f"to {tmp / 'grams.npz'} in" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp / "grams.npz")["ntk"], nk.compile(ARCH)(X1).ntk)


def test_progress_bar_writes_to_stream():
    import io

    stream = io.StringIO()
    bar = ProgressBar("gram", stream=stream, delay=0.0)
    bar(5, 10)
    bar(10, 10)
    text = stream.getvalue()
    assert "50.0%" in text and "100.0%" in text and text.endswith("\n")


def test_progress_callback_counts_every_tile():
    calls = []
    nk.compile(ARCH)(np.random.default_rng(1).normal(size=(50, 3)), tile=8, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] == 28  # 7 tile rows -> 7*8/2 lower-triangle tiles


def test_demo_runs():
    proc = subprocess.run([sys.executable, "-m", "ntk_infinite.cli", "demo"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Breast Cancer Wisconsin" in proc.stdout
    assert "symmetric: True" in proc.stdout
    assert "test accuracy" in proc.stdout
    # compile() only validates; the jitted engine is built or loaded by the first call
    assert re.search(r"^compile \(validate \+ resolve duals\): [\d.]+ ms$", proc.stdout, re.M), proc.stdout
    assert re.search(r"^first call \(build or load the jitted engine, then evaluate\): [\d.]+s$", proc.stdout, re.M)
    assert re.search(r"^second call \(evaluate only\): [\d.]+ ms for a 569x569 NNGP \+ NTK$", proc.stdout, re.M)


# ------------------------------------------------------------------ images
CNN = "Conv(filter_shape=(2, 2), padding='SAME', w_std=1.4, b_std=0.1) > ReLU > GlobalAvgPool > Dense(1.2, 0.1)"
CNN_NAIVE = [("conv", (2, 2), (1, 1), "SAME", 1.4, 0.1), ("relu",), ("gap",), ("dense", 1.2, 0.1)]
CNN_1D = "Conv(filter_shape=(3,), w_std=1.5, b_std=0.1) > ReLU > Flatten > Dense(1.1)"
CNN_1D_NAIVE = [("conv", (3,), (1,), "VALID", 1.5, 0.1), ("relu",), ("flatten",), ("dense", 1.1, 0.0)]


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(2)
    X1, X2, S = rng.normal(size=(5, 4, 3, 2)), rng.normal(size=(3, 4, 3, 2)), rng.normal(size=(4, 6, 2))
    np.save(tmp_path / "x1.npy", X1)
    np.save(tmp_path / "x2.npy", X2)
    np.save(tmp_path / "seq.npy", S)
    np.savetxt(tmp_path / "rows.csv", X1.reshape(5, -1), delimiter=",")  # C order, channels last
    return tmp_path, X1, X2, S


def test_gram_reads_image_arrays_and_reshaped_rows(images, capsys):
    from naive import naive_spatial_kernels
    from tolerances import NAIVE_RTOL

    tmp, X1, X2, S = images
    out = tmp / "k.npz"
    assert main(["gram", CNN, str(tmp / "x1.npy"), "--x2", str(tmp / "x2.npy"), "-o", str(out)]) == 0
    assert "wrote nngp, ntk (5, 3)" in capsys.readouterr().out
    nngp, ntk = naive_spatial_kernels(CNN_NAIVE, X1, X2)
    np.testing.assert_allclose(np.load(out)["nngp"], nngp, rtol=NAIVE_RTOL, atol=NAIVE_RTOL * np.abs(nngp).max())
    np.testing.assert_allclose(np.load(out)["ntk"], ntk, rtol=NAIVE_RTOL, atol=NAIVE_RTOL * np.abs(ntk).max())
    # flat rows (here a CSV) become the same images with --input-shape H,W,C
    assert main(["gram", CNN, str(tmp / "rows.csv"), "--input-shape", "4,3,2", "-o", str(out), "-q"]) == 0
    nngp, ntk = naive_spatial_kernels(CNN_NAIVE, X1)
    np.testing.assert_allclose(np.load(out)["ntk"], ntk, rtol=NAIVE_RTOL, atol=NAIVE_RTOL * np.abs(ntk).max())
    assert main(["gram", CNN_1D, str(tmp / "seq.npy"), "--get", "nngp", "-o", str(out), "-q"]) == 0
    nngp, _ = naive_spatial_kernels(CNN_1D_NAIVE, S)
    np.testing.assert_allclose(np.load(out)["nngp"], nngp, rtol=NAIVE_RTOL, atol=NAIVE_RTOL * np.abs(nngp).max())


@pytest.mark.parametrize("arch, args, message", [
    (CNN, ["rows.csv"], r"rows\.csv holds a 2-D array, samples of shape \(24,\), but .* is a 2-D convolutional architecture and "
                        r"reads 4-D images \(n, H, W, C\), channels last: pass --input-shape H,W,C \(the shape of one "
                        r"image, e\.g\. 8,8,1\) to reshape each row"),
    (CNN, ["seq.npy"], r"seq\.npy holds a 3-D array, samples of shape \(6, 2\), but .* reads 4-D images \(n, H, W, C\), "
                       r"channels last: save the images as a 4-D \.npy \(np\.save\(path, images\)\), or describe a 1-D "
                       r"convolutional architecture \(filter_shape with 1 entries\)"),
    (CNN, ["x1.npy", "--x2", "seq.npy"], r"seq\.npy holds a 3-D array"),
    (CNN_1D, ["x1.npy"], r"x1\.npy holds a 4-D array, samples of shape \(4, 3, 2\), but .* is a 1-D convolutional architecture "
                         r"and reads 3-D images \(n, L, C\)"),
    (ARCH, ["x1.npy"], r"x1\.npy holds a 4-D array, samples of shape \(4, 3, 2\), but .* is dense and reads one sample per row, "
                       r"\(n, d\)\. Save the samples flattened, np\.save\(path, X\.reshape\(len\(X\), -1\)\)"),
    (ARCH, ["rows.csv", "--input-shape", "4,3,2"], r"--input-shape reshapes rows into images for a convolutional "
                                                   r"architecture, but .* is dense"),
    (CNN, ["rows.csv", "--input-shape", "4,3,1"], r"--input-shape 4,3,1 must give 2 spatial sizes and the channels of "
                                                  r"one image .* holds rows of 24 values"),
    (CNN, ["rows.csv", "--input-shape", "4x3x2"], r"--input-shape expects the shape of one image as comma-separated "
                                                  r"positive whole numbers, spatial sizes then channels, such as 8,8,1; "
                                                  r"got '4x3x2'"),
])
def test_gram_rank_mismatch_names_the_fix(images, capsys, arch, args, message):
    tmp = images[0]
    argv = ["gram", arch, str(tmp / args[0]), *[str(tmp / a) if a.endswith((".npy", ".csv")) else a for a in args[1:]]]
    assert main(argv + ["-o", str(tmp / "k.npz"), "-q"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp / "k.npz").exists()


def test_gram_writes_a_resumable_store(data, capsys):
    tmp, X1, X2 = data
    store = tmp / "K.zarr"
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "-o", str(store), "--block", "3"]) == 0
    captured = capsys.readouterr()
    assert f"to {store} (zarr store, block 3: 6 blocks computed, 0 already done)" in captured.out
    assert "entries/s" in captured.err and "100.0%" in captured.err
    from ntk_infinite.evaluate.store import open_gram_store

    ref = nk.compile(ARCH)(X1)
    loaded = open_gram_store(store).load()
    np.testing.assert_allclose(loaded.ntk, ref.ntk, rtol=ULP_RTOL * 10, atol=0)
    np.testing.assert_allclose(loaded.nngp, ref.nngp, rtol=ULP_RTOL * 10, atol=0)
    # Run again: nothing left to compute (the stored block size is reused).
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "-o", str(store), "-q"]) == 0
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "-o", str(store)]) == 0
    assert "0 blocks computed, 6 already done" in capsys.readouterr().out
    # Other inputs into the same store: refused with the fix, exit status 2.
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "--x2", str(tmp / "x2.csv"), "-o", str(store), "-q"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"error: The store at .* another computation.*the inputs X2.*overwrite=True", err)
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "-o", str(store), "--no-resume", "-q"]) == 2
    assert "resume=False (--no-resume) asks for a new one" in capsys.readouterr().err
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "--x2", str(tmp / "x2.csv"), "-o", str(store), "--overwrite",
                 "--dtype", "float32", "--get", "ntk"]) == 0
    assert "wrote ntk (7, 4) float32" in capsys.readouterr().out
    rect = open_gram_store(store).load()
    assert rect.nngp is None and rect.ntk.dtype == np.float32
    np.testing.assert_array_equal(rect.ntk, nk.compile(ARCH)(X1, X2).ntk.astype(np.float32))


def test_gram_npy_folder_store_and_option_checks(data, capsys):
    tmp, X1, _ = data
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "-o", str(tmp / "K"), "--format", "npy", "--block", "4", "-q"]) == 0
    assert sorted(p.name for p in (tmp / "K").iterdir()) == ["done", "gram.json", "nngp.npy", "ntk.npy"]
    np.testing.assert_allclose(np.load(tmp / "K" / "ntk.npy"), nk.compile(ARCH)(X1).ntk, rtol=ULP_RTOL * 10, atol=0)
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "-o", str(tmp / "k.npz"), "--block", "4"]) == 2
    assert re.search(r"--block apply to on-disk stores.*-o K.zarr", capsys.readouterr().err)
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "-o", str(tmp / "K.zarr"), "--block", "0"]) == 2
    assert "'block' parameter of gram_to must be an integer in the range [1, inf)" in capsys.readouterr().err
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "-o", str(tmp / "nowhere" / "K.zarr")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["gram", ARCH, str(tmp / "x1.npy"), "-o", str(tmp / "k32"), "--dtype", "float32", "-q"]) == 0
    assert np.load(tmp / "k32.npz")["ntk"].dtype == np.float32
