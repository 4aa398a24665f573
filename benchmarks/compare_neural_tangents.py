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
3. time (best of 3 after a warm-up) and peak memory (growth of peak RSS), each library in
   its own subprocess, ReLU depth 3, d = 64, both kernels, with float64 (JAX x64 on).
"""

from __future__ import annotations

import argparse
import json
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

NT_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    __RSS_HELPERS__
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
    X = np.load(path)
    if mode == "values":
        X2 = np.load(sys.argv[4])
        k = kernel_fn(X, X2, ("nngp", "ntk"))
        np.save(path + ".nngp.npy", np.asarray(k.nngp)); np.save(path + ".ntk.npy", np.asarray(k.ntk))
        print(json.dumps({{}}))
    else:
        k = kernel_fn(X[:64], None, ("nngp", "ntk")); jax.block_until_ready(k.ntk)
        reset_peak(); base = _rss("VmRSS:")
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            k = kernel_fn(X, None, ("nngp", "ntk")); jax.block_until_ready(k.ntk)
            best = min(best, time.perf_counter() - t0)
            del k
        peak = _rss("VmHWM:")
        print(json.dumps({{"seconds": best, "peak_mib": (peak - base) / 1024}}))
    """
).format(w=W, b=B).replace("__RSS_HELPERS__", RSS_HELPERS)

OURS_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    __RSS_HELPERS__
    import numpy as np
    import ntk_infinite as nk
    kernel = nk.compile(nk.serial(*[nk.Dense(w_std={w}, b_std={b}), nk.ReLU()] * int(sys.argv[2]), nk.Dense(w_std={w}, b_std={b})))
    X = np.load(sys.argv[1])
    kernel(X[:64])
    reset_peak(); base = _rss("VmRSS:")
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter(); k = kernel(X); best = min(best, time.perf_counter() - t0); del k
    peak = _rss("VmHWM:")
    print(json.dumps({{"seconds": best, "peak_mib": (peak - base) / 1024}}))
    """
).format(w=W, b=B).replace("__RSS_HELPERS__", RSS_HELPERS)


def _run(python, script, *args):
    proc = subprocess.run([python, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=7200)
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
        perf.append((n, o, t))

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
        f"Max relative difference: NNGP {agree['nngp']:.1e}, NTK {agree['ntk']:.1e}: the same conventions.",
        "",
        "## Accuracy on collinear pairs (20 pairs, d = 64), max relative error vs 50-digit mpmath",
        "",
        "| pairs | ntk_infinite NNGP | ntk_infinite NTK | neural-tangents NNGP | neural-tangents NTK |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, (a, b, c, d) in rows.items():
        lines.append(f"| {kind} | {a:.1e} | {b:.1e} | {c:.1e} | {d:.1e} |")
    lines += [
        "",
        "## Speed and memory (K(X) symmetric, d = 64, both kernels, best of 3 after warm-up)",
        "",
        "| n | ntk_infinite s | neural-tangents s | speed-up | ntk_infinite peak MiB | neural-tangents peak MiB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n, o, t in perf:
        lines.append(f"| {n} | {o['seconds']:.3f} | {t['seconds']:.3f} | {t['seconds'] / o['seconds']:.1f}× | "
                     f"{o['peak_mib']:.0f} | {t['peak_mib']:.0f} |")
    out = pathlib.Path(args.out) / "neural_tangents.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
