"""The ntk-infinite command line: gram and demo."""

import subprocess
import sys

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
