"""User activations that misbehave, through nk.Activation and the numerical routes.

Contract: a ValueError/TypeError subclass whose message names the activation or its fn/dfn
(or the user's own exception, passed through), or finite results equal to an independent
reference; a kernel that is truly infinite (fn returning inf, φ = exp(x²) at variance > 1/4)
is an error or a warning, never a hang and never a silent NaN/inf. Each call runs in a
forked child with a time limit (the series truncation used to loop on such functions).

References are typed here from Gaussian identities: E[sin u sin v] = e^{-(q₁+q₂)/2} sinh c,
E[cos u cos v] = e^{-(q₁+q₂)/2} cosh c (so Ṫ for sin), and for |x| the arc-cosine kernel
of order 1 at θ and π − θ (Cho & Saul 2009): T = √(q₁q₂)(2 sin θ + (π − 2θ) cos θ)/π,
Ṫ = 1 − 2θ/π.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ntk_infinite as nk
from hostile_strategies import (  # noqa: F401 - hang_guard is an autouse fixture
    assert_documented_error,
    assert_no_hang_or_crash,
    hang_guard,
    is_documented_error,
    run_forked,
    run_here,
)
from tolerances import USER_ACTIVATION_RTOL

W, B = 1.2, 0.1
X = np.array([[1.0, -0.5, 0.3], [0.2, 0.9, -1.1], [-0.7, 0.1, 0.4]])


def _arch(layer):
    return nk.serial(nk.Dense(w_std=W, b_std=B), layer, nk.Dense(w_std=W, b_std=B))


def _evaluate(layer_factory):
    """Build the activation, compile and evaluate (inside the forked child)."""
    k = nk.compile(_arch(layer_factory()))(X)
    return k.nngp, k.ntk


def _typed_reference(dual):
    """Σ, Θ of Dense(W, B) > φ > Dense(W, B) on X from a typed dual (T, Ṫ)(q1, q2, c)."""
    n, d = X.shape
    S, T = np.empty((n, n)), np.empty((n, n))
    for i in range(n):
        for j in range(n):
            q1 = W * W * (X[i] @ X[i]) / d + B * B
            q2 = W * W * (X[j] @ X[j]) / d + B * B
            c = W * W * (X[i] @ X[j]) / d + B * B
            t, td = dual(q1, q2, c)
            S[i, j] = W * W * t + B * B
            T[i, j] = W * W * td * c + S[i, j]
    return S, T


def _sin_dual(q1, q2, c):
    e = math.exp(-(q1 + q2) / 2)
    return e * math.sinh(c), e * math.cosh(c)


def _abs_dual(q1, q2, c):
    r = math.sqrt(q1 * q2)
    th = math.acos(max(-1.0, min(1.0, c / r)))
    return r * (2 * math.sin(th) + (math.pi - 2 * th) * math.cos(th)) / math.pi, 1 - 2 * th / math.pi


SIN_REF = _typed_reference(_sin_dual)
ABS_REF = _typed_reference(_abs_dual)
CONST_REF = _typed_reference(lambda q1, q2, c: (0.25, 0.0))  # φ ≡ 0.5


def _assert_close(got, ref, what):
    S, T = ref
    for g, r, name in ((got[0], S, "nngp"), (got[1], T, "ntk")):
        scale = np.sqrt(np.outer(np.diag(r), np.diag(r)))
        assert np.isfinite(g).all(), f"{what} {name}: non-finite {g}"
        err = np.max(np.abs(g - r) / scale)
        assert err <= USER_ACTIVATION_RTOL, f"{what} {name}: relative error {err:.2e}\n{g}\nvs\n{r}"


# Compile both numerical routes once here, so the forked children reuse the jitted engines.
_assert_close(_evaluate(lambda: nk.Activation(np.sin)), SIN_REF, "warm-up sin (series route)")
_WARM_QUADRATURE = run_here(_evaluate, lambda: nk.Activation(np.abs, kinks=(0.0,)))


def test_sin_references_are_right():
    """The typed references against the library's closed forms of other layers: sin through
    the series route above; |x| against the arc-cosine closed form nk.Abs()."""
    _assert_close(_evaluate(lambda: nk.Abs()), ABS_REF, "nk.Abs")


# ----------------------------------------------------------------------------- must be refused
def _nan_everywhere(x):
    return np.full_like(x, np.nan)


def _nan_above_half(x):
    return np.where(x > 0.5, np.nan, np.sin(x))


def _complex_values(x):
    return np.sin(x) + 1j * np.cos(x)


def _complex_sqrt(x):
    return np.sqrt(x.astype(complex))


def _drop_last(x):
    return np.sin(x)[:-1]


def _flat(x):
    return np.sin(x).ravel()


def _extra_axis(x):
    return np.sin(x)[..., None]


def _flat_list(x):
    return list(np.sin(x).ravel())


def _returns_none(x):
    return None


def _returns_string(x):
    return "sin"


REFUSED = {
    "nan_everywhere": _nan_everywhere,
    "nan_above_half": _nan_above_half,
    "complex_values": _complex_values,
    "complex_sqrt": _complex_sqrt,
    "wrong_shape_drop_last": _drop_last,
    "wrong_shape_flat": _flat,
    "wrong_shape_extra_axis": _extra_axis,
    "flat_python_list": _flat_list,
    "returns_none": _returns_none,
    "returns_string": _returns_string,
}

#: What a refusal must name: the activation, or which of its callables misbehaved.
NAMES_THE_CALLABLE = r"activation|\bfn\b|dfn|callable|function"


@pytest.mark.parametrize("name", list(REFUSED))
def test_bad_fn_refused(name):
    fn = REFUSED[name]
    out = run_forked(_evaluate, lambda: nk.Activation(fn))
    assert_documented_error(out, NAMES_THE_CALLABLE)


def _check_bad_dfn(name):
    dfn = REFUSED[name]
    out = run_forked(_evaluate, lambda: nk.Activation(np.sin, dfn=dfn))
    assert_documented_error(out, NAMES_THE_CALLABLE)


#: dfn goes through the same checks as fn; the default run tries one case of each kind.
DFN_DEFAULT = ["nan_above_half", "complex_values", "wrong_shape_flat", "returns_none"]


@pytest.mark.parametrize("name", DFN_DEFAULT)
def test_bad_dfn_refused(name):
    _check_bad_dfn(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in REFUSED if n not in DFN_DEFAULT])
def test_bad_dfn_refused_all(name):
    _check_bad_dfn(name)


@pytest.mark.parametrize("name", ["nan_above_half", "complex_values", "wrong_shape_flat", "returns_none"])
def test_bad_fn_with_kinks_refused(name):
    """The kink-aware quadrature route holds the same contract."""
    out = run_forked(_evaluate, lambda: nk.Activation(REFUSED[name], kinks=(0.0,)))
    assert_documented_error(out, NAMES_THE_CALLABLE)


class UserBug(RuntimeError):
    pass


def _raises(x):
    raise UserBug("boom in user code")


def _raises_on_large(x):
    if np.max(np.abs(x)) > 3:
        raise ZeroDivisionError("user code divides by zero for large x")
    return np.sin(x)


@pytest.mark.parametrize("where", ["fn", "dfn", "fn_kinked"])
@pytest.mark.parametrize("bad", [_raises, _raises_on_large])
def test_exception_in_user_code_propagates(where, bad):
    factory = {
        "fn": lambda: nk.Activation(bad),
        "dfn": lambda: nk.Activation(np.sin, dfn=bad),
        "fn_kinked": lambda: nk.Activation(bad, kinks=(0.0,)),
    }[where]
    out = run_forked(_evaluate, factory)
    assert_no_hang_or_crash(out)
    assert out.kind == "raised", out.describe()
    own = {"UserBug", "ZeroDivisionError"} & {n.rsplit(".", 1)[-1] for n in out.exc_names}
    if not own:  # wrapped: then as a documented error that keeps the user's message
        text = out.message + out.cause
        assert is_documented_error(out) and ("boom" in text or "divides" in text), (
            out.describe()
        )


# ----------------------------------------------------------------------------- truly infinite kernels
def _inf_everywhere(x):
    return np.full_like(x, np.inf)


def _inf_above_one(x):
    return np.where(x > 1.0, np.inf, np.sin(x))


def _exp_x2(x):
    with np.errstate(over="ignore"):
        return np.exp(x * x)


def _exp_x2_dfn(x):
    with np.errstate(over="ignore", invalid="ignore"):
        return 2 * x * np.exp(x * x)


INFINITE = {
    "fn_inf_everywhere": lambda: nk.Activation(_inf_everywhere),
    "fn_inf_above_one": lambda: nk.Activation(_inf_above_one),
    "fn_exp_x2": lambda: nk.Activation(_exp_x2),
    "fn_exp_x2_with_dfn": lambda: nk.Activation(_exp_x2, dfn=_exp_x2_dfn),
    "dfn_inf_everywhere": lambda: nk.Activation(np.sin, dfn=_inf_everywhere),
    "dfn_exp_x2": lambda: nk.Activation(np.sin, dfn=_exp_x2),
    "kinked_fn_inf_above_one": lambda: nk.Activation(_inf_above_one, kinks=(1.0,)),
    "kinked_fn_exp_x2": lambda: nk.Activation(_exp_x2, kinks=(0.0,)),
}


@pytest.mark.parametrize("name", list(INFINITE))
def test_infinite_kernel_is_an_error_or_a_warning(name):
    """E[φ²] = ∞ (the variance reaching φ is W²·|x|²/d + B² ≈ 0.5 > 1/4 for exp(x²)): the
    call must end quickly with an error, or warn; a finite answer without a word is wrong."""
    out = run_forked(_evaluate, INFINITE[name])
    assert_no_hang_or_crash(out)
    if out.kind == "raised":
        assert is_documented_error(out), out.describe()
    else:
        assert out.warned(UserWarning), f"an infinite kernel came back without error or warning: {out.value}"


# ----------------------------------------------------------------------------- tolerable oddities
def _right_shape_list(x):
    return np.sin(x).tolist()


def _scalar_constant(x):
    return 0.5


def _fortran_copy(x):
    return np.asfortranarray(np.sin(x))


def _float32(x):
    return np.sin(x).astype(np.float32).astype(np.float64)  # value rounded, dtype kept


@pytest.mark.parametrize(
    "factory, ref, what",
    [
        (lambda: nk.Activation(_right_shape_list), SIN_REF, "fn returns a nested list of the right shape"),
        (lambda: nk.Activation(_fortran_copy), SIN_REF, "fn returns a Fortran-ordered array"),
        (lambda: nk.Activation(np.sin, dfn=lambda x: np.cos(x).tolist()), SIN_REF, "dfn returns a nested list"),
        (lambda: nk.Activation(_scalar_constant), CONST_REF, "fn returns a scalar (a constant activation)"),
    ],
)
def test_tolerable_returns_give_the_right_kernel_or_a_clear_error(factory, ref, what):
    out = run_forked(_evaluate, factory)
    assert_no_hang_or_crash(out)
    if out.kind == "raised":
        assert_documented_error(out, NAMES_THE_CALLABLE)
    else:
        _assert_close(out.value, ref, what)


def _minus_mean(x):
    return x - x.mean()


def _sorted(x):
    return np.sort(x, axis=None).reshape(x.shape)


def _times_size(x):
    return np.sin(x) * x.size


@pytest.mark.parametrize("fn", [_minus_mean, _sorted, _times_size])
def test_non_elementwise_fn_never_silently_nonfinite(fn):
    """A function of the whole array is not an activation; the library may or may not notice,
    but it must end, and not with a silent NaN/inf."""
    out = run_forked(_evaluate, lambda: nk.Activation(fn))
    assert_no_hang_or_crash(out)
    if out.kind == "raised":
        assert is_documented_error(out), out.describe()
    else:
        assert all(np.isfinite(v).all() for v in out.value) or out.warned(UserWarning), out.value


# ----------------------------------------------------------------------------- kinks
@pytest.mark.parametrize(
    "kinks, exc",
    [
        (("a",), TypeError),
        ((np.nan,), ValueError),
        ((np.inf,), ValueError),
        ((1j,), TypeError),
        ((None,), TypeError),
        (0, TypeError),
        (None, TypeError),
        ("0", TypeError),
    ],
)
def test_malformed_kinks(kinks, exc):
    out = run_here(nk.Activation, np.abs, kinks=kinks)
    assert_documented_error(out, r"kinks")
    assert issubclass(out.exc_type, exc), out.describe()


def test_abs_with_declared_kink_is_accurate():
    out = run_forked(_evaluate, lambda: nk.Activation(np.abs, kinks=(0.0,)))
    assert out.kind == "ok", out.describe()
    _assert_close(out.value, ABS_REF, "Activation(np.abs, kinks=(0,))")


@pytest.mark.parametrize("kinks", [(), (1.0,), (1e300,), (0.0, 0.0, -0.0), tuple(np.linspace(-3, 3, 13))])
def test_abs_with_badly_declared_kinks_is_accurate_or_warns(kinks):
    """A missing, misplaced, huge or repeated kink: accurate anyway, or an AccuracyWarning."""
    out = run_forked(_evaluate, lambda: nk.Activation(np.abs, kinks=kinks))
    assert_no_hang_or_crash(out)
    if out.kind == "raised":
        assert is_documented_error(out), out.describe()
        return
    if out.warned(nk.AccuracyWarning):
        return
    _assert_close(out.value, ABS_REF, f"Activation(np.abs, kinks={kinks})")


# ----------------------------------------------------------------------------- fuzz
@st.composite
def corrupted_sin(draw):
    """sin with one region replaced by a hostile value, in fn or dfn, with or without kinks."""
    value = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1j]))
    lo = draw(st.floats(-2.0, 1.0))
    width = draw(st.floats(0.5, 3.0))
    where = draw(st.sampled_from(["fn", "dfn"]))
    kinks = draw(st.sampled_from([(), (0.0,)]))
    return value, lo, lo + width, where, kinks


def _corrupt(value, lo, hi):
    def f(x):
        inside = (x > lo) & (x < hi)
        return np.where(inside, value, np.sin(x)) if value != 1j else np.sin(x) + 1j * inside

    return f


def _corrupted_factory(value, lo, hi, where, kinks):
    bad = _corrupt(value, lo, hi)
    if where == "fn":
        return nk.Activation(bad, kinks=kinks)
    return nk.Activation(np.sin, dfn=bad, kinks=kinks)


def _check_corrupted(case):
    value, lo, hi, where, kinks = case
    out = run_forked(_evaluate, lambda: _corrupted_factory(value, lo, hi, where, kinks))
    assert_no_hang_or_crash(out)
    if np.isnan(value) or value == 1j:
        assert_documented_error(out, NAMES_THE_CALLABLE)
    elif out.kind == "raised":
        assert is_documented_error(out), out.describe()
    else:
        assert out.warned(UserWarning), f"{case}: infinite kernel without a warning: {out.value}"


@settings(max_examples=6)
@given(case=corrupted_sin())
def test_corrupted_activation_fuzz(case):
    """A region of positive Gaussian measure with NaN/complex must be refused; with ±inf the
    kernel is infinite: refused or warned. Never a hang, never a silent NaN."""
    _check_corrupted(case)


@pytest.mark.slow
@settings(max_examples=60)
@given(case=corrupted_sin())
def test_corrupted_activation_fuzz_thorough(case):
    _check_corrupted(case)
