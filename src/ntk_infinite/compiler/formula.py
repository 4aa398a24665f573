r"""The compiled recursion as formulas: :meth:`CompiledKernel.formula`, ``.latex()`` and the
``ntk-infinite formula ARCH`` command.

For inputs x, x' ∈ ℝ^d the recursion (docs/DESIGN.md, "Math conventions") reads, layer by layer,

.. math::

    \Sigma_0(x, x') = \frac{x\cdot x'}{d}, \qquad \Theta_0 = 0,

    \text{Dense: } \Sigma_{l+1} = \sigma_w^2 \Sigma_l + \sigma_b^2, \quad
    \Theta_{l+1} = \sigma_w^2\Theta_l + \Sigma_{l+1},

    \text{activation: } \Sigma_{l+1}(x, x') = T\big(\Sigma_l(x, x), \Sigma_l(x', x'), \Sigma_l(x, x')\big),
    \quad \Theta_{l+1} = \dot T(\dots)\,\Theta_l,

with T, Ṫ each activation's dual in closed form (sympy) or, for numerical routes, its
series or integral. The last Σ and Θ are the NNGP and NTK kernels (Jacot et al. 2018;
Lee et al. 2019).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import sympy as sp

from ..errors import ArchitectureError

from .notation import X, XP, eq_latex, eq_text, sigma, theta

__all__ = ["FormulaStep", "KernelFormula", "kernel_formula", "kernel_latex", "register"]

_D = sp.Symbol("d", positive=True)
_C = sp.Symbol("C", positive=True)


@dataclass(frozen=True)
class FormulaStep:
    """One step of the recursion.

    Attributes
    ----------
    index : int
        Layer number l + 1 of the quantities it defines.
    layer : the architecture layer.
    route : str
        ``"affine"`` (Dense, Conv), ``"linear"`` (AvgPool), ``"readout"`` (Flatten,
        GlobalAvgPool) or the dual's route (closed form, series, quadrature).
    nngp, ntk : sympy.Eq or None
        Σ_{l+1}(x, x') and Θ_{l+1}(x, x') in terms of layer l, for Dense layers and
        activations (on a spatial state the entries of a position pair, sympy ``Indexed``);
        None for Conv, pooling and readouts, whose sums over windows are given as ``text``.
    T, Tdot : sympy expressions in q_1, q_2, c, or None for non-activation layers
        The dual of the activation (q_1 = Σ(x, x), q_2 = Σ(x', x'), c = Σ(x, x')).
    text, latex : (str, str)
        The Σ and Θ lines as text (``lhs = rhs``) and LaTeX (``lhs &= rhs``), written by the step.
    where : str
        The geometry of a spatial step in words (filter, strides, padding), else "".
    """

    index: int
    layer: object
    route: str
    nngp: sp.Eq | None
    ntk: sp.Eq | None
    T: sp.Expr | None = None
    Tdot: sp.Expr | None = None
    text: tuple = ()
    latex: tuple = ()
    where: str = ""


@dataclass(frozen=True)
class KernelFormula:
    """The recursion of a compiled kernel: ``initial`` (Σ₀, Θ₀) and ``steps``."""

    architecture: object
    initial: tuple
    steps: tuple

    @property
    def nngp(self) -> sp.Expr:
        """The symbol of the output NNGP kernel, Σ_L(x, x')."""
        return sigma(self.steps[-1].index)(X, XP) if self.steps else self.initial[0].lhs

    @property
    def ntk(self) -> sp.Expr:
        """The symbol of the output NTK, Θ_L(x, x')."""
        return theta(self.steps[-1].index)(X, XP) if self.steps else self.initial[1].lhs

    def __str__(self) -> str:
        lines = [eq_text(eq) for eq in self.initial]
        for step in self.steps:
            lines.append(f"# layer {step.index}: {step.layer!r} ({step.route})")
            if step.where:
                lines.append(f"#   where {step.where}")
            lines.extend(step.text)
        lines.append(f"NNGP = {sp.sstr(self.nngp)},  NTK = {sp.sstr(self.ntk)}")
        return "\n".join(lines)

    def latex(self) -> str:
        r"""An ``aligned`` LaTeX block (use inside ``\[ ... \]`` or ``equation``)."""
        rows = [eq_latex(eq) for eq in self.initial]
        for step in self.steps:
            label = _latex_text(f"layer {step.index}: {type(step.layer).__name__} ({step.route})")
            rows.append(rf"&\text{{{label}}}")
            if step.where:
                rows.append(rf"&\text{{{_latex_text('where ' + step.where)}}}")
            rows.extend(step.latex)
        return "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"


def _latex_text(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"),
                 ("{", r"\{"), ("}", r"\}"), ("$", r"\$"), ("^", r"\^{}")):
        text = text.replace(a, b)
    return text


def _initial(spatial: bool) -> tuple:
    """Σ₀ and Θ₀: x·x'/d for dense inputs, the channel mean x[p]·x'[p']/C per position pair."""
    if not spatial:
        return (sp.Eq(sigma(0)(X, XP), sp.Symbol("x·x'") / _D), sp.Eq(theta(0)(X, XP), sp.Integer(0)))
    p, pp = sp.symbols("p p'")
    at = lambda fn: sp.IndexedBase(fn(X, XP))[p, pp]  # noqa: E731
    return (sp.Eq(at(sigma(0)), sp.Symbol("x[p]·x'[p']") / _C), sp.Eq(at(theta(0)), sp.Integer(0)))


def kernel_formula(kernel) -> KernelFormula:
    """The recursion of a :class:`~ntk_infinite.kernel.CompiledKernel`, layer by layer.

    Each step writes its own lines (``formula_text``, ``formula_latex``,
    :mod:`ntk_infinite.compiler.steps`); the state is per position pair until the readout of a
    convolutional network (docs/DESIGN.md, "Spatial layers"; Novak et al. 2019; Arora et al. 2019).

    Examples
    --------
    >>> import ntk_infinite as nk
    >>> f = nk.compile("Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)").formula()
    >>> print(f.steps[0].nngp)
    Eq(Sigma_1(x, x'), 2.25*Sigma_0(x, x') + 0.01)
    """
    from .steps import role_of

    if kernel.architecture.branched:
        raise ArchitectureError(
            "formula() writes the recursion of a serial architecture, one layer after the other; this one has "
            "parallel branches. Use kernel.explain() for the steps of a branched network, or ask formula() of "
            "each branch as an architecture of its own."
        )
    layers = [layer for layer in kernel.architecture if role_of(layer) is not None]
    steps = kernel.program.steps
    if len(layers) != len(steps):  # pragma: no cover - structural invariant of compile()
        raise RuntimeError("architecture and program are out of step")
    spatial = kernel.spatial
    out = []
    for l, (layer, step) in enumerate(zip(layers, steps)):
        index = l + 1
        eqs = step.formula_eqs(index, spatial) or (None, None)
        T, Td = (sp.sympify(e) for e in step.formula()) if step.role == "activation" else (None, None)
        out.append(FormulaStep(index, layer, step.route, eqs[0], eqs[1], T, Td, step.formula_text(index, spatial),
                               step.formula_latex(index, spatial), step.formula_where()))
        # After the readout the state is one number per pair.
        spatial = spatial and step.role != "readout"
    return KernelFormula(kernel.architecture, _initial(kernel.spatial), tuple(out))


def kernel_latex(kernel) -> str:
    """LaTeX rendering of :func:`kernel_formula`."""
    return kernel_formula(kernel).latex()


# ----------------------------------------------------------------------- command line
def _cmd_formula(args) -> int:
    import ntk_infinite as nk

    kernel = nk.compile(args.arch)
    formula = kernel.formula()
    print(formula.latex() if args.latex else str(formula))
    return 0


def register(subparsers) -> None:
    """Add ``ntk-infinite formula ARCH [--latex]``."""
    p = subparsers.add_parser(
        "formula",
        help="print the compiled NNGP/NTK recursion layer by layer (sympy; --latex for LaTeX)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print the recursion Sigma_l, Theta_l of an architecture, each activation's dual T and "
        "T-dot in closed form (or its series/integral for numerical routes).",
    )
    p.add_argument("arch", help="architecture in text form, e.g. 'Dense(1.5,0.1) > Erf > Dense(1.5,0.1)'")
    p.add_argument("--latex", action="store_true", help="print LaTeX (an aligned block) instead of text")
    p.set_defaults(func=_cmd_formula)
