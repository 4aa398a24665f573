"""Runs neural-tangents (JAX) in its own virtual environment, for cross-library tests.

Its Python is ``$NT_PYTHON``, else ``/tmp/ntvenv/bin/python``; one that works (CPU only)::

    python3 -m venv /tmp/ntvenv
    /tmp/ntvenv/bin/pip install "neural-tangents==0.6.5" "jax[cpu]==0.4.26"

Tests that use it skip when it is missing.
"""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest


def nt_python():
    """The neural-tangents Python, or None when it is missing or cannot import it."""
    exe = shutil.which(os.environ.get("NT_PYTHON") or "/tmp/ntvenv/bin/python")
    if exe is None:
        return None
    probe = subprocess.run([exe, "-c", "import jax, neural_tangents"], capture_output=True)
    return exe if probe.returncode == 0 else None


def run_nt(script: str, spec: dict, tmp) -> dict:
    """Run ``script`` (argv: spec.json, out.npz) under neural-tangents with x64 on the CPU;
    returns the arrays it saved. Skips the calling test when neural-tangents is missing."""
    exe = nt_python()
    if exe is None:
        pytest.skip("neural-tangents not available (set NT_PYTHON or create /tmp/ntvenv)")
    (tmp / "spec.json").write_text(json.dumps(spec))
    (tmp / "run.py").write_text(script)
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([exe, str(tmp / "run.py"), str(tmp / "spec.json"), str(tmp / "out.npz")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(tmp / "out.npz"))
