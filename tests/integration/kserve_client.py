"""KServe's own v2 clients (``kserve.InferenceRESTClient``, ``InferenceGRPCClient``),
run in a venv of their own.

Why not this venv: every ``kserve`` release requires protobuf<7 (0.21: 6.33),
and rollway's committed gencode needs protobuf>=7.35.1, so pip cannot install
both. The venv is built once from PyPI (about 30 s) under
``~/.cache/rollway/test-kserve-client-venv`` and rebuilt when its spec
changes, as the benchmark builds its KServe venv (tests/bench). A test hands
it a script that prints one JSON document, and reads that back (the
``kserve`` fixture, :func:`kserve_fixture`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

VENV = Path.home() / ".cache" / "rollway" / "test-kserve-client-venv"
SPEC = f"kserve numpy python{sys.version_info.major}.{sys.version_info.minor}\n"
TIMEOUT = 120

RunScript = Callable[..., Any]


def _base_python() -> str:
    return (
        shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}") or sys.executable
    )


def ensure_venv(venv: Path = VENV) -> Path:
    """The venv's python, building the venv if it is missing or stale."""
    python, stamp = venv / "bin" / "python", venv / ".rollway-test-spec"
    if python.exists() and stamp.exists() and stamp.read_text() == SPEC:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    for argv in (
        [_base_python(), "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", *SPEC.split()[:-1]],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, check=False, env=_env())
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
    stamp.write_text(SPEC)
    return python


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    return env


def run_script(python: Path, script: str, *args: str) -> Any:
    """Runs ``script`` (Python source) with ``args`` in the KServe venv; its stdout's
    last line, parsed as JSON."""
    done = subprocess.run(
        [str(python), "-c", script, *args],
        capture_output=True, text=True, timeout=TIMEOUT, check=False, env=_env(),
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"the KServe client script failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def runner() -> RunScript:
    """``run(script, *args)`` in the KServe client venv (built on first use), for a
    test module's fixture; fails the test when the venv cannot be built."""
    try:
        python = ensure_venv()
    except (OSError, RuntimeError) as err:
        pytest.fail(f"could not build the KServe client venv in {VENV}: {err}")

    def run(script: str, *args: str) -> Any:
        return run_script(python, script, *args)

    return run


@pytest.fixture(scope="module", name="kserve")
def kserve_fixture() -> RunScript:
    """The ``kserve`` fixture: a test module registers it by importing this
    function (``from tests.integration.kserve_client import kserve_fixture``)."""
    return runner()
