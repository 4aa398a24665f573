"""Table generators: every table of the project, reproducible by one command.

Each module ``ntk_infinite.reports.<name>`` defines

    def write_table(out_dir: pathlib.Path, quick: bool = False) -> pathlib.Path

which runs its measurement and writes ``out_dir/<name>.md`` (plus PNG plots when matplotlib
is installed). Modules are discovered at run time, so a new table needs no registration.
``ntk-infinite tables`` runs them all; ``--only`` selects some, ``--quick`` runs reduced
versions for a smoke test.
"""

from __future__ import annotations

import importlib
import pathlib
import pkgutil
import sys
import time
import traceback

__all__ = ["table_modules", "write_tables", "register"]


def table_modules() -> list:
    """Names of the report modules (those defining ``write_table``), sorted."""
    names = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if callable(getattr(module, "write_table", None)):
            names.append(info.name)
    return sorted(names)


def write_tables(out_dir="tables", *, quick: bool = False, only=None, stream=None) -> dict:
    """Run every (or each ``only``) report module; returns ``{name: path or exception}``.

    A failing module does not stop the others; its exception is returned in its place.
    """
    stream = stream or sys.stdout
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    available = table_modules()
    names = available if not only else list(only)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(
            f"Unknown table(s) {', '.join(map(repr, unknown))}; available: {', '.join(available)}. "
            "Pass names from this list to --only."
        )
    results = {}
    for name in names:
        module = importlib.import_module(f"{__name__}.{name}")
        t0 = time.perf_counter()
        stream.write(f"[tables] {name}: running{' (quick)' if quick else ''} ...\n")
        stream.flush()
        try:
            path = module.write_table(out_dir, quick=quick)
        except Exception as exc:  # report and go on with the other tables
            traceback.print_exc()
            results[name] = exc
            stream.write(f"[tables] {name}: FAILED after {time.perf_counter() - t0:.1f} s: {exc}\n")
        else:
            results[name] = path
            stream.write(f"[tables] {name}: wrote {path} in {time.perf_counter() - t0:.1f} s\n")
        stream.flush()
    return results


def _cmd_tables(args) -> int:
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    results = write_tables(args.out, quick=args.quick, only=only)
    failed = [n for n, r in results.items() if isinstance(r, Exception)]
    if failed:
        print(f"ntk-infinite tables: {len(failed)} table(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def register(subparsers) -> None:
    """Add ``ntk-infinite tables``."""
    p = subparsers.add_parser(
        "tables",
        help="regenerate every table of the project (performance, activations, real data, convergence, ...)",
        description="Run each table generator in ntk_infinite.reports and write markdown (and PNG plots when "
        "matplotlib is installed) to the output directory.",
    )
    p.add_argument("--out", default="tables", help="output directory (default ./tables)")
    p.add_argument("--quick", action="store_true", help="reduced sizes: a smoke test, not the published numbers")
    p.add_argument("--only", default=None, help="comma-separated table names (default: all); see --list")
    p.add_argument("--list", action="store_true", help="list the available tables and exit")
    p.set_defaults(func=lambda args: _list() if args.list else _cmd_tables(args))


def _list() -> int:
    for name in table_modules():
        print(name)
    return 0
