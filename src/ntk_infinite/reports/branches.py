r"""Residual, normalised and standard-parameterisation networks: speed, memory and accuracy,
``tables/branches.md``.

Architectures (d = 64 inputs, standard normal rows):

* ``resnet``: ``Dense(√2, 0.1) > B × Residual(ReLU > Dense(√2, 0.1) > ReLU > Dense(√2, 0.1)) > ReLU >
  Dense(1, 0)``, a pre-activation ResNet with B = 8 blocks (17 Dense/ReLU pairs);
* ``layernorm-standard``: the same with ``LayerNorm`` at the start of every block, and every
  Dense in standard parameterisation with width 512.

Each (architecture, library) case runs in a fresh subprocess: one warm-up call (Numba engine
build or cache load; for neural-tangents trace + XLA compile), then the best of up to
``repeats`` calls of NNGP + NTK of K(X) in float64. neural-tangents 0.6.5 runs from its own
virtual environment (``--nt-python``, else ``$NT_PYTHON``, else ``/tmp/ntvenv/bin/python``),
timed as its documentation recommends: ``jax.jit(kernel_fn, static_argnames="get")``,
``jax_enable_x64``, ``.block_until_ready()``. Peak memory: the growth of the peak resident set
over the timed calls (:mod:`ntk_infinite.reports.conv`'s method).

Accuracy near ρ = ±1: for pairs (x, x·(1 + 1e-9)), (x, −x), (x, x + 1e-8 z) and (x, x) the
kernels of both libraries against 50-digit mpmath, the recursion written out layer by layer
(``_mp_pair``: FanInSum adds, LayerNorm divides, ReLU by Cho & Saul's formula with mpmath's
arccos).

Physical limit: per entry and Dense > ReLU pair the pair pass does ~60 flops (the affine update
with its Gram determinant ~20, ReLU's T and Ṫ with one arctangent ~40); each FanInSum adds ~30.
At ``FLOPS_PER_CYCLE`` flops per cycle on every core this bounds the time from below.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tempfile
import time

from ._common import generated_by
from .conv import FLOPS_PER_CYCLE, TIMING_HELPERS, _nt_env, find_nt_python, machine

__all__ = ["write_table", "CASES", "architecture_spec"]

D = 64
BLOCKS = 8
W = 2.0**0.5
SIZES = {"resnet": 2000, "layernorm-standard": 2000}
QUICK_N = 200
CHILD_TIMEOUT_S = 1800
FLOPS_PER_PAIR, FLOPS_PER_SUM = 60, 30


def architecture_spec(name: str) -> list:
    """The architecture as a list of plain items both children build."""
    standard = name == "layernorm-standard"
    dense = ("dense", W, 0.1, 512 if standard else None, "standard" if standard else "ntk")
    block = ([("layernorm",)] if standard else []) + [("relu",), dense, ("relu",), dense]
    spec = [dense]
    for _ in range(BLOCKS):
        spec += [("fanout",), ("block", block), ("faninsum",)]
    return spec + [("relu",), ("dense", 1.0, 0.0, 1, "standard" if standard else "ntk")]


CASES = tuple(SIZES)

_OURS = TIMING_HELPERS + r'''
import ntk_infinite as nk

def build(spec):
    out = []
    for item in spec:
        if item[0] == "dense":
            out.append(nk.Dense(w_std=item[1], b_std=item[2], width=item[3], parameterization=item[4]))
        elif item[0] == "relu":
            out.append(nk.ReLU())
        elif item[0] == "layernorm":
            out.append(nk.LayerNorm())
        elif item[0] == "fanout":
            out.append(nk.FanOut(2))
        elif item[0] == "block":
            out.append(nk.parallel(nk.serial(*build(item[1])), nk.Identity()))
        elif item[0] == "faninsum":
            out.append(nk.FanInSum())
    return out

spec, x_path, prefix, repeats, budget = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
X = np.load(x_path)
kernel = nk.compile(nk.serial(*build(spec)))
k, res = _timed(lambda: kernel(X), lambda k: None, repeats, budget)
np.save(prefix + ".nngp.npy", k.nngp); np.save(prefix + ".ntk.npy", k.ntk)
P = np.load(x_path.replace(".npy", ".pairs.npy"))
kp = kernel(P)
np.save(prefix + ".pairs.nngp.npy", kp.nngp); np.save(prefix + ".pairs.ntk.npy", kp.ntk)
print(json.dumps(res))
'''

_NT = TIMING_HELPERS + r'''
import jax
jax.config.update("jax_enable_x64", True)
from neural_tangents import stax

def build(spec):
    out = []
    for item in spec:
        if item[0] == "dense":
            _, w, b, width, param = item
            out.append(stax.Dense(width or 512, W_std=w, b_std=(b if (b or param == "ntk") else None),
                                  parameterization=param))
        elif item[0] == "relu":
            out.append(stax.Relu())
        elif item[0] == "layernorm":
            out.append(stax.LayerNorm())
        elif item[0] == "fanout":
            out.append(stax.FanOut(2))
        elif item[0] == "block":
            out.append(stax.parallel(stax.serial(*build(item[1])), stax.Identity()))
        elif item[0] == "faninsum":
            out.append(stax.FanInSum())
    return out

spec, x_path, prefix, repeats, budget = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
X = np.load(x_path)
_, _, kernel_fn = stax.serial(*build(spec))
fn = jax.jit(kernel_fn, static_argnames="get")
def block(k):
    k.nngp.block_until_ready(); k.ntk.block_until_ready()
k, res = _timed(lambda: fn(X, None, get=("nngp", "ntk")), block, repeats, budget)
np.save(prefix + ".nngp.npy", np.asarray(k.nngp)); np.save(prefix + ".ntk.npy", np.asarray(k.ntk))
P = np.load(x_path.replace(".npy", ".pairs.npy"))
kp = fn(P, None, get=("nngp", "ntk"))
np.save(prefix + ".pairs.nngp.npy", np.asarray(kp.nngp)); np.save(prefix + ".pairs.ntk.npy", np.asarray(kp.ntk))
print(json.dumps(res))
'''


def _pairs(seed: int = 1):
    """Rows x, x(1 + 1e-9), −x, x + 1e-8 z: the pairs (0, j) are nearly parallel or antiparallel."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(D)
    return np.stack([x, x * (1 + 1e-9), -x, x + 1e-8 * rng.standard_normal(D)])


PAIR_NAMES = ("x, x", "x, x·(1+1e-9)", "x, −x", "x, x + 1e-8 z")


def _mp_pair(spec, x, y, dps: int = 50):
    """(Σ, Θ) of one pair in mpmath, the recursion written out layer by layer."""
    import mpmath as mp

    def relu(q1, q2, c):
        r = mp.sqrt(q1 * q2)
        th = mp.acos(max(mp.mpf(-1), min(mp.mpf(1), c / r)))
        return r * (mp.sin(th) + (mp.pi - th) * mp.cos(th)) / (2 * mp.pi), (mp.pi - th) / (2 * mp.pi)

    def run(items, q1, q2, c, t, width):
        for item in items:
            kind = item[0]
            if kind == "dense":
                _, w, b, n_out, param = item
                w2, b2 = mp.mpf(w) ** 2, mp.mpf(b) ** 2
                c_in = c
                q1, q2, c = w2 * q1 + b2, w2 * q2 + b2, w2 * c + b2
                t = (width * c_in + w2 * t + (1 if b > 0 else 0)) if param == "standard" else w2 * t + c
                width = n_out
            elif kind == "relu":
                T, Td = relu(q1, q2, c)
                q1, q2, c, t = relu(q1, q1, q1)[0], relu(q2, q2, q2)[0], T, Td * t
            elif kind == "layernorm":
                eps = mp.mpf(1e-12)
                s = mp.sqrt((q1 + eps) * (q2 + eps))
                c, t, q1, q2 = c / s, t / s, q1 / (q1 + eps), q2 / (q2 + eps)
            elif kind == "block":
                b1, b2_, bc, bt, _ = run(item[1], q1, q2, c, t, width)
                q1, q2, c, t = q1 + b1, q2 + b2_, c + bc, t + bt
        return q1, q2, c, t, width

    with mp.workdps(dps):
        xs, ys = [mp.mpf(float(v)) for v in x], [mp.mpf(float(v)) for v in y]
        q1 = mp.fsum(u * u for u in xs) / len(xs)
        q2 = mp.fsum(v * v for v in ys) / len(ys)
        c = mp.fsum(u * v for u, v in zip(xs, ys)) / len(xs)
        _, _, S, T, _ = run(spec, q1, q2, c, mp.mpf(0), len(xs))
        return float(S), float(T)


def _run(python, script, spec, x_path, prefix, repeats, budget, env=None):
    try:
        proc = subprocess.run([python, "-c", script, json.dumps(spec), str(x_path), str(prefix), str(repeats),
                               str(budget)], capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT_S} s"}
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return {"error": (lines[-1] if lines else f"exit status {proc.returncode}")[:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _case(name, n, work, nt, repeats, budget):
    import numpy as np

    spec = architecture_spec(name)
    X = np.random.default_rng(0).standard_normal((n, D))
    x_path = work / f"{name}.npy"
    np.save(x_path, X)
    np.save(work / f"{name}.pairs.npy", _pairs())
    row = {"name": name, "n": n, "ours": _run(sys.executable, _OURS, spec, x_path, work / f"{name}.ours", repeats,
                                               budget)}
    row["nt"] = _run(nt, _NT, spec, x_path, work / f"{name}.nt", repeats, budget, env=_nt_env()) if nt else None
    P = _pairs()
    row["mp"] = [_mp_pair(spec, P[0], P[j]) for j in range(len(P))]
    for lib in ("ours", "nt"):
        if row[lib] is None or "error" in row[lib]:
            continue
        pairs = {key: np.load(work / f"{name}.{lib}.pairs.{key}.npy")[0] for key in ("nngp", "ntk")}
        row[lib]["pair_errors"] = [max(abs(pairs[key][j] - row["mp"][j][i]) / abs(row["mp"][j][i])
                                       for i, key in enumerate(("nngp", "ntk"))) for j in range(len(P))]
    if nt and "error" not in row["ours"] and "error" not in row["nt"]:
        row["agreement"] = {}
        for key in ("nngp", "ntk"):
            a, b = (np.load(work / f"{name}.{lib}.{key}.npy") for lib in ("ours", "nt"))
            off = ~np.eye(n, dtype=bool)
            row["agreement"][key] = float((np.abs(a - b) / np.abs(b))[off].max())
    return row


def write_table(out_dir, quick: bool = False, *, nt_python=None, repeats=None) -> pathlib.Path:
    """Measure every case and write ``out_dir/branches.md``."""
    t0 = time.perf_counter()
    nt = find_nt_python(nt_python)
    repeats = repeats or (1 if quick else 3)
    budget = 30.0 if quick else 120.0
    with tempfile.TemporaryDirectory() as tmp:
        rows = [_case(name, QUICK_N if quick else n, pathlib.Path(tmp), nt, repeats, budget)
                for name, n in SIZES.items()]
    text = _render(rows, machine(), quick, nt, time.perf_counter() - t0)
    out = pathlib.Path(out_dir) / "branches.md"
    out.write_text(text)
    return out


def _limit_seconds(n, mach):
    pairs = 2 * BLOCKS + 1 + 1
    flops = n * (n + 1) / 2 * (pairs * FLOPS_PER_PAIR + BLOCKS * FLOPS_PER_SUM)
    return flops / (FLOPS_PER_CYCLE * mach["clock_hz"] * mach["cores"]) if mach.get("clock_hz") else None


def _render(rows, mach, quick, nt, seconds) -> str:
    lines = ["# Residual, normalised and standard-parameterisation networks", "",
             f"{'Quick run (smoke test), ' if quick else ''}{mach['cpu']}, {mach['cores']} cores. Architectures, "
             "method and the physical limit: `ntk_infinite.reports.branches`. NNGP + NTK of K(X), X (n, 64) "
             "standard normal, float64; neural-tangents 0.6.5 under `jax.jit` with x64"
             f"{'' if nt else ' (not available in this run)'}.", "",
             "## Speed and memory", "",
             "| architecture | n | library | first call s | best s | ns/entry | peak MiB | physical limit s | speed-up |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        n = row["n"]
        unique = n * (n + 1) / 2
        limit = _limit_seconds(n, mach)
        for lib in ("ours", "nt"):
            res = row[lib]
            label = "ntk_infinite" if lib == "ours" else "neural-tangents"
            if res is None:
                continue
            if "error" in res:
                lines.append(f"| {row['name']} | {n} | {label} | failed: {res['error']} | | | | | |")
                continue
            speed = ""
            if lib == "nt" and row["ours"] and "error" not in row["ours"]:
                speed = f"{res['seconds'] / row['ours']['seconds']:.1f}×"
            lines.append(f"| {row['name']} | {n} | {label} | {res['first_call']:.2f} | {res['seconds']:.3f} | "
                         f"{1e9 * res['seconds'] / unique:.1f} | {res['peak_mib']:.0f} | "
                         f"{'' if limit is None else f'{limit:.2g}'} | {speed} |")
    lines += ["", "speed-up: neural-tangents' best time over ntk_infinite's.", "",
              "## Agreement with neural-tangents (distinct inputs, off the diagonal)", "",
              "| architecture | max relative difference, NNGP | NTK |", "|---|---:|---:|"]
    for row in rows:
        ag = row.get("agreement")
        lines.append(f"| {row['name']} | " + (" | ".join(f"{ag[k]:.1e}" for k in ("nngp", "ntk")) if ag else "— | —")
                     + " |")
    lines += ["", "## Nearly parallel and antiparallel pairs against 50-digit mpmath", "",
              "Largest relative error of Σ and Θ for the pair.", "",
              "| architecture | library | " + " | ".join(PAIR_NAMES) + " |",
              "|---|---|" + "---:|" * len(PAIR_NAMES)]
    for row in rows:
        for lib in ("ours", "nt"):
            res = row[lib]
            if res is None or "pair_errors" not in res:
                continue
            label = "ntk_infinite" if lib == "ours" else "neural-tangents"
            lines.append(f"| {row['name']} | {label} | " + " | ".join(f"{e:.1e}" for e in res["pair_errors"]) + " |")
    lines += ["", generated_by("branches", quick, seconds), ""]
    return "\n".join(lines)


def main():  # pragma: no cover - command line
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 200, one repetition: a smoke test")
    parser.add_argument("--out", default="tables")
    parser.add_argument("--nt-python", default=None)
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(write_table(out, quick=args.quick, nt_python=args.nt_python).read_text())


if __name__ == "__main__":  # pragma: no cover
    main()
