"""Symbolic-to-Numba code generation and the on-disk cache.

sympy runs only at compile time. Expressions become plain Python source (after common
subexpression elimination) that Numba compiles; the source is written to a cache
directory as an importable module, so Numba's own ``cache=True`` applies and a second
process pays neither sympy nor LLVM again. Cache entries are keyed on the text they
were generated from and on the versions of this library, sympy and numba, plus a hash of
the library's numerical core, so a change anywhere invalidates them.

The cache lives in ``$NTK_INFINITE_CACHE_DIR`` or ``~/.cache/ntk_infinite``; when neither
is writable a temporary directory is used (and the caching is lost at exit).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import sympy as sp

__all__ = ["cache_dir", "cached_text", "emit_assignments", "load_module", "fingerprint"]

_PKG_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def fingerprint() -> str:
    """Hash of everything generated code depends on: versions and the numerical core."""
    import numba

    from . import __version__

    h = hashlib.sha256()
    h.update(f"{__version__}|{sp.__version__}|{numba.__version__}|{sys.version_info[:2]}".encode())
    for rel in ("_numerics.py", "codegen.py", "engine_source.py", "duals/arccos.py", "duals/series.py"):
        path = _PKG_DIR / rel
        if path.exists():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=1)
def cache_dir() -> Path:
    """The directory for generated code and derivations (created on first use)."""
    candidates = []
    if os.environ.get("NTK_INFINITE_CACHE_DIR"):
        candidates.append(Path(os.environ["NTK_INFINITE_CACHE_DIR"]))
    candidates.append(Path.home() / ".cache" / "ntk_infinite")
    for base in candidates:
        path = base / fingerprint()
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
            return path
        except OSError:
            continue
    path = Path(tempfile.mkdtemp(prefix="ntk_infinite_cache_"))
    return path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cached_text(key: str, producer) -> str:
    """Return the text cached under ``key``; on a miss call ``producer()`` and store it."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    path = cache_dir() / f"derived_{digest}.txt"
    if path.exists():
        return path.read_text()
    text = producer()
    _atomic_write(path, text)
    return text


_LOADED: dict[str, object] = {}
#: Serialises writing, registering and executing generated modules: two threads asking for
#: the same source get the same, fully executed module (never a half-executed one from
#: ``sys.modules``, never two copies).
_LOAD_LOCK = threading.RLock()


def load_module(source: str, prefix: str = "gen"):
    """Write ``source`` to the cache (named by its hash) and import it as a module (once per
    process; safe to call from several threads at once)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    name = f"_ntk_infinite_{prefix}_{digest}"
    module = _LOADED.get(name)
    if module is not None:
        return module
    with _LOAD_LOCK:
        if name in _LOADED:
            return _LOADED[name]
        path = cache_dir() / f"{name}.py"
        if not path.exists() or path.read_text() != source:
            _atomic_write(path, source)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        _LOADED[name] = module
        return module


def emit_assignments(outputs, indent: str = "", prefix: str = "_x") -> list[str]:
    """Python source lines computing ``outputs`` ([(name, sympy expr)]) with shared CSE.

    Functions print fully qualified (``math.sqrt``), which Numba compiles natively.
    """
    names = [n for n, _ in outputs]
    exprs = [sp.sympify(e) for _, e in outputs]
    symbols = sp.numbered_symbols(prefix)
    replacements, reduced = sp.cse(exprs, symbols=symbols, optimizations="basic")
    lines = [f"{indent}{sym} = {_pycode(expr)}" for sym, expr in replacements]
    lines += [f"{indent}{name} = {_pycode(expr)}" for name, expr in zip(names, reduced)]
    return lines


def _pycode(expr) -> str:
    # Floats in full precision; integers as Python floats where they meet floats is fine.
    return sp.pycode(sp.sympify(expr), fully_qualified_modules=True, full_prec=True)
