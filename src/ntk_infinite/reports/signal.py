"""tables/signal.md: the edge of chaos and the mean-field quantities of common activations.

For tanh, erf, ReLU, GELU, SiLU and a user activation (a NumPy callable on the series route):
σ_w on the edge of chaos χ₁ = 1 for a range of σ_b (:func:`ntk_infinite.signal.edge_of_chaos`,
orbit from q0 = 1), the quantities of :func:`ntk_infinite.signal.analyse` at σ_b = 0.3 and
σ_w = 1.25 × the edge (chaotic) and 0.8 × the edge (ordered), the closed-form checks, and a
phase diagram of tanh (ξ_c over σ_w², σ_b² with the edge of every activation) as signal.png.
"""

from __future__ import annotations

import math
import pathlib
import time
import warnings

import numpy as np

import ntk_infinite as nk

from ..errors import AccuracyWarning
from ._common import generated_by, pyplot

__all__ = ["write_table", "activations"]

SIGMA_B = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
QUICK_SIGMA_B = (0.0, 0.3)


def _user_activation(x):
    return np.sin(x) + 0.5 * x


def activations() -> dict:
    """The activations of the table, by name."""
    return {"tanh": nk.Tanh(), "erf": nk.Erf(), "ReLU": nk.ReLU(), "GELU": nk.GELU(), "SiLU": nk.SiLU(),
            "user: sin(x) + x/2": nk.Activation(_user_activation, name="sin(x) + x/2")}


def _edges(acts, sigma_b):
    rows = {}
    for name, act in acts.items():
        rows[name] = []
        for b in sigma_b:
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", AccuracyWarning)
                w = nk.signal.edge_of_chaos(act, b)
            rows[name].append((w, time.perf_counter() - t0, len(caught)))
    return rows


def _edge_table(rows, sigma_b):
    head = "| activation | " + " | ".join(f"σ_b = {b:g}" for b in sigma_b) + " |"
    lines = [head, "|---|" + "---:|" * len(sigma_b)]
    for name, cells in rows.items():
        text = []
        for w, _, warned in cells:
            text.append(f"{w:.10f} (σ_w² {w * w:.8f}){' †' if warned else ''}")
        lines.append(f"| {name} | " + " | ".join(text) + " |")
    return lines


def _point_table(acts, edge_at_03):
    lines = ["| activation | σ_w | phase | q* | c* | χ₁ | χ_c | V'(q*) | ξ_q | ξ_c | error estimate |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, act in acts.items():
        for factor in (0.8, 1.25):
            w = factor * edge_at_03[name]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AccuracyWarning)
                p = nk.signal.analyse(act, w, 0.3)
            lines.append(f"| {name} | {w:.6f} | {p.phase} | {p.q_star:.10g} | {p.c_star:.10g} | {p.chi_1:.10g} | "
                         f"{p.chi_c:.10g} | {p.slope_q:.10g} | {p.xi_q:.6g} | {p.xi_c:.6g} | "
                         f"{p.error_estimate:.1e} |")
    return lines


def _checks(rows, sigma_b):
    tanh_published = nk.signal.edge_of_chaos(nk.Tanh(), math.sqrt(0.05)) ** 2
    relu = max(abs(w * w - 2.0) for w, _, _ in rows["ReLU"])
    tanh0 = abs(rows["tanh"][0][0] - 1.0)
    erf0 = abs(rows["erf"][0][0] - math.sqrt(math.pi) / 2)
    return [
        "| closed-form value | reached | |error| |",
        "|---|---:|---:|",
        f"| ReLU: σ_w² = 2 for every σ_b (max over σ_b = {', '.join(f'{b:g}' for b in sigma_b)}) | "
        f"{max(w * w for w, _, _ in rows['ReLU']):.15f} | {relu:.1e} |",
        f"| tanh, σ_b = 0: σ_w = 1 (tanh'(0) = 1) | {rows['tanh'][0][0]:.15f} | {tanh0:.1e} |",
        f"| erf, σ_b = 0: σ_w = √π/2 (erf'(0) = 2/√π) | {rows['erf'][0][0]:.15f} | {erf0:.1e} |",
        f"| tanh, σ_b² = 0.05: σ_w² ≈ 1.76, the critical point of Schoenholz et al. 2017 (two digits) | "
        f"{tanh_published:.6f} | {abs(tanh_published - 1.76):.1e} |",
    ]


def _plot(out_dir, rows, sigma_b, quick):
    plt = pyplot()
    if plt is None:
        return None
    w2 = np.linspace(0.5, 4.0, 12 if quick else 36)
    b2 = np.linspace(0.0, 1.0, 6 if quick else 21)
    xi = np.empty((len(b2), len(w2)))
    for i, bb in enumerate(b2):
        for j, ww in enumerate(w2):
            xi[i, j] = nk.signal.analyse(nk.Tanh(), math.sqrt(ww), math.sqrt(bb)).xi_c
    fig, ax = plt.subplots(figsize=(7, 4.5))
    mesh = ax.pcolormesh(w2, b2, np.log10(np.minimum(xi, 1e4)), shading="auto", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="log10 ξ_c of tanh (capped at 10⁴)")
    for name, cells in rows.items():
        ax.plot([w * w for w, _, _ in cells], [b * b for b in sigma_b], marker="o", ms=3, label=name)
    ax.set_xlabel("σ_w²")
    ax.set_ylabel("σ_b²")
    ax.set_xlim(w2[0], w2[-1])
    ax.set_ylim(b2[0], b2[-1])
    ax.set_title("Edge of chaos (χ₁ = 1) and the correlation depth scale of tanh")
    ax.legend(fontsize=7, loc="upper left")
    path = out_dir / "signal.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_table(out_dir, quick: bool = False) -> pathlib.Path:
    """Measure and write ``out_dir/signal.md`` (and signal.png with matplotlib)."""
    out_dir = pathlib.Path(out_dir)
    t0 = time.perf_counter()
    sigma_b = QUICK_SIGMA_B if quick else SIGMA_B
    acts = activations()
    rows = _edges(acts, sigma_b)
    at_03 = sigma_b.index(0.3)
    edge_at_03 = {name: cells[at_03][0] for name, cells in rows.items()}
    points = _point_table(acts, edge_at_03)
    plot = _plot(out_dir, rows, sigma_b, quick)
    seconds = {name: sum(t for _, t, _ in cells) for name, cells in rows.items()}
    lines = [
        "# Signal propagation: the edge of chaos",
        "",
        "Mean-field theory of deep random networks (Poole et al. 2016; Schoenholz et al. 2017) computed by "
        "`nk.signal` from the activation duals the kernel engine uses: closed forms for erf, ReLU and GELU, the "
        "Hermite series (with its error estimate) for tanh, SiLU and the user activation. Repeated "
        "`Dense(σ_w, σ_b) > φ` blocks; q* is the fixed point of the variance map reached from q0 = 1, "
        "χ₁ = σ_w² Ṫ(q*, q*, q*).",
        "",
        "## σ_w on the edge of chaos, χ₁ = 1",
        "",
        *_edge_table(rows, sigma_b),
        "",
        "† the series dual warned (AccuracyWarning) at some σ_w on the way: the variance map's orbit left the "
        "range where the series meets its tolerance (it diverges for ReLU-like activations above σ_w² = 2); the "
        "sign of χ₁ − 1 there, which is all the search uses, is not in doubt. GELU and SiLU are bistable near "
        "their edge: a small-q fixed point and a diverging orbit coexist, and the edge depends on q0.",
        "",
        "Seconds per activation (all σ_b): " + ", ".join(f"{n} {s:.1f}" for n, s in seconds.items()) + ".",
        "",
        "## Closed-form checks",
        "",
        *_checks(rows, sigma_b),
        "",
        "## Quantities at σ_b = 0.3, on either side of the edge",
        "",
        *points,
        "",
    ]
    if plot is not None:
        lines += ["![phase diagram](signal.png)", ""]
    lines.append(generated_by("signal", quick, time.perf_counter() - t0))
    path = out_dir / "signal.md"
    path.write_text("\n".join(lines) + "\n")
    return path
