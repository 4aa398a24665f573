"""The ``ntk-infinite`` command line.

Subcommands are contributed by modules listed in :data:`COMMAND_MODULES`; each defines
``register(subparsers)`` that adds its parser and sets ``func(args) -> int``. Core commands:

* ``gram ARCH X.npy|X.csv [--x2 FILE] [--get nngp,ntk] [--input-shape H,W,C] -o OUT.npz``: Gram
  matrices to .npz; with ``-o K.zarr`` (or ``--format npy``) block by block into a resumable on-disk
  store (``--block N``, ``--resume/--no-resume``, ``--overwrite``, ``--dtype float32``). Dense architectures read one sample per row; convolutional ones read
  images, a 3-D (n, L, C) or 4-D (n, H, W, C) .npy, or rows reshaped by ``--input-shape``.
* ``demo``: compile a default architecture and evaluate it on the shipped breast-cancer data.
* ``cache [--info | --clear]``: where the on-disk cache is and how big, or delete it.
* ``signal ACT [--sigma-w W] [--sigma-b B ...]``: mean-field quantities of an activation, or its
  edge of chaos (:mod:`ntk_infinite.signal`).

User mistakes (a missing file, an output folder that does not exist, a bad architecture)
exit with status 2 and a message on stderr saying what to do; files are checked before any
compiling or computing starts.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

import numpy as np

from .errors import InputError, ParameterError

#: Modules that add subcommands (missing optional ones are skipped).
COMMAND_MODULES = (
    "ntk_infinite.cli",
    "ntk_infinite.compiler.formula",
    "ntk_infinite.verify.runners",
    "ntk_infinite.reports",
    "ntk_infinite.signal.command",
)

DEMO_ARCH = "3*(Dense(w_std=1.4142135623730951, b_std=0.1) > ReLU) > Dense(w_std=1.4142135623730951, b_std=0.1)"


class ProgressBar:
    """A minimal progress bar on stderr, shown only for jobs that take a while: percentage, elapsed
    time, rate (``unit`` per second) and the time left at that rate.

    ``done_before`` (settable after construction) is the count already done when timing started
    (a resumed job): the rate and the time left count only what this run does.
    """

    def __init__(self, label: str, stream=None, delay: float = 0.5, unit: str = "items", done_before: int = 0):
        self.label = label
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.delay = delay
        self.unit = unit
        self.done_before = done_before
        self.shown = False
        self.finished = False

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.perf_counter() - self.start
        if self.finished or (elapsed < self.delay and done < total):
            return
        frac = done / max(total, 1)
        bar = "#" * int(30 * frac)
        rate = (done - self.done_before) / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        self.stream.write(f"\r{self.label} [{bar:<30}] {100 * frac:5.1f}%  {elapsed:6.1f}s elapsed, "
                          f"{rate:.3g} {self.unit}/s, ~{eta:5.1f}s left")
        self.shown = True
        if done >= total:
            self.stream.write("\n")
            self.finished = True
        self.stream.flush()


#: File types ``load_matrix`` reads.
MATRIX_SUFFIXES = (".npy", ".csv", ".txt")


def check_input_file(path: str, what: str = "input file") -> str:
    """Return ``path`` if it is a readable .npy/.csv/.txt file, else raise :class:`InputError`
    saying which path was looked for and what to do. Run before any compiling starts."""
    if not os.path.isfile(path):
        where = os.path.abspath(path)
        reason = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
        raise InputError(f"The {what} {path!r} {reason} (looked for {where}); check the path and the current folder.")
    if not path.endswith(MATRIX_SUFFIXES):
        raise InputError(
            f"The {what} {path!r} has an unknown type; expected a .npy file or a comma-separated .csv/.txt file. "
            "Convert it, e.g. with np.save('X.npy', X)."
        )
    return path


def check_output_path(path: str, suffix: str = "") -> str:
    """The path that will actually be written (``suffix`` appended when missing), after checking
    that its folder exists; raises :class:`InputError` naming the folder otherwise."""
    if suffix and not path.endswith(suffix):
        path += suffix
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise InputError(
            f"The output folder {folder!r} of {path!r} does not exist (looked for {os.path.abspath(folder)}); "
            f"create it first (mkdir -p {folder}) or choose another output path with -o."
        )
    return path


def read_table(path: str) -> tuple[np.ndarray, list[str] | None]:
    """A 2-D array from .npy or .csv/.txt (comma-separated), and the column names of a .csv
    header line (None without one)."""
    check_input_file(path)
    try:
        if path.endswith(".npy"):
            return np.load(path, allow_pickle=False), None
        with open(path) as fh:
            first = fh.readline()
        names = None if _is_numeric_row(first) else [v.strip().strip('"').strip("'") for v in first.rstrip("\n").split(",")]
        return np.loadtxt(path, delimiter=",", skiprows=0 if names is None else 1, ndmin=2), names
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(
            f"Could not read {path!r} as a {'NumPy .npy array' if path.endswith('.npy') else 'comma-separated table'}: "
            f"{type(exc).__name__}: {exc}. Save the data with np.save(path, X) (a numeric 2-D array) or as a "
            "CSV of numbers with an optional header line."
        ) from exc


def load_matrix(path: str) -> np.ndarray:
    """Read an array from .npy (any rank) or .csv (2-D, comma-separated, optional header line)."""
    return read_table(path)[0]


def parse_shape(text: str | None, flag: str = "--input-shape") -> tuple | None:
    """``"8,8,1"`` -> ``(8, 8, 1)``; None stays None. Raises :class:`ParameterError` otherwise."""
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        shape = ()
    if not shape or any(v <= 0 for v in shape):
        raise ParameterError(
            f"{flag} expects the shape of one image as comma-separated positive whole numbers, spatial sizes then "
            f"channels, such as 8,8,1; got {text!r}."
        )
    return shape


def as_kernel_inputs(kernel, X: np.ndarray, source: str, input_shape: tuple | None = None) -> np.ndarray:
    """``X`` read from ``source`` in the rank ``kernel`` takes, or an :class:`InputError` naming the
    command-line fix: rows for dense architectures; images (n, S₁, …, S_k, C) for convolutional
    ones, reshaped from rows (C order, channels last) when ``input_shape`` is given."""
    X = np.asarray(X)
    if not kernel.spatial:
        if input_shape is not None:
            raise InputError(
                f"--input-shape reshapes rows into images for a convolutional architecture, but {kernel!r} is dense "
                "and reads one sample per row. Drop --input-shape, or describe a convolutional architecture."
            )
        if X.ndim > 2:
            raise InputError(
                f"{source} holds a {X.ndim}-D array, samples of shape {X.shape[1:]}, but {kernel!r} is dense and reads "
                "one sample per row, (n, d). Save the samples flattened, np.save(path, X.reshape(len(X), -1)), or describe a "
                "convolutional architecture (Conv ... > Flatten or GlobalAvgPool > Dense) to use their spatial axes."
            )
        return X
    k = kernel.program.n_spatial
    layout = {1: "(n, L, C)", 2: "(n, H, W, C)"}.get(k, f"(n, S1, ..., S{k}, C)")
    example = {1: "16,1", 2: "8,8,1"}.get(k, ",".join(["4"] * k + ["1"]))
    if input_shape is not None:
        size = int(np.prod(input_shape))
        if len(input_shape) != k + 1 or X.ndim != 2 or X.shape[1] != size:
            got = f"rows of {X.shape[1]} values" if X.ndim == 2 else f"a {X.ndim}-D array, samples of shape {X.shape[1:]}"
            raise InputError(
                f"--input-shape {','.join(map(str, input_shape))} must give {k} spatial sizes and the channels of one "
                f"image of this {k}-D convolutional architecture, whose product is the number of values per row of "
                f"{source}; {source} holds {got}. Pass e.g. --input-shape {example}, or save the images themselves "
                f"as a {k + 2}-D .npy {layout}."
            )
        return X.reshape((X.shape[0],) + tuple(input_shape))
    if X.ndim != k + 2:
        other = (f", or describe a {X.ndim - 2}-D convolutional architecture (filter_shape with {X.ndim - 2} entries)"
                 if X.ndim > 2 else "")
        names = {1: "L,C", 2: "H,W,C"}.get(k, ",".join([f"S{i + 1}" for i in range(k)] + ["C"]))
        fix = (f"pass --input-shape {names} (the shape of one image, e.g. {example}) to reshape each row, or save "
               "the images" if X.ndim == 2 else "save the images")
        raise InputError(
            f"{source} holds a {X.ndim}-D array, samples of shape {X.shape[1:]}, but {kernel!r} is a {k}-D "
            f"convolutional architecture and reads {k + 2}-D images {layout}, channels last: {fix} as a {k + 2}-D .npy "
            f"(np.save(path, images)){other}."
        )
    return X


def _is_numeric_row(line: str) -> bool:
    try:
        [float(v) for v in line.strip().split(",") if v.strip()]
        return True
    except ValueError:
        return False


def _cmd_gram(args) -> int:
    import ntk_infinite as nk

    # Every file is checked before compiling, which can take seconds to minutes.
    check_input_file(args.x)
    if args.x2:
        check_input_file(args.x2, "--x2 file")
    fmt = _gram_output_format(args)
    # np.savez appends .npz to a name without it; append it here so that the path reported is the one written.
    output = check_output_path(args.output, ".npz" if fmt == "npz" else "")
    input_shape = parse_shape(args.input_shape)
    X1 = load_matrix(args.x)
    X2 = load_matrix(args.x2) if args.x2 else None
    kernel = nk.compile(args.arch)  # validation only: the engine is built by the first call
    X1 = as_kernel_inputs(kernel, X1, args.x, input_shape)
    X2 = None if X2 is None else as_kernel_inputs(kernel, X2, args.x2, input_shape)
    get = tuple(g.strip() for g in args.get.split(","))
    dtype = np.dtype(args.dtype)
    t0 = time.perf_counter()
    if fmt != "npz":
        store = kernel.gram_to(output, X1, X2, get=get, block=args.block, dtype=dtype, resume=args.resume,
                               overwrite=args.overwrite, format=fmt, progress=not args.quiet)
        if not args.quiet:
            print(f"wrote {', '.join(store.kernels)} {store.shape} {dtype.name} to {output} ({fmt} store, block "
                  f"{store.block}: {store.computed_blocks} blocks computed, {store.skipped_blocks} already done) in "
                  f"{time.perf_counter() - t0:.2f}s")
        return 0
    unit = "tiles" if dtype == np.float64 else "entries"  # float32 is computed in blocks of entries
    k = kernel(X1, X2, get=get, dtype=dtype, progress=ProgressBar("gram", unit=unit) if not args.quiet else None)
    seconds = time.perf_counter() - t0
    out = {name: getattr(k, name) for name in ("nngp", "ntk") if getattr(k, name) is not None}
    np.savez(output, **out)
    if not args.quiet:
        shape = next(iter(out.values())).shape
        print(f"wrote {', '.join(out)} {shape} to {output} in {seconds:.2f}s")
    return 0


def _gram_output_format(args) -> str:
    """"npz" (in memory, then one file), "zarr" or "npy" (block by block into a store), from --format or
    the suffix of -o; the store options are refused for .npz output."""
    fmt = args.format or ("zarr" if args.output.rstrip("/").endswith(".zarr") else "npz")
    if fmt == "npz":
        used = [flag for flag, on in (("--block", args.block is not None), ("--no-resume", args.resume is False),
                                      ("--overwrite", args.overwrite)) if on]
        if used:
            raise InputError(
                f"{', '.join(used)} apply to on-disk stores written block by block, but -o {args.output!r} is an .npz "
                "file computed in memory. Write a store with -o K.zarr (zarr) or --format npy (a folder of .npy "
                "memmaps), or drop those options."
            )
    return fmt


def _cmd_demo(args) -> int:
    import ntk_infinite as nk
    from ntk_infinite.datasets import load_breast_cancer

    data = load_breast_cancer()
    print(f"data: Breast Cancer Wisconsin (Diagnostic), X {data.X.shape}, standardised features")
    print(f"      {data.citation}")
    print(f"architecture: {DEMO_ARCH}")
    # compile() only validates the description and resolves each activation's dual; the
    # jitted engine is generated and built, or loaded from the disk cache, by the first call.
    t0 = time.perf_counter()
    kernel = nk.compile(DEMO_ARCH)
    t1 = time.perf_counter()
    k = kernel(data.X)
    t2 = time.perf_counter()
    k = kernel(data.X)
    t3 = time.perf_counter()
    n = data.X.shape[0]
    print(f"compile (validate + resolve duals): {1e3 * (t1 - t0):.1f} ms")
    print(f"first call (build or load the jitted engine, then evaluate): {t2 - t1:.2f}s")
    print(f"second call (evaluate only): {1e3 * (t3 - t2):.1f} ms for a {n}x{n} NNGP + NTK")
    for name in ("nngp", "ntk"):
        K = getattr(k, name)
        eig = np.linalg.eigvalsh(K)
        print(f"{name:>4}: diag mean {np.mean(np.diag(K)):.4f}, off-diag mean {np.mean(K[~np.eye(n, dtype=bool)]):.4f}, "
              f"eigenvalues [{eig[0]:.3e}, {eig[-1]:.3e}], symmetric: {bool(np.array_equal(K, K.T))}")
    # A kernel-regression baseline: NTK predictor at t = inf on a 70/30 split.
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)
    tr, te = perm[: int(0.7 * n)], perm[int(0.7 * n):]
    y = 2.0 * data.y - 1.0
    K = k.ntk
    alpha = np.linalg.solve(K[np.ix_(tr, tr)] + 1e-6 * np.eye(len(tr)), y[tr])
    acc = np.mean(np.sign(K[np.ix_(te, tr)] @ alpha) == y[te])
    print(f"infinite-width NTK regression (t = inf), 70/30 split: test accuracy {acc:.3f}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "gram", help="NNGP/NTK Gram matrices of data files, written to .npz or a resumable zarr/.npy store")
    p.add_argument("arch", help="architecture in text form, e.g. 'Dense(1.5,0.1) > ReLU > Dense(1.5,0.1)'")
    p.add_argument("x", help="inputs X1: .npy or .csv, one sample per row; for a convolutional architecture a 3-D "
                   "(n, L, C) or 4-D (n, H, W, C) .npy of images, or rows with --input-shape")
    p.add_argument("--x2", help="second inputs X2 (default: X1, symmetric)")
    p.add_argument("--input-shape", default=None, metavar="H,W,C",
                   help="convolutional architectures: reshape each row of X1 (and X2) into an image of this shape, "
                   "channels last (C order), e.g. 8,8,1")
    p.add_argument("--get", default="nngp,ntk", help="comma-separated: nngp, ntk (default both)")
    p.add_argument("-o", "--output", default="kernels.npz",
                   help="output: an .npz computed in memory (default kernels.npz; .npz is appended when missing), or "
                   "an on-disk store written block by block: a zarr group when it ends in .zarr, or a folder of .npy "
                   "memmaps with --format npy")
    p.add_argument("--format", choices=("npz", "zarr", "npy"), default=None,
                   help="output format (default: zarr for a .zarr output, else npz)")
    p.add_argument("--block", type=int, default=None,
                   help="stores: block (and chunk) edge in samples (default from a 512 MiB budget, 4096 for a "
                   "dense network, smaller for convolutional ones; or the existing store's)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="stores: continue an existing store of the same computation, computing only missing blocks "
                   "(default); --no-resume refuses an existing store unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="stores: delete an existing Gram store and start again")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="storage dtype (computed in float64 either way)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_cmd_gram)
    p = subparsers.add_parser("demo", help="compile a default network and evaluate it on shipped real data")
    p.set_defaults(func=_cmd_demo)
    _register_cache(subparsers)


# ------------------------------------------------------------------ cache subcommand
def _cmd_cache(args) -> int:
    import ntk_infinite as nk

    if args.clear:
        info = nk.clear_cache()
        print(f"removed {info.directory} ({info.files} files) and {len(info.other_fingerprints)} other "
              f"fingerprint directories under {info.base}: {(info.bytes + info.other_bytes) / 2**20:.1f} MiB freed")
        return 0
    print(nk.cache_info())
    return 0


def _register_cache(subparsers) -> None:
    p = subparsers.add_parser(
        "cache", help="show or clear the on-disk cache of generated code ($NTK_INFINITE_CACHE_DIR or "
                      "~/.cache/ntk_infinite)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--info", action="store_true", help="location, fingerprint, entries and size (default)")
    group.add_argument("--clear", action="store_true", help="delete every fingerprint directory of the cache")
    p.set_defaults(func=_cmd_cache)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="ntk-infinite", description="Analytic infinite-width NNGP/NTK kernels.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError) as exc:
        print(f"ntk-infinite {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
