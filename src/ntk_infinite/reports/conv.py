r"""Convolutional networks (CNN-GP / CNTK): speed, memory and agreement, ``tables/conv.md``.

Architecture: ``4 × (Conv 3×3 SAME, w_std = √2, b_std = 0.1 > ReLU) > readout > Dense(1, 0)``
with the readout GlobalAvgPool (the compiler keeps the full P × P position-pair state per
pair of images, P = H·W) or Flatten (only the P same-position entries, the diagonal
layout). Inputs X of shape (n, H, W, C), standard normal, for 8×8×1, 16×16×3 and 32×32×3;
NNGP + NTK of K(X) (X2 = None) in float64.

Each (readout, input, library) case runs in a fresh subprocess: one warm-up call on the
full input (Numba engine build or cache load; for neural-tangents trace + XLA compile),
then the best of up to ``repeats`` calls (fewer when a call is slow, so that a case stays
within about two minutes). Peak memory is the growth of the peak resident set (VmHWM, reset
after the warm-up through ``/proc/self/clear_refs``; without that, ``ru_maxrss``) over the
timed calls, above the resident set after import and warm-up: Numba's allocations are
invisible to ``tracemalloc``.

neural-tangents 0.6.5 runs from its own virtual environment (``--nt-python``, else
``$NT_PYTHON``, else ``/tmp/ntvenv/bin/python``; see ``benchmarks/compare_neural_tangents.py``
or ``benchmarks/conv.py`` for how to make one), timed as its documentation recommends:
``jax.jit(kernel_fn, static_argnames="get")``, ``jax_enable_x64``, ``.block_until_ready()``.
Without it the neural-tangents columns are empty.

Units: *ms per entry* divides the wall time by the n(n+1)/2 unique entries of one triangle
(neural-tangents computes all n² entries; it is charged the same n(n+1)/2). The physical
limit counts the floating-point work per entry (a multiply-add is 2 flops):

* Σ⁰: C multiply-adds per stored position pair;
* per layer and stored position pair: the 3×3 convolution, 9 multiply-adds for Σ and 9 for
  Θ (edge pairs of SAME padding have fewer terms; not subtracted), the affine updates
  Σ ← σw²K̃ + σb², Θ ← σw²K̃(Θ) + Σ (4 flops), ReLU's T and Ṫ·Θ (~40 flops);
* the readout: one addition per stored position pair for Σ and for Θ.

A stored position pair is one of P² (full layout) or P (diagonal layout). The limit is that
work at ``FLOPS_PER_CYCLE`` flops per cycle per core on every core at the clock read from
``/proc/cpuinfo`` (or ``lscpu``).
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

__all__ = ["write_table", "CASES", "QUICK_N", "flop_model", "machine", "find_nt_python"]

DEPTH = 4
W_STD, B_STD = 2.0**0.5, 0.1
READOUT_W, READOUT_B = 1.0, 0.0
FILTER = (3, 3)
READOUTS = {"gap": "GlobalAvgPool", "flatten": "Flatten"}
SHAPES = ((8, 8, 1), (16, 16, 3), (32, 32, 3))
#: Default n per (readout, input shape). The headlines are GAP n = 16 and Flatten n = 200 at
#: 16×16×3; the others are chosen so that each library's case (warm-up + timed calls) stays
#: under about 2 minutes on 2 cores. neural-tangents' full-layout GAP state is n²·P² floats per
#: kernel (at 32×32×3, 8 MiB per pair of images: n = 8 took 17 s per call and 3.6 GiB).
CASES = {
    ("gap", (8, 8, 1)): 64,
    ("gap", (16, 16, 3)): 16,
    ("gap", (32, 32, 3)): 4,
    ("flatten", (8, 8, 1)): 500,
    ("flatten", (16, 16, 3)): 200,
    ("flatten", (32, 32, 3)): 100,
}
#: --quick: a smoke test of the whole pipeline, not the published numbers.
QUICK_N = {
    ("gap", (8, 8, 1)): 8,
    ("gap", (16, 16, 3)): 4,
    ("gap", (32, 32, 3)): 2,
    ("flatten", (8, 8, 1)): 32,
    ("flatten", (16, 16, 3)): 16,
    ("flatten", (32, 32, 3)): 8,
}
REPEATS = 3
#: Stop repeating once the timed calls of a case have taken this long (at least one call).
TIME_BUDGET_S = 60.0
#: Peak float64 rate per core and cycle of the physical limit: two 256-bit FMA pipes (Zen 4
#: runs AVX-512 as two halves), 2 × 4 × 2 = 16, as in the README's dense comparison.
FLOPS_PER_CYCLE = 16
CHILD_TIMEOUT_S = 1800
SEED = 0


def shape_name(shape) -> str:
    return "×".join(map(str, shape))


def parse_shape(text: str):
    return tuple(int(v) for v in re.split(r"[x×,]", text.strip()))


def expected_layout(readout: str) -> str:
    return "full" if readout == "gap" else "diagonal"


def flop_model(readout: str, shape, layout=None, depth: int = DEPTH) -> dict:
    """Floating-point operations per unique entry (pair of images): per layer and in total."""
    H, W, C = shape
    P = H * W
    layout = layout or expected_layout(readout)
    m = P * P if layout == "full" else P
    taps = FILTER[0] * FILTER[1]
    per_layer = (2 * 2 * taps + 4 + 40) * m  # conv of Σ and Θ, affine updates, ReLU
    total = 2 * C * m + depth * per_layer + 2 * m + 8  # Σ⁰, layers, readout, Dense
    return {"positions": P, "stored": m, "per_layer": per_layer, "total": total}


def _clock_hz():
    """Core clock in Hz: the largest ``cpu MHz`` of /proc/cpuinfo, else lscpu's max MHz."""
    try:
        mhz = [float(line.split(":", 1)[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz")]
        if mhz:
            return max(mhz) * 1e6
    except (OSError, ValueError):
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"CPU max MHz:\s*([\d.]+)", out) or re.search(r"CPU MHz:\s*([\d.]+)", out)
        if m:
            return float(m.group(1)) * 1e6
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "cpus": os.cpu_count(), "clock_hz": _clock_hz()}


def find_nt_python(explicit=None):
    """The python of an environment where ``jax`` and ``neural_tangents`` import, or None."""
    for candidate in (explicit, os.environ.get("NT_PYTHON"), "/tmp/ntvenv/bin/python"):
        if not candidate:
            continue
        exe = shutil.which(candidate)
        if exe is None:
            if explicit and candidate == explicit:
                raise FileNotFoundError(f"--nt-python {explicit!r} does not exist or is not executable")
            continue
        probe = subprocess.run([exe, "-c", "import jax, neural_tangents"], capture_output=True, text=True,
                               env=_nt_env(), timeout=300)
        if probe.returncode == 0:
            return exe
        if explicit and candidate == explicit:
            raise RuntimeError(f"--nt-python {explicit!r} cannot import jax and neural_tangents:\n"
                               f"{probe.stderr[-2000:]}")
    return None


def _nt_env():
    return {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}


# ----------------------------------------------------------------------------- children
#: Timing and peak-memory helpers of every benchmark child process (also used by reports.branches).
TIMING_HELPERS = """
import json, os, resource, sys, time
import numpy as np

def _rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False

def _timed(call, block, repeats, budget):
    t0 = time.perf_counter(); k = call(); block(k); first = time.perf_counter() - t0
    del k
    reset = _reset_peak()
    base = _rss("VmRSS:")
    best, spent, done = float("inf"), 0.0, 0
    while True:
        t0 = time.perf_counter(); k = call(); block(k); dt = time.perf_counter() - t0
        best, spent, done = min(best, dt), spent + dt, done + 1
        if done >= repeats or spent + dt > budget:
            break
        del k
    peak = _rss("VmHWM:") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return k, {"seconds": best, "first_call": first, "repeats": done, "peak_mib": (peak - base) / 1024,
               "peak_source": "VmHWM" if reset else "ru_maxrss (includes the warm-up)",
               "load": os.getloadavg()[0]}
"""

_COMMON = TIMING_HELPERS + """
readout, path, out_prefix = sys.argv[1], sys.argv[2], sys.argv[3]
repeats, budget, depth = int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
X = np.load(path)
"""

_OURS_CHILD = _COMMON + textwrap.dedent(
    """
    import re
    import numba
    import ntk_infinite as nk
    layers = []
    for _ in range(depth):
        layers += [nk.Conv(filter_shape={filt}, padding="SAME", w_std={w}, b_std={b}), nk.ReLU()]
    layers += [nk.GlobalAvgPool() if readout == "gap" else nk.Flatten(), nk.Dense(w_std={rw}, b_std={rb})]
    kernel = nk.compile(nk.serial(*layers))
    m = re.search(r"layout=['\\"]?(\\w+)", repr(kernel))
    layout = m.group(1) if m else str(getattr(kernel, "layout", "?"))
    k, out = _timed(lambda: kernel(X), lambda k: None, repeats, budget)
    np.save(out_prefix + ".nngp.npy", np.asarray(k.nngp, dtype=np.float64))
    np.save(out_prefix + ".ntk.npy", np.asarray(k.ntk, dtype=np.float64))
    out.update(layout=layout, dtype=str(np.asarray(k.ntk).dtype),
               versions=f"ntk_infinite {{nk.__version__}}, numba {{numba.__version__}}, numpy {{np.__version__}}",
               threads=f"{{numba.get_num_threads()}} Numba threads")
    print(json.dumps(out))
    """
).format(filt=FILTER, w=W_STD, b=B_STD, rw=READOUT_W, rb=READOUT_B)

_NT_CHILD = _COMMON + textwrap.dedent(
    """
    import importlib.metadata
    import jax
    jax.config.update("jax_enable_x64", True)
    from neural_tangents import stax
    layers = []
    for _ in range(depth):
        layers += [stax.Conv(256, {filt}, padding="SAME", W_std={w}, b_std={b}), stax.Relu()]
    layers += [stax.GlobalAvgPool() if readout == "gap" else stax.Flatten(), stax.Dense(1, W_std={rw}, b_std={rb})]
    _, _, kernel_fn = stax.serial(*layers)
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    block = lambda k: (k.nngp.block_until_ready(), k.ntk.block_until_ready())
    k, out = _timed(lambda: kernel_fn(X, None, get=("nngp", "ntk")), block, repeats, budget)
    np.save(out_prefix + ".nngp.npy", np.asarray(k.nngp, dtype=np.float64))
    np.save(out_prefix + ".ntk.npy", np.asarray(k.ntk, dtype=np.float64))
    out.update(dtype=str(k.ntk.dtype),
               versions=f"neural-tangents {{importlib.metadata.version('neural-tangents')}}, jax {{jax.__version__}}, "
                        f"jaxlib {{importlib.metadata.version('jaxlib')}}",
               threads=f"devices {{jax.devices()}}, XLA_FLAGS={{os.environ.get('XLA_FLAGS', '(unset)')}}")
    print(json.dumps(out))
    """
).format(filt=FILTER, w=W_STD, b=B_STD, rw=READOUT_W, rb=READOUT_B)


def _run_child(python, script, readout, x_path, out_prefix, repeats, budget, env=None) -> dict:
    """Run one case; a failure (import error, out of memory, timeout) is returned as ``{"error": ...}``."""
    try:
        proc = subprocess.run([python, "-c", script, readout, str(x_path), str(out_prefix), str(repeats),
                               str(budget), str(DEPTH)], capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                              env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT_S} s"}
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        if proc.returncode < 0:
            last = f"killed by signal {-proc.returncode} (out of memory?); {last}"
        return {"error": last[:300], "stderr": proc.stderr[-3000:]}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"no result on stdout: {proc.stdout[-300:]!r}"}


def _compare(ours_prefix, nt_prefix) -> dict:
    """Max relative differences, off the diagonal (image pairs x ≠ x') and on it, NNGP and NTK.

    On the diagonal every same-position entry has correlation 1, where neural-tangents' arccos
    of a rounded correlation loses about half the digits of the NTK (tables/neural_tangents.md),
    so agreement is judged off the diagonal."""
    import numpy as np

    out = {}
    for name in ("nngp", "ntk"):
        a = np.load(f"{ours_prefix}.{name}.npy")
        b = np.load(f"{nt_prefix}.{name}.npy")
        if a.shape != b.shape:
            out[name] = {"error": f"shapes differ: {a.shape} vs {b.shape}"}
            continue
        rel = np.abs(a - b) / np.maximum(np.abs(b), np.finfo(float).tiny)
        off = ~np.eye(len(a), dtype=bool)
        out[name] = {"off": float(rel[off].max()) if off.any() else float("nan"),
                     "diag": float(np.diag(rel).max())}
    return out


# ------------------------------------------------------------------------------- table
def _fmt(v, spec):
    return "—" if v is None else format(v, spec)


def write_table(out_dir, quick: bool = False, *, n=None, cases=None, nt_python=None, repeats=None,
                budget=TIME_BUDGET_S, flops_per_cycle=FLOPS_PER_CYCLE, skip_nt=False, skip_ours=False,
                command=None, stream=None) -> pathlib.Path:
    """Measure every case and write ``out_dir/conv.md``.

    ``n`` overrides sizes: ``{(readout, shape): n}``; ``cases`` selects a subset of the keys
    of ``CASES`` (default all); ``nt_python`` is the neural-tangents interpreter (default: found
    as described in the module docstring; ``skip_nt`` leaves it out, ``skip_ours`` leaves
    ntk_infinite out)."""
    import numpy as np

    stream = stream or sys.stdout
    t_start = time.perf_counter()
    sizes = dict(QUICK_N if quick else CASES)
    sizes.update(n or {})
    keys = list(cases) if cases else list(CASES)
    unknown = [k for k in keys if k not in sizes]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; known: {list(CASES)}")
    repeats = repeats or (1 if quick else REPEATS)
    nt = None if skip_nt else find_nt_python(nt_python)
    mach = machine()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ntk_conv_"))
    rows = []
    path = pathlib.Path(out_dir) / "conv.md"
    for readout, shape in keys:
        size = sizes[(readout, shape)]
        label = f"{READOUTS[readout]} {shape_name(shape)} n={size}"
        X = np.random.default_rng([SEED, size, *shape]).standard_normal((size, *shape))
        x_path = tmp / f"{readout}_{shape_name(shape)}_{size}.npy"
        np.save(x_path, X)
        row = {"readout": readout, "shape": shape, "n": size, "ours": None, "nt": None, "agree": None}
        if not skip_ours:
            stream.write(f"[conv] {label}: ntk_infinite ...\n"); stream.flush()
            row["ours"] = _run_child(sys.executable, _OURS_CHILD, readout, x_path, f"{x_path}.ours", repeats, budget)
            stream.write(f"[conv]   {row['ours'].get('error') or '%.3f s' % row['ours']['seconds']}\n")
        if nt:
            stream.write(f"[conv] {label}: neural-tangents ...\n"); stream.flush()
            row["nt"] = _run_child(nt, _NT_CHILD, readout, x_path, f"{x_path}.nt", repeats, budget, env=_nt_env())
            stream.write(f"[conv]   {row['nt'].get('error') or '%.3f s' % row['nt']['seconds']}\n")
        if row["ours"] and row["nt"] and "error" not in row["ours"] and "error" not in row["nt"]:
            row["agree"] = _compare(f"{x_path}.ours", f"{x_path}.nt")
            a = row["agree"]
            stream.write("[conv]   max rel. difference off the diagonal: "
                         + ", ".join(f"{k} {v.get('off', float('nan')):.1e} (diagonal {v.get('diag', float('nan')):.1e})"
                                     for k, v in a.items()) + "\n")
        stream.flush()
        rows.append(row)
        # after every case, so that an interrupted run leaves what it measured
        (tmp / "results.json").write_text(json.dumps(rows, indent=1, default=str))
        partial = len(rows) < len(keys)
        path.write_text(_render(rows, mach, quick, repeats, budget, flops_per_cycle, nt, command,
                                time.perf_counter() - t_start, partial=partial))
    if not skip_ours and not quick:
        stream.write("[conv] kernel floors ...\n"); stream.flush()
        from ._conv_floors import measure

        path.write_text(_render(rows, mach, quick, repeats, budget, flops_per_cycle, nt, command,
                                time.perf_counter() - t_start, floors=measure()))
    stream.write(f"[conv] raw measurements: {tmp / 'results.json'}\n")
    return path


def _render(rows, mach, quick, repeats, budget, fpc, nt, command, seconds, partial=False, floors=None) -> str:
    ours_meta = next((r["ours"] for r in rows if r["ours"] and "error" not in r["ours"]), None)
    nt_meta = next((r["nt"] for r in rows if r["nt"] and "error" not in r["nt"]), None)
    clock = mach["clock_hz"]
    rate = fpc * mach["cores"] * clock if clock else None
    command = command or f"python benchmarks/conv.py{' --quick' if quick else ''}"
    arch = (f"{DEPTH} × (Conv {FILTER[0]}×{FILTER[1]} SAME, w_std = √2, b_std = {B_STD} > ReLU) > readout > "
            f"Dense(w_std = {READOUT_W:g}, b_std = {READOUT_B:g})")
    lines = [
        "# Convolutional networks: CNN-GP / CNTK Gram matrices",
        "",
        f"Generated by `{command}` (or `ntk-infinite tables --only conv{' --quick' if quick else ''}`) "
        f"in {seconds:.0f} s{' in quick mode: a smoke test, not the published numbers' if quick else ''}."
        + (" PARTIAL: the run was still going (or was interrupted) when this was written." if partial else ""),
        f"Machine: {mach['cpu']}, {mach['cores']} usable cores of {mach['cpus']}"
        + (f" at {clock / 1e6:.0f} MHz" if clock else "") + ".",
        f"ntk_infinite: {ours_meta['versions']}, {ours_meta['threads']}." if ours_meta else
        "ntk_infinite: not measured.",
        (f"neural-tangents: {nt_meta['versions']} (`{nt}`), `jax.jit(kernel_fn, static_argnames='get')`, "
         f"jax_enable_x64, outputs {nt_meta['dtype']}; {nt_meta['threads']}.") if nt_meta else
        "neural-tangents: not measured (no environment found; pass --nt-python or set NT_PYTHON).",
        "",
        f"Architecture: {arch}; readout GlobalAvgPool (GAP) or Flatten. X of shape (n, H, W, C), standard "
        "normal; K(X) with X2 = None, NNGP and NTK, float64.",
        "",
        f"Time: best of up to {repeats} calls after one warm-up call on the full input (which builds or loads the "
        f"engine; neural-tangents: trace + XLA compile), fewer once the timed calls pass {budget:.0f} s; each "
        "case in a fresh subprocess. First: the warm-up call. ms/entry: time / (n(n+1)/2), the unique entries "
        "(neural-tangents computes all n²). Peak MiB: growth of the peak resident set over the timed calls, "
        "above the resident set after import and warm-up. NT: neural-tangents. Speed-up: NT time / ntk_infinite "
        "time. Layout: the one ntk_infinite's compiled kernel names (in parentheses when it was not measured).",
        "",
        "Physical limit: floating-point work per entry (pair of images; a multiply-add is 2 flops) over "
        f"{fpc} flops/cycle/core × {mach['cores']} cores × "
        + (f"{clock / 1e9:.2f} GHz = {rate / 1e9:.1f} Gflop/s. " if rate else "(clock unknown). ")
        + "Per layer and stored position pair: the 3×3 convolution of Σ and of Θ (2 × 9 multiply-adds = 36 "
        "flops; SAME's edge pairs have fewer terms, not subtracted), the affine updates (4) and ReLU's T and "
        "Ṫ·Θ (~40): 80 flops. Per entry also Σ⁰ (C multiply-adds per stored pair) and the readout. A pair of "
        "images stores P² position pairs in the full layout (GAP), P in the diagonal layout (Flatten), "
        "P = H·W. flops/entry-layer: the per-layer work of one entry. × limit: time / limit.",
        "",
        "| readout | input | n | layout | ntk_infinite s | first s | ms/entry | peak MiB | flops/entry-layer | "
        "limit s | × limit | NT s | NT first s | NT ms/entry | NT peak MiB | speed-up |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    timing, notes = _timing_rows(rows, rate)
    lines += timing + _agreement_lines(rows)
    if floors:
        from ._conv_floors import floor_lines

        lines += floor_lines(rows, floors, mach["cores"], DEPTH)
    if notes:
        lines += ["", "Failures:", ""] + [f"- {note}" for note in notes]
    loads = [res["load"] for r in rows for res in (r["ours"], r["nt"]) if res and "load" in res]
    if loads:
        lines += ["", f"1-minute load average at the end of each case: {min(loads):.2f}–{max(loads):.2f} "
                      "(a case keeping both cores busy adds up to 2; more means other work slowed the run)."]
    return "\n".join(lines) + "\n"


def _timing_rows(rows, rate):
    """Table rows of the timing table, and notes on failed cases."""
    lines, notes = [], []
    for r in rows:
        o, t = r["ours"], r["nt"]
        o_ok = o is not None and "error" not in o
        t_ok = t is not None and "error" not in t
        layout = o["layout"] if o_ok else expected_layout(r["readout"])
        fm = flop_model(r["readout"], r["shape"], layout if layout in ("full", "diagonal") else None)
        entries = r["n"] * (r["n"] + 1) / 2
        limit = entries * fm["total"] / rate if rate else None
        cells = [READOUTS[r["readout"]], shape_name(r["shape"]), str(r["n"]), layout if o_ok else f"({layout})"]
        for lib, res, ok in (("ntk_infinite", o, o_ok), ("neural-tangents", t, t_ok)):
            if ok:
                cells += [f"{res['seconds']:.3f}", f"{res['first_call']:.2f}",
                          f"{1e3 * res['seconds'] / entries:.3g}", f"{res['peak_mib']:.0f}"]
            else:
                cells += ["—"] * 4
                if res is not None:
                    notes.append(f"{lib}, {READOUTS[r['readout']]} {shape_name(r['shape'])} n = {r['n']}: "
                                 f"failed: {res['error']}")
            if lib == "ntk_infinite":
                cells += [f"{fm['per_layer']:.3g}", _fmt(limit, ".3g"),
                          f"{o['seconds'] / limit:.1f}" if (o_ok and limit) else "—"]
        cells.append(f"{t['seconds'] / o['seconds']:.1f}×" if (o_ok and t_ok) else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return lines, notes


def _agreement_lines(rows):
    """The agreement section: heading, explanation and table."""
    lines = []
    lines += ["", "## Agreement with neural-tangents", "",
              "Max relative difference |ours − theirs| / |theirs| over the entries of K(X) off the diagonal "
              "(x ≠ x'), and separately on it: for x = x' every same-position entry has correlation 1, where "
              "neural-tangents' `arccos` of a rounded correlation loses about half the digits of the NTK "
              "(see tables/neural_tangents.md).", "",
              "| readout | input | n | NNGP off-diagonal | NTK off-diagonal | NNGP diagonal | NTK diagonal |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        a = r["agree"]
        if not a:
            cells = ["—"] * 4
        else:
            g = lambda k, w: (f"{a[k][w]:.1e}" if w in a[k] else a[k].get("error", "—"))
            cells = [g("nngp", "off"), g("ntk", "off"), g("nngp", "diag"), g("ntk", "diag")]
        lines.append(f"| {READOUTS[r['readout']]} | {shape_name(r['shape'])} | {r['n']} | " + " | ".join(cells) + " |")
    return lines
