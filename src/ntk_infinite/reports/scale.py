r"""Large-n NTK regression: exact solver vs Nyström/FALKON, time, peak memory, test RMSE: ``tables/scale.md``.

Task: the depth-3 ReLU NTK ``3*(Dense(√2, 0.1) > ReLU) > Dense(√2, 0.1)`` on d = 64 inputs
X ~ N(0, I), targets ``y = sin(X·w) + 0.1·ε`` with one fixed unit vector w (seed 0) and ε ~
N(0, 1); 2,000 test points with noiseless targets; absolute ridge λ = 2·10⁻³·n (the loss is a
sum over the n points, so a fixed per-point regularisation grows with n; at n = 5,000 the
test RMSE of the exact solver is flat between λ = 2 and 10).

Routes, each (n, route) in a fresh subprocess:

* ``exact``: :func:`~ntk_infinite.solve.predict.gd_mse` (n × n NNGP and NTK, Θ + λI and its
  Cholesky factor: 4·8·n² bytes), up to ``EXACT_MAX_N`` and only while that fits in 60 % of
  the physical memory;
* ``nystrom``: :func:`~ntk_infinite.solve.nystrom.nystrom_fit` with its defaults (M = min(n,
  5000) uniform centres, K(X, C) kept when n·M·8 bytes fit in its budget, CG to tol 1e-8);
* ``blocked``: exact regression out of core: Θ(X) written to a ``.npy`` Gram store with
  ``kernel.gram_to`` (8·n² bytes on disk), then (Θ + λI)α = y by conjugate gradients reading the
  store in row panels, preconditioned by a ``BLOCKED_CENTERS``-centre Nyström approximation
  (:mod:`._out_of_core`); run while 8·n² bytes fit in ``BLOCKED_DISK_FRACTION`` of the free disk.

Each child first warms up (engine load, BLAS) on 64 points, then resets its peak resident set
(``/proc/self/clear_refs``), then times fit + predict. *Peak MiB* is the process's peak
resident set (VmHWM) over the timed work, including the interpreter and libraries (*base
MiB*, the resident set just before); without ``clear_refs`` it is ``ru_maxrss`` of the child.
The 1-minute load average is read before and after each case.

Convergence: at n = ``CONVERGENCE_N`` the exact predictions are compared with Nyström ones
for growing M, centres the first M of one random permutation (nested uniform sets) and
leverage-score centres: RMS of the difference over the RMS of the exact prediction.

Run: ``python benchmarks/scale.py [--quick] [--n 1000,100000] [--routes nystrom]
[--no-convergence]`` or ``ntk-infinite tables --only scale``.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

from ._common import environment, pyplot

__all__ = ["write_table", "make_task", "ridge_for", "ARCH", "SIZES", "ROUTES"]

ARCH = "3*(Dense(1.4142135623730951, 0.1) > ReLU) > Dense(1.4142135623730951, 0.1)"
D = 64
NOISE = 0.1
N_TEST = 2000
RIDGE_PER_POINT = 2e-3
SEED = 0
SIZES = (1000, 2000, 5000, 10000, 20000, 50000, 100000)
ROUTES = ("exact", "nystrom", "blocked")
EXACT_MAX_N = 20000
#: The exact route is skipped when its 4·8·n² bytes exceed this fraction of the physical memory.
EXACT_MEMORY_FRACTION = 0.6
BLOCKED_CENTERS = 1000
#: The blocked route is skipped when its 8·n² bytes on disk exceed this fraction of the free space.
BLOCKED_DISK_FRACTION = 0.7
CONVERGENCE_N = 20000
CONVERGENCE_M = (250, 500, 1000, 2000, 5000, 10000)
QUICK = {"sizes": (400, 800), "exact_max_n": 800, "n_test": 200, "n_centers": 200,
         "convergence_n": 800, "convergence_m": (25, 50, 100, 200, 400, 800)}
CHILD_TIMEOUT_S = 3 * 3600
TARGET = {"n": 100000, "seconds": 600.0, "peak_mib": 8 * 1024}


def ridge_for(n: int) -> float:
    """The absolute ridge of the benchmark at n training points."""
    return RIDGE_PER_POINT * n


def make_task(n: int, n_test: int = N_TEST, seed: int = SEED):
    """(X, y, X_test, y_test): X ~ N(0, I_64), y = sin(X·w) + 0.1 ε, noiseless test targets.
    The training points of a smaller n are not a prefix of a larger one's (each n its own draw)."""
    rng = np.random.default_rng([seed, n])
    w = np.random.default_rng(seed).standard_normal(D)
    w /= np.linalg.norm(w)
    X = rng.standard_normal((n, D))
    Xt = np.random.default_rng([seed, 1, n_test]).standard_normal((n_test, D))
    return X, np.sin(X @ w) + NOISE * rng.standard_normal(n), Xt, np.sin(Xt @ w)


def _physical_bytes():
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# ----------------------------------------------------------------------------- children
def _status_kib(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _measured(work):
    """Run ``work()`` after resetting the peak resident set; (result, seconds, memory dict)."""
    import resource

    reset = _reset_peak()
    base = _status_kib("VmRSS:")
    t0 = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM:") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result, seconds, {"peak_mib": peak / 1024, "base_mib": (base or 0) / 1024,
                             "peak_source": "VmHWM" if reset else "ru_maxrss"}


def _run_exact(kernel, X, y, Xt, ridge, _):
    from ..solve.predict import gd_mse

    t0 = time.perf_counter()
    predictor = gd_mse(kernel, X, y, ridge=ridge)
    predictor.predict_train()  # Gram matrix and Cholesky factor: the fit
    fit = time.perf_counter() - t0
    return predictor.predict(Xt).mean, {"fit_s": fit}


def _run_nystrom(kernel, X, y, Xt, ridge, spec):
    from ..solve.nystrom import nystrom_fit

    t0 = time.perf_counter()
    predictor = nystrom_fit(kernel, X, y, ridge=ridge, n_centers=spec.get("n_centers"))
    fit = time.perf_counter() - t0
    i = predictor.info
    return predictor.predict(Xt).mean, {"fit_s": fit, "n_centers": i.n_centers, "storage": i.storage,
                                        "iterations": i.iterations, "converged": i.converged,
                                        "residual": i.relative_residual}


def _run_blocked(kernel, X, y, Xt, ridge, spec):
    """Exact regression through the out-of-core Gram store: see :mod:`._out_of_core`."""
    import tempfile

    from ._out_of_core import store_regression

    with tempfile.TemporaryDirectory(prefix="ntk_scale_store_", dir=spec.get("store_dir")) as tmp:
        return store_regression(kernel, X, y, Xt, ridge, os.path.join(tmp, "K"), n_centers=BLOCKED_CENTERS)


_RUNNERS = {"exact": _run_exact, "nystrom": _run_nystrom, "blocked": _run_blocked}


def _warm_up(kernel):
    """Load the engine and touch BLAS/LAPACK before the timed work."""
    from ..solve.nystrom import nystrom_fit
    from ..solve.predict import gd_mse

    X, y, Xt, _ = make_task(64, 8)
    gd_mse(kernel, X, y, ridge=1.0).predict(Xt)
    nystrom_fit(kernel, X, y, ridge=1.0, n_centers=16).predict(Xt)


def _case_child(spec):
    import numba

    from ..kernel import compile

    kernel = compile(ARCH)
    _warm_up(kernel)
    X, y, Xt, yt = make_task(spec["n"], spec["n_test"])
    ridge = ridge_for(spec["n"])
    load_before = os.getloadavg()[0]
    (pred, extra), seconds, memory = _measured(lambda: _RUNNERS[spec["route"]](kernel, X, y, Xt, ridge, spec))
    np.save(spec["out"], pred)
    return {"seconds": seconds, **extra, **memory, "rmse": float(np.sqrt(np.mean((pred - yt) ** 2))),
            "load_before": load_before, "load_after": os.getloadavg()[0],
            "threads": numba.get_num_threads(), "ridge": ridge}


def _convergence_child(spec):
    from ..kernel import compile
    from ..solve.nystrom import nystrom_fit
    from ..solve.predict import gd_mse

    kernel = compile(ARCH)
    n = spec["n"]
    X, y, Xt, yt = make_task(n, spec["n_test"])
    ridge = ridge_for(n)
    exact = gd_mse(kernel, X, y, ridge=ridge).predict(Xt).mean  # the exact predictor is freed here
    scale = float(np.sqrt(np.mean(exact**2)))
    order = np.random.default_rng([SEED, 2, n]).permutation(n)
    rows = []
    for m in spec["ms"]:
        if m > n:
            continue
        row = {"m": m}
        for rule in ("uniform", "leverage"):
            centers = order[:m] if rule == "uniform" else "leverage"
            t0 = time.perf_counter()
            p = nystrom_fit(kernel, X, y, ridge=ridge, n_centers=None if rule == "uniform" else m, centers=centers,
                            seed=SEED)
            pred = p.predict(Xt).mean
            row[rule] = {"rel_rms": float(np.sqrt(np.mean((pred - exact) ** 2)) / scale),
                         "max_abs": float(np.max(np.abs(pred - exact))),
                         "rmse": float(np.sqrt(np.mean((pred - yt) ** 2))), "iterations": p.info.iterations,
                         "seconds": time.perf_counter() - t0}
        rows.append(row)
    return {"n": n, "exact_rmse": float(np.sqrt(np.mean((exact - yt) ** 2))), "rows": rows}


def _child() -> None:
    """Entry point of a measurement subprocess: one JSON spec in argv, one JSON line out."""
    spec = json.loads(sys.argv[1])
    out = _convergence_child(spec) if spec["kind"] == "convergence" else _case_child(spec)
    print(json.dumps(out))


def _run_child(spec) -> dict:
    """One subprocess; a failure (exception, out of memory, timeout) comes back as ``{"error": ...}``."""
    script = "from ntk_infinite.reports.scale import _child; _child()"
    try:
        proc = subprocess.run([sys.executable, "-c", script, json.dumps(spec)], capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT_S} s"}
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        if proc.returncode < 0:
            last = f"killed by signal {-proc.returncode} (out of memory?); {last}"
        return {"error": last[:300]}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"no result on stdout: {proc.stdout[-300:]!r}"}


# ------------------------------------------------------------------------------- parent
def _exact_fits(n: int) -> bool:
    physical = _physical_bytes()
    return physical is None or 4 * 8 * n * n <= EXACT_MEMORY_FRACTION * physical


def _store_fits(n: int) -> bool:
    import shutil
    import tempfile

    return 8 * n * n <= BLOCKED_DISK_FRACTION * shutil.disk_usage(tempfile.gettempdir()).free


def _cases(sizes, routes, exact_max_n):
    for n in sizes:
        for route in routes:
            if route == "exact" and (n > exact_max_n or not _exact_fits(n)):
                continue
            if route == "blocked" and not _store_fits(n):
                continue
            yield n, route


def write_table(out_dir, quick: bool = False, *, sizes=None, routes=None, convergence: bool = True,
                command=None, stream=None) -> pathlib.Path:
    """Measure every (n, route) case and the convergence in M; write ``out_dir/scale.md``
    (and ``scale.png`` with matplotlib). ``sizes``/``routes`` select cases (default all)."""
    import tempfile

    stream = stream or sys.stdout
    t_start = time.perf_counter()
    cfg = QUICK if quick else {"sizes": SIZES, "exact_max_n": EXACT_MAX_N, "n_test": N_TEST, "n_centers": None,
                               "convergence_n": CONVERGENCE_N, "convergence_m": CONVERGENCE_M}
    sizes = tuple(sizes or cfg["sizes"])
    routes = tuple(routes or ROUTES)
    unknown = [r for r in routes if r not in ROUTES]
    if unknown:
        raise ValueError(f"unknown route(s) {unknown}; known: {list(ROUTES)}")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ntk_scale_"))
    path = pathlib.Path(out_dir) / "scale.md"
    rows, conv = [], None
    plan = list(_cases(sizes, routes, cfg["exact_max_n"]))
    for n, route in plan:
        stream.write(f"[scale] n={n} {route} ...\n"); stream.flush()
        spec = {"kind": "case", "n": n, "route": route, "n_test": cfg["n_test"], "n_centers": cfg["n_centers"],
                "out": str(tmp / f"{route}_{n}.npy")}
        res = _run_child(spec)
        stream.write(f"[scale]   {res.get('error') or '%.1f s, peak %.0f MiB' % (res['seconds'], res['peak_mib'])}\n")
        rows.append({"n": n, "route": route, "res": res, "pred": spec["out"]})
        (tmp / "results.json").write_text(json.dumps(rows, indent=1))
        path.write_text(_render(rows, conv, quick, command, time.perf_counter() - t_start, partial=True))
    if convergence:
        stream.write(f"[scale] convergence in M at n={cfg['convergence_n']} ...\n"); stream.flush()
        conv = _run_child({"kind": "convergence", "n": cfg["convergence_n"], "ms": list(cfg["convergence_m"]),
                           "n_test": cfg["n_test"]})
        stream.write(f"[scale]   {conv.get('error') or 'done'}\n")
        _plot(conv, pathlib.Path(out_dir) / "scale.png")
    path.write_text(_render(rows, conv, quick, command, time.perf_counter() - t_start))
    stream.write(f"[scale] raw measurements: {tmp / 'results.json'}\n")
    return path


def _difference_to_exact(rows):
    """{(n, route): RMS(pred − exact)/RMS(exact)} where both were measured."""
    exact = {r["n"]: r["pred"] for r in rows if r["route"] == "exact" and "error" not in r["res"]}
    out = {}
    for r in rows:
        if r["route"] != "exact" and "error" not in r["res"] and r["n"] in exact:
            a, b = np.load(r["pred"]), np.load(exact[r["n"]])
            out[r["n"], r["route"]] = float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))
    return out


def _case_lines(rows):
    exact_rmse = {r["n"]: r["res"]["rmse"] for r in rows if r["route"] == "exact" and "error" not in r["res"]}
    diff = _difference_to_exact(rows)
    lines = ["| n | route | M | K(X, C) | CG its | fit + predict s | fit s | peak MiB | base MiB | test RMSE | "
             "RMSE / exact | Δ vs exact | load before → after |",
             "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    notes = []
    for r in rows:
        res, n, route = r["res"], r["n"], r["route"]
        if "error" in res:
            lines.append(f"| {n} | {route} | " + " | ".join(["failed"] + ["—"] * 11) + " |")
            notes.append(f"{route}, n = {n}: {res['error']}")
            continue
        ratio = f"{res['rmse'] / exact_rmse[n]:.4f}" if n in exact_rmse else "—"
        d = diff.get((n, route))
        its = (f"{res['iterations']}" + ("" if res["converged"] else " (not converged)")) if "iterations" in res else "—"
        lines.append(
            f"| {n} | {route} | {res.get('n_centers', '—')} | {res.get('storage', '—')} | {its} | "
            f"{res['seconds']:.1f} | {res['fit_s']:.1f} | {res['peak_mib']:.0f} | {res['base_mib']:.0f} | "
            f"{res['rmse']:.4f} | {ratio} | {'—' if d is None else f'{d:.1e}'} | "
            f"{res['load_before']:.2f} → {res['load_after']:.2f} |")
    return lines, notes


def _convergence_lines(conv):
    if conv is None:
        return []
    if "error" in conv:
        return ["", "## Convergence in M", "", f"Failed: {conv['error']}"]
    lines = ["", f"## Convergence in M at n = {conv['n']}", "",
             f"Exact solver's test RMSE: {conv['exact_rmse']:.4f}. Δ: RMS over the test points of (Nyström − exact) "
             "over the RMS of the exact prediction; uniform centres are the first M of one random permutation "
             "(nested), leverage centres are drawn by approximate ridge leverage scores for each M.", "",
             "| M | uniform Δ | uniform max abs | uniform RMSE | its | s | leverage Δ | leverage RMSE | its | s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in conv["rows"]:
        u, v = row["uniform"], row["leverage"]
        lines.append(f"| {row['m']} | {u['rel_rms']:.2e} | {u['max_abs']:.2e} | {u['rmse']:.4f} | {u['iterations']} | "
                     f"{u['seconds']:.1f} | {v['rel_rms']:.2e} | {v['rmse']:.4f} | {v['iterations']} | "
                     f"{v['seconds']:.1f} |")
    return lines


def _target_line(rows):
    hit = [r["res"] for r in rows if r["n"] == TARGET["n"] and r["route"] == "nystrom" and "error" not in r["res"]]
    if not hit:
        return f"Target (n = {TARGET['n']:,} Nyström in < {TARGET['seconds']:.0f} s and < 8 GiB peak): not measured."
    res = hit[0]
    ok = res["seconds"] < TARGET["seconds"] and res["peak_mib"] < TARGET["peak_mib"]
    return (f"Target (n = {TARGET['n']:,} Nyström in < {TARGET['seconds']:.0f} s and < 8 GiB peak): "
            f"{'met' if ok else 'MISSED'}, {res['seconds']:.0f} s and {res['peak_mib'] / 1024:.2f} GiB.")


def _render(rows, conv, quick, command, seconds, partial=False) -> str:
    physical = _physical_bytes()
    threads = next((r["res"]["threads"] for r in rows if "threads" in r["res"]), None)
    command = command or f"python benchmarks/scale.py{' --quick' if quick else ''}"
    case_lines, notes = _case_lines(rows)
    lines = [
        "# Large-n kernel regression: exact vs Nyström/FALKON",
        "",
        f"Generated by `{command}` (or `ntk-infinite tables --only scale{' --quick' if quick else ''}`) in "
        f"{seconds:.0f} s{' in quick mode: a smoke test, not the published numbers' if quick else ''}."
        + (" PARTIAL: the run was still going (or was interrupted) when this was written." if partial else ""),
        f"Machine: {environment()}; {os.cpu_count()} CPUs"
        + (f", {physical / 2**30:.1f} GiB physical memory" if physical else "")
        + (f"; {threads} Numba threads." if threads else "."),
        "",
        f"Task: NTK of `{ARCH}`, d = {D}, X ~ N(0, I), y = sin(X·w) + {NOISE}·ε (w a fixed unit vector), noiseless "
        f"test targets, absolute ridge λ = {RIDGE_PER_POINT:g}·n. exact: `nk.predict.gd_mse` (4·8·n² bytes). "
        "nystrom: `nystrom_fit` defaults (M = min(n, 5000) uniform centres, CG tol 1e-8). blocked: Θ to an on-disk "
        f".npy store, then CG reading it in row panels with a {BLOCKED_CENTERS}-centre Nyström preconditioner "
        "(M column; the page cache is not in the resident set). Each case in a fresh subprocess after a warm-up; peak MiB: the child's "
        "peak resident set (VmHWM) over fit + predict, interpreter and libraries included (base MiB: before). "
        "RMSE / exact: test RMSE over the exact solver's at the same n. Δ vs exact: RMS(prediction − exact) / "
        "RMS(exact).",
        "",
        _target_line(rows),
        "",
    ] + case_lines
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    lines += _convergence_lines(conv)
    return "\n".join(lines) + "\n"


def _plot(conv, path) -> None:
    plt = pyplot()
    if plt is None or conv is None or "error" in conv or not conv["rows"]:
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ms = [r["m"] for r in conv["rows"]]
    for rule in ("uniform", "leverage"):
        ax.loglog(ms, [max(r[rule]["rel_rms"], 1e-16) for r in conv["rows"]], "o-", label=rule)
    ax.set_xticks(ms, [str(m) for m in ms])
    ax.tick_params(axis="x", which="minor", labelbottom=False)
    ax.set_xlabel("centres M")
    ax.set_ylabel("RMS(Nyström − exact) / RMS(exact)")
    ax.set_title(f"NTK regression, n = {conv['n']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
