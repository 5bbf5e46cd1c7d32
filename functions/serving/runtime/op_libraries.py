"""The op libraries that TF Serving links into its binary, registered before any load.

TF Serving's model server is built with TF.Text's ops, so a SavedModel whose
graph uses them (``CaseFoldUTF8``, ``WordpieceTokenizeWithOffsets``, ...) loads
there. Here they come from the ``tensorflow-text`` wheel: importing
``tensorflow_text`` runs ``tf.load_op_library`` on each of its op libraries,
which adds every op and kernel to the process-wide registries, where both a TF2
load and a TF1 Session load find them. A plain import is enough; no .so is
loaded by path.

TF Decision Forests, which TF Serving links too, is not listed: no release
supports this TensorFlow (its newest, 1.12.0, requires tensorflow==2.19.0).

``register_op_libraries()`` is idempotent and thread-safe: the first call
imports, and every later (or concurrent) call returns that call's answer. A
library that is missing or fails to import is skipped with one warning; a model
that needs its ops then fails to load with TensorFlow's own error naming the op.
"""

from __future__ import annotations

import importlib
import logging
import threading

log = logging.getLogger(__name__)

# Importable module names, in registration order.
LIBRARIES: tuple[str, ...] = ("tensorflow_text",)


class _Once:
    """The result of registering ``libraries``, computed by the first caller."""

    def __init__(self, libraries: tuple[str, ...]) -> None:
        self._libraries = libraries
        self._lock = threading.Lock()
        self._registered: tuple[str, ...] | None = None

    def __call__(self) -> tuple[str, ...]:
        with self._lock:
            if self._registered is None:
                self._registered = tuple(name for name in self._libraries if _register(name))
            return self._registered


_once = _Once(LIBRARIES)


def register_op_libraries() -> tuple[str, ...]:
    """Registers the ops of every importable library in LIBRARIES, once per process;
    returns the names of those registered. Blocks while another thread registers."""
    return _once()


def _register(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception as err:
        # ImportError when absent or broken; tf.errors.NotFoundError from a .so
        # built against another TensorFlow.
        log.warning(
            "op library %s is not registered (%s: %s); a model that uses its ops will not load",
            module,
            type(err).__name__,
            err,
        )
        return False
    return True
