"""A plain-text account of what a compiled kernel computes and how.

:func:`explain` lists the steps of the recursion with their role and route (closed form,
series, quadrature), the pair-state layout the compiler chose and why, and, given an input
shape, the positions each step maps and the state entries per pair of inputs, the work of
the pair pass. It reads only the compiled steps, so it is exact about what runs.
"""

from __future__ import annotations

from .duals.base import Dual

__all__ = ["explain"]

_LAYOUT_REASONS = {
    "dense": "one number per pair of inputs: no spatial axes",
    "diagonal": ("P entries per pair of images, one per position: the readout is Flatten and no pooling "
                 "precedes it, so only same-position covariances reach the output (exact)"),
    "full": ("a P × P block per pair of images: a pooling step (AvgPool or GlobalAvgPool) averages "
             "covariances of different positions, so every position pair is needed"),
}


def _step_line(step, spatial) -> str:
    if isinstance(step, Dual):
        where = " on every position pair" if spatial else ""
        return f"{step.layer!r}: activation{where}, {step.route or type(step).__name__}"
    if step.role == "fork":
        return f"FanOut({step.num}): the state is kept for {step.num} branches (nesting level {step.level})"
    if step.role == "join":
        how = "added to the sum" if step.mode == "sum" else f"joins the concatenation with weight {step.weight:.6g}"
        then = "the sum is the state" if step.last else "the next branch starts from the FanOut's state"
        return f"end of branch {step.branch + 1} of {step.num}: {how}; {then}"
    layer = getattr(step, "layer", None)
    name = repr(layer) if layer is not None else f"Dense(σ_w² = {step.w2:g}, σ_b² = {step.b2:g})"
    what = {"affine": "affine map", "linear": "fixed average", "readout": "readout",
            "norm": "per-point rescaling (correlations unchanged)"}.get(step.role, step.role)
    if getattr(step, "fan_in", 0):
        what += f", standard parameterisation (fan-in {'d' if step.fan_in < 0 else step.fan_in})"
    return f"{name}: {what}"


def explain(kernel, input_shape=None) -> str:
    """Text describing ``kernel``'s recursion; with ``input_shape`` (a dense network's d, or an
    image shape (S₁, …, C)) also the positions per step and the state entries per pair."""
    program = kernel.program
    steps = program.steps
    lines = [f"Kernel of {kernel.architecture.to_text() if hasattr(kernel.architecture, 'to_text') else kernel.architecture!r}",
             f"Layout: {kernel.layout}: {_LAYOUT_REASONS[kernel.layout]}.", "Steps (in the order data flows):"]
    for i, step in enumerate(steps, 1):
        lines.append(f"  {i}. {_step_line(step, kernel.spatial)}")
    if input_shape is None:
        if kernel.spatial:
            lines.append("Pass input_shape=(H, W, C) (or (L, C)) for positions, work and memory per pair of images.")
        return "\n".join(lines)
    if not kernel.spatial:
        lines.append(f"Inputs of dimension {int(input_shape if isinstance(input_shape, int) else input_shape[-1])}: "
                     f"one entry per pair and step ({len(steps)} steps).")
        return "\n".join(lines)
    shape = tuple(int(s) for s in input_shape[:-1])
    plan = program.plan(shape)
    lines.append(f"Input {tuple(input_shape)}: positions per step (in → out) and state entries per pair of images:")
    total = 0
    for i, step in enumerate(steps):
        pin = int(plan.pin[i])
        entries = pin * pin if kernel.layout == "full" else pin
        total += entries
        if plan.maps[i] is not None:
            sizes = f"{plan.shapes[i]} → {plan.shapes[i + 1]}, {int(plan.kdiv[i])} offsets"
        else:
            sizes = f"{pin} position{'s' if pin != 1 else ''}"
        lines.append(f"  {i + 1}. {sizes}; {entries} entries")
    lines.append(f"Work per pair of images: {total} entry-steps.")
    return "\n".join(lines)
