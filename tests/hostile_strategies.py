"""Shared machinery of the hostile-input suites (tests/test_hostile_*.py).

* :func:`run_forked` runs one call in a forked child with a time limit (and optionally an
  address-space cap), so that a hang or a memory blow-up FAILS a test instead of hanging or
  killing the suite. The child inherits the parent's compiled kernels, so no Numba code is
  compiled again.
* :func:`run_here` runs a call that cannot hang in-process and records the same
  :class:`Outcome` (result, or exception, plus the warnings raised).
* The contract checks: :func:`assert_documented_error` (a ValueError/TypeError subclass with
  a message that names what was expected) and :func:`assert_kernels_match` (finite and equal
  to an independent reference, or non-finite only where the true value overflows and then
  never silently).
* :func:`relu_reference`: Σ and Θ of a Dense/ReLU network from the mpmath recursion of
  tests/naive.py (unbounded exponent range, so it is exact at any input scale).
* hypothesis strategies for hostile arrays and text forms.
"""

from __future__ import annotations

import faulthandler
import math
import multiprocessing
import os
import pickle
import resource
import time
import traceback
import warnings
from dataclasses import dataclass, field

import mpmath as mp
import numpy as np
import pytest
from hypothesis import strategies as st


#: Last-resort guard of every hostile test: the process dumps all tracebacks and exits
#: (failing the run loudly) if one test exceeds this. Generous, because the first call of
#: a new architecture compiles Numba code (10-60 s under load).
GUARD_SECONDS = 300
#: Time limit of one forked call that might hang. The calls themselves take milliseconds
#: on inputs of this size; the limit only has to separate "slow machine" from "never ends".
CALL_TIMEOUT = float(os.environ.get("NTK_HOSTILE_CALL_TIMEOUT", 60.0))
#: Address-space headroom granted to a forked call run under a memory cap.
MEMORY_HEADROOM = 768 * 2**20


@pytest.fixture(autouse=True)
def hang_guard():
    """Abort the whole process with all tracebacks if one test runs past GUARD_SECONDS."""
    faulthandler.dump_traceback_later(GUARD_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# ------------------------------------------------------------------------------ outcomes
@dataclass
class Outcome:
    """What one call did: ``kind`` is "ok", "raised", "timeout" or "crashed"."""

    kind: str
    value: object = None
    exc_type: type | None = None
    exc_names: tuple = ()  # "module.qualname" of the exception's MRO (when the type cannot be pickled)
    message: str = ""
    cause: str = ""
    tb: str = ""
    warnings: list = field(default_factory=list)  # (category, message)
    seconds: float = 0.0

    def describe(self) -> str:
        if self.kind == "raised":
            name = self.exc_type.__name__ if self.exc_type else self.exc_names[0]
            return f"raised {name}: {self.message!r}\n{self.tb}"
        if self.kind == "ok":
            return f"returned {type(self.value).__name__} (warnings: {self.warnings})"
        return f"{self.kind} after {self.seconds:.1f}s: {self.message}"

    def warned(self, category=Warning) -> bool:
        """Whether a warning of ``category`` was issued. The library's own warnings are
        UserWarning subclasses (AccuracyWarning, ...); NumPy's RuntimeWarnings from deep inside
        a computation do not count as telling the user."""
        return any(issubclass(c, category) for c, _ in self.warnings)


def _capture(func, args, kwargs) -> Outcome:
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = func(*args, **kwargs)
            out = Outcome("ok", value=value)
        except BaseException as exc:  # noqa: BLE001 - the point is to see everything
            out = Outcome(
                "raised",
                exc_type=type(exc),
                exc_names=tuple(f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__),
                message=str(exc),
                cause=repr(exc.__cause__ or exc.__context__ or ""),
                tb="".join(traceback.format_exception(exc)[-6:]),
            )
    out.warnings = [(w.category, str(w.message)) for w in caught]
    out.seconds = time.perf_counter() - t0
    return out


def run_here(func, *args, **kwargs) -> Outcome:
    """Run ``func`` in this process and record its :class:`Outcome` (for calls that cannot hang)."""
    return _capture(func, args, kwargs)


def _child(conn, func, args, kwargs, memory_limit):
    if memory_limit is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    out = _capture(func, args, kwargs)
    try:
        payload = pickle.dumps(out)
    except Exception:  # unpicklable value or exception class: keep names and text
        out.value = repr(out.value)[:2000]
        out.exc_type = None
        payload = pickle.dumps(out)
    conn.send_bytes(payload)
    conn.close()


def _current_address_space() -> int:
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def run_forked(func, *args, timeout: float = CALL_TIMEOUT, memory_headroom: int | None = None, **kwargs) -> Outcome:
    """Run ``func(*args, **kwargs)`` in a forked child; a hang gives kind "timeout" (the child is
    killed), a hard crash kind "crashed". With ``memory_headroom`` the child's address space is
    capped at its size at fork time plus that many bytes, so a runaway allocation fails fast
    (MemoryError) instead of exhausting the machine."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    limit = _current_address_space() + memory_headroom if memory_headroom is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: the child runs one call only
        proc = ctx.Process(target=_child, args=(send, func, args, kwargs, limit), daemon=True)
        t0 = time.perf_counter()
        proc.start()
    send.close()
    payload = None
    if recv.poll(timeout):
        try:
            payload = recv.recv_bytes()
        except EOFError:
            payload = None
    proc.join(5.0 if payload is not None else 0.1)
    seconds = time.perf_counter() - t0
    if proc.is_alive():
        proc.kill()
        proc.join()
        if payload is None:
            return Outcome("timeout", message=f"no answer within {timeout:.0f} s (killed)", seconds=seconds)
    if payload is None:
        return Outcome("crashed", message=f"child exited with code {proc.exitcode} and no answer", seconds=seconds)
    return pickle.loads(payload)


# ------------------------------------------------------------------------------ contract checks
def assert_no_hang_or_crash(out: Outcome) -> None:
    assert out.kind in ("ok", "raised"), out.describe()
    if out.kind == "raised":
        bad = ("MemoryError", "RecursionError", "SystemError", "KeyboardInterrupt", "SystemExit")
        assert not any(n.rsplit(".", 1)[-1] in bad for n in out.exc_names[:1]), out.describe()


def is_documented_error(out: Outcome) -> bool:
    """A ValueError/TypeError subclass with a non-empty message (what the library promises)."""
    names = {n.rsplit(".", 1)[-1] for n in out.exc_names}
    return out.kind == "raised" and bool(names & {"ValueError", "TypeError"}) and bool(out.message.strip())


def assert_documented_error(out: Outcome, match: str | None = None) -> None:
    """The call raised a ValueError/TypeError subclass whose message is non-empty and, when
    ``match`` is given, names what was expected (regex search, case-insensitive)."""
    assert_no_hang_or_crash(out)
    assert out.kind == "raised", f"expected a ValueError/TypeError, but the call {out.describe()}"
    assert is_documented_error(out), f"expected a ValueError/TypeError subclass with a message; {out.describe()}"
    if match is not None:
        import re

        assert re.search(match, out.message, flags=re.IGNORECASE | re.DOTALL), (
            f"the message should name what was expected ({match!r}); got {out.message!r}"
        )


TINY = np.finfo(np.float64).tiny
#: Absolute slack for entries whose true value is subnormal: a handful of the smallest ulps.
SUBNORMAL_ATOL = 64 * 5e-324


def assert_kernels_match(got: np.ndarray, ref: np.ndarray, scale: np.ndarray, rtol: float, warned: bool, what=""):
    """``got`` agrees with ``ref`` entry by entry: |got − ref| ≤ rtol·scale (+ a few subnormal
    ulps) where ``ref`` is finite; where ``ref`` overflows ``got`` must be +inf and a warning
    must have been issued. NaN is never accepted."""
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    assert not np.isnan(got).any(), f"{what}: NaN in the result at {np.argwhere(np.isnan(got))[:5].tolist()}\n{got}"
    finite = np.isfinite(ref)
    bad_inf = finite & ~np.isfinite(got)
    assert not bad_inf.any(), f"{what}: infinite where the true value is finite: {got[bad_inf]} vs {ref[bad_inf]}"
    err = np.abs(got[finite] - ref[finite])
    allowed = rtol * scale[finite] + SUBNORMAL_ATOL
    worst = np.argmax(err - allowed) if err.size else None
    assert (err <= allowed).all(), (
        f"{what}: off by {err[worst]:.3e} (allowed {allowed[worst]:.3e}) at an entry with reference "
        f"{ref[finite][worst]!r}, got {got[finite][worst]!r}"
    )
    if (~finite).any():
        assert (got[~finite] == np.inf).all(), f"{what}: true value overflows, got {got[~finite]}"
        assert warned, f"{what}: an overflowing result came back as inf without a warning"


def relu_reference(arch, X1, X2=None):
    """(Σ, Θ, scale_Σ, scale_Θ, diag_Σ, diag_Θ) of a Dense/ReLU ``arch`` by the mpmath
    recursion (tests/naive.py). scale_* = √(K(x,x)K(x',x')), the Cauchy–Schwarz bound of
    each entry, computed in mpmath so that it is finite whenever the entry can be."""
    sym = X2 is None
    X2 = X1 if sym else X2
    with mp.workdps(50):
        d1 = [_mp_pair(arch, x, x) for x in X1]
        d2 = d1 if sym else [_mp_pair(arch, x, x) for x in X2]
        n1, n2 = len(X1), len(X2)
        S, T, sS, sT = (np.empty((n1, n2)) for _ in range(4))
        for i in range(n1):
            for j in range(n2):
                s, t = (d1[i] if sym and i == j else _mp_pair(arch, X1[i], X2[j]))
                S[i, j], T[i, j] = _to_float(s), _to_float(t)
                sS[i, j] = _to_float(mp.sqrt(d1[i][0] * d2[j][0]))
                sT[i, j] = _to_float(mp.sqrt(d1[i][1] * d2[j][1]))
        diag = (np.array([_to_float(s) for s, _ in d1]), np.array([_to_float(t) for _, t in d1]))
    return S, T, sS, sT, diag[0], diag[1]


def _mp_pair(arch, x1, x2):
    from naive import mp_kernels, mp_relu_dual

    return mp_kernels(arch, x1, x2, dps=50, dual=mp_relu_dual)


def _to_float(v) -> float:
    v = mp.mpf(v)
    if abs(v) > mp.mpf(np.finfo(np.float64).max):
        return math.copysign(math.inf, float(mp.sign(v)))
    return float(v)


def representable(*arrays) -> bool:
    """Every entry finite and either 0 or a normal float64 (full relative precision)."""
    for a in arrays:
        a = np.abs(np.asarray(a))
        if not np.isfinite(a).all() or ((a > 0) & (a < TINY)).any():
            return False
    return True


# ------------------------------------------------------------------------------ strategies
@st.composite
def extreme_arrays(draw, n_max=4, d_max=3, exp_range=300, per_entry=None):
    """(n, d) float64 arrays with entries m·10^e, |m| in [0.1, 10], e in ±exp_range, the
    exponent shared per row or chosen per entry (mixed scales inside one row)."""
    n = draw(st.integers(1, n_max))
    d = draw(st.integers(1, d_max))
    per_entry = draw(st.booleans()) if per_entry is None else per_entry
    mant = np.array(draw(st.lists(st.floats(0.1, 10.0), min_size=n * d, max_size=n * d))).reshape(n, d)
    signs = np.array(draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=n * d, max_size=n * d))).reshape(n, d)
    k = n * d if per_entry else n
    exps = np.array(draw(st.lists(st.integers(-exp_range, exp_range), min_size=k, max_size=k)))
    exps = exps.reshape(n, d) if per_entry else exps[:, None]
    return signs * mant * np.power(10.0, exps.astype(float))


#: Tokens of the text-form grammar, plus near-misses, for random architecture strings.
TEXT_TOKENS = [
    "Dense", "ReLU", "relu", "DENSE", "Identity", "Tanh", "Erf", "GELU", "LeakyReLU", "Foo", "dense_",
    "(", ")", "((", "))", ">", ",", " ", "*", "**", "3*(", "0*(", "-1*(", "99999999*(", "=", "w_std", "b_std",
    "width", "alpha", "1", "0", "-1", "1.5", "1e308", "1e999", "nan", "inf", "True", "None", "'a'", '"',
    "1j", "[1]", "{}", "\\", "\n", "\t", "\x00", "é", "#", ";", "__import__('os')", "lambda: 0",
]


def text_forms():
    """Random strings over the grammar's tokens (and single characters of its alphabet)."""
    token_strings = st.lists(st.sampled_from(TEXT_TOKENS), max_size=12).map("".join)
    alphabet = st.text(alphabet="DenseReLUwbstdh_()>,*=.0123456789-+ e'\"", max_size=40)
    return st.one_of(token_strings, alphabet)


#: Layers the text form can express, with arguments that keep the kernel finite.
TEXT_LAYERS = [
    "Dense", "Dense(1.5, 0.1)", "Dense(w_std=2, b_std=0)", "Dense(b_std=0.5)", "Dense(w_std=1, width=7)",
    "ReLU", "relu", "Identity", "Erf", "Tanh", "LeakyReLU(0.1)", "Abs", "GELU",
]


@st.composite
def valid_text_forms(draw, max_depth=3):
    """Grammatical text forms: layers, separators and (nested) repetitions; may still be an
    architecture that does not compile (e.g. starting with an activation)."""
    def seq(depth):
        items = []
        for _ in range(draw(st.integers(1, 4))):
            if depth < max_depth and draw(st.integers(0, 4)) == 0:
                items.append(f"{draw(st.integers(1, 3))}*({seq(depth + 1)})")
            else:
                items.append(draw(st.sampled_from(TEXT_LAYERS)))
        sep = draw(st.sampled_from([" > ", ">", ", ", " "]))
        return sep.join(items)

    return seq(0)
