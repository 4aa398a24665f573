"""Hostile files for ``ntk-infinite gram`` and a damaged on-disk cache.

CLI contract: a user mistake ends with exit status 2 (or argparse's/SystemExit's own
non-zero status) and a one-line message on stderr, never a Python traceback; a successful run
writes finite matrices (or says why not).

Cache contract: whatever is in the cache directory (truncated, garbled, emptied files), a
fresh process computes the right kernel. The cache directory is chosen once per process, so
this runs in a subprocess with NTK_INFINITE_CACHE_DIR pointing at a temporary copy of this
process's (warm) cache, damaged file by file; the subprocess has to rebuild what it cannot
read, which compiles Numba code (10-60 s), so only one damage pattern runs by default.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ntk_infinite as nk
from hostile_strategies import (  # noqa: F401 - hang_guard is an autouse fixture
    MEMORY_HEADROOM,
    assert_no_hang_or_crash,
    hang_guard,
    run_forked,
    run_here,
)
from naive import naive_kernels
from ntk_infinite.cli import main
from tolerances import NAIVE_RTOL

ARCH = "Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)"
KERNEL = nk.compile(ARCH)
KERNEL(np.eye(2))  # build the engine before any fork


def _gram(args, capsys):
    """Run ``main(["gram", *args])`` and return (status, stderr, outcome)."""
    out = run_here(main, ["gram", *args])
    err = capsys.readouterr().err
    assert_no_hang_or_crash_or_exit(out)
    if out.kind == "raised":  # SystemExit from argparse or load_matrix
        code = out.value if out.value is not None else 2
        return code, err + out.message, out
    return out.value, err, out


def assert_no_hang_or_crash_or_exit(out):
    if out.kind == "raised" and out.exc_names[0] == "builtins.SystemExit":
        out.value = None
        assert out.message.strip() not in ("", "0"), "SystemExit without a message or with status 0"
        return
    assert out.kind == "ok", f"the command line let an exception escape: {out.describe()}"


def _assert_clean_failure(status, err):
    assert status not in (0, None), f"expected a failure status, got {status}; stderr {err!r}"
    assert err.strip(), "a failure must say why on stderr"
    assert "Traceback" not in err, err


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 3))
    np.save(tmp_path / "x.npy", X)
    paths = {"x": tmp_path / "x.npy", "out": tmp_path / "k.npz"}

    def write(name, content, mode="w"):
        path = tmp_path / name
        with open(path, mode) as fh:
            fh.write(content)
        return path

    raw = (tmp_path / "x.npy").read_bytes()
    paths.update({
        "garbage_npy": write("garbage.npy", bytes(rng.integers(0, 256, 200, dtype=np.uint8)), "wb"),
        "truncated_npy": write("truncated.npy", raw[: len(raw) // 2], "wb"),
        "empty_npy": write("empty.npy", b"", "wb"),
        "empty_csv": write("empty.csv", ""),
        "strings_csv": write("strings.csv", "1,2,3\n4,five,6\n"),
        "ragged_csv": write("ragged.csv", "1,2,3\n4,5\n"),
        "nan_csv": write("nan.csv", "1,2,3\nnan,5,6\n"),
        "inf_csv": write("inf.csv", "1,2,3\n4,inf,6\n"),
        "spaces_txt": write("spaces.txt", "1 2 3\n4 5 6\n"),
        "huge_csv": write("huge.csv", "1e300,2e300,3e300\n-1e300,1e300,0\n"),
        "wrong_ext": write("x.xlsx", "1,2,3\n"),
    })
    for name, arr in {"vec": np.ones(3), "cube": np.ones((2, 2, 2)), "complex": np.ones((2, 3)) * 1j,
                      "wide": np.ones((2, 4)), "strings": np.array([["a", "b", "c"]])}.items():
        np.save(tmp_path / f"{name}.npy", arr)
        paths[f"{name}_npy"] = tmp_path / f"{name}.npy"
    np.save(tmp_path / "object.npy", np.array([[1, None, 3]], dtype=object), allow_pickle=True)
    paths["object_npy"] = tmp_path / "object.npy"
    paths["missing"] = tmp_path / "does_not_exist.npy"
    paths["a_directory"] = tmp_path
    return paths


BAD_X = ["garbage_npy", "truncated_npy", "empty_npy", "strings_csv", "ragged_csv", "nan_csv", "inf_csv",
         "spaces_txt", "wrong_ext", "vec_npy", "cube_npy", "complex_npy", "strings_npy", "object_npy", "missing",
         "a_directory"]


@pytest.mark.parametrize("name", BAD_X)
def test_gram_bad_input_file(files, capsys, name):
    status, err, _ = _gram([ARCH, str(files[name]), "-o", str(files["out"]), "-q"], capsys)
    _assert_clean_failure(status, err)


@pytest.mark.parametrize("name", ["wide_npy", "nan_csv", "missing"])
def test_gram_bad_x2_file(files, capsys, name):
    status, err, _ = _gram([ARCH, str(files["x"]), "--x2", str(files[name]), "-o", str(files["out"]), "-q"], capsys)
    _assert_clean_failure(status, err)


@pytest.mark.parametrize(
    "extra",
    [
        ["--get", "bogus"],
        ["--get", ""],
        ["--get", "nngp,,ntk,x"],
        ["-o", "/nonexistent-dir/sub/k.npz"],
    ],
)
def test_gram_bad_options(files, capsys, extra):
    args = [ARCH, str(files["x"]), "-q"] + (extra if "-o" in extra else extra + ["-o", str(files["out"])])
    status, err, _ = _gram(args, capsys)
    _assert_clean_failure(status, err)


@pytest.mark.parametrize(
    "arch",
    ["Dense > Relu6 > Dense", "", "Dense(w_std=1, w_std=2) > ReLU > Dense", "ReLU > Dense", "Dense(" * 50,
     "1*(" * 5000 + "Dense" + ")" * 5000],
    ids=["unknown_layer", "empty", "duplicate_keyword", "activation_first", "unclosed", "nested_5000"],
)
def test_gram_bad_architecture(files, capsys, arch):
    status, err, _ = _gram([arch, str(files["x"]), "-o", str(files["out"]), "-q"], capsys)
    _assert_clean_failure(status, err)


def test_gram_huge_repetition_under_memory_cap(files):
    """The CLI with 10⁸ layers must refuse before building them (capped address space)."""
    out = run_forked(main, ["gram", "99999999*(Dense > ReLU) > Dense", str(files["x"]), "-o", str(files["out"]), "-q"],
                     timeout=60, memory_headroom=MEMORY_HEADROOM)
    assert_no_hang_or_crash(out)
    assert out.kind == "ok" and out.value == 2, out.describe()


def test_gram_empty_csv_is_clear(files, capsys):
    """An empty file: a clean error, or an empty result; never a traceback."""
    status, err, _ = _gram([ARCH, str(files["empty_csv"]), "-o", str(files["out"]), "-q"], capsys)
    if status == 0:
        saved = np.load(files["out"])
        assert all(saved[k].size == 0 for k in saved)
    else:
        _assert_clean_failure(status, err)


def test_gram_huge_values_never_silently_nan(files, capsys):
    status, err, out = _gram([ARCH, str(files["huge_csv"]), "-o", str(files["out"])], capsys)
    if status != 0:
        _assert_clean_failure(status, err)
        return
    saved = np.load(files["out"])
    for k in saved:
        assert not np.isnan(saved[k]).any(), f"NaN written to {k}: {saved[k]}"
        assert np.isfinite(saved[k]).all() or out.warned(UserWarning) or "warn" in err.lower(), f"silent inf in {k}"


# ----------------------------------------------------------------------------- damaged cache
_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, ntk_infinite as nk
    X = np.load(sys.argv[1])
    k = nk.compile(sys.argv[2])(X)
    np.save(sys.argv[3], np.stack([k.nngp, k.ntk]))
    """
)


def _damage(root, how, rng):
    """Damage every file under ``root``; ``how`` is one pattern or "mixed" (a pattern per file)."""
    patterns = ["truncate", "garble", "empty", "junk_text"]
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert files, f"nothing to damage under {root}"
    for i, path in enumerate(files):
        kind = patterns[i % len(patterns)] if how == "mixed" else how
        data = path.read_bytes()
        if kind == "truncate":
            data = data[: len(data) // 2]
        elif kind == "garble":
            buf = bytearray(data)
            for j in rng.integers(0, max(len(buf), 1), size=max(len(buf) // 20, 1)):
                if buf:
                    buf[j] = int(rng.integers(0, 256))
            data = bytes(buf)
        elif kind == "empty":
            data = b""
        else:
            data = b"def broken(:\n  \x00\xff not python, not sympy, not numba\n"
        path.write_bytes(data)
    return len(files)


def _fresh_process_kernel(tmp_path, how, seed=0):
    from ntk_infinite.compiler.codegen import cache_dir

    warm = cache_dir()
    copy = tmp_path / "cache" / warm.name
    shutil.copytree(warm, copy, ignore=shutil.ignore_patterns("*.tmp"))
    n = _damage(copy, how, np.random.default_rng(seed))
    X = np.random.default_rng(seed).normal(size=(6, 3))
    np.save(tmp_path / "x.npy", X)
    env = dict(os.environ, NTK_INFINITE_CACHE_DIR=str(tmp_path / "cache"))
    for attempt in range(2):  # the second process sees whatever the first one left behind
        try:
            cmd = [sys.executable, "-c", _SCRIPT, str(tmp_path / "x.npy"), ARCH, str(tmp_path / "k.npy")]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            pytest.fail(f"a fresh process with a damaged cache ({how}, {n} files) did not finish in 600 s")
        assert proc.returncode == 0, f"damaged cache ({how}, {n} files), run {attempt + 1}:\n{proc.stderr[-3000:]}"
        got = np.load(tmp_path / "k.npy")
        S, T = naive_kernels(nk.parse_architecture(ARCH), X)
        np.testing.assert_allclose(got[0], S, rtol=NAIVE_RTOL)
        np.testing.assert_allclose(got[1], T, rtol=NAIVE_RTOL)


@pytest.mark.slow  # the default run has the same property in test_cache.py (every kind of damage at once)
def test_damaged_cache_mixed(tmp_path):
    _fresh_process_kernel(tmp_path, "mixed")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncate", "garble", "empty", "junk_text"])
def test_damaged_cache_each_pattern(tmp_path, how):
    _fresh_process_kernel(tmp_path, how, seed=1)
