"""The one-line text form of an architecture, for the command line and configuration files.

Grammar (layer names are case-insensitive; arguments are Python literals)::

    arch   := item (sep item)*            sep := '>' | ',' | whitespace
    item   := NAME | NAME '(' args ')'    e.g.  Dense(1.5, 0.1)   Dense(w_std=2, b_std=0)   ReLU
            | INT '*' '(' arch ')'        repetition, e.g.  3*(Dense(1.5, 0.1) > ReLU)

Examples::

    "Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)"
    "3*(Dense(w_std=1.41, b_std=0.1) > ReLU) > Dense(1.41, 0.1)"

``parse_architecture(arch.to_text()) == arch`` for every architecture the text form can express.
"""

from __future__ import annotations

import ast
import re

from .errors import ArchitectureError
from .layers import LAYER_REGISTRY, Architecture, serial

__all__ = ["parse_architecture"]

_TOKEN = re.compile(r"\s*(?:(?P<rep>\d+)\s*\*\s*\(|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<close>\))|(?P<sep>[>,]))")


def parse_architecture(text: str) -> Architecture:
    """Parse the one-line text form into an :class:`~ntk_infinite.layers.Architecture`."""
    if not isinstance(text, str):
        raise TypeError(f"The text form of an architecture must be a str; got {type(text).__name__}.")
    layers, pos = _parse_sequence(text, 0, depth=0)
    if text[pos:].strip():
        raise ArchitectureError(_where(text, pos, "unexpected text"))
    if not layers:
        raise ArchitectureError(
            f"The architecture text {text!r} contains no layers; write e.g. "
            "'Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)'."
        )
    return serial(*layers)


def _parse_sequence(text: str, pos: int, depth: int):
    layers = []
    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos:].strip():
                raise ArchitectureError(_where(text, pos, "expected a layer name such as Dense or ReLU"))
            if depth:
                raise ArchitectureError(_where(text, pos, "missing ')' to close a repetition"))
            return layers, len(text)
        if m.group("sep"):
            pos = m.end()
            continue
        if m.group("close"):
            if not depth:
                raise ArchitectureError(_where(text, m.start("close"), "unmatched ')'"))
            return layers, m.end()
        if m.group("rep"):
            count = int(m.group("rep"))
            inner, pos = _parse_sequence(text, m.end(), depth + 1)
            if count < 1 or not inner:
                raise ArchitectureError(_where(text, m.start(), "a repetition needs a count >= 1 and at least one layer"))
            layers.extend(inner * count)
            continue
        name = m.group("name")
        pos = m.end()
        cls = LAYER_REGISTRY.get(name.lower())
        if cls is None:
            known = ", ".join(sorted(c.__name__ for c in LAYER_REGISTRY.values()))
            raise ArchitectureError(
                f"Unknown layer {name!r} in the architecture text {text!r}. Known layers: {known}."
            )
        args, kwargs = (), {}
        after = re.compile(r"\s*\(").match(text, pos)
        if after:
            close = _matching_paren(text, after.end() - 1)
            args, kwargs = _parse_call_args(text[after.end() - 1 : close + 1], name, text)
            pos = close + 1
        try:
            layers.append(cls(*args, **kwargs))
        except TypeError as exc:
            raise ArchitectureError(f"Bad arguments for {name} in {text!r}: {exc}") from exc


def _matching_paren(text: str, open_pos: int) -> int:
    level = 0
    for i in range(open_pos, len(text)):
        if text[i] == "(":
            level += 1
        elif text[i] == ")":
            level -= 1
            if level == 0:
                return i
    raise ArchitectureError(_where(text, open_pos, "missing ')' to close the argument list"))


def _parse_call_args(call: str, name: str, text: str):
    try:
        node = ast.parse("f" + call, mode="eval").body
        args = tuple(ast.literal_eval(a) for a in node.args)
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
    except (SyntaxError, ValueError) as exc:
        raise ArchitectureError(
            f"Could not read the arguments {call!r} of {name} in {text!r}: arguments must be numbers, "
            f"strings or tuples, e.g. Dense(1.5, 0.1) or Dense(w_std=1.5, b_std=0.1)."
        ) from exc
    return args, kwargs


def _where(text: str, pos: int, what: str) -> str:
    return f"Cannot parse the architecture text {text!r} at position {pos}: {what}.\n  {text}\n  {' ' * pos}^"
