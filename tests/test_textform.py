"""The text form cannot be used to hang, crash or mislead: bounded size and nesting, clear
messages for every malformed argument list, and a fuzz test over the grammar's alphabet."""

import time
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ntk_infinite as nk
from ntk_infinite.errors import ArchitectureError, ParameterError
from ntk_infinite.describe.layers import LAYER_REGISTRY, MAX_LAYERS
from ntk_infinite.describe.textform import MAX_NESTING

#: A rejected oversized repetition must be refused before it is expanded: far less memory than
#: the MAX_LAYERS references it would take to expand even the smallest rejected one.
REJECT_PEAK_BYTES = 1 << 20
#: Wall-clock budget for parsing one fuzzed text (parsing is linear in the text; microseconds).
PARSE_SECONDS = 1.0


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _rejects(text, pattern):
    def run():
        with pytest.raises(ArchitectureError, match=pattern):
            nk.parse_architecture(text)

    return _peak_bytes(run)


def test_repetition_beyond_max_layers_is_refused_before_expansion():
    pattern = rf"would have 2000001 layers; at most MAX_LAYERS = {MAX_LAYERS} are allowed"
    assert _rejects("1000000*(Dense > ReLU) > Dense", pattern) < REJECT_PEAK_BYTES
    # The 31-character text that used to allocate ~21.6 GiB (only reached once the line above passed).
    assert _rejects("99999999*(Dense > ReLU) > Dense", r"would have 199999999 layers") < REJECT_PEAK_BYTES
    assert _rejects("9" * 5000 + "*(Dense)", r"a repetition count of 5000 digits") < REJECT_PEAK_BYTES
    assert _rejects("3*(2000*(Dense > ReLU)) > Dense", rf"would have 12001 layers.*MAX_LAYERS = {MAX_LAYERS}")


def test_max_layers_itself_is_allowed():
    half = MAX_LAYERS // 2
    arch = nk.parse_architecture(f"{half - 1}*(Dense > ReLU) > Dense > Dense")
    assert len(arch) == MAX_LAYERS
    with pytest.raises(ArchitectureError, match=rf"would have {MAX_LAYERS + 1} layers"):
        nk.parse_architecture(f"{half}*(Dense > ReLU) > Dense")
    with pytest.raises(ArchitectureError, match=rf"would have {MAX_LAYERS + 1} layers"):
        nk.parse_architecture(" > ".join(["Dense"] * (MAX_LAYERS + 1)))


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("1*(" * 10000 + "Dense" + ")" * 10000, rf"repetitions nested more than MAX_NESTING = {MAX_NESTING} deep"),
        ("1*(" * (MAX_NESTING + 1) + "Dense" + ")" * (MAX_NESTING + 1), r"nested more than"),
        ("(" * 10000, r"expected a layer name"),
        ("Dense" + "(" * 10000 + ")" * 10000, r"Could not read the arguments"),
        ("Dense(w_std=" + "-" * 100000 + "1)", r"Could not read the arguments"),
        ("Dense(w_std=" + "[" * 100000 + "]" * 100000 + ")", r"Could not read the arguments"),
        ("Dense(w_std=" + "1+" * 100000 + "1)", r"Could not read the arguments"),
    ],
    ids=["nested-repetitions", "one-past-max-nesting", "open-parens", "nested-parens-in-args", "unary-chain",
         "nested-lists", "binary-chain"],
)
def test_deep_nesting_is_an_architecture_error(text, pattern):
    with pytest.raises(ArchitectureError, match=pattern):
        nk.parse_architecture(text)


def test_nesting_up_to_max_nesting_parses():
    text = "1*(" * MAX_NESTING + "Dense" + ")" * MAX_NESTING
    assert nk.parse_architecture(text) == nk.serial(nk.Dense())


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("Dense(w_std=1, w_std=2)", r"Dense\(w_std=1, w_std=2\) gives the parameter 'w_std' twice"),
        ("Dense(1.5, w_std=2)", r"gives the parameter 'w_std' twice"),
        ("Dense(wstd=1)", r"Dense has no parameter 'wstd'; its parameters are w_std, b_std, width"),
        ("Erf(d=1)", r"Erf has no parameter 'd'; its parameters are a, b, c"),
        ("Dense(1, 2, 3, 'ntk', 5)",
         r"Dense takes at most 4 arguments \(w_std, b_std, width, parameterization\); got 5 in Dense\(1, 2, 3, 'ntk', 5\)"),
        ("ReLU(1)", r"ReLU takes no arguments; got 1 in ReLU\(1\)"),
        ("Dense(**{'w_std': 1})", r"Could not read the arguments"),
        ("Dense(*(1, 2))", r"Could not read the arguments"),
    ],
)
def test_argument_list_errors_name_the_parameters(text, pattern):
    with pytest.raises(ArchitectureError, match=pattern):
        nk.parse_architecture(text)


def test_positional_text_arguments_map_to_fields():
    assert nk.parse_architecture("Dense(1.5, 0.1, 512)") == nk.serial(nk.Dense(w_std=1.5, b_std=0.1, width=512))
    assert nk.parse_architecture("Dense(1.5, b_std=0.1)") == nk.serial(nk.Dense(w_std=1.5, b_std=0.1))
    assert nk.parse_architecture("dense(2) > Erf(1, 2, 0.5) > Dense") == nk.serial(
        nk.Dense(w_std=2.0), nk.Erf(a=1.0, b=2.0, c=0.5), nk.Dense()
    )


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("Dense(w_std=1e300)", r"The 'w_std' parameter of Dense must be a float in the range \[0, 1e\+154\]\. Got 1e\+300 instead"),
        ("Dense(0, 1e155)", r"The 'b_std' parameter of Dense must be a float in the range \[0, 1e\+154\]\. Got 1e\+155 instead"),
        ("Dense(w_std=" + "9" * 400 + ")", r"The 'w_std' parameter of Dense .* Got 9{10,}.* instead"),
    ],
    ids=["w_std-1e300", "b_std-1e155", "w_std-400-digits"],
)
def test_text_parameters_out_of_range(text, pattern):
    with pytest.raises(ParameterError, match=pattern):
        nk.parse_architecture(text)


# ------------------------------------------------------------------------------- fuzzing
_NAMES = sorted({cls.__name__ for cls in LAYER_REGISTRY.values()}) + ["relu", "DENSE", "Nope"]
_PARAMS = ["w_std", "b_std", "width", "a", "b", "c", "alpha", "coef", "degree", "gamma"]
_LITERALS = ["0", "1", "2", "1.5", "-1", "0.1", "1e150", "1e151", "1e300", "1e999", "512", "2.5", "'x'", "True",
             "None", "(0, 1)", "()", "[1]", "{}", "9" * 400]
_ALPHABET = "()*>,=-+.'\"[]{}: _eEjxDdRrLu0123456789\t\n"
_PUNCT = ["(", ")", "*", ">", ",", "=", " ", "*(", "**"]

_noise = st.text(alphabet=_ALPHABET, max_size=12)
_arg = st.one_of(
    st.sampled_from(_LITERALS),
    st.tuples(st.sampled_from(_PARAMS), st.sampled_from(_LITERALS)).map("=".join),
)
_call = st.one_of(
    st.sampled_from(_NAMES),
    st.tuples(st.sampled_from(_NAMES), st.lists(_arg, max_size=5)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
)
_count = st.one_of(st.integers(0, 4), st.integers(0, 10**12), st.just(10**40))


def _sequences(inner):
    joined = st.lists(inner, min_size=1, max_size=4).map(" > ".join)
    repeated = st.tuples(_count, inner).map(lambda t: f"{t[0]}*({t[1]})")
    return st.one_of(joined, repeated)


_structured = st.recursive(_call, _sequences, max_leaves=12)
_nested = st.tuples(st.integers(0, 3 * MAX_NESTING), _count, _call).map(
    lambda t: f"{t[1]}*(" * t[0] + t[2] + ")" * t[0]
)
_token_soup = st.lists(st.one_of(st.sampled_from(_NAMES + _PARAMS + _LITERALS + _PUNCT), _noise), max_size=20).map(
    "".join
)
_fuzz_text = st.one_of(_noise, _token_soup, _structured, _nested,
                       st.tuples(_structured, _noise, _structured).map("".join))


@given(_fuzz_text)
def test_fuzzed_text_parses_round_trips_or_raises_a_user_error(text):
    start = time.perf_counter()
    try:
        arch = nk.parse_architecture(text)
    except (ArchitectureError, ParameterError) as exc:
        assert str(exc)
    else:
        assert isinstance(arch, nk.Architecture) and 1 <= len(arch) <= MAX_LAYERS
        assert nk.parse_architecture(arch.to_text()) == arch
    assert time.perf_counter() - start < PARSE_SECONDS
