"""The on-disk cache survives damage, concurrency and unwritable locations.

Every test runs the library in a SUBPROCESS with its own NTK_INFINITE_CACHE_DIR (cache_dir()
and fingerprint() are fixed per process, and the user's real cache must stay untouched).
Kernels are compared with tests/naive.py's double loop, never with the cache under test.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ntk_infinite as nk
from ntk_infinite.compiler.cache import hashed_sources
from naive import naive_kernels
from tolerances import NAIVE_RTOL

ARCH = "Dense(w_std=1.2, b_std=0.1) > ReLU > Dense(w_std=1.2, b_std=0.1)"
SRC = Path(nk.__file__).resolve().parent.parent

KERNEL_SCRIPT = textwrap.dedent(
    f"""
    import json, warnings
    import numpy as np
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import ntk_infinite as nk
        kernel = nk.compile({ARCH!r})
        k = kernel(np.random.default_rng(0).normal(size=(5, 3)))
        stats = kernel.program.engine.stats
        info = nk.cache_info()
    print(json.dumps({{
        "nngp": k.nngp.tolist(), "ntk": k.ntk.tolist(),
        "cache_warnings": [str(w.message) for w in caught if issubclass(w.category, nk.CacheWarning)],
        "misses": sum(stats.cache_misses.values()), "hits": sum(stats.cache_hits.values()),
        "damaged": info.damaged, "directory": str(info.directory),
    }}))
    """
)


def _env(cache, **extra):
    return dict(os.environ, NTK_INFINITE_CACHE_DIR=str(cache), PYTHONPATH=str(SRC), **extra)


def _python(script, cache, *args, env=None):
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          env=env or _env(cache), timeout=900)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _reference():
    arch = nk.parse_architecture(ARCH)
    return naive_kernels(arch, np.random.default_rng(0).normal(size=(5, 3)))


def _assert_correct(result):
    nngp, ntk = _reference()
    np.testing.assert_allclose(result["nngp"], nngp, rtol=NAIVE_RTOL, atol=0)
    np.testing.assert_allclose(result["ntk"], ntk, rtol=NAIVE_RTOL, atol=0)


@pytest.fixture(scope="module")
def clean_cache(tmp_path_factory):
    """A cache filled by one process (compiles the ReLU engine once for the whole module)."""
    root = tmp_path_factory.mktemp("clean_cache")
    result = _python(KERNEL_SCRIPT, root)
    _assert_correct(result)
    assert result["cache_warnings"] == [] and result["misses"] == 1
    return root


def _copy(clean_cache, tmp_path):
    dst = tmp_path / "cache"
    shutil.copytree(clean_cache, dst)  # copy2 keeps mtimes, so Numba's index stays valid
    (fp_dir,) = dst.iterdir()
    return dst, fp_dir


def _artefacts(fp_dir, kind):
    derived = sorted(fp_dir.glob("derived_*.txt"))
    tile = [p for p in derived if "def tile_" in p.read_text(errors="replace")]
    return {
        "tile": tile,
        "derived": derived,
        "module": sorted(fp_dir.glob("_ntk_infinite_engine_*.py")),
        "nbi": sorted(fp_dir.glob("__pycache__/*.nbi")),
        "nbc": sorted(fp_dir.glob("__pycache__/*.nbc")),
    }[kind]


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garble":
        path.write_bytes(bytes(0xFF if i % 7 == 0 else b for i, b in enumerate(data)))
    elif how == "wrong":  # valid code computing a 1% larger NTK, checksum line left as it was
        text = data.decode()
        assert "td = gsc * gg" in text
        path.write_text(text.replace("td = gsc * gg", "td = 1.01 * gsc * gg"))
    else:  # pragma: no cover
        raise ValueError(how)


def _assert_recovered(result, cache_root):
    _assert_correct(result)
    assert len(result["cache_warnings"]) == 1, result["cache_warnings"]
    assert str(cache_root) in result["cache_warnings"][0]
    assert result["damaged"] == 0, "a damaged entry was left in place"


def test_every_kind_of_damage_at_once_is_rebuilt_with_one_warning(clean_cache, tmp_path):
    """Wrong-but-valid derived tile, truncated generated module, truncated Numba index and
    garbled Numba data: the next process computes the right kernel and warns once."""
    root, fp_dir = _copy(clean_cache, tmp_path)
    _damage(_artefacts(fp_dir, "tile")[0], "wrong")
    _damage(_artefacts(fp_dir, "module")[0], "truncate")
    _damage(_artefacts(fp_dir, "nbi")[0], "truncate")
    _damage(_artefacts(fp_dir, "nbc")[0], "garble")
    result = _python(KERNEL_SCRIPT, root)
    _assert_recovered(result, root)
    assert result["misses"] == 1


CASES = [("tile", "wrong"), ("module", "wrong")] + [
    (kind, how) for kind in ("derived", "module", "nbi", "nbc") for how in ("truncate", "garble", "empty")
]


@pytest.mark.slow
@pytest.mark.parametrize("kind,how", CASES)
def test_each_damaged_artefact_is_rebuilt(clean_cache, tmp_path, kind, how):
    root, fp_dir = _copy(clean_cache, tmp_path)
    targets = _artefacts(fp_dir, kind)
    assert targets
    for path in targets:
        _damage(path, how)
    _assert_recovered(_python(KERNEL_SCRIPT, root), root)
    again = _python(KERNEL_SCRIPT, root)  # repaired for good: no warning, Numba cache hit
    _assert_correct(again)
    assert again["cache_warnings"] == [] and again["misses"] == 0 and again["hits"] == 1


@pytest.mark.slow
def test_damaged_derivation_behind_a_missing_tile_is_rederived(clean_cache, tmp_path):
    """With the tile and module gone, the tile is regenerated from the other derived entries,
    all of them garbled: each is derived again."""
    root, fp_dir = _copy(clean_cache, tmp_path)
    for path in _artefacts(fp_dir, "tile") + _artefacts(fp_dir, "module"):
        path.unlink()
    for path in _artefacts(fp_dir, "derived"):
        _damage(path, "garble")
    _assert_recovered(_python(KERNEL_SCRIPT, root), root)


@pytest.mark.slow
def test_concurrent_processes_compile_the_same_engine(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", KERNEL_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env(tmp_path)) for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        _assert_correct(result)
        assert result["cache_warnings"] == []
    after = _python(KERNEL_SCRIPT, tmp_path)
    assert after["cache_warnings"] == [] and after["misses"] == 0 and after["damaged"] == 0


# ---------------------------------------------------------------------- cheap (no Numba compile)
CONCURRENT_SCRIPT = textwrap.dedent(
    """
    import json, sys, time, warnings
    warnings.simplefilter("error")
    from ntk_infinite.compiler.codegen import cached_text, load_module
    start = float(sys.argv[1])
    time.sleep(max(0.0, start - time.time()))
    def produce():
        time.sleep(0.3)  # all writers are inside the producer at the same time
        return "".join(f"line {i}: {'x' * 200}\\n" for i in range(2000))
    text = cached_text("concurrency-test-key", produce)
    module = load_module("VALUE = " + repr(len(text)) + "\\n" + "# padding\\n" * 5000, prefix="conc")
    # Then all rewrite and reread one entry for a second: a reader must never see half a file
    # (read_entry would warn, and warnings are errors here).
    from ntk_infinite.compiler.cache import cache_dir, read_entry, write_entry
    path = cache_dir() / "derived_rewritten.txt"
    rounds = 0
    while rounds < 100 or time.time() < start + 1.0:
        write_entry(path, text)
        assert read_entry(path) == text
        rounds += 1
    print(json.dumps({"length": len(text), "value": module.VALUE}))
    """
)


def test_concurrent_writers_all_succeed_and_agree(tmp_path):
    import time

    start = str(time.time() + 3.0)  # after every interpreter has imported the library
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_SCRIPT, start], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env(tmp_path)) for _ in range(3)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    expected = 2000 * len("line 0: " + "x" * 200 + "\n") + sum(len(str(i)) - 1 for i in range(2000))
    assert results == [{"length": expected, "value": expected}] * 3
    (fp_dir,) = tmp_path.iterdir()
    assert sorted(p.suffix for p in fp_dir.iterdir()) == [".py", ".txt", ".txt"], "temporary files left behind"


UNWRITABLE_SCRIPT = textwrap.dedent(
    """
    import json, warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import ntk_infinite as nk
        from ntk_infinite.compiler.codegen import cached_text, load_module
        a = cached_text("unwritable-a", lambda: "first")
        b = cached_text("unwritable-b", lambda: "second")
        module = load_module("VALUE = 42\\n", prefix="ro")
        info = nk.cache_info()
    print(json.dumps({"a": a, "b": b, "value": module.VALUE, "temporary": info.temporary,
                      "directory": str(info.directory), "entries": info.entries,
                      "warnings": [str(w.message) for w in caught if issubclass(w.category, nk.CacheWarning)]}))
    """
)


def test_unwritable_cache_dir_falls_back_to_a_temporary_directory(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    configured = blocker / "cache"  # cannot be created, even as root
    result = _python(UNWRITABLE_SCRIPT, configured)
    assert (result["a"], result["b"], result["value"]) == ("first", "second", 42)
    assert result["temporary"] and result["entries"] == 3
    assert len(result["warnings"]) == 1 and str(configured) in result["warnings"][0]
    assert result["directory"] in result["warnings"][0]
    assert not Path(result["directory"]).exists(), "the temporary cache was not removed at exit"


INFO_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, os
    import ntk_infinite as nk
    from ntk_infinite.cli import main
    from ntk_infinite.compiler.codegen import cached_text, load_module

    def cli(*args):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["cache", *args]) == 0
        return out.getvalue()

    for i in range(3):
        cached_text(f"info-test-{i}", lambda: "payload " * 100)
    load_module("VALUE = 1\\n", prefix="info")
    info = nk.cache_info()
    walk = [os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(info.directory) for f in names]
    texts = [cli("--info"), cli("--clear"), cli()]
    cached_text("after-clear", lambda: "v")
    cleared = nk.clear_cache()
    print(json.dumps({"directory": str(info.directory), "fingerprint": info.fingerprint, "entries": info.entries,
                      "files": info.files, "bytes": info.bytes, "damaged": info.damaged,
                      "others": list(info.other_fingerprints), "texts": texts,
                      "walk": [len(walk), sum(walk)],
                      "cleared": [cleared.entries, str(cleared.directory)]}))
    """
)


def test_cache_info_clear_cache_and_the_cli(tmp_path):
    stale = tmp_path / "0123456789abcdef"  # a directory left by another version
    stale.mkdir()
    (stale / "derived_old.txt").write_text("old")
    (tmp_path / "not_ours.txt").write_text("keep me")
    result = _python(INFO_SCRIPT, tmp_path)
    directory = Path(result["directory"])
    assert directory == tmp_path / result["fingerprint"]
    assert (result["entries"], result["damaged"], result["others"]) == (4, 0, ["0123456789abcdef"])
    assert [result["files"], result["bytes"]] == result["walk"]
    info_text, clear_text, empty_text = result["texts"]
    assert str(directory) in info_text and result["fingerprint"] in info_text and "4 (0 damaged)" in info_text
    assert f"removed {directory} ({result['files']} files) and 1 other" in clear_text
    assert "0 (0 damaged), 0 files" in empty_text
    assert result["cleared"] == [1, str(directory)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_ours.txt"]


# ---------------------------------------------------------------------- the fingerprint
def test_fingerprint_hashes_every_source_file_but_the_cli_and_reports():
    package = Path(nk.__file__).resolve().parent
    expected = {p for p in package.rglob("*.py")
                if p.name != "cli.py" or p.parent != package} - set(package.joinpath("reports").rglob("*.py"))
    assert set(hashed_sources()) == expected
    assert package / "compiler" / "duals" / "partials.py" in expected


FINGERPRINT_SCRIPT = textwrap.dedent(
    """
    import json
    from pathlib import Path
    import ntk_infinite
    from ntk_infinite.compiler.codegen import fingerprint
    pkg = Path(ntk_infinite.__file__).parent
    prints = [fingerprint()]
    for rel in ("compiler/duals/partials.py", "cli.py"):
        with open(pkg / rel, "a") as fh:
            fh.write("\\n# an edit\\n")
        fingerprint.cache_clear()
        prints.append(fingerprint())
    print(json.dumps(prints))
    """
)


def test_editing_a_source_file_changes_the_fingerprint(tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(SRC / "ntk_infinite", copy / "ntk_infinite", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(copy), NTK_INFINITE_CACHE_DIR=str(tmp_path / "c"))
    before, partials_edited, cli_edited = _python(FINGERPRINT_SCRIPT, None, env=env)
    assert before != partials_edited, "an edit of compiler/duals/partials.py kept the old cache"
    assert cli_edited == partials_edited, "an edit of the command line should not invalidate the cache"
