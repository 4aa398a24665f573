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

__all__ = ["FormulaStep", "KernelFormula", "kernel_formula", "kernel_latex", "register"]

_X, _XP = sp.symbols("x x'")
_D = sp.Symbol("d", positive=True)


@dataclass(frozen=True)
class FormulaStep:
    """One step of the recursion.

    Attributes
    ----------
    index : int
        Layer number l + 1 of the quantities it defines.
    layer : the architecture layer (``Dense`` or an activation).
    route : str
        ``"affine"`` or the dual's route (closed form, series, quadrature).
    nngp, ntk : sympy.Eq
        Σ_{l+1}(x, x') and Θ_{l+1}(x, x') in terms of layer l.
    T, Tdot : sympy expressions in q_1, q_2, c, or None for Dense layers
        The dual of the activation (q_1 = Σ(x, x), q_2 = Σ(x', x'), c = Σ(x, x')).
    """

    index: int
    layer: object
    route: str
    nngp: sp.Eq
    ntk: sp.Eq
    T: sp.Expr | None = None
    Tdot: sp.Expr | None = None


@dataclass(frozen=True)
class KernelFormula:
    """The recursion of a compiled kernel: ``initial`` (Σ₀, Θ₀) and ``steps``."""

    architecture: object
    initial: tuple
    steps: tuple

    @property
    def nngp(self) -> sp.Expr:
        """The symbol of the output NNGP kernel, Σ_L(x, x')."""
        return self.steps[-1].nngp.lhs if self.steps else self.initial[0].lhs

    @property
    def ntk(self) -> sp.Expr:
        """The symbol of the output NTK, Θ_L(x, x')."""
        return self.steps[-1].ntk.lhs if self.steps else self.initial[1].lhs

    def __str__(self) -> str:
        lines = [f"{sp.sstr(eq.lhs)} = {sp.sstr(eq.rhs)}" for eq in self.initial]
        for step in self.steps:
            lines.append(f"# layer {step.index}: {step.layer!r} ({step.route})")
            lines.append(f"{sp.sstr(step.nngp.lhs)} = {sp.sstr(step.nngp.rhs)}")
            lines.append(f"{sp.sstr(step.ntk.lhs)} = {sp.sstr(step.ntk.rhs)}")
        lines.append(f"NNGP = {sp.sstr(self.nngp)},  NTK = {sp.sstr(self.ntk)}")
        return "\n".join(lines)

    def latex(self) -> str:
        r"""An ``aligned`` LaTeX block (use inside ``\[ ... \]`` or ``equation``)."""
        rows = [f"{sp.latex(eq.lhs)} &= {sp.latex(eq.rhs)}" for eq in self.initial]
        for step in self.steps:
            label = _latex_text(f"layer {step.index}: {type(step.layer).__name__} ({step.route})")
            rows.append(rf"&\text{{{label}}}")
            rows.append(f"{sp.latex(step.nngp.lhs)} &= {sp.latex(step.nngp.rhs)}")
            rows.append(f"{sp.latex(step.ntk.lhs)} &= {sp.latex(step.ntk.rhs)}")
        return "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"


def _latex_text(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"),
                 ("{", r"\{"), ("}", r"\}"), ("$", r"\$")):
        text = text.replace(a, b)
    return text


def _sigma(l):
    return sp.Function(f"Sigma_{l}")


def _theta(l):
    return sp.Function(f"Theta_{l}")


def kernel_formula(kernel) -> KernelFormula:
    """The recursion of a :class:`~ntk_infinite.kernel.CompiledKernel`, layer by layer.

    Examples
    --------
    >>> import ntk_infinite as nk
    >>> f = nk.compile("Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)").formula()
    >>> print(f.steps[0].nngp)
    Eq(Sigma_1(x, x'), 2.25*Sigma_0(x, x') + 0.01)
    """
    from ..evaluate.engine import Affine
    from ..describe.layers import Identity

    q1, q2, c = sp.symbols("q_1 q_2 c", positive=True)
    layers = [layer for layer in kernel.architecture if not isinstance(layer, Identity)]
    steps = kernel.program.steps
    if len(layers) != len(steps):  # pragma: no cover - structural invariant of compile()
        raise RuntimeError("architecture and program are out of step")
    initial = (sp.Eq(_sigma(0)(_X, _XP), sp.Symbol("x·x'") / _D), sp.Eq(_theta(0)(_X, _XP), sp.Integer(0)))
    out = []
    for l, (layer, step) in enumerate(zip(layers, steps)):
        S, Th = _sigma(l), _theta(l)
        S1, Th1 = _sigma(l + 1), _theta(l + 1)
        if isinstance(step, Affine):
            w2, b2 = _number(step.w2), _number(step.b2)
            nngp = sp.Eq(S1(_X, _XP), w2 * S(_X, _XP) + b2)
            ntk = sp.Eq(Th1(_X, _XP), w2 * Th(_X, _XP) + S1(_X, _XP))
            out.append(FormulaStep(l + 1, layer, "affine", nngp, ntk))
            continue
        T, Td = step.formula()
        subs = {q1: S(_X, _X), q2: S(_XP, _XP), c: S(_X, _XP)}
        T_sub = sp.sympify(T).subs(subs)
        Td_sub = sp.sympify(Td).subs(subs)
        nngp = sp.Eq(S1(_X, _XP), T_sub)
        ntk = sp.Eq(Th1(_X, _XP), Td_sub * Th(_X, _XP))
        out.append(FormulaStep(l + 1, layer, getattr(step, "route", ""), nngp, ntk, T, Td))
    return KernelFormula(kernel.architecture, initial, tuple(out))


def _number(value: float):
    value = float(value)
    return sp.Integer(int(value)) if value.is_integer() else sp.Float(value, 15)


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
