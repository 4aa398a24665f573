"""ntk_infinite next to neural-tangents (JAX, CPU): agreement, accuracy, speed, memory.

neural-tangents 0.6.5 does not import with current JAX releases (0.10: ``jax.core.Jaxpr``
is gone), so it runs from its own virtual environment, passed as ``--nt-python``. One that
works (2026-11)::

    python3 -m venv /tmp/ntvenv
    /tmp/ntvenv/bin/pip install neural-tangents "jax==0.4.30" "jaxlib==0.4.30" "tf2jax==0.3.6"
    python benchmarks/compare_neural_tangents.py --nt-python /tmp/ntvenv/bin/python

Writes ``tables/neural_tangents.md``:

1. agreement of the two libraries' NNGP/NTK on random inputs (the same conventions);
2. accuracy on nearly parallel (x' = x(1 + 1e-9)) and antipodal pairs against the
   50-digit mpmath recursion of ``tests/naive.py``;
3. time and peak memory, each library in its own subprocess, ReLU depth 3, d = 64, both
   kernels, float64 in both (JAX x64 on). neural-tangents is timed as its documentation
   recommends: ``jax.jit(kernel_fn, static_argnames='get')``. Each library's first call on
   the full (n, d) input (JAX: trace and XLA compile; ntk_infinite: Numba compile or cache
   load) is timed on its own as the warm-up, then the best of 3 further calls is reported,
   with ``.block_until_ready()`` on both JAX outputs. Peak memory is the growth of peak RSS
   over the 3 timed calls (the warm-up's outputs are freed first).

Both run on the same 2 cores with their default thread pools: XLA's CPU client sizes its
intra-op (Eigen) pool to the CPUs the process may run on, Numba's pool to
``NUMBA_NUM_THREADS`` (default: the CPU count). A third row per n runs ntk_infinite on one
thread (``ONE_THREAD``). The table records the CPU affinity, Numba's thread count and
threading layer, ``XLA_FLAGS``, the CPU time / wall time of the timed calls (how many cores
each kept busy) and the 1-minute load average before and after each timing child: other
work on the machine slows both, so run it when the machine is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

from ntk_infinite.reports.performance import RSS_HELPERS

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

W, B, DEPTH = 1.5, 0.1, 3

COMMON_CHILD = """
import json, os, resource, sys, time
__RSS_HELPERS__
def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
def _timed(call, block):
    # warm-up (compile) call on the full input, then best of 3; CPU/wall over the 3 calls
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter(); k = call(); block(k); first = time.perf_counter() - t0
    dtype = str(k.ntk.dtype)
    del k
    reset_peak(); base = _rss("VmRSS:")
    best, wall, cpu0 = float("inf"), 0.0, _cpu()
    for _ in range(3):
        t0 = time.perf_counter(); k = call(); block(k); dt = time.perf_counter() - t0
        best, wall = min(best, dt), wall + dt
        del k
    cpu = _cpu() - cpu0
    peak = _rss("VmHWM:")
    return {"seconds": best, "first_call": first, "dtype": dtype, "peak_mib": (peak - base) / 1024,
            "cpu_per_wall": cpu / wall, "load_before": load_before, "load_after": os.getloadavg()[0],
            "affinity": len(os.sched_getaffinity(0)), "os_threads": len(os.listdir("/proc/self/task"))}
"""

NT_CHILD = textwrap.dedent(
    """
    __COMMON__
    import importlib.metadata
    import numpy as np
    import jax
    jax.config.update("jax_enable_x64", True)
    from neural_tangents import stax
    mode, path, depth = sys.argv[1], sys.argv[2], int(sys.argv[3])
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(512, W_std={w}, b_std={b}), stax.Relu()]
    layers += [stax.Dense(1, W_std={w}, b_std={b})]
    _, _, kernel_fn = stax.serial(*layers)
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    GET = ("nngp", "ntk")
    X = np.load(path)
    if mode == "values":
        X2 = np.load(sys.argv[4])
        k = kernel_fn(X, X2, get=GET)
        np.save(path + ".nngp.npy", np.asarray(k.nngp)); np.save(path + ".ntk.npy", np.asarray(k.ntk))
        print(json.dumps({{}}))
    else:
        out = _timed(lambda: kernel_fn(X, None, get=GET), lambda k: (k.nngp.block_until_ready(), k.ntk.block_until_ready()))
        out.update(versions=f"neural-tangents {{importlib.metadata.version('neural-tangents')}}, "
                            f"jax {{jax.__version__}}, jaxlib {{importlib.metadata.version('jaxlib')}}",
                   threads=f"XLA_FLAGS={{os.environ.get('XLA_FLAGS', '(unset)')}}, devices={{jax.devices()}}")
        print(json.dumps(out))
    """
).format(w=W, b=B)

OURS_CHILD = textwrap.dedent(
    """
    __COMMON__
    import numpy as np
    import numba
    import ntk_infinite as nk
    kernel = nk.compile(nk.serial(*[nk.Dense(w_std={w}, b_std={b}), nk.ReLU()] * int(sys.argv[2]), nk.Dense(w_std={w}, b_std={b})))
    X = np.load(sys.argv[1])
    out = _timed(lambda: kernel(X), lambda k: None)
    out.update(versions=f"ntk_infinite {{nk.__version__}}, numba {{numba.__version__}}, numpy {{np.__version__}}",
               threads=f"{{numba.get_num_threads()}} Numba threads ({{numba.threading_layer()}} layer), "
                       f"NUMBA_NUM_THREADS={{os.environ.get('NUMBA_NUM_THREADS', '(unset)')}}")
    print(json.dumps(out))
    """
).format(w=W, b=B)

NT_CHILD, OURS_CHILD = (c.replace("__COMMON__", COMMON_CHILD.replace("__RSS_HELPERS__", RSS_HELPERS))
                        for c in (NT_CHILD, OURS_CHILD))


ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # Numba and dsyrk


def _run(python, script, *args, env=None):
    proc = subprocess.run([python, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=7200,
                          env=None if env is None else {**os.environ, **env})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    import ntk_infinite as nk
    from naive import mp_relu_kernels

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nt-python", required=True, help="python of a venv with neural-tangents installed")
    parser.add_argument("--sizes", default="1000,4000")
    parser.add_argument("--out", default=str(ROOT / "tables"))
    args = parser.parse_args()
    arch = nk.serial(*[nk.Dense(w_std=W, b_std=B), nk.ReLU()] * DEPTH, nk.Dense(w_std=W, b_std=B))
    kernel = nk.compile(arch)
    tmp = pathlib.Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)

    # 1. agreement on random inputs
    X1, X2 = rng.normal(size=(200, 64)), rng.normal(size=(150, 64))
    np.save(tmp / "a.npy", X1)
    np.save(tmp / "b.npy", X2)
    _run(args.nt_python, NT_CHILD, "values", tmp / "a.npy", DEPTH, tmp / "b.npy")
    ours = kernel(X1, X2)
    cos = (X1 / np.linalg.norm(X1, axis=1, keepdims=True)) @ (X2 / np.linalg.norm(X2, axis=1, keepdims=True)).T
    agree = {name: float(np.max(np.abs(np.load(tmp / f"a.npy.{name}.npy") - getattr(ours, name)) / np.abs(getattr(ours, name))))
             for name in ("nngp", "ntk")}

    # 2. accuracy on collinear pairs against mpmath
    xs = rng.normal(size=(20, 64))
    rows = {}
    for kind, partner in (("near-duplicate x(1+1e-9)", lambda x: x * (1 + 1e-9)), ("antipodal -x", lambda x: -x)):
        P = np.array([partner(x) for x in xs])
        np.save(tmp / "c.npy", xs)
        np.save(tmp / "d.npy", P)
        _run(args.nt_python, NT_CHILD, "values", tmp / "c.npy", DEPTH, tmp / "d.npy")
        nt_ntk = np.diag(np.load(tmp / "c.npy.ntk.npy"))
        nt_nngp = np.diag(np.load(tmp / "c.npy.nngp.npy"))
        k = kernel(xs, P)
        ref = np.array([mp_relu_kernels(arch, x, p) for x, p in zip(xs, P)])
        err = lambda v, col: float(np.max(np.abs(v - ref[:, col]) / np.abs(ref[:, col])))
        rows[kind] = (err(np.diag(k.nngp), 0), err(np.diag(k.ntk), 1), err(nt_nngp, 0), err(nt_ntk, 1))

    # 3. speed and memory
    perf = []
    for n in map(int, args.sizes.split(",")):
        X = rng.normal(size=(n, 64))
        np.save(tmp / "x.npy", X)
        o = _run(sys.executable, OURS_CHILD, tmp / "x.npy", DEPTH)
        t = _run(args.nt_python, NT_CHILD, "time", tmp / "x.npy", DEPTH)
        o1 = _run(sys.executable, OURS_CHILD, tmp / "x.npy", DEPTH, env=ONE_THREAD)
        perf.append((n, o, o1, t))

    lines = [
        "# ntk_infinite vs neural-tangents (JAX, CPU)",
        "",
        "Generated by `python benchmarks/compare_neural_tangents.py --nt-python PATH` (see its docstring "
        "for the neural-tangents environment: 0.6.5 needs JAX 0.4.30 and tf2jax 0.3.6; it fails to import "
        "with current JAX).",
        f"Architecture: {DEPTH}*(Dense({W}, {B}) > ReLU) > Dense({W}, {B}), float64 in both (jax_enable_x64).",
        "",
        "## Agreement (random inputs, 200 × 150, d = 64)",
        "",
        f"Max relative difference: NNGP {agree['nngp']:.1e}, NTK {agree['ntk']:.1e}: the same conventions. "
        f"These pairs are far from collinear (max |cos| = {np.max(np.abs(cos)):.2f}), where neural-tangents' "
        "`arccos` of a rounded correlation is accurate; collinear pairs are held to mpmath below.",
        "",
        "## Accuracy on collinear pairs (20 pairs, d = 64), max relative error vs 50-digit mpmath",
        "",
        "| pairs | ntk_infinite NNGP | ntk_infinite NTK | neural-tangents NNGP | neural-tangents NTK |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, (a, b, c, d) in rows.items():
        lines.append(f"| {kind} | {a:.1e} | {b:.1e} | {c:.1e} | {d:.1e} |")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mhz = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("cpu MHz")), "?")
    o0, t0 = perf[0][1], perf[0][3]
    lines += [
        "",
        "## Speed and memory (K(X) symmetric, d = 64, both kernels)",
        "",
        f"Machine: {cpu}, {os.cpu_count()} CPUs at {float(mhz):.0f} MHz; each child may run on "
        f"{o0['affinity']} (ntk_infinite) and {t0['affinity']} (neural-tangents) of them.",
        f"ntk_infinite: {o0['versions']}; {o0['threads']}.",
        f"neural-tangents: {t0['versions']}, `jax.jit(kernel_fn, static_argnames='get')`, outputs {t0['dtype']}; "
        f"{t0['threads']}. XLA's intra-op (Eigen) pool is sized to the {t0['affinity']} usable CPUs and "
        "XLA:CPU splits the large elementwise fusions over it (CPU/wall below); the \"1 thread\" row sets "
        "`NUMBA_NUM_THREADS`, `OPENBLAS_NUM_THREADS` and `OMP_NUM_THREADS` to 1. CPU/wall is coarse for runs "
        "of a few ms (CPU time is counted in ticks).",
        "",
        "First call: the warm-up call on the full input (neural-tangents: trace + XLA compile + one run; "
        "ntk_infinite: Numba engine build or cache load + one run); compile: first call − time. Time: best "
        "of 3 further calls "
        "(`.block_until_ready()` on both JAX outputs). CPU/wall: CPU time over wall time of those 3 calls "
        "(2.0 = both cores busy). ns/entry-layer: time / (n(n+1)/2 · depth). Peak MiB: growth of peak "
        "RSS over the 3 calls; the two float64 outputs are 2·8n² bytes (244 MiB at n = 4000). Load: "
        "1-minute load average before → after each child; the benchmark itself adds up to 1, more means other "
        "work was slowing both. "
        "Ratio: this row's time / ntk_infinite's.",
        "",
        "| n | library | time s | first call s | compile s | ns/entry-layer | CPU/wall | peak MiB | load | ratio |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for n, o, o1, t in perf:
        for name, r in (("ntk_infinite", o), ("ntk_infinite, 1 thread", o1), ("neural-tangents, jit", t)):
            lines.append(f"| {n} | {name} | {r['seconds']:.3f} | {r['first_call']:.2f} | "
                         f"{r['first_call'] - r['seconds']:.2f} | "
                         f"{r['seconds'] / (n * (n + 1) / 2 * DEPTH) * 1e9:.1f} | {r['cpu_per_wall']:.2f} | "
                         f"{r['peak_mib']:.0f} | {r['load_before']:.2f} → {r['load_after']:.2f} | "
                         f"{r['seconds'] / o['seconds']:.2f} |")
    (tmp / "perf.json").write_text(json.dumps(perf, indent=1))
    print("raw measurements:", tmp / "perf.json")
    out = pathlib.Path(args.out) / "neural_tangents.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
