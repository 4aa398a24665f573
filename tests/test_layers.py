"""Layers as values, the text form, and architecture validation."""

import copy
import dataclasses
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ntk_infinite as nk
from ntk_infinite.errors import ArchitectureError, KeywordOnlyError, ParameterError
from ntk_infinite.describe.layers import MAX_LAYERS

from tolerances import EXACT_ATOL, EXACT_RTOL, ROUNDING_RTOL


def test_layers_are_frozen_values():
    a = nk.Dense(w_std=1.5, b_std=0.1)
    b = nk.Dense(w_std=1.5, b_std=0.1)
    assert a == b and hash(a) == hash(b)
    assert repr(a) == "Dense(w_std=1.5, b_std=0.1, width=None)"
    with pytest.raises(AttributeError):
        a.w_std = 2.0
    assert nk.ReLU() == nk.ReLU() and hash(nk.ReLU()) == hash(nk.ReLU())
    arch1 = nk.serial(a, nk.ReLU(), b)
    arch2 = nk.serial(nk.Dense(w_std=1.5, b_std=0.1), nk.ReLU(), nk.Dense(w_std=1.5, b_std=0.1))
    assert arch1 == arch2 and hash(arch1) == hash(arch2)
    assert {arch1: 1}[arch2] == 1


def test_activation_equality_by_callable():
    assert nk.Activation(np.tanh) == nk.Activation(np.tanh)
    assert nk.Activation(np.tanh) != nk.Activation(np.sin)
    assert "tanh" in repr(nk.Activation(np.tanh))


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"w_std": -1.0}, r"The 'w_std' parameter of Dense must be a float in the range \[0, 1e\+154\]\. Got -1\.0 instead"),
        ({"w_std": float("nan")}, r"'w_std' parameter of Dense .* Got nan instead"),
        ({"b_std": -0.5}, r"'b_std' parameter of Dense .* Got -0\.5 instead"),
        ({"b_std": float("inf")}, r"'b_std' parameter of Dense .* Got inf instead"),
        ({"width": 0}, r"'width' parameter of Dense must be an integer in the range \[1, inf\)"),
        ({"width": 2.5}, r"'width' parameter of Dense must be an integer .* pass a whole number"),
    ],
)
def test_dense_parameter_errors(kwargs, pattern):
    with pytest.raises(ParameterError, match=pattern):
        nk.Dense(**kwargs)


@pytest.mark.parametrize(
    "args, kwargs, shown",
    [
        ((512,), {}, r"Dense\(512\)"),
        ((1.5, 0.1), {}, r"Dense\(1\.5, 0\.1\)"),
        ((1.5,), {"b_std": 0.1}, r"Dense\(1\.5, b_std=0\.1\)"),
    ],
)
def test_dense_takes_keywords_only(args, kwargs, shown):
    pattern = (rf"Dense takes keyword arguments only: Dense\(w_std=\.\.\., b_std=\.\.\., width=\.\.\.\); got {shown}\. "
               r"In neural-tangents Dense\(512\) means the output width: write Dense\(width=512, w_std=\.\.\.\) here")
    with pytest.raises(KeywordOnlyError, match=pattern) as info:
        nk.Dense(*args, **kwargs)
    assert isinstance(info.value, TypeError)


def test_dense_keyword_construction_is_unchanged():
    d = nk.Dense(w_std=1.5, b_std=0.1, width=512)
    assert (d.w_std, d.b_std, d.width) == (1.5, 0.1, 512)
    assert repr(d) == "Dense(w_std=1.5, b_std=0.1, width=512)"
    assert d == nk.Dense(width=512, b_std=0.1, w_std=1.5) and hash(d) == hash(nk.Dense(width=512, b_std=0.1, w_std=1.5))
    assert dataclasses.replace(d, width=None) == nk.Dense(w_std=1.5, b_std=0.1)
    assert pickle.loads(pickle.dumps(d)) == d and copy.deepcopy(d) == d


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"w_std": 1e300}, r"The 'w_std' parameter of Dense must be a float in the range \[0, 1e\+154\]\. Got 1e\+300 instead"),
        ({"b_std": 1e155}, r"The 'b_std' parameter of Dense must be a float in the range \[0, 1e\+154\]\. Got 1e\+155 instead"),
        ({"w_std": 10**400}, r"The 'w_std' parameter of Dense must be a float in the range \[0, 1e\+154\]\. Got 10+\.\.\.\(401 characters\) instead"),
    ],
)
def test_dense_std_is_bounded_so_its_square_is_finite(kwargs, pattern):
    with pytest.raises(ParameterError, match=pattern):
        nk.Dense(**kwargs)


def test_dense_std_at_the_bound_compiles():
    # w_std = b_std = 1e150: Σ¹ = w²·x·x'/d + b² = 1e300·(x·x'/d + 1), finite, from the Dense recursion by hand.
    k = nk.compile(nk.Dense(w_std=1e150, b_std=1e150))(np.array([[1.0, 0.0], [0.6, 0.8]]))
    np.testing.assert_allclose(k.nngp, 1e300 * np.array([[1.5, 1.3], [1.3, 1.5]]), rtol=ROUNDING_RTOL)


def test_serial_is_bounded_by_max_layers():
    layers = [nk.Dense(), nk.ReLU()] * (MAX_LAYERS // 2) + [nk.Dense()]
    with pytest.raises(ArchitectureError, match=rf"would have {MAX_LAYERS + 1} layers; at most MAX_LAYERS = {MAX_LAYERS}"):
        nk.serial(*layers)
    assert len(nk.serial(*layers[1:])) == MAX_LAYERS
    half = nk.serial(*layers[: MAX_LAYERS // 2])
    with pytest.raises(ArchitectureError, match=rf"would have {MAX_LAYERS + 1} layers"):
        nk.serial(half, half, nk.Dense())
    with pytest.raises(ArchitectureError, match=rf"would have {MAX_LAYERS + 1} layers"):
        nk.Architecture(tuple(layers))


def test_dense_parameter_type_error():
    with pytest.raises(TypeError, match=r"'w_std' parameter of Dense must be a float .* Got '1' of type str"):
        nk.Dense(w_std="1")


def test_serial_rejects_non_layers():
    with pytest.raises(TypeError, match=r"argument 1 is the class ReLU, not a layer; instantiate it: ReLU\(\)"):
        nk.serial(nk.Dense(), nk.ReLU, nk.Dense())
    with pytest.raises(TypeError, match=r"serial\(\) takes layers such as Dense"):
        nk.serial(nk.Dense(), 3)


def test_text_form_examples():
    arch = nk.parse_architecture("Dense(1.5, 0.1) > ReLU > Dense(w_std=1.5, b_std=0.1)")
    assert arch == nk.serial(nk.Dense(w_std=1.5, b_std=0.1), nk.ReLU(), nk.Dense(w_std=1.5, b_std=0.1))
    rep = nk.parse_architecture("2*(dense(2, 0.5) relu) dense(1)")
    assert rep == nk.serial(nk.Dense(w_std=2, b_std=0.5), nk.ReLU(), nk.Dense(w_std=2, b_std=0.5), nk.ReLU(), nk.Dense(w_std=1))
    assert nk.parse_architecture("Dense, ReLU, Dense") == nk.serial(nk.Dense(), nk.ReLU(), nk.Dense())


_dense = st.builds(
    nk.Dense,
    w_std=st.floats(0, 5, allow_nan=False),
    b_std=st.floats(0, 2, allow_nan=False),
    width=st.one_of(st.none(), st.integers(1, 4096)),
)


@given(st.lists(st.one_of(_dense, st.just(nk.ReLU()), st.just(nk.Identity())), min_size=1, max_size=8))
def test_text_form_round_trip(layers):
    arch = nk.serial(*layers)
    assert nk.parse_architecture(arch.to_text()) == arch


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("Dense > Softmaxx > Dense", r"Unknown layer 'Softmaxx' .* Known layers: .*Dense.*ReLU"),
        ("Dense(1.5, > ReLU", r"missing '\)'"),
        ("Dense(w_std=foo)", r"Could not read the arguments .* must be numbers"),
        ("Dense ) ReLU", r"unmatched '\)'"),
        ("", r"contains no layers"),
        ("Dense(1, 2, 3, 'ntk', 5)", r"Dense takes at most 4 arguments"),
    ],
)
def test_text_form_errors(text, pattern):
    with pytest.raises(ArchitectureError, match=pattern):
        nk.parse_architecture(text)


def test_text_form_rejects_callables():
    arch = nk.serial(nk.Dense(), nk.Activation(np.tanh), nk.Dense())
    with pytest.raises(ArchitectureError, match="cannot express"):
        arch.to_text()


@pytest.mark.parametrize(
    "arch, pattern",
    [
        (nk.serial(nk.ReLU(), nk.Dense()), r"ReLU\(\) at position 0 comes at the start, but an activation needs an affine layer"),
        (nk.serial(nk.Dense(), nk.ReLU(), nk.ReLU(), nk.Dense()), r"position 2 comes right after ReLU\(\).*Insert a Dense layer"),
        (nk.serial(nk.Dense(), nk.ReLU()), r"must end in a Dense readout layer; it ends in ReLU\(\)"),
        (nk.serial(), r"architecture is empty"),
    ],
)
def test_architecture_validation(arch, pattern):
    with pytest.raises(ArchitectureError, match=pattern):
        nk.compile(arch)


def test_compile_accepts_text_list_and_layer():
    a = nk.compile("Dense(2) > ReLU > Dense(2)").architecture
    b = nk.compile([nk.Dense(w_std=2), nk.ReLU(), nk.Dense(w_std=2)]).architecture
    assert a == b
    assert nk.compile(nk.Dense(w_std=2)).architecture == nk.serial(nk.Dense(w_std=2))
    with pytest.raises(TypeError, match="compile\\(\\) expects an architecture"):
        nk.compile(42)
    with pytest.raises(ParameterError, match=r"'tol' parameter of compile"):
        nk.compile("Dense", tol=-1)


def test_identity_is_transparent():
    X = np.random.default_rng(1).normal(size=(4, 3))
    k1 = nk.compile("Dense(1.3, 0.2) > Identity > Dense(0.7, 0.1)")(X)
    S0 = X @ X.T / 3
    S = 0.7**2 * (1.3**2 * S0 + 0.04) + 0.01
    T = 0.7**2 * (1.3**2 * S0 + 0.04) + S
    np.testing.assert_allclose(k1.nngp, S, rtol=EXACT_RTOL, atol=EXACT_ATOL)
    np.testing.assert_allclose(k1.ntk, T, rtol=EXACT_RTOL, atol=EXACT_ATOL)
    # Transparent: the same network without the Identity layer gives the same kernels.
    k2 = nk.compile("Dense(1.3, 0.2) > Dense(0.7, 0.1)")(X)
    np.testing.assert_allclose(k1.nngp, k2.nngp, rtol=ROUNDING_RTOL, atol=0)
    np.testing.assert_allclose(k1.ntk, k2.ntk, rtol=ROUNDING_RTOL, atol=0)


def test_activation_subclass_without_fn_says_what_to_define():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Half(nk.describe.layers.ActivationLayer):
        pass

    with pytest.raises(TypeError, match=r"Half is an ActivationLayer without fn\(x\): a subclass must define fn"):
        Half().fn(np.zeros(3))
    with pytest.raises(TypeError, match=r"without dfn\(x\).*or use nk\.Activation\(fn, dfn, kinks=\.\.\.\)"):
        Half().dfn(np.zeros(3))
