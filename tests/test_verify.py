"""``ntk-infinite verify`` and ``ntk-infinite tables``: exit codes, reports, messages, slopes."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

import ntk_infinite as nk
from ntk_infinite import cli
from ntk_infinite.verify import runners as verify
from ntk_infinite.results import Kernels
from tolerances import ROUNDING_ATOL, STAT_Z

ARCH = "Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1)"
#: Kernel sweep small enough for CI (about a second) yet able to tell a 30% error.
FAST = ["--widths", "64,256,1024", "--samples", "8", "--skip-training", "-q"]


def _run(capsys, argv):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_verify_passes_for_the_true_kernel(tmp_path, capsys):
    report = tmp_path / "report.md"
    code, out, _ = _run(capsys, ["verify", ARCH, *FAST, "-o", str(report)])
    assert code == 0
    assert "Overall: **PASS**" in out
    text = report.read_text()
    assert "| NTK |" in text and "| NNGP |" in text and "fitted slope" in text
    assert text.strip() in out


@pytest.mark.parametrize("scale", [1.3, 0.75])
def test_verify_fails_for_a_wrong_analytic_kernel(monkeypatch, tmp_path, capsys, scale):
    real = verify._analytic_kernels

    def wrong(kernel, X):
        k = real(kernel, X)
        return Kernels(nngp=scale * k.nngp, ntk=scale * k.ntk)

    monkeypatch.setattr(verify, "_analytic_kernels", wrong)
    code, out, _ = _run(capsys, ["verify", ARCH, *FAST, "-o", ""])
    assert code == 1
    assert "Overall: **FAIL**" in out and "disagree" in out


def test_verify_fails_for_the_kernel_of_another_architecture(monkeypatch, capsys):
    """A realistic bug: the analytic side uses σ_w = 1.5 where the network has 1.4."""
    other = nk.compile(ARCH.replace("1.4", "1.5"))
    monkeypatch.setattr(verify, "_analytic_kernels", lambda kernel, X: other(X))
    code, out, _ = _run(capsys, ["verify", ARCH, *FAST, "-o", ""])
    assert code == 1


def test_verify_with_training_on_a_user_data_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1]
    path = tmp_path / "data.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header="a,b,c,d,target", comments="")
    code, out, _ = _run(capsys, ["verify", "Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1)", "--widths", "64,256,1024",
                                 "--samples", "6", "--train-widths", "64,256,1024", "--train-samples", "3",
                                 "--data", str(path), "--target", "target", "--n-train", "12", "--n-test", "6", "-q",
                                 "-o", ""])
    assert code == 0
    assert "12 training and 6 test points, 4 features" in out
    assert "trained net vs analytic f_t" in out and "NTK change" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--widths", "64,abc"], r"--widths expects comma-separated whole numbers such as 64,256,1024; got '64,abc'"),
        (["--widths", "128"], r"A slope needs at least two different widths; got \(128,\)"),
        (["--samples", "1"], r"The 'samples' parameter of kernel_convergence must be an integer in the range \[2, inf\)"),
        (["--n-train", "600"], r"The data have 569 rows but n_train \+ n_test = 610"),
    ],
)
def test_verify_usage_errors(capsys, argv, message):
    import re

    code, _, err = _run(capsys, ["verify", ARCH, "--skip-training", "-q", "-o", "", *argv])
    assert code == 2
    assert re.search(message, err), err


def test_verify_data_file_errors(tmp_path, capsys):
    path = tmp_path / "one_column.csv"
    np.savetxt(path, np.arange(30.0).reshape(-1, 1), delimiter=",")
    code, _, err = _run(capsys, ["verify", ARCH, "--data", str(path), "--target", "0", "--skip-training", "-q", "-o", ""])
    assert code == 2
    assert "must hold a table with at least two columns (features and a target)" in err


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "table.csv"
    np.savetxt(path, rng.standard_normal((30, 4)), delimiter=",", header="u,label,v,w", comments="")
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], r"Which column of .*table\.csv is the target\? The data file does not say; pass target=COLUMN "
             r"\(--target COLUMN on the command line\): a header name or a 0-based column index, -1 for the last "
             r"column\. .* has 4 columns; its columns are 'u', 'label', 'v', 'w'"),
        (["--target", "lable"], r"The target column 'lable' is not a column name of"),
        (["--target", "4"], r"The target column index 4 is out of range"),
    ],
)
def test_verify_data_needs_an_explicit_target(table, capsys, monkeypatch, extra, message):
    import re

    monkeypatch.setattr(verify, "kernel_convergence", lambda *a, **k: pytest.fail("ran before the data were checked"))
    code, _, err = _run(capsys, ["verify", ARCH, "--data", str(table), *extra, "--skip-training", "-q", "-o", ""])
    assert code == 2
    assert re.search(message, err), err


def test_verify_target_by_name_or_index_selects_that_column(table):
    raw = np.loadtxt(table, delimiter=",", skiprows=1)
    perm = np.random.default_rng(3).permutation(raw.shape[0])
    tr = perm[:8]
    for target in ("label", 1, "1", -3):
        X, y, _, _ = verify.sample_data(8, 4, seed=3, path=str(table), target=target)
        np.testing.assert_array_equal(y, raw[tr, 1])
        np.testing.assert_array_equal(X, raw[tr][:, [0, 2, 3]])


def test_verify_checks_the_report_folder_first(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(verify, "kernel_convergence", lambda *a, **k: pytest.fail("ran before -o was checked"))
    code, _, err = _run(capsys, ["verify", ARCH, *FAST, "-o", str(tmp_path / "missing" / "r.md")])
    assert code == 2 and "The output folder" in err and "does not exist" in err


# ------------------------------------------------------------------------------- slopes
def test_fit_slope_recovers_a_power_law_and_its_uncertainty():
    rng = np.random.default_rng(0)
    widths = np.array([64, 128, 256, 512, 1024, 2048, 4096])
    S = 200
    noise = rng.standard_normal((widths.size, S))  # per-seed errors ∝ |N(0,1)|·width^-0.5
    samples = 3.0 * widths[:, None] ** -0.5 * noise
    fit = verify.fit_slope(widths, samples)
    # RMS of S standard normals has relative sd ≈ 1/√(2S) = 5%; spread over the log-width range:
    u = np.log(widths)
    expected_se = (1 / np.sqrt(2 * S)) / np.sqrt(np.sum((u - u.mean()) ** 2))
    assert abs(fit.slope + 0.5) <= STAT_Z * expected_se
    assert 0.5 * expected_se <= fit.stderr <= 2 * expected_se
    # a = ȳ − s·ū: standard error σ·√(1/n + ū²/Σ(u − ū)²), σ = 1/√(2S).
    intercept_se = (1 / np.sqrt(2 * S)) * np.sqrt(1 / u.size + u.mean() ** 2 / np.sum((u - u.mean()) ** 2))
    assert_allclose(fit.intercept, np.log(3.0), rtol=0, atol=STAT_Z * intercept_se)


def test_slope_verdicts():
    fit = verify.SlopeFit(-0.45, 0.0, 0.01)
    assert fit.check(-0.5, 0.1) == verify.PASS
    assert verify.SlopeFit(-0.2, 0.0, 0.01).check(-0.5, 0.1) == verify.FAIL
    assert verify.SlopeFit(-0.3, 0.0, 0.1).check(-0.5, 0.1) == verify.INCONCLUSIVE
    assert verify.SlopeFit(-1.0, 0.0, 0.01).check(-0.5, 0.1, upper_only=True) == verify.PASS
    assert verify.SlopeFit(-1.0, 0.0, 0.01).check(-0.5, 0.1) == verify.FAIL


def test_fit_slope_messages():
    with pytest.raises(nk.ParameterError, match=r"fit_slope needs samples of shape \(len\(x\) >= 2, S\)"):
        verify.fit_slope([64], [[1.0, 2.0]])


def test_kernel_convergence_without_hidden_layers_is_exact():
    X = np.random.default_rng(0).standard_normal((5, 3))
    res = verify.kernel_convergence("Dense(1.3, 0.2)", X, widths=(8, 16), samples=2)
    for r in res.values():
        assert r.exact and r.verdict == verify.PASS
        assert np.all(r.errors <= ROUNDING_ATOL)


# ------------------------------------------------------------------------------- tables
def test_tables_lists_and_discovers_report_modules(capsys):
    from ntk_infinite import reports

    names = reports.table_modules()
    assert {"convergence", "lazy_training"} <= set(names)
    code, out, _ = _run(capsys, ["tables", "--list"])
    assert code == 0 and "convergence" in out.split() and "lazy_training" in out.split()


def test_tables_unknown_name_message(capsys, tmp_path):
    code, _, err = _run(capsys, ["tables", "--only", "nonsense", "--out", str(tmp_path)])
    assert code == 2
    assert "Unknown table(s) 'nonsense'; available:" in err and "convergence" in err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["convergence", "lazy_training"])
def test_quick_tables_are_written(tmp_path, name):
    import importlib

    module = importlib.import_module(f"ntk_infinite.reports.{name}")
    path = module.write_table(tmp_path, quick=True)
    text = path.read_text()
    assert path.name == f"{name}.md" and "Generated by" in text and "slope" in text


def test_kernel_convergence_rejects_a_zero_kernel():
    X = np.zeros((3, 2))
    with pytest.raises(nk.InputError, match=r"analytic NNGP on X must be a finite, non-zero \(3, 3\) matrix"):
        verify.kernel_convergence("Dense(1.0, 0.0) > ReLU > Dense(1.0, 0.0)", X, widths=(8, 16), samples=2)


# ------------------------------------------------------------------ images
CNN_1D = "Conv(filter_shape=(3,), padding='SAME', w_std=1.5, b_std=0.1) > ReLU > GlobalAvgPool > Dense(1.2, 0.1)"
CNN_2D = "Conv(filter_shape=(3, 3), padding='SAME', w_std=1.4, b_std=0.1) > ReLU > GlobalAvgPool > Dense(1.4, 0.1)"
IMAGE_FAST = ["--widths", "32,128,512", "--samples", "8", "--skip-training", "-q", "-o", ""]


@pytest.fixture
def image_files(tmp_path):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((14, 6, 2))
    np.save(tmp_path / "seq.npy", X)
    np.save(tmp_path / "y.npy", np.sign(X[:, :, 0].sum(axis=1)))
    np.savetxt(tmp_path / "rows.csv", np.column_stack([X.reshape(14, -1), np.sign(X[:, 0, 0])]), delimiter=",")
    return tmp_path, X


def test_verify_on_an_image_file_with_labels(image_files, capsys, monkeypatch):
    tmp, X = image_files
    data = ["--data", str(tmp / "seq.npy"), "--labels", str(tmp / "y.npy"), "--n-train", "8", "--n-test", "4"]
    code, out, _ = _run(capsys, ["verify", CNN_1D, *data, *IMAGE_FAST])
    assert code == 0, out
    assert "8 training and 4 test points, images of shape (6, 2)" in out and "(targets from" in out
    # the report checks the analytic kernel of these images: a kernel 30% off fails
    real = verify._analytic_kernels
    seen = []

    def wrong(kernel, XA):
        seen.append(XA)
        k = real(kernel, XA)
        return Kernels(nngp=1.3 * k.nngp, ntk=1.3 * k.ntk)

    monkeypatch.setattr(verify, "_analytic_kernels", wrong)
    code, out, _ = _run(capsys, ["verify", CNN_1D, *data, *IMAGE_FAST])
    assert code == 1 and "Overall: **FAIL**" in out
    perm = np.random.default_rng(0).permutation(14)  # --seed 0 splits like sample_data
    np.testing.assert_array_equal(seen[0], X[perm[:12]])
    # rows of a table with a target column, reshaped by --input-shape, are the same images
    monkeypatch.setattr(verify, "_analytic_kernels", real)
    code, out, _ = _run(capsys, ["verify", CNN_1D, "--data", str(tmp / "rows.csv"), "--target", "-1", "--input-shape",
                                 "6,2", "--n-train", "8", "--n-test", "4", *IMAGE_FAST])
    assert code == 0 and "images of shape (6, 2)" in out


def test_verify_builtin_digits_for_a_2d_cnn(capsys, monkeypatch):
    seen = []
    real = verify._analytic_kernels
    monkeypatch.setattr(verify, "_analytic_kernels", lambda kernel, XA: seen.append(XA) or real(kernel, XA))
    code, out, _ = _run(capsys, ["verify", CNN_2D, "--n-train", "8", "--n-test", "4", *IMAGE_FAST])
    assert code == 0, out
    assert "8x8 handwritten digits" in out and "images of shape (8, 8, 1)" in out
    from sklearn.datasets import load_digits

    pixels, digit = load_digits(return_X_y=True)
    images = ((pixels - pixels.mean()) / pixels.std()).reshape(-1, 8, 8, 1)
    perm = np.random.default_rng(0).permutation(len(digit))
    np.testing.assert_allclose(seen[0], images[perm[:12]], rtol=ROUNDING_ATOL, atol=ROUNDING_ATOL)
    X, y, _, _ = verify.sample_data(8, 4, seed=0, images=True)
    np.testing.assert_array_equal(y, np.where(digit[perm[:8]] < 5, 1.0, -1.0))


@pytest.mark.parametrize("arch, extra, message", [
    (CNN_1D, [], r"The built-in image sample \(8x8 digits\) has 2 spatial axes, but .* is a 1-D convolutional "
                 r"architecture; pass your own inputs with --data"),
    (CNN_1D, ["--labels", "y.npy"], r"--labels gives the targets of the --data file; pass --data FILE with it"),
    (CNN_1D, ["--data", "seq.npy", "--labels", "seq.npy"], r"--labels .*seq\.npy must hold one target per sample of "
                                                           r".*seq\.npy, 14 values; got an array of shape \(14, 6, 2\)"),
    (CNN_1D, ["--data", "seq.npy", "--labels", "y.npy", "--target", "0"], r"Pass either --target .* or --labels"),
    (CNN_1D, ["--data", "seq.npy"], r"seq\.npy holds a 3-D array of shape \(14, 6, 2\) \(images\?\), which has no "
                                    r"target column; pass the targets in a file of their own with --labels FILE"),
    (ARCH, ["--data", "seq.npy", "--labels", "y.npy"], r"seq\.npy holds a 3-D array, samples of shape \(6, 2\), but .* is "
                                                       r"dense and reads one sample per row"),
    (CNN_2D, ["--data", "rows.csv", "--target", "-1"], r"rows\.csv holds a 2-D array, samples of shape \(12,\), but .* reads "
                                                       r"4-D images .* pass --input-shape H,W,C"),
])
def test_verify_image_data_errors(image_files, capsys, monkeypatch, arch, extra, message):
    import re

    tmp, _ = image_files
    monkeypatch.setattr(verify, "kernel_convergence", lambda *a, **k: pytest.fail("ran before the data were checked"))
    extra = [str(tmp / a) if a.endswith((".npy", ".csv")) else a for a in extra]
    code, _, err = _run(capsys, ["verify", arch, *extra, "--n-train", "8", "--n-test", "4", *IMAGE_FAST])
    assert code == 2
    assert re.search(message, err), err
