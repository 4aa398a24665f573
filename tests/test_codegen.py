"""Generated code and the disk cache: a second process pays neither sympy nor compilation."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import sympy as sp

from ntk_infinite.compiler.codegen import emit_assignments
from ntk_infinite.compiler.duals.arccos import cho_saul_J, THETA
from tolerances import DBLQUAD_ATOL, DBLQUAD_RTOL, ULP_RTOL

SCRIPT = textwrap.dedent(
    """
    import json, numpy as np
    import ntk_infinite.compiler.codegen as cg
    calls = {"derive": 0}
    original = cg.cached_text
    def counting(key, producer):
        def wrapped():
            calls["derive"] += 1
            return producer()
        return original(key, wrapped)
    cg.cached_text = counting
    import ntk_infinite.compiler.duals.arccos as ac
    ac.cached_text = counting
    import ntk_infinite as nk
    kernel = nk.compile("Dense(1.2, 0.1) > ReLU > Dense(1.2, 0.1)")
    k = kernel(np.eye(4))
    engine = kernel.program.engine
    print(json.dumps({"derive": calls["derive"], "hits": sum(engine.stats.cache_hits.values()),
                      "misses": sum(engine.stats.cache_misses.values()), "value": float(k.ntk[0, 1])}))
    """
)


def _run(cache_dir):
    env = dict(os.environ, NTK_INFINITE_CACHE_DIR=str(cache_dir))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    import json

    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_uses_the_disk_cache(tmp_path):
    first = _run(tmp_path)
    second = _run(tmp_path)
    assert first["derive"] > 0 and first["misses"] > 0
    assert second["derive"] == 0, "sympy derivations ran again in the second process"
    assert second["misses"] == 0 and second["hits"] > 0, "Numba compiled again in the second process"
    assert second["value"] == first["value"]
    assert any(p.name.startswith("_ntk_infinite_engine_") for p in tmp_path.rglob("*.py"))


def test_cho_saul_J_matches_quadrature_definition():
    """J_n from the derivative formula equals Cho & Saul's defining integral (their eq. 1-3):
    k_n(x, y) = 2 ∫ Θ(w·x)Θ(w·y)(w·x)^n(w·y)^n dN(w) = |x|^n|y|^n J_n(θ)/π, checked in 2-D."""
    from scipy import integrate

    for n in range(4):
        J = sp.lambdify(THETA, cho_saul_J(n))
        for theta in (0.4, 2.2):
            x = np.array([1.0, 0.0])
            y = np.array([np.cos(theta), np.sin(theta)])

            def integrand(r, phi):
                w = r * np.array([np.cos(phi), np.sin(phi)])
                a, b = w @ x, w @ y
                if a <= 0 or b <= 0:
                    return 0.0
                return 2 * a**n * b**n * np.exp(-r * r / 2) / (2 * np.pi) * r

            val, _ = integrate.dblquad(integrand, -np.pi, np.pi, 0, 12, epsabs=1e-12, epsrel=1e-11)
            np.testing.assert_allclose(val, J(theta) / np.pi, rtol=DBLQUAD_RTOL, atol=DBLQUAD_ATOL)


def test_emit_assignments_shares_subexpressions():
    x, y = sp.symbols("x y")
    lines = emit_assignments([("a", sp.sin(x + y) ** 2), ("b", sp.sin(x + y) + 1)])
    code = "\n".join(lines)
    assert code.count("math.sin") == 1
    ns = {"math": __import__("math"), "x": 0.3, "y": 0.4}
    exec(code, ns)
    np.testing.assert_allclose([ns["a"], ns["b"]], [np.sin(0.7) ** 2, np.sin(0.7) + 1], rtol=ULP_RTOL, atol=0)
