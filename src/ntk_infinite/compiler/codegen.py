"""Symbolic-to-Numba code generation and the on-disk cache.

sympy runs only at compile time. Expressions become plain Python source (after common
subexpression elimination) that Numba compiles; the source is written to a cache
directory as an importable module, so Numba's own ``cache=True`` applies and a second
process pays neither sympy nor LLVM again. Derived text is cached under a key that names
what it was derived from; the cache directory itself is keyed on a fingerprint of the
versions of this library, sympy, numba and Python and of the package's source files, so a
change anywhere invalidates it.

The cache lives in ``$NTK_INFINITE_CACHE_DIR/<fingerprint>``, else in
``~/.cache/ntk_infinite/<fingerprint>``; if that is not writable, a temporary directory is
used (with a :class:`~ntk_infinite.errors.CacheWarning`) and removed at exit. Every entry
carries a checksum and is written atomically; a damaged entry, or damaged Numba cache files,
are rebuilt with one warning per process. Details in :mod:`ntk_infinite.compiler.cache`; inspect or
empty the cache with :func:`ntk_infinite.cache_info` / :func:`ntk_infinite.clear_cache` or
``ntk-infinite cache --info | --clear``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import threading

import sympy as sp

from .cache import cache_dir, encode_entry, fingerprint, guard_numba_cache, read_entry, report_damage, write_entry

__all__ = ["cache_dir", "cached_text", "emit_assignments", "load_module", "fingerprint"]


def cached_text(key: str, producer) -> str:
    """Return the text cached under ``key``; on a miss (or a damaged entry) call
    ``producer()`` and store its result."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    path = cache_dir() / f"derived_{digest}.txt"
    text = read_entry(path)
    if text is None:
        text = producer()
        write_entry(path, text)
    return text


_LOADED: dict[str, object] = {}
#: Serialises writing, registering and executing generated modules: two threads asking for
#: the same source get the same, fully executed module (never a half-executed one from
#: ``sys.modules``, never two copies).
_LOAD_LOCK = threading.RLock()


def load_module(source: str, prefix: str = "gen"):
    """Write ``source`` to the cache (named by its hash) and import it as a module (once per
    process; safe to call from several threads at once).

    The file is compared with the expected bytes; a missing file is created (keeping one
    written concurrently by another process), a different one replaced (with a
    :class:`~ntk_infinite.errors.CacheWarning`). The module is compiled from the text in
    memory, so no ``.pyc`` is involved; its jitted functions recompile if Numba's cache
    files are unreadable (:func:`ntk_infinite.compiler.cache.guard_numba_cache`).
    """
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    name = f"_ntk_infinite_{prefix}_{digest}"
    module = _LOADED.get(name)
    if module is not None:
        return module
    with _LOAD_LOCK:
        if name in _LOADED:
            return _LOADED[name]
        path = cache_dir() / f"{name}.py"
        expected = encode_entry(path.name, source)
        try:
            current = path.read_bytes()
        except OSError:
            current = None
        if current != expected:
            if current is not None:
                report_damage(path, "content differs from the generated source")
            path = write_entry(path, source, replace=current is not None)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        code = compile(expected.decode(), str(path), "exec")
        sys.modules[name] = module
        try:
            exec(code, module.__dict__)  # noqa: S102 - our own generated, checksummed source
        except BaseException:
            sys.modules.pop(name, None)
            raise
        for obj in list(vars(module).values()):
            if hasattr(obj, "py_func"):
                guard_numba_cache(obj)
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
