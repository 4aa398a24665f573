r"""``tables/convergence.md``: empirical NNGP/NTK of finite networks → the analytic kernels.

For ReLU, erf, tanh and one user-defined activation (φ(x) = x·σ(x), the swish, passed as a
Python callable), networks ``Dense(1.4, 0.1) > φ > Dense(1.4, 0.1) > φ > Dense(1.4, 0.1)`` of widths
64 … 4096 are drawn at random, 16 per width, and their empirical kernels on 30 points of
the shipped breast-cancer data are compared with the compiled analytic kernels
(:func:`ntk_infinite.verify.runners.kernel_convergence`). Expected: the RMS relative Frobenius error
falls as width^−1/2 (fitted slope −0.5 ± 0.1) and the Monte-Carlo mean agrees with the
analytic kernel within its standard error.

Run: ``ntk-infinite tables --only convergence`` or ``python benchmarks/convergence.py``.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

from ._common import generated_by, pyplot

__all__ = ["write_table", "activations", "ARCH_TEMPLATE"]

ARCH_TEMPLATE = "Dense(1.4, 0.1) > {act} > Dense(1.4, 0.1) > {act} > Dense(1.4, 0.1)"
WIDTHS = (64, 128, 256, 512, 1024, 2048, 4096)
SAMPLES = 16
QUICK_WIDTHS = (64, 128, 256, 512)
QUICK_SAMPLES = 4


def _swish(x):
    from scipy.special import expit

    return x * expit(x)


def _swish_prime(x):
    from scipy.special import expit

    s = expit(x)
    return s * (1.0 + x * (1.0 - s))


def _library_layer(name: str, reference):
    """The library's closed-form layer ``name`` when it exists and equals ``reference``,
    else ``Activation(reference)`` (the series route)."""
    import importlib

    from ..describe.layers import LAYER_REGISTRY, Activation

    try:  # the closed-form activation library registers its layers on import
        importlib.import_module("ntk_infinite.describe.activations")
    except Exception:  # absent or broken: fall back to Activation(reference)
        pass
    cls = LAYER_REGISTRY.get(name.lower())
    if cls is not None:
        try:
            layer = cls()
            grid = np.linspace(-4.0, 4.0, 81)
            if np.allclose(layer.fn(grid), reference(grid), rtol=1e-12, atol=1e-12):
                return layer
        except Exception:  # constructor needs arguments, or a different definition
            pass
    return Activation(reference, name=name.lower())


def activations() -> list:
    """``[(label, layer), …]``: ReLU, erf, tanh (library layers when available) and a user function."""
    from scipy.special import erf

    from ..describe.layers import Activation, ReLU

    return [
        ("ReLU", ReLU()),
        ("erf", _library_layer("Erf", erf)),
        ("tanh", _library_layer("Tanh", np.tanh)),
        ("user: x·σ(x)", Activation(_swish, _swish_prime, name="swish")),
    ]


def _arch(layer):
    from ..describe.layers import Dense, serial

    return serial(Dense(w_std=1.4, b_std=0.1), layer, Dense(w_std=1.4, b_std=0.1), layer, Dense(w_std=1.4, b_std=0.1))


def write_table(out_dir: pathlib.Path, quick: bool = False) -> pathlib.Path:
    """Run the convergence sweep and write ``out_dir/convergence.md`` (+ ``convergence.png``)."""
    from ..kernel import compile as compile_kernel
    from ..verify.runners import EXPECTED_SLOPE, SLOPE_TOL, kernel_convergence, sample_data

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    widths = QUICK_WIDTHS if quick else WIDTHS
    samples = QUICK_SAMPLES if quick else SAMPLES
    X, _, Xt, _ = sample_data(20, 10, seed=0)
    XA = np.vstack([X, Xt])
    rows, results, t_start = [], {}, time.perf_counter()
    for label, layer in activations():
        arch = _arch(layer)
        kernel = compile_kernel(arch)
        route = kernel.program.duals[0].route or type(kernel.program.duals[0]).__name__
        t0 = time.perf_counter()
        res = kernel_convergence(arch, XA, widths=widths, samples=samples, analytic=kernel(XA), seed=0)
        seconds = time.perf_counter() - t0
        results[label] = res
        rows.append((label, repr(layer), route, res, seconds))
    total = time.perf_counter() - t_start

    lines = [
        "# Empirical kernels of finite networks converge to the analytic kernels",
        "",
        f"Architecture `{ARCH_TEMPLATE.format(act='φ')}` (NTK parameterisation, standard normal "
        "initialisation); 30 points of the shipped Breast Cancer Wisconsin data (standardised, 30 features). "
        f"For each width, {samples} independently initialised networks; per network the relative Frobenius error "
        "‖K̂ − K‖_F/‖K‖_F of its empirical NNGP (σ_w² h·h'/n + σ_b² of the readout's inputs) and NTK (J Jᵀ, "
        "contracted layer by layer by explicit backpropagation). *RMS* is the root mean square over the networks; "
        "its log-log slope against width is fitted by least squares, ± a bootstrap standard error over seeds. "
        "*z* is ‖K̄ − K‖_F / SE_F for the mean K̄ over the networks at the largest width "
        "(SE_F² = Σ entrywise variances / S); it must stay below the Student-t critical value "
        f"for S − 1 = {samples - 1} degrees of freedom at a false-alarm rate of 1e-3. *Resolution* is the smallest "
        "relative discrepancy of the analytic kernel that this z-test detects at the largest width.",
        "",
        f"Expected slope {EXPECTED_SLOPE} ± {SLOPE_TOL} (Monte-Carlo fluctuations of variance O(1/width); "
        "Jacot et al. 2018, Hanin & Nica 2020).",
        "",
        "| activation | layer | analytic route | NNGP slope | NTK slope | z NNGP | z NTK | critical z | resolution "
        "(NTK) | verdict | seconds |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for label, layer_repr, route, res, seconds in rows:
        n, t = res["nngp"], res["ntk"]
        verdict = "PASS" if n.verdict == t.verdict == "PASS" else f"NNGP {n.verdict}, NTK {t.verdict}"
        lines.append(
            f"| {label} | `{layer_repr}` | {route} | {n.fit} | {t.fit} | {n.z[-1]:.2f} | {t.z[-1]:.2f} | "
            f"{t.z_critical:.2f} | {100 * t.resolution[-1]:.2f}% | {verdict} | {seconds:.1f} |"
        )
    lines += ["", "RMS relative Frobenius error per width (NNGP / NTK):", ""]
    labels = list(results)
    lines.append("| width | " + " | ".join(labels) + " |")
    lines.append("|---:|" + "---:|" * len(labels))
    for i, w in enumerate(widths):
        cells = [f"{results[k]['nngp'].rms_error[i]:.3e} / {results[k]['ntk'].rms_error[i]:.3e}" for k in labels]
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    png = _plot(out_dir / "convergence.png", widths, results)
    if png is not None:
        lines += ["", f"![RMS relative error against width]({png.name})"]
    lines += [
        "",
        generated_by("convergence", quick, total),
        "",
    ]
    path = out_dir / "convergence.md"
    path.write_text("\n".join(lines))
    return path


def _plot(path: pathlib.Path, widths, results):
    plt = pyplot()
    if plt is None:
        return None
    w = np.asarray(widths, dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, name in zip(axes, ("nngp", "ntk")):
        for label, res in results.items():
            r = res[name]
            ax.loglog(w, r.rms_error, "o-", label=f"{label} (slope {r.fit.slope:+.2f})")
        ref = results[next(iter(results))][name].rms_error[0] * (w / w[0]) ** -0.5
        ax.loglog(w, ref, "k--", lw=1, label="width$^{-1/2}$")
        ax.set_xlabel("hidden width")
        ax.set_title(f"empirical {name.upper()} vs analytic")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("RMS relative Frobenius error")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
