"""Malformed architecture descriptions: the text form and misuse of the Python API.

Contract: an Architecture, or a ValueError/TypeError subclass (ArchitectureError for the text
form) whose message says what was expected; never another exception (RecursionError,
MemoryError, SyntaxError, OverflowError), never a hang, never a memory blow-up. Calls that
could blow up memory run in a forked child under an address-space cap.
"""

import numpy as np
import pytest
from hypothesis import given, settings

import ntk_infinite as nk
from hostile_strategies import (  # noqa: F401 - hang_guard is an autouse fixture
    MEMORY_HEADROOM,
    assert_documented_error,
    assert_no_hang_or_crash,
    hang_guard,
    is_documented_error,
    run_forked,
    run_here,
    text_forms,
    valid_text_forms,
)
from naive import naive_kernels
from tolerances import NAIVE_RTOL


def _parse_contract(text):
    out = run_here(nk.parse_architecture, text)
    assert_no_hang_or_crash(out)
    if out.kind == "raised":
        assert is_documented_error(out), f"{text!r}: {out.describe()}"
        assert issubclass(out.exc_type, (nk.ArchitectureError, nk.ParameterError, TypeError)), out.describe()
    else:
        assert isinstance(out.value, nk.Architecture)
        # whatever parses, prints back to an equal architecture
        assert nk.parse_architecture(out.value.to_text()) == out.value, text
    return out


@settings(max_examples=60)
@given(text=text_forms())
def test_random_text_parses_or_raises_architecture_error(text):
    _parse_contract(text)


@pytest.mark.slow
@settings(max_examples=2000)
@given(text=text_forms())
def test_random_text_parses_or_raises_architecture_error_thorough(text):
    _parse_contract(text)


@settings(max_examples=30)
@given(text=valid_text_forms())
def test_grammatical_text_parses_and_compiles_or_explains(text):
    out = _parse_contract(text)
    assert out.kind == "ok", f"{text!r} is grammatical: {out.describe()}"
    compiled = run_here(nk.compile, out.value)
    assert_no_hang_or_crash(compiled)
    if compiled.kind == "raised":  # e.g. an activation first, or no Dense readout at the end
        assert_documented_error(compiled, r"Dense|activation|empty")


_DUPLICATE = r"w_std.*(repeated|twice|duplicate|more than once)|(repeated|twice|duplicate|more than once).*w_std"


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("Dense(w_std=1, w_std=2)", _DUPLICATE),
        ("Dense(b_std=0.1, b_std=0.1) > ReLU > Dense", r"b_std"),
        ("Dense(1.5, w_std=2)", r"w_std"),
        ("Dense(foo=1)", r"foo"),
        ("Dense(w_std=1, bstd=2)", r"bstd"),
        ("ReLU(1)", r"ReLU"),
        ("Relu6 > Dense", r"Unknown layer 'Relu6'"),
        ("Dense()()", r"position"),
        ("Dense(", r"\)"),
        ("Dense)", r"\)"),
        ("((Dense))", r"position|layer"),
        ("3*(Dense", r"\)"),
        ("0*(Dense) > Dense", r"count"),
        ("3*()", r"layer"),
        ("10**8*(Dense>ReLU)", r"position|parse"),
        ("-1*(Dense)", r"position|parse"),
        ("Dense(1e999)", r"w_std"),
        ("Dense(-1)", r"w_std"),
        ("Dense(nan)", r"argument|number"),
        ("Dense(True)", r"w_std"),
        ("Dense(1+2j)", r"w_std"),
        ("Dense('1.5')", r"w_std"),
        ("Dense(__import__('os').getcwd())", r"argument|number"),
        ("Dense(lambda: 1)", r"argument|number"),
        ("Dense(" + "9" * 5000 + ")", r"argument|number|digits|w_std"),
        ("Dense(" + "(" * 300 + "1" + ")" * 300 + ")", r"argument|number|nest"),
        ("Dense(width=0)", r"width"),
        ("Dense(width=2.5)", r"width"),
        ("", r"no layers"),
        ("   >  ,  ", r"no layers"),
        ("\x00", None),
        ("Dénse", None),
    ],
    ids=lambda v: v[:30] if isinstance(v, str) else None,
)
def test_malformed_text(text, pattern):
    out = run_forked(nk.parse_architecture, text, timeout=30)
    assert_documented_error(out, pattern)
    assert "ArchitectureError" in out.exc_names[0] or "ParameterError" in out.exc_names[0], out.describe()


@pytest.mark.parametrize(
    "text",
    [
        "99999999*(Dense > ReLU) > Dense",
        "100000000*(Dense(1.5, 0.1) > ReLU) > Dense",
        "1000*(1000*(1000*(Dense > ReLU))) > Dense",
        "9" * 30 + "*(Dense) > Dense",
    ],
    ids=["1e8_pairs", "1e8_pairs_args", "nested_1e9", "30_digit_count"],
)
def test_huge_repetition_is_refused_cheaply(text):
    """A count that would build 10⁸+ layers must be refused before it is built: the call
    runs under an address-space cap of its current size + MEMORY_HEADROOM."""
    for call in (nk.parse_architecture, nk.compile):
        out = run_forked(call, text, timeout=60, memory_headroom=MEMORY_HEADROOM)
        assert_documented_error(out, r"layers|repetition|count|too (many|deep|large)")


def test_deep_but_reasonable_repetition_is_exact():
    """A 2000-hidden-layer ReLU network either compiles and matches the naive recursion, or is
    refused with a message about depth; it must not overflow the stack."""
    text = "2000*(Dense(w_std=1.4142135623730951) > ReLU) > Dense(w_std=1.4142135623730951)"
    X = np.array([[1.0, 0.5, -0.2], [0.3, -1.0, 0.8]])
    out = run_forked(lambda: nk.compile(text)(X), timeout=120)
    assert_no_hang_or_crash(out)
    if out.kind == "raised":
        assert_documented_error(out, r"layers|depth|deep")
        return
    S, T = naive_kernels(nk.parse_architecture(text), X)
    np.testing.assert_allclose(out.value.nngp, S, rtol=NAIVE_RTOL * 100)  # 4001 steps of rounding
    np.testing.assert_allclose(out.value.ntk, T, rtol=NAIVE_RTOL * 100)


@pytest.mark.parametrize("depth", [50, 3000, 100_000])
def test_deep_nesting(depth):
    """Nested repetitions 1*(1*(...Dense...)): the same single layer, or an ArchitectureError."""
    text = "1*(" * depth + "Dense(1.5, 0.1)" + ")" * depth
    out = run_forked(nk.parse_architecture, text, timeout=30)
    assert_no_hang_or_crash(out)
    if out.kind == "raised":
        assert_documented_error(out, r"nest|deep|depth")
    else:
        assert out.value == nk.serial(nk.Dense(w_std=1.5, b_std=0.1))


def test_unclosed_deep_nesting():
    out = run_forked(nk.parse_architecture, "2*(" * 5000 + "Dense", timeout=30)
    assert_documented_error(out)


# ----------------------------------------------------------------------------- the Python API
@pytest.mark.parametrize("args", [(512,), (1.5, 0.1), (1.5, 0.1, 7)])
def test_dense_positional_arguments_refused(args):
    """Dense(512) reads like a width but used to set w_std=512: the arguments are keyword-only."""
    assert_documented_error(run_here(nk.Dense, *args), r"keyword|w_std")


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"w_std": -1.0}, r"'w_std'.*\[0, 1e\+154\].*-1\.0"),
        ({"w_std": np.nan}, r"'w_std'.*nan"),
        ({"w_std": np.inf}, r"'w_std'"),
        ({"b_std": "0.1"}, r"'b_std'.*str"),
        ({"w_std": True}, r"'w_std'.*bool"),
        ({"w_std": 1j}, r"'w_std'.*complex"),
        ({"width": 0}, r"'width'"),
        ({"width": 2.5}, r"'width'"),
        ({"wstd": 1.0}, r"wstd"),
    ],
)
def test_dense_bad_keywords(kwargs, pattern):
    assert_documented_error(run_here(lambda: nk.Dense(**kwargs)), pattern)


@pytest.mark.parametrize("w_std, b_std", [(1e200, 0.1), (1.0, 1e200), (1e155, 0.0)])
def test_dense_parameters_whose_square_overflows(w_std, b_std):
    """σ_w² or σ_b² beyond float64: refused, or a kernel that is never silently NaN/inf."""
    out = run_here(lambda: nk.compile(nk.serial(nk.Dense(w_std=w_std, b_std=b_std), nk.ReLU(),
                                                nk.Dense(w_std=w_std, b_std=b_std)))(np.eye(3)))
    assert_no_hang_or_crash(out)
    if out.kind == "raised":
        assert_documented_error(out, r"w_std|b_std|overflow|large")
    else:
        values = np.concatenate([out.value.nngp.ravel(), out.value.ntk.ravel()])
        assert not np.isnan(values).any(), values
        assert np.isfinite(values).all() or out.warned(UserWarning), f"silent inf: {values}"


@pytest.mark.parametrize(
    "args, pattern",
    [
        ((1,), r"layers|argument 0"),
        (("Dense",), r"layers|argument 0"),
        ((None,), r"layers|argument 0"),
        ((nk.Dense,), r"class Dense.*instantiate"),
        ((nk.Dense(w_std=1.0), np.tanh), r"argument 1"),
        ((nk.Dense(w_std=1.0), [nk.ReLU()]), r"argument 1"),
    ],
)
def test_serial_junk(args, pattern):
    assert_documented_error(run_here(nk.serial, *args), pattern)


@pytest.mark.parametrize(
    "arch, kwargs, pattern",
    [
        (42, {}, r"architecture"),
        (None, {}, r"architecture"),
        (b"Dense", {}, r"architecture"),
        ("", {}, r"no layers"),
        ([], {}, r"empty"),
        (nk.serial(nk.ReLU(), nk.Dense(w_std=1.0)), {}, r"Dense layer before"),
        (nk.serial(nk.Dense(w_std=1.0), nk.ReLU()), {}, r"end in a Dense"),
        (nk.serial(nk.Dense(w_std=1.0), nk.ReLU(), nk.ReLU(), nk.Dense(w_std=1.0)), {}, r"Dense layer before"),
        ("Dense", {"tol": 0.0}, r"'tol'"),
        ("Dense", {"tol": -1e-3}, r"'tol'"),
        ("Dense", {"tol": np.nan}, r"'tol'"),
        ("Dense", {"tol": 2.0}, r"'tol'"),
        ("Dense", {"tol": "1e-6"}, r"'tol'"),
    ],
)
def test_compile_junk(arch, kwargs, pattern):
    assert_documented_error(run_here(nk.compile, arch, **kwargs), pattern)


@pytest.mark.parametrize("get", ["ntkk", "", (), ("nngp", "bogus"), None, 3])
def test_bad_get(get):
    kernel = nk.compile("Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)")
    assert_documented_error(run_here(kernel, np.ones((2, 3)), get=get), r"get")
    assert_documented_error(run_here(kernel.diag, np.ones((2, 3)), get=get), r"get")


@pytest.mark.parametrize("tile", [0, -3, 2.5, "8", None, np.nan])
def test_bad_tile(tile):
    kernel = nk.compile("Dense(1.5, 0.1) > ReLU > Dense(1.5, 0.1)")
    assert_documented_error(run_here(kernel, np.ones((2, 3)), tile=tile), r"tile")
