r"""The digits section of ``tables/real_data.md``: convolutional kernels on 8×8 images.

scikit-learn's handwritten digits as images (n, 8, 8, 1), classified by kernel regression at
t = ∞ with the CNN-GP and CNTK of

``depth*(Conv((3, 3), padding="SAME", w_std=√2, b_std=0.1) > ReLU) > READOUT > Dense(√2, 0.1)``

with READOUT ∈ {GlobalAvgPool, Flatten} (Novak et al. 2019; Arora et al. 2019), beside the
MLP NNGP/NTK, RBF kernel ridge and RBF SVM of the main table, all by the same nested
cross-validation (:func:`ntk_infinite.reports.real_data.nested_cv`) on the same subsample and
folds, so the differences are paired.

Cost decides the protocol. The GlobalAvgPool kernel needs the full P × P = 64 × 64 state per
pair of images and layer; at the engine's measured ~0.25–0.5 µs per (pair × layer × position
pair) a Gram matrix of all 1797 digits costs 1797²/2 · 64² · depth entries, about an hour
per layer; all 1797 digits (``image_n``) with depths 1–3 take a few minutes; the Flatten kernel
carries one number per position (P = 64), 64 times cheaper. Every Gram matrix is timed and reported per entry.

Pixels: the CNN kernels see the images standardised with one mean and one standard
deviation over all pixels (per-pixel scaling would distort the translation structure a
convolution assumes); the MLP and RBF baselines see the per-feature standardisation of the
main table. Both are label-free.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .real_data import Config, _fmt, _grams, _mode, _paired, nested_cv

__all__ = ["run_images", "render_images", "conv_arch", "READOUTS"]

#: The two readouts compared, with the method names of the table.
READOUTS = {"GlobalAvgPool": ("CNN-GP (GAP)", "CNTK (GAP)"), "Flatten": ("CNN-GP (Flatten)", "CNTK (Flatten)")}
#: Positions of an 8×8 image.
_P = 64


def conv_arch(depth: int, readout: str, cfg: Config) -> str:
    """The text form of the convolutional network: ``depth`` Conv/ReLU blocks, the readout, a Dense layer."""
    conv = f"Conv(filter_shape=(3, 3), padding='SAME', w_std={cfg.w_std!r}, b_std={cfg.b_std!r})"
    return f"{depth}*({conv} > ReLU) > {readout} > Dense(w_std={cfg.w_std!r}, b_std={cfg.b_std!r})"


def _subsample(y, n: int, seed: int) -> np.ndarray:
    """Indices of a stratified subsample of ``n`` points (all points when n >= len(y))."""
    if n >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    return np.sort(keep)


def _conv_grams(images, cfg: Config):
    """{family: [Gram per depth]} of both readouts, and per-kernel timings."""
    from .. import compile as nk_compile

    grams, timings = {}, []
    n = images.shape[0]
    for readout, (gp, tk) in READOUTS.items():
        grams[gp], grams[tk] = [], []
        for depth in cfg.conv_depths:
            kernel = nk_compile(conv_arch(depth, readout, cfg))
            kernel(images[:2])  # build or load the engine outside the timing
            t0 = time.perf_counter()
            k = kernel(images)
            seconds = time.perf_counter() - t0
            grams[gp].append(k.nngp)
            grams[tk].append(k.ntk)
            per_pair = _P * _P if kernel.layout == "full" else _P
            entries = n * (n + 1) / 2 * depth * per_pair
            timings.append({"readout": readout, "depth": depth, "layout": kernel.layout, "seconds": seconds,
                            "ns_per_entry": 1e9 * seconds / entries})
    return grams, timings


def run_images(cfg: Config) -> dict:
    """The digits section: every method on one stratified subsample, the same outer and inner folds."""
    from sklearn.datasets import load_digits

    from .real_data import _load

    t0 = time.perf_counter()
    features, y, task = _load("digits")  # per-feature standardised, as in the main table
    pixels, _ = load_digits(return_X_y=True)
    keep = _subsample(y, cfg.image_n, cfg.seed)
    images = ((pixels - pixels.mean()) / pixels.std()).reshape(-1, 8, 8, 1)[keep]
    y = np.asarray(y)[keep]
    grams, t_mlp = _grams(np.ascontiguousarray(features[keep]), cfg)
    conv, timings = _conv_grams(np.ascontiguousarray(images), cfg)
    grams.update(conv)
    krr = {"MLP NNGP": ("NNGP", cfg.depths), "MLP NTK": ("NTK", cfg.depths),
           "RBF kernel ridge": ("RBF", cfg.gammas_rel)}
    krr.update({name: (name, cfg.conv_depths) for pair in READOUTS.values() for name in pair})
    scores, chosen = nested_cv(grams, y, task, cfg, krr)
    return {"n": len(y), "scores": scores, "chosen": chosen, "timings": timings, "mlp_seconds": t_mlp,
            "seconds": time.perf_counter() - t0}


def render_images(res: dict, cfg: Config) -> list:
    """Markdown lines of the digits section."""
    s, n = res["scores"], res["n"]
    order = ["MLP NNGP", "MLP NTK", "RBF kernel ridge", "RBF SVM"] + [m for pair in READOUTS.values() for m in pair]
    best = max(order, key=lambda m: s[m].mean())
    depths = ", ".join(map(str, cfg.conv_depths))
    lines = [
        "## Digits as 8×8 images: convolutional kernels",
        "",
        (f"All {n} digits" if n >= 1797 else
         f"A stratified subsample of {n} of the 1797 digits (≈ {n // 10} per class; the main table's digits row uses "
         "all of them)") + ", as images (n, 8, 8, 1). "
        f"CNN-GP / CNTK: kernel regression at t = ∞ with `depth*(Conv((3, 3), SAME, {cfg.w_std:.4g}, {cfg.b_std:g}) "
        f"> ReLU) > READOUT > Dense({cfg.w_std:.4g}, {cfg.b_std:g})`, depth ∈ {{{depths}}}, READOUT GlobalAvgPool "
        "(GAP) or Flatten, tuned jointly with the ridge exactly as the MLP rows. All methods run on the same "
        f"images with the same {cfg.outer_folds}-fold outer / {cfg.inner_folds}-fold inner splits, so the "
        "differences below are paired. The CNN kernels see pixels standardised with one mean and standard deviation; "
        "the MLP/RBF rows see per-pixel standardisation, as in the main table.",
        "",
        "Cost: the GAP kernel carries all 64 × 64 position pairs per pair of images and layer, the Flatten kernel only "
        f"the 64 same-position entries; at the measured cost below, all 1797 digits take about "
        f"{_full_estimate(res):.1f} min per Conv layer for the GAP Gram matrix.",
        "",
        "| method | accuracy % | − MLP NTK (paired) | − RBF kernel ridge (paired) | depth chosen |",
        "|---|---|---|---|---|",
    ]
    for m in order:
        cell = f"**{_fmt(s[m], 'classification')}**" if m == best else _fmt(s[m], "classification")
        vs = [("" if m == ref else _paired(s[m], s[ref], "classification")[0]) for ref in ("MLP NTK", "RBF kernel ridge")]
        depth = "–" if m.startswith("RBF") else str(_mode([c[0] for c in res["chosen"][m]]))
        lines.append(f"| {m} | {cell} | {vs[0]} | {vs[1]} | {depth} |")
    lines += ["", "Paired differences in accuracy points over the outer folds, with wins/ties/losses. Bold: best mean.",
              "", "| kernel | layout | depth | Gram matrix (NNGP + NTK) | ns per (pair × layer × entry) |",
              "|---|---|---|---|---|"]
    for t in res["timings"]:
        lines.append(f"| {t['readout']} | {t['layout']} | {t['depth']} | {t['seconds']:.1f} s | {t['ns_per_entry']:.0f} |")
    lines += ["", f"An entry is a position pair (GAP, full layout) or a position (Flatten, diagonal layout). MLP kernels "
              f"(all depths): {res['mlp_seconds']:.2f} s; the whole section, tuning included: {res['seconds']:.0f} s.",
              ""]
    return lines


def _full_estimate(res: dict) -> float:
    """Minutes per Conv layer of a GAP Gram matrix of all 1797 digits at the measured rate."""
    rates = [t["ns_per_entry"] for t in res["timings"] if t["layout"] == "full"]
    return 1797 * 1798 / 2 * _P * _P * (min(rates) if rates else math.nan) * 1e-9 / 60.0
