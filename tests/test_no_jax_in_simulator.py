"""The cost model must run where jax is not installed for the accelerator: it never imports jax."""

from __future__ import annotations

import subprocess
import sys


def test_simulator_does_not_import_jax():
    code = ("import sys, simulator.cli.main, simulator.predict, hardware_profiles\n"
            "from simulator.predict import predict\n"
            "predict(model='llama3-8b', hardware='h100-sxm', chips=8)\n"
            "assert 'jax' not in sys.modules, 'simulator imported jax'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
