"""The one-line text form of an architecture, for the command line and configuration files.

Grammar (layer names are case-insensitive; arguments are Python literals)::

    arch   := item (sep item)*            sep := '>' | ',' | whitespace
    item   := NAME | NAME '(' args ')'    e.g.  Dense(1.5, 0.1)   Dense(w_std=2, b_std=0)   ReLU
            | INT '*' '(' arch ')'        repetition, e.g.  3*(Dense(1.5, 0.1) > ReLU)
            | '[' arch ('|' arch)* ']'    parallel branches, e.g.  FanOut(2) > [ReLU > Dense | Identity] > FanInSum
            | 'Residual' '(' arch ')'     FanOut(2) > [arch | Identity] > FanInSum

Positional arguments map, in order, to the layer's dataclass fields (``Dense(1.5, 0.1, 512)``
is ``w_std=1.5, b_std=0.1, width=512``), unlike the Python ``Dense``, which is keyword-only.

Examples::

    "Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)"
    "3*(Dense(w_std=1.41, b_std=0.1) > ReLU) > Dense(1.41, 0.1)"
    "Dense(1.41) > 4*(Residual(ReLU > Dense(1.41) > ReLU > Dense(1.41))) > Dense(1.41)"

``parse_architecture(arch.to_text()) == arch`` for every architecture the text form can express.

Limits: at most :data:`~ntk_infinite.describe.layers.MAX_LAYERS` layers after expansion (the total is
computed before any repetition is expanded) and repetitions nested at most
:data:`MAX_NESTING` deep. Every malformed text raises
:class:`~ntk_infinite.errors.ArchitectureError` (or :class:`~ntk_infinite.errors.ParameterError`
for a parameter out of range), never another exception.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re

from ..errors import ArchitectureError
from .branching import Residual, parallel
from .layers import LAYER_REGISTRY, MAX_LAYERS, Architecture, serial

__all__ = ["parse_architecture", "MAX_NESTING"]

#: Deepest nesting of repetitions ``N*( ... )``; deeper text raises ArchitectureError (not a
#: RecursionError). Real architectures need one or two levels.
MAX_NESTING = 32

_TOKEN = re.compile(r"\s*(?:(?P<rep>\d+)\s*\*\s*\(|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<close>[)\]|])|(?P<open>\[)"
                    r"|(?P<sep>[>,]))")


def parse_architecture(text: str) -> Architecture:
    """Parse the one-line text form into an :class:`~ntk_infinite.describe.layers.Architecture`.

    The text is first read into a tree (each layer built once, repetitions kept as counts), its
    expanded size checked against ``MAX_LAYERS``, and only then expanded.
    """
    if not isinstance(text, str):
        raise TypeError(f"The text form of an architecture must be a str; got {type(text).__name__}.")
    items, pos, _ = _parse_sequence(text, 0, depth=0)
    if text[pos:].strip():
        raise ArchitectureError(_where(text, pos, "unexpected text"))
    total = _size(items)
    if total == 0:
        raise ArchitectureError(
            f"The architecture text {_clip(text)} contains no layers; write e.g. "
            "'Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)'."
        )
    if total > MAX_LAYERS:
        raise ArchitectureError(
            f"The architecture text {_clip(text)} would have {total} layers; at most MAX_LAYERS = {MAX_LAYERS} "
            "are allowed (ntk_infinite.describe.layers.MAX_LAYERS). Check the repetition counts N*(...) for a typo."
        )
    return serial(*_expand(items))


def _size(items) -> int:
    """Layers after expansion; an item is a layer, ``(count, items)``, ``("parallel", [items, …])``
    or ``("residual", items)`` (which adds FanOut, Identity and FanInSum)."""
    total = 0
    for item in items:
        if not isinstance(item, tuple):
            total += 1
        elif item[0] == "parallel":
            total += sum(_size(branch) for branch in item[1])
        elif item[0] == "residual":
            total += _size(item[1]) + 3
        else:
            total += item[0] * _size(item[1])
    return total


def _expand(items) -> list:
    out = []
    for item in items:
        if not isinstance(item, tuple):
            out.append(item)
        elif item[0] == "parallel":
            out.append(parallel(*(serial(*_expand(branch)) for branch in item[1])))
        elif item[0] == "residual":
            out.extend(Residual(*_expand(item[1])).layers)
        else:
            out.extend(_expand(item[1]) * item[0])
    return out


def _parse_sequence(text: str, pos: int, depth: int, closers: str = ")"):
    """Items up to the closer of the enclosing group (``)`` of a repetition or Residual, ``|`` or
    ``]`` in a parallel block): ``(items, end, closer)``, closer ``""`` at the end of the text."""
    items = []
    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos:].strip():
                raise ArchitectureError(_where(text, pos, "expected a layer name such as Dense or ReLU"))
            if depth:
                missing = "']' to close a parallel block" if "]" in closers else "')' to close a repetition"
                raise ArchitectureError(_where(text, pos, f"missing {missing}"))
            return items, len(text), ""
        pos = m.end()
        if m.group("sep"):
            continue
        if m.group("close"):
            char = m.group("close")
            if not depth or char not in closers:
                raise ArchitectureError(_where(text, m.start("close"), f"unmatched {char!r}"))
            return items, pos, char
        if m.group("rep"):
            count, inner, pos = _parse_repetition(text, m, depth)
            items.append((count, inner))
            continue
        if m.group("open"):
            branches, pos = _parse_parallel(text, m, depth)
            items.append(("parallel", branches))
            continue
        if m.group("name").lower() == "residual":
            inner, pos = _parse_residual(text, m, depth)
            items.append(("residual", inner))
            continue
        layer, pos = _parse_layer(text, m, pos)
        items.append(layer)


def _parse_layer(text: str, m: re.Match, pos: int):
    """The layer named by ``m`` with its arguments, and the position after them."""
    cls = _layer_class(m.group("name"), text)
    kwargs = {}
    after = _OPEN.match(text, pos)
    if after:
        close = _matching_paren(text, after.end() - 1)
        call = m.group("name") + text[after.end() - 1 : close + 1]
        args, kwargs = _parse_call_args(call, text)
        kwargs = _bind(cls, args, kwargs, call)
        pos = close + 1
    try:
        return cls(**kwargs), pos
    except TypeError as exc:
        raise ArchitectureError(f"Bad arguments for {cls.__name__} in {_clip(text)}: {exc}") from exc


def _check_nesting(text: str, pos: int, depth: int) -> None:
    if depth + 1 > MAX_NESTING:
        raise ArchitectureError(_where(text, pos, f"repetitions and branches nested more than MAX_NESTING = "
                                                  f"{MAX_NESTING} deep"))


def _parse_parallel(text: str, m: re.Match, depth: int):
    """The branches of ``[a | b | …]`` (each a list of items) and the position after ``]``."""
    _check_nesting(text, m.start("open"), depth)
    branches, pos = [], m.end()
    while True:
        start = pos
        inner, pos, closer = _parse_sequence(text, pos, depth + 1, closers="|]")
        if not inner:
            raise ArchitectureError(_where(text, start, "an empty branch; write Identity for a branch that passes "
                                                        "its input on"))
        branches.append(inner)
        if closer == "]":
            return branches, pos


def _parse_residual(text: str, m: re.Match, depth: int):
    """The block of ``Residual(…)`` and the position after its ``)``."""
    after = _OPEN.match(text, m.end())
    if after is None:
        raise ArchitectureError(_where(text, m.start("name"), "Residual needs its block in parentheses, e.g. "
                                                              "Residual(ReLU > Dense)"))
    _check_nesting(text, m.start("name"), depth)
    inner, pos, _ = _parse_sequence(text, after.end(), depth + 1)
    if not inner:
        raise ArchitectureError(_where(text, m.start("name"), "Residual() needs at least one layer in its block"))
    return inner, pos


def _parse_repetition(text: str, m: re.Match, depth: int):
    """``(count, items, end)`` for the repetition whose ``N*(`` is matched by ``m``."""
    digits = m.group("rep").lstrip("0") or "0"
    if depth + 1 > MAX_NESTING:
        raise ArchitectureError(_where(
            text, m.start("rep"), f"repetitions nested more than MAX_NESTING = {MAX_NESTING} deep"
        ))
    if len(digits) > 18:
        # Refused before int(): a count of thousands of digits would exceed Python's int-parsing limit;
        # shorter counts are read so that the message can give the exact expanded size.
        raise ArchitectureError(_where(
            text, m.start("rep"),
            f"a repetition count of {len(digits)} digits exceeds MAX_LAYERS = {MAX_LAYERS} layers",
        ))
    count = int(digits)
    inner, end, _ = _parse_sequence(text, m.end(), depth + 1)
    if count < 1 or not inner:
        raise ArchitectureError(_where(text, m.start("rep"), "a repetition needs a count >= 1 and at least one layer"))
    return count, inner, end


def _layer_class(name: str, text: str):
    cls = LAYER_REGISTRY.get(name.lower())
    if cls is None:
        known = ", ".join(sorted(c.__name__ for c in LAYER_REGISTRY.values()))
        raise ArchitectureError(f"Unknown layer {name!r} in the architecture text {_clip(text)}. Known layers: {known}.")
    return cls


def _parameters(cls) -> list[str]:
    """The names the text form may set, in positional order: the dataclass fields of the layer."""
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.init]
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in inspect.signature(cls).parameters.values() if p.kind not in skip]


def _bind(cls, args: tuple, kwargs: dict, call: str) -> dict:
    """Keyword arguments for ``cls`` from the text's positional and keyword arguments."""
    name, params = cls.__name__, _parameters(cls)
    listed = ", ".join(params)
    if len(args) > len(params):
        allowed = f"takes at most {len(params)} arguments ({listed})" if params else "takes no arguments"
        raise ArchitectureError(f"{name} {allowed}; got {len(args)} in {_clip(call, quote=False)}.")
    bound = dict(zip(params, args))
    for key, value in kwargs.items():
        if key not in params:
            has = f"its parameters are {listed}" if params else "it has no parameters"
            raise ArchitectureError(f"{name} has no parameter {key!r}; {has} (in {_clip(call, quote=False)}).")
        if key in bound:
            raise ArchitectureError(f"{_clip(call, quote=False)} gives the parameter {key!r} twice; give it once.")
        bound[key] = value
    return bound


_OPEN = re.compile(r"\s*\(")


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


def _parse_call_args(call: str, text: str):
    """Positional values and keyword dict of ``NAME(...)``; repeated keywords are an error."""
    name = call[: call.index("(")]
    problem = "arguments must be numbers, strings or tuples, e.g. Dense(1.5, 0.1) or Dense(w_std=1.5, b_std=0.1)"
    where = "" if call == text.strip() else f" in {_clip(text)}"
    try:
        node = ast.parse("f" + call[len(name):], mode="eval").body
        args = tuple(ast.literal_eval(a) for a in node.args)
        keywords = [(kw.arg, ast.literal_eval(kw.value)) for kw in node.keywords]
    except (SyntaxError, ValueError, TypeError) as exc:  # TypeError: e.g. unhashable set members
        raise ArchitectureError(f"Could not read the arguments {_clip(call)}{where}: {problem}.") from exc
    except (RecursionError, MemoryError) as exc:
        # Python's parser signals over-deep nesting (e.g. thousands of unary minuses) this way.
        raise ArchitectureError(
            f"Could not read the arguments {_clip(call)}{where}: nested too deeply; {problem}."
        ) from exc
    kwargs = {}
    for key, value in keywords:
        if key is None:
            raise ArchitectureError(f"Could not read the arguments {_clip(call)}{where}: {problem}.")
        if key in kwargs:
            raise ArchitectureError(f"{_clip(call, quote=False)} gives the parameter {key!r} twice; give it once.")
        kwargs[key] = value
    return args, kwargs


#: Longest piece of the user's text quoted in a message.
_CLIP = 120


def _clip(text: str, quote: bool = True) -> str:
    shown = text if len(text) <= _CLIP else f"{text[:_CLIP - 20]}...{text[-15:]}"
    return repr(shown) if quote else shown


def _where(text: str, pos: int, what: str) -> str:
    lo = max(0, min(pos - _CLIP // 2, len(text) - _CLIP))
    window = text[lo : lo + _CLIP]
    lead = "..." if lo else ""
    return (f"Cannot parse the architecture text {_clip(text)} at position {pos}: {what}.\n"
            f"  {lead}{window}\n  {' ' * (len(lead) + pos - lo)}^")
