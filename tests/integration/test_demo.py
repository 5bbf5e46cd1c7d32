"""`make demo` runs the real pipeline end to end: keep it working."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_demo_serves_and_predicts() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "functions.demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "SERVING after" in out
    assert "model_spec: name=demo version=1 signature=serving_default" in out
    # y = 3*x0 - 2*x1 + 0.5
    assert "x=[1.0, 2.0] -> y=-0.5" in out
    assert "x=[0.5, -1.0] -> y=4" in out
    assert "stopped the server cleanly (exit code 0)" in out
