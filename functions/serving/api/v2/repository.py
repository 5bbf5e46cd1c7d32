"""The v2 model repository extension's two behaviours, as the server is fed
(the :class:`~functions.serving.api.v2.inference.Repository` protocol):
``ConfigRepository`` for a server fed by its model config, and
``AssignedRepository`` for ``--assignments``, which refuses every change. The
server wires them to its feed (``server._v2_api``); neither ever takes a path
or file contents from a request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from loader.errors import FailedPrecondition, NotFound
from loader.model_config import ModelSpec


class ConfigRepository:
    """The v2 model repository of a server fed by its config (``--model_config_file``,
    or ``--model_name``/``--model_base_path``): the models are those of the
    server's current config. ``unload`` removes a model from it and ``load``
    adds back one that ``catalog()`` (the config file, read again; or the
    flags' model) names, each through ``reload``, as HandleReloadConfigRequest
    would: it returns once added versions loaded, or raises naming what failed.
    The config file's own poll (--model_config_file_poll_wait_seconds) applies
    the file again only when the file changes."""

    def __init__(
        self,
        served: Callable[[], Sequence[ModelSpec]],
        catalog: Callable[[], Sequence[ModelSpec]],
        reload: Callable[[Sequence[ModelSpec]], None],
    ) -> None:
        self._served = served
        self._catalog = catalog
        self._reload = reload
        self._lock = threading.Lock()  # a change reads the config, then replaces it

    def names(self) -> list[str]:
        return sorted({s.name for s in self._served()} | {s.name for s in self._catalog()})

    def load(self, name: str) -> None:
        with self._lock:
            served = list(self._served())
            if any(s.name == name for s in served):
                return  # already in the config: its versions follow its base path
            spec = next((s for s in self._catalog() if s.name == name), None)
            if spec is None:
                raise NotFound(f"model {name} is not in the server's model config")
            self._reload([*served, spec])

    def unload(self, name: str) -> None:
        with self._lock:
            served = list(self._served())
            if not any(s.name == name for s in served):
                if any(s.name == name for s in self._catalog()):
                    return  # not served now
                raise NotFound(f"model {name} is not in the server's model config")
            self._reload([s for s in served if s.name != name])


class AssignedRepository:
    """With ``--assignments`` the store's assignments say what is served."""

    REFUSAL = (
        "the served models come from --assignments; change assignments instead "
        "(rollway label, pin, rollback), not the model repository API"
    )

    def __init__(self, served: Callable[[], Sequence[ModelSpec]]) -> None:
        self._served = served

    def names(self) -> list[str]:
        return sorted(s.name for s in self._served())

    def load(self, name: str) -> None:
        raise FailedPrecondition(self.REFUSAL)

    def unload(self, name: str) -> None:
        raise FailedPrecondition(self.REFUSAL)
