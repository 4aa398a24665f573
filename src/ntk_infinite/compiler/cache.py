"""The on-disk cache of derivations and generated modules: location, integrity, management.

Location
--------
``$NTK_INFINITE_CACHE_DIR/<fingerprint>/`` when that variable is set, else
``~/.cache/ntk_infinite/<fingerprint>/``. The fingerprint (:func:`fingerprint`) hashes the
versions of this library, sympy, numba and Python and the bytes of every ``.py`` file of the
package except the command line (``cli.py``) and the ``reports`` subpackage, which only print
results and feed nothing into generated or cached code. Any edit to the numerical code
therefore starts a fresh directory; old ones stay until :func:`clear_cache` removes them.
If the directory cannot be created or written, a :class:`~ntk_infinite.errors.CacheWarning`
says so and a temporary directory is used instead, removed at interpreter exit.

Entries
-------
* ``derived_<hash of key>.txt``: text derived by sympy (expressions, generated tile source);
* ``_ntk_infinite_<prefix>_<hash of source>.py``: generated modules, imported from here so
  that Numba's ``cache=True`` keeps their machine code in ``__pycache__/*.nbi|*.nbc``.

Both start with one line ``# ntk_infinite cache entry sha256=<hex>``, the SHA-256 of the file
name and the payload, so a truncated, garbled or edited entry, or one copied over another,
fails the check. Every file is written to a temporary name in the same directory and moved
into place with :func:`os.replace`, so concurrent processes never see half an entry. A
damaged entry counts as absent: it is rebuilt, and the first one in a process issues a
:class:`~ntk_infinite.errors.CacheWarning` naming the directory. Numba's own files carry no
checksum; loading them is guarded instead (:func:`guard_numba_cache`): if Numba fails to read
them, they are deleted and the function is compiled again, with the same warning.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import CacheWarning

__all__ = [
    "CacheInfo",
    "cache_dir",
    "cache_info",
    "clear_cache",
    "fingerprint",
    "guard_numba_cache",
    "read_entry",
    "write_entry",
]

_PKG_DIR = Path(__file__).resolve().parents[1]  # the ntk_infinite package
#: Package files that only present results (nothing imported by the numerical code).
_NOT_HASHED = ("cli.py", "reports/")
_HEADER = b"# ntk_infinite cache entry sha256="
_ENTRY_PREFIXES = ("derived_", "_ntk_infinite_")
_WARNED: set[str] = set()
_WARN_LOCK = threading.Lock()


def _warn_once(kind: str, message: str) -> None:
    """One :class:`CacheWarning` per ``kind`` and process (a damaged cache is reported once)."""
    with _WARN_LOCK:
        if kind in _WARNED:
            return
        _WARNED.add(kind)
    warnings.warn(message, CacheWarning, stacklevel=4)


# ------------------------------------------------------------------ location and fingerprint
def hashed_sources() -> list[Path]:
    """The package's source files covered by :func:`fingerprint`, in a fixed order."""
    files = []
    for path in sorted(_PKG_DIR.rglob("*.py")):
        rel = path.relative_to(_PKG_DIR).as_posix()
        if not any(rel == ex or rel.startswith(ex) for ex in _NOT_HASHED):
            files.append(path)
    return files


@lru_cache(maxsize=1)
def fingerprint() -> str:
    """16 hex digits of SHA-256 over the library, sympy, numba and Python versions and the
    bytes of :func:`hashed_sources` (each with its relative path)."""
    import numba
    import sympy

    from .. import __version__

    h = hashlib.sha256(f"{__version__}|{sympy.__version__}|{numba.__version__}|{sys.version_info[:2]}".encode())
    for path in hashed_sources():
        h.update(b"\0" + path.relative_to(_PKG_DIR).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cache_base() -> Path:
    """The configured parent of the fingerprint directories (not created here)."""
    env = os.environ.get("NTK_INFINITE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ntk_infinite"


@lru_cache(maxsize=1)
def _temporary_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ntk_infinite_cache_"))
    atexit.register(shutil.rmtree, path, True)
    return path


@lru_cache(maxsize=1)
def cache_dir() -> Path:
    """This process's cache directory: ``cache_base()/fingerprint()``, created on first use,
    or a temporary directory (removed at exit, with a :class:`CacheWarning`) if unwritable."""
    path = cache_base() / fingerprint()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
        return path
    except OSError as exc:
        tmp = _temporary_dir()
        _warn_once(
            "unwritable",
            f"The ntk_infinite cache directory {path} cannot be used ({exc}); generated code goes to "
            f"the temporary directory {tmp} instead, removed at exit, so the next process compiles "
            "again. Point NTK_INFINITE_CACHE_DIR at a writable directory to keep it.",
        )
        return tmp


# ------------------------------------------------------------------ checksummed entries
def _checksum(name: str, payload: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\0" + payload).hexdigest().encode()


def encode_entry(name: str, text: str) -> bytes:
    """The bytes stored in the file ``name``: checksum line, then ``text`` in UTF-8."""
    payload = text.encode()
    return _HEADER + _checksum(name, payload) + b"\n" + payload


def _decode(name: str, data: bytes) -> str | None:
    head, newline, payload = data.partition(b"\n")
    if not newline or not head.startswith(_HEADER) or head[len(_HEADER):] != _checksum(name, payload):
        return None
    try:
        return payload.decode()
    except UnicodeDecodeError:  # pragma: no cover - the checksum matched bytes we encoded
        return None


def report_damage(path: Path, reason: str) -> None:
    """Warn (once per process) that a cache entry was unusable and is being rebuilt."""
    _warn_once(
        "damaged",
        f"The ntk_infinite cache in {path.parent} held an unusable entry ({path.name}: {reason}); it "
        "is ignored and rebuilt, as is any other damaged entry in this process (results are "
        "unaffected). If this keeps happening, check the disk or run 'ntk-infinite cache --clear'.",
    )


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        report_damage(path, f"unreadable: {exc}")
        return None


def read_entry(path: Path) -> str | None:
    """The text stored at ``path``, or None if absent or damaged (damage warns once)."""
    data = _read_bytes(path)
    if data is None:
        return None
    text = _decode(path.name, data)
    if text is None:
        report_damage(path, "checksum mismatch (truncated, garbled or edited)")
    return text


def write_entry(path: Path, text: str, *, replace: bool = True) -> Path:
    """Store ``text`` at ``path`` atomically and return where it went.

    With ``replace=False`` an existing file is kept (the caller checked it is the same
    entry): the first of several concurrent writers wins and the file is never touched
    again (older Numba versions stamp their cache index with the source file's mtime). If the
    directory is not writable the entry goes to the temporary directory instead (with a
    :class:`CacheWarning`).
    """
    data = encode_entry(path.name, text)
    try:
        _publish(path, data, replace)
        return path
    except OSError as exc:
        fallback = _temporary_dir() / path.name
        if fallback != path:
            _warn_once(
                "unwritable",
                f"Could not write to the ntk_infinite cache in {path.parent} ({exc}); using the "
                f"temporary directory {fallback.parent}, removed at exit.",
            )
            _publish(fallback, data, replace)
        return fallback


def _publish(path: Path, data: bytes, replace: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # clear_cache may have removed it
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if replace:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)  # atomic create-if-absent
        except FileExistsError:
            pass
        except OSError:  # file systems without hard links
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ------------------------------------------------------------------ Numba's own cache files
def guard_numba_cache(dispatcher) -> None:
    """Make ``dispatcher`` recompile instead of failing when its Numba cache is unreadable.

    Numba unpickles ``__pycache__/<function>.nbi`` (index) and ``.nbc`` (machine code)
    without checks, so a damaged file raises (UnpicklingError, EOFError, ...) in every new
    process. The wrapper deletes the function's index and data files, warns once, and
    reports a miss, so Numba compiles and saves fresh files. (It relies on Numba's
    ``Dispatcher._cache`` with ``load_overload`` and ``_cache_file._index_path``; other
    dispatchers are left alone.)
    """
    cache = getattr(dispatcher, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    index = getattr(cache_file, "_index_path", None)
    if index is None or not hasattr(cache, "load_overload"):
        return
    original = cache.load_overload

    def load_overload(sig, target_context):
        try:
            return original(sig, target_context)
        except Exception as exc:  # noqa: BLE001 - any failure to read the cache means "recompile"
            base = index[: -len(".nbi")]
            for path in [Path(index), *Path(base).parent.glob(Path(base).name + ".*.nbc")]:
                try:
                    path.unlink()
                except OSError:
                    pass
            report_damage(Path(index), f"Numba could not load it: {type(exc).__name__}: {exc}")
            return None

    cache.load_overload = load_overload


# ------------------------------------------------------------------ public management API
@dataclass(frozen=True)
class CacheInfo:
    """What :func:`cache_info` and :func:`clear_cache` report.

    Attributes
    ----------
    directory : Path
        This process's cache directory (``base / fingerprint`` unless ``temporary``).
    base : Path
        ``$NTK_INFINITE_CACHE_DIR`` or ``~/.cache/ntk_infinite``.
    fingerprint : str
    temporary : bool
        True if the configured directory was unusable and a temporary one is in use.
    entries : int
        Checksummed entries (derivations and generated modules) in ``directory``.
    damaged : int
        Of those, how many fail their checksum (they are rebuilt when next needed).
    files : int
        All files under ``directory``, including Numba's ``__pycache__``.
    bytes : int
        Their total size.
    other_fingerprints : tuple of str
        Directories under ``base`` left by other versions or sources of the library.
    other_bytes : int
        Their total size.
    """

    directory: Path
    base: Path
    fingerprint: str
    temporary: bool
    entries: int
    damaged: int
    files: int
    bytes: int
    other_fingerprints: tuple
    other_bytes: int

    def __str__(self) -> str:
        lines = [
            f"directory:   {self.directory}{'  (temporary, removed at exit)' if self.temporary else ''}",
            f"fingerprint: {self.fingerprint}",
            f"entries:     {self.entries} ({self.damaged} damaged), {self.files} files, {_size(self.bytes)}",
            f"other fingerprints under {self.base}: {len(self.other_fingerprints)}, {_size(self.other_bytes)}",
        ]
        return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _is_fingerprint_dir(path: Path) -> bool:
    name = path.name
    return path.is_dir() and len(name) == 16 and all(ch in "0123456789abcdef" for ch in name)


def _tree_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return len(files), sum(p.stat().st_size for p in files)


def cache_info() -> CacheInfo:
    """Location, fingerprint, size and integrity of the on-disk cache (nothing is changed)."""
    directory, base = cache_dir(), cache_base()
    entries = damaged = 0
    for path in sorted(directory.iterdir()) if directory.is_dir() else ():  # absent after clear_cache()
        if path.is_file() and path.name.startswith(_ENTRY_PREFIXES):
            entries += 1
            data = _read_bytes(path)
            damaged += data is None or _decode(path.name, data) is None
    files, size = _tree_size(directory)
    others = [p for p in (sorted(base.iterdir()) if base.is_dir() else []) if _is_fingerprint_dir(p) and p != directory]
    return CacheInfo(directory, base, fingerprint(), directory.parent != base, entries, damaged, files, size,
                     tuple(p.name for p in others), sum(_tree_size(p)[1] for p in others))


def clear_cache() -> CacheInfo:
    """Delete this library's cache: every fingerprint directory under the cache base (and the
    temporary directory if one is in use). Other files in ``$NTK_INFINITE_CACHE_DIR`` are kept.

    Returns the :class:`CacheInfo` taken just before deletion (what was removed). Modules
    already loaded in this process keep working; new entries are written again on demand.
    """
    info = cache_info()
    targets = [info.base / name for name in info.other_fingerprints] + [info.directory]
    for path in targets:
        shutil.rmtree(path, ignore_errors=True)
    return info
