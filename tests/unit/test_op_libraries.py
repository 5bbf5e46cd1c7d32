"""register_op_libraries(): idempotent, thread-safe, and registers TF.Text's ops.

Op registration is process-wide and cannot be undone, so the cases that look at
the state before the first call run in fresh interpreters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

from functions.serving.runtime.op_libraries import register_op_libraries
from tests.conftest import REPO

# Ops from two of TF.Text's libraries (_normalize_ops.so, _wordpiece_tokenizer.so).
PROBE_OPS = ("CaseFoldUTF8", "WordpieceTokenizeWithOffsets")

PRELUDE = f"""
PROBE_OPS = {PROBE_OPS!r}
import json, logging, sys, threading
from tensorflow.python.framework import op_def_registry
from functions.serving.runtime.op_libraries import register_op_libraries

warnings = []
class Collect(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())
logging.getLogger("functions.serving.runtime.op_libraries").addHandler(Collect())

def registered():
    return [op_def_registry.get(op) is not None for op in PROBE_OPS]
"""

CALLS = """
before = registered()
results = []
threads = [threading.Thread(target=lambda: results.append(register_op_libraries()))
           for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
again = register_op_libraries()
print(json.dumps({"before": before, "after": registered(),
                  "results": [list(r) for r in results], "again": list(again),
                  "same": all(r is again for r in results), "warnings": warnings}))
"""


def run_fresh(setup: str = "") -> dict[str, Any]:
    script = PRELUDE + textwrap.dedent(setup) + CALLS
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_registers_tf_text_once_across_threads() -> None:
    result = run_fresh()
    assert result["before"] == [False, False]
    assert result["after"] == [True, True]
    assert result["results"] == [["tensorflow_text"]] * 8
    assert result["again"] == ["tensorflow_text"]
    assert result["same"], "every call must return the first call's tuple"
    assert result["warnings"] == []


def test_missing_library_warns_once_and_goes_on() -> None:
    # A None entry in sys.modules makes `import tensorflow_text` raise ImportError.
    result = run_fresh('sys.modules["tensorflow_text"] = None\n')
    assert result["results"] == [[]] * 8
    assert result["again"] == []
    assert result["after"] == [False, False]
    assert len(result["warnings"]) == 1
    assert "tensorflow_text" in result["warnings"][0]


def test_idempotent_in_this_process() -> None:
    first = register_op_libraries()
    assert first == ("tensorflow_text",)
    assert register_op_libraries() is first
