r"""``tables/lazy_training.md``: trained finite networks against the analytic predictor, and laziness.

For each architecture, networks of increasing width are trained by gradient flow (RK4) on 20
points of the shipped breast-cancer data (y = ±1, loss ½Σ(f − y)², η·t = min(1/λ_min, 50/λ_max)
of the analytic NTK) and compared on 10 test points with

* the analytic predictor given the same initial function,
  :math:`f_t = f_0 - \Theta_*\Theta^{-1}(I - e^{-\eta\Theta t})(f_0 - Y)` (Lee et al. 2019);
* the network's own linearisation (the same formula with the empirical Θ̂₀);
* the ensemble mean :math:`\mu_t`, with the analytic covariance over initialisations;

and the relative changes of the empirical NTK and of the parameters during training are
measured (Lee et al. 2019 bound them by O(width^−1/2)). A second table trains
:math:`\alpha(f - f_0)` on the loss scaled by 1/α² at fixed width (Chizat, Oyallon & Bach 2019):
as α grows, training becomes lazy.

Run: ``ntk-infinite tables --only lazy_training`` or ``python benchmarks/lazy_training.py``.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

from ._common import generated_by, pyplot

__all__ = ["write_table", "CASES", "SCALE_CASES"]

#: (label, architecture, widths, seeds) of the width sweeps.
CASES = (
    ("ReLU, 1 hidden layer", "Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1)", (64, 128, 256, 512, 1024, 2048, 4096), 8),
    ("tanh, 1 hidden layer", "Dense(1.4, 0.1) > {tanh} > Dense(1.4, 0.1)", (64, 128, 256, 512, 1024, 2048, 4096), 8),
    ("ReLU, 2 hidden layers", "Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1)",
     (64, 128, 256, 512, 1024), 4),
)
QUICK_CASES = (
    ("ReLU, 1 hidden layer", "Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1)", (64, 256, 1024), 3),
    ("ReLU, 2 hidden layers", "Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1)", (64, 128, 256), 3),
)
#: (label, architecture) of the output-scale sweeps, at SCALE_WIDTH.
SCALE_CASES = (
    ("tanh, 1 hidden layer", "Dense(1.4, 0.1) > {tanh} > Dense(1.4, 0.1)"),
    ("ReLU, 1 hidden layer", "Dense(1.4, 0.1) > ReLU > Dense(1.4, 0.1)"),
)
SCALE_WIDTH = 64
ALPHAS = (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
SCALE_SEEDS = 6


def _arch(template: str):
    """Parse a template; ``{tanh}`` becomes the library's Tanh layer or Activation(np.tanh)."""
    from ..describe.layers import Dense, ReLU, serial
    from .convergence import _library_layer

    tanh = _library_layer("Tanh", np.tanh)
    layers = []
    for part in template.split(">"):
        part = part.strip()
        if part == "{tanh}":
            layers.append(tanh)
        elif part == "ReLU":
            layers.append(ReLU())
        else:
            w, b = (float(v) for v in part[part.index("(") + 1:-1].split(","))
            layers.append(Dense(w_std=w, b_std=b))
    return serial(*layers)


def _rms(a, axis=-1):
    return np.sqrt(np.mean(np.asarray(a) ** 2, axis=axis))


def _measure(quick):
    """The training sweeps over widths and over the output scale α: (runs, scale_runs, seconds)."""
    from ..verify.runners import output_scale_sweep, sample_data, training_agreement

    X, y, Xt, _ = sample_data(20, 10, seed=0)
    t_start = time.perf_counter()
    runs = []
    for label, template, widths, seeds in (QUICK_CASES if quick else CASES):
        arch = _arch(template)
        t0 = time.perf_counter()
        res = training_agreement(arch, X, y, Xt, widths=widths, samples=seeds, seed=0)
        runs.append((label, arch, res, seeds, time.perf_counter() - t0))
    scale_runs = []
    alphas = ALPHAS[::2] if quick else ALPHAS
    for label, template in SCALE_CASES[:1] if quick else SCALE_CASES:
        arch = _arch(template)
        t0 = time.perf_counter()
        sw = output_scale_sweep(arch, X, y, width=SCALE_WIDTH, alphas=alphas, samples=2 if quick else SCALE_SEEDS)
        scale_runs.append((label, arch, sw, time.perf_counter() - t0))
    total = time.perf_counter() - t_start
    return runs, scale_runs, total


def _width_rows(runs, bound):
    """The summary table over networks, then the criteria."""
    lines = []
    for label, _, res, seeds, seconds in runs:
        f = res.fits
        lines.append(
            f"| {label} | {res.widths[0]}–{res.widths[-1]} | {seeds} | {f['deviation']} | {f['linearized_deviation']} | "
            f"{res.mean_z[-1]:.2f} (≤ {res.z_critical:.2f}) | {f['ntk_change']} | {f['param_change']} | "
            f"{res.agreement_verdict} | {res.lazy_verdict} | {seconds:.0f} |"
        )
    lines += ["", f"Criteria: slopes of f vs f_t, ΔΘ and Δθ at most {bound:+.1f} (shrinking at least like "
              "width^−1/2, within the issue's ±0.1); mean z below its critical value. FAIL only when a slope exceeds "
              "the bound by more than 3.29 standard errors, INCONCLUSIVE in between.", ""]
    return lines


def _network_tables(runs):
    """Per network: every width's deviations and changes, and the fitted slopes."""
    from ..verify.runners import fit_slope

    lines = []
    for label, arch, res, seeds, _ in runs:
        lines += [f"### {label}: `{arch.to_text()}`", "",
                  "| width | ‖f − f_t‖ | ‖f − f_lin‖ | mean z | ΔΘ | Δθ | " +
                  " | ".join(f"Δ layer {i + 1}" for i in range(res.layer_change.shape[1])) + " |",
                  "|---:|---:|---:|---:|---:|---:|" + "---:|" * res.layer_change.shape[1]]
        for i, w in enumerate(res.widths):
            layer_cells = " | ".join(f"{v:.2e}" for v in _rms(res.layer_change[i]))
            lines.append(
                f"| {w} | {_rms(res.deviation[i]):.3e} | {_rms(res.linearized_deviation[i]):.3e} | "
                f"{res.mean_z[i]:.2f} | {_rms(res.ntk_change[i]):.3e} | {_rms(res.param_change[i]):.3e} | {layer_cells} |"
            )
        layer_fits = [fit_slope(res.widths, res.layer_change[:, j, :]) for j in range(res.layer_change.shape[1])]
        lines.append("| slope | " + " | ".join(str(res.fits[k]) for k in
                     ("deviation", "linearized_deviation")) + " | | " +
                     " | ".join(str(res.fits[k]) for k in ("ntk_change", "param_change")) + " | " +
                     " | ".join(str(fit) for fit in layer_fits) + " |")
        lines.append("")
    return lines


def _scale_rows(scale_runs):
    """The output-scale sweep table and its slopes."""
    lines = []
    header = "| α | " + " | ".join(f"{label}: ΔΘ | {label}: Δθ | {label}: final loss" for label, *_ in scale_runs) + " |"
    lines += [header, "|---:|" + "---:|---:|---:|" * len(scale_runs)]
    for i, a in enumerate(scale_runs[0][2].alphas):
        cells = " | ".join(
            f"{_rms(sw.ntk_change[i]):.3e} | {_rms(sw.param_change[i]):.3e} | {np.mean(sw.train_loss[i]):.3e}"
            for _, _, sw, _ in scale_runs)
        lines.append(f"| {a:g} | {cells} |")
    cells = " | ".join(f"{sw.fits['ntk_change']} | {sw.fits['param_change']} | " for _, _, sw, _ in scale_runs)
    lines += [f"| slope (α ≥ 2) | {cells}", ""]
    lines += [
        "The parameters move like 1/α for both activations, and the tanh kernel follows 1/α. The ReLU kernel has, "
        "besides a smooth part that falls like 1/α, jumps whenever a unit's pre-activation on a training point "
        "changes sign: rare events whose count is roughly Poisson with mean ∝ 1/α, so their RMS contribution falls "
        "like α^−1/2 and dominates at large α at this width. "
        "The final loss is α-independent in the lazy regime; at small α the network leaves it (feature learning).",
    ]
    return lines


def _intro_lines():
    """The method and the summary table's header."""
    return [
        "# Trained finite networks vs the analytic predictor; lazy training",
        "",
        "Training: full-batch gradient flow (classical RK4, step 0.25/λ_max of the empirical NTK) on 20 points of the "
        "shipped Breast Cancer Wisconsin data (standardised, y = ±1), loss ½Σ(f − y)², learning rate 1, to "
        "η·t = min(1/λ_min, 50/λ_max) of the analytic NTK; 10 test points. NTK parameterisation, standard normal "
        "initialisation. Deviations are ‖f_net − f‖ on the test points divided by the RMS norm of the trained "
        "outputs over initialisations, √(‖μ_t‖² + tr Σ_t); all per-width numbers are RMS over seeds; slopes are "
        "least-squares log-log fits ± bootstrap standard errors over seeds.",
        "",
        "* **f_t**: the analytic predictor f₀ − Θ*Θ⁻¹(I − e^{−ηΘt})(f₀ − Y) with the *analytic* Θ and the "
        "network's own initial outputs f₀ (Lee et al. 2019), from `nk.predict.gd_mse_from_gram`. Expected: "
        "the deviation shrinks like width^−1/2 (it is driven by the fluctuation of the empirical NTK).",
        "* **f_lin**: the same formula with the network's empirical NTK at initialisation (its linearisation).",
        "* **mean z**: max over test points of |mean over seeds − μ_t| / (σ_t/√S), σ_t² from the analytic "
        "covariance over initialisations; critical value: Bonferroni normal at a false-alarm rate of 1e-3.",
        "* **ΔΘ**: ‖Θ̂_T − Θ̂₀‖_F/‖Θ̂₀‖_F on the training points; **Δθ**: ‖θ_T − θ₀‖/‖θ₀‖. Lee et al. (2019) "
        "bound both by O(width^−1/2).",
        "",
        "| network | widths | seeds | slope f vs f_t | slope f vs f_lin | mean z (largest width) | "
        "slope ΔΘ | slope Δθ | property 2 | property 3 | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]


def _reading_lines():
    """How to read the slopes, and the output-scale section's introduction."""
    return [
        "Reading the slopes. Property 2 holds with the predicted rate: the trained network tracks the analytic "
        "f_t with an error falling like width^−1/2, and the seed average tracks μ_t. The network is much closer to "
        "its own linearisation than to the infinite-width predictor (slopes between about −0.6 and −1): what "
        "separates it from f_t at finite width is mostly the fluctuation of Θ̂₀, not non-linearity. Lee et al.'s O(width^−1/2) "
        "for ΔΘ and Δθ is an upper bound that the measurements beat: per layer, the relative change of a weight "
        "matrix is O(1)/‖W₀‖_F, i.e. width^−1/2 for the input and readout layers (‖W₀‖_F ∝ √width) and width^−1 "
        "for hidden-to-hidden layers (‖W₀‖_F ∝ width), so ‖Δθ‖/‖θ₀‖ falls like width^−1/2 for one hidden layer and "
        "like width^−1 with more. The kernel moves by O(1/width) for smooth activations (Dyer & Gur-Ari 2019); for "
        "ReLU the units whose pre-activation changes sign add a term of about width^−3/4.",
        "",
        f"## Output scale α at width {SCALE_WIDTH} (Chizat, Oyallon & Bach 2019)",
        "",
        "Model g = α(f − f₀) trained on (1/α²)·½Σ(g − y)² by the same gradient flow and time: the function-space "
        "dynamics do not depend on α while the parameters move by O(1/α), so training becomes lazy as α grows. "
        "Slopes are fitted over α ≥ 2; expected −1.",
        "",
    ]


def write_table(out_dir: pathlib.Path, quick: bool = False) -> pathlib.Path:
    """Run the training sweeps and write ``out_dir/lazy_training.md`` (+ ``lazy_training.png``)."""
    from ..verify.runners import EXPECTED_SLOPE, SLOPE_TOL

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs, scale_runs, total = _measure(quick)
    bound = EXPECTED_SLOPE + SLOPE_TOL

    lines = _intro_lines()
    lines += _width_rows(runs, bound)
    lines += _network_tables(runs)
    lines += _reading_lines()
    lines += _scale_rows(scale_runs)
    png = _plot(out_dir / "lazy_training.png", runs, scale_runs)
    if png is not None:
        lines += ["", f"![Deviation and laziness against width and output scale]({png.name})"]
    lines += [
        "",
        generated_by("lazy_training", quick, total),
        "",
    ]
    path = out_dir / "lazy_training.md"
    path.write_text("\n".join(lines))
    return path


def _plot(path: pathlib.Path, runs, scale_runs):
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for label, _, res, _, _ in runs:
        w = np.asarray(res.widths, dtype=float)
        line, = axes[0].loglog(w, _rms(res.deviation), "o-", label=f"{label}: vs f_t")
        axes[0].loglog(w, _rms(res.linearized_deviation), "s--", color=line.get_color(), label=f"{label}: vs f_lin")
        line, = axes[1].loglog(w, _rms(res.ntk_change), "o-", label=f"{label}: ΔΘ")
        axes[1].loglog(w, _rms(res.param_change), "s--", color=line.get_color(), label=f"{label}: Δθ")
    for ax in axes[:2]:
        xs = np.array([64.0, 4096.0])
        ax.loglog(xs, 0.5 * (xs / 64) ** -0.5, "k:", lw=1, label="width$^{-1/2}$")
        ax.set_xlabel("hidden width")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("trained network vs analytic / linearised")
    axes[1].set_title("relative change during training")
    for label, _, sw, _ in scale_runs:
        a = np.asarray(sw.alphas)
        line, = axes[2].loglog(a, _rms(sw.ntk_change), "o-", label=f"{label}: ΔΘ")
        axes[2].loglog(a, _rms(sw.param_change), "s--", color=line.get_color(), label=f"{label}: Δθ")
    a = np.asarray(scale_runs[0][2].alphas, dtype=float)
    axes[2].loglog(a, 0.1 / a, "k:", lw=1, label="1/α")
    axes[2].set_xlabel("output scale α")
    axes[2].set_title(f"lazy training as α grows (width {SCALE_WIDTH})")
    axes[2].grid(True, which="both", alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
