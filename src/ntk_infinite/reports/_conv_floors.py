"""Kernel floors of the convolutional pair pass, for ``tables/conv.md``.

Each jitted map of one layer (:mod:`ntk_infinite.evaluate._spatial_numerics` and ReLU's
generated tile) timed alone, single-threaded, called again and again on the state of one
tile of the benchmark's 16×16 images: what a layer costs per stored entry when nothing else
runs. With the per-layer entries of a case this gives the time the pair pass
cannot beat without fewer operations per entry: ``floor s`` = entries × layers × (ReLU +
convolution) / cores. The square root and the division that ReLU's angle needs are timed
too, as the share of the divider unit.
"""

from __future__ import annotations

import math
import time

__all__ = ["measure", "floor_lines"]

_P = 256  # 16 × 16 positions


def _best_ns(fn, args, entries, reps):
    fn(1, *args)  # compile
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        fn(reps, *args)
        best = min(best, time.perf_counter() - t0)
    return best / reps / entries * 1e9


def measure() -> dict:
    """ns per stored entry and core of: sqrt + division, ReLU's tile, the full and the diagonal
    layouts' 3×3 SAME convolution (sums and normalisation), each alone."""
    import numba as nb
    import numpy as np

    import ntk_infinite as nk
    from ntk_infinite.evaluate import _spatial_numerics as sn

    rng = np.random.default_rng(0)
    conv = nk.Conv(filter_shape=(3, 3), padding="SAME", w_std=2.0**0.5, b_std=0.1)
    full = nk.compile(nk.serial(conv, nk.ReLU(), nk.GlobalAvgPool(), nk.Dense()))
    diag = nk.compile(nk.serial(conv, nk.ReLU(), nk.Flatten(), nk.Dense()))
    relu = getattr(full.program.module, full.program.tile_name(full.program.steps[1]))
    plan_f, plan_d = full.program.plan((16, 16)), diag.program.plan((16, 16))
    tab_f = plan_f.tabs[0, :_P, :int(plan_f.kdiv[0])]
    tab_d = plan_d.tabs[0, :_P, :int(plan_d.kdiv[0])]
    axes = tuple(a[0] for a in plan_f.axes)
    rho = rng.uniform(-0.3, 0.9, (_P, _P))
    sn2 = (1.0 - rho) * (1.0 + rho)
    t = rng.uniform(0.0, 1.0, (_P, _P))
    sq = rng.uniform(0.5, 1.5, 16 * _P)
    sq_o = rng.uniform(1.0, 1.5, 16 * _P)
    prm = np.asarray(full.program.steps[1].params, dtype=float)

    @nb.njit(error_model="numpy", fastmath={"contract", "arcp"})
    def divider(reps, x, y):
        for _ in range(reps):
            for i in range(x.shape[0]):
                y[i] = math.sqrt(x[i]) / (x[i] + 1.0)

    @nb.njit
    def relu_loop(reps, r0, s0, t0, r, s, tt, sq, prm, dummy):
        for _ in range(reps):
            r[:] = r0
            s[:] = s0
            tt[:] = t0
            relu(r, s, tt, 0, 0, sq, sq, sq, sq, dummy, dummy, prm, True)

    @nb.njit
    def copies(reps, r0, s0, t0, r, s, tt):
        for _ in range(reps):
            r[:] = r0
            s[:] = s0
            tt[:] = t0

    @nb.njit
    def conv_full(reps, rho, sn2, t, out, W, tab, sq, sq_o, AXM, AXT, AXR, AXN, GRID):
        for _ in range(reps):
            sn.conv_full(rho, sn2, t, out[0], out[1], out[2], W, tab, 9.0, 256, 256, sq, sq, sq_o, sq_o, 0, 0, 1, 1,
                         2.0, 0.01, 2.0, 0.01, True, AXM, AXT, AXR, AXN, GRID, False)

    @nb.njit
    def conv_diag(reps, rho, sn2, t, out, c, tab, sq, sq_o):
        for _ in range(reps):
            sn.conv_diag(rho, sn2, t, out[0], out[1], out[2], c, tab, 9.0, 16, 16, sq, sq, sq_o, sq_o, 0, 0, 16, 16,
                         2.0, 0.01, 2.0, 0.01, True, False)

    x = rng.uniform(0.1, 1.0, 2048)
    res = {"sqrt+div": _best_ns(divider, (x, np.empty_like(x)), x.size, 2000)}
    work = (rho.copy(), sn2.copy(), t.copy())
    relu_ns = _best_ns(relu_loop, (rho, sn2, t, *work, sq, prm, np.zeros((1, 1))), rho.size, 40)
    res["relu"] = relu_ns - _best_ns(copies, (rho, sn2, t, *work), rho.size, 40)
    out = np.empty((3, _P, _P))
    res["conv full"] = _best_ns(conv_full, (rho, sn2, t, out, np.empty((10, _P * _P)), tab_f, sq, sq_o, *axes),
                                rho.size, 40)
    shaped = tuple(a.reshape(_P, 16, 16) for a in (rho, sn2, t))
    res["conv diag"] = _best_ns(conv_diag, (*shaped, out.reshape(3, _P, 16, 16), np.empty((_P, _P)), tab_d, sq,
                                            sq_o), rho.size, 40)
    return res


def floor_lines(rows, floors, cores, depth) -> list:
    """The section of ``tables/conv.md``: the floors, and per 16×16 case the time they imply
    beside the measured time and neural-tangents' time / 20."""
    lines = ["", "## Kernel floors", "",
             "Each map of one layer alone, one thread, called again and again on one tile's state of 256 × 256 "
             "entries (16×16 images, 3×3 SAME; "
             "`ntk_infinite.reports._conv_floors`), in ns per stored entry: "
             + ", ".join(f"{k} {v:.2f}" for k, v in floors.items())
             + ". ReLU's angle needs one square root and one division per entry (`sqrt+div`). floor s: stored "
               f"entries × {depth} layers × (ReLU + that layout's convolution) / {cores} cores, the pair pass with "
               "nothing but these maps; NT / 20: the time a 20× speed-up needs.", "",
             "| readout | input | n | stored entries per layer | floor s | ntk_infinite s | NT / 20 s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        shape = r["shape"]
        if tuple(shape[:2]) != (16, 16) or not r["ours"] or "error" in r["ours"]:
            continue
        n = r["n"]
        per_pair = _P * _P if r["readout"] == "gap" else _P
        entries = (n * (n - 1) // 2 + n) * per_pair
        conv = floors["conv full" if r["readout"] == "gap" else "conv diag"]
        floor = entries * depth * (floors["relu"] + conv) * 1e-9 / cores
        nt = r["nt"]["seconds"] / 20 if r["nt"] and "error" not in r["nt"] else None
        lines.append(f"| {r['readout']} | {'×'.join(map(str, shape))} | {n} | {entries:.3g} | {floor:.3f} | "
                     f"{r['ours']['seconds']:.3f} | {'—' if nt is None else format(nt, '.3f')} |")
    return lines
