"""``ntk-infinite signal ACT``: the mean-field quantities of an activation on the command line."""

from __future__ import annotations

from ..describe.layers import ActivationLayer
from ..describe.textform import parse_architecture
from ..errors import ParameterError

__all__ = ["register"]


def _activation(text: str):
    arch = parse_architecture(text)
    if len(arch) != 1 or not isinstance(arch[0], ActivationLayer):
        raise ParameterError(f"signal expects one activation in text form, e.g. Tanh, 'Erf(1, 2, 0)' or GELU; got "
                             f"{text!r} ({len(arch)} layer(s): {arch.to_text()}).")
    return arch[0]


def _cmd_signal(args) -> int:
    from . import analyse, edge_of_chaos

    act = _activation(args.activation)
    if args.sigma_w is None:
        print(f"edge of chaos (chi_1 = 1) of {act!r}, from q0 = {args.q0:g}:")
        print(f"{'sigma_b':>10} {'sigma_w':>18} {'sigma_w^2':>18} {'q*':>14}")
        for b in args.sigma_b:
            w = edge_of_chaos(act, b, q0=args.q0)
            p = analyse(act, w, b, q0=args.q0)
            print(f"{b:>10.6g} {w:>18.15f} {w * w:>18.15f} {p.q_star:>14.8g}")
        return 0
    for k, b in enumerate(args.sigma_b):
        if k:
            print()
        print(analyse(act, args.sigma_w, b, q0=args.q0))
    return 0


def register(subparsers) -> None:
    """Add ``ntk-infinite signal``."""
    p = subparsers.add_parser(
        "signal", help="mean-field signal propagation of an activation: q*, c*, chi_1, depth scales, phase, "
                       "edge of chaos",
        description="With --sigma-w: fixed points, chi_1, chi_c, xi_q, xi_c and the phase of repeated "
                    "Dense(sigma_w, sigma_b) > ACT blocks (Schoenholz et al. 2017). Without: sigma_w on the edge "
                    "of chaos for each sigma_b.")
    p.add_argument("activation", help="an activation in text form, e.g. Tanh, ReLU, GELU, 'Erf(1, 2, 0)'")
    p.add_argument("--sigma-w", type=float, default=None, help="weight standard deviation (default: find the "
                   "edge of chaos)")
    p.add_argument("--sigma-b", type=float, nargs="+", default=[0.0], help="bias standard deviation(s) "
                   "(default 0)")
    p.add_argument("--q0", type=float, default=1.0, help="input variance whose orbit selects q* (default 1)")
    p.set_defaults(func=_cmd_signal)
