"""The one data plane every protocol adapter calls.

An adapter turns its wire format into a :class:`ModelSelector` plus a
``Decode`` callback (handed the signature's input types, as TF Serving's JSON
codec gets a type map) and renders the protocol-neutral results; it never
touches a servable or the manager. Readiness is the server's: the manager's
view plus whatever the sources add (``--assignments``: every assigned version
AVAILABLE), passed in as ``ready``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from functions.serving.core.manager import Manager
from functions.serving.dataplane import examples
from functions.serving.dataplane.predict import predict_with
from functions.serving.dataplane.types import (
    SIGNATURE_DEF_FIELD,
    Classification,
    Decode,
    Metadata,
    ModelSelector,
    Prediction,
    Regression,
    Served,
    Task,
    VersionStatus,
)
from functions.serving.runtime.servable import Servable
from loader.errors import InvalidArgument, NotFound


class DataPlane:
    def __init__(
        self,
        manager: Manager[Servable],
        *,
        check_method: bool = False,
        ready: Callable[[], bool] | None = None,
        statuses: Callable[[str], list[VersionStatus]] | None = None,
    ) -> None:
        """``check_method``: ``--enable_signature_method_name_check``; ``ready`` and
        ``statuses`` replace the manager's answers where the server is more
        than this process (a worker of --workers answers for all of them)."""
        self._manager = manager
        self._check_method = check_method
        self._ready = ready or manager.is_ready
        self._statuses = statuses or manager.statuses

    def _servable(self, selector: ModelSelector) -> Servable:
        return self._manager.resolve(selector.name, selector.version, selector.label)

    def predict(
        self,
        selector: ModelSelector,
        decode: Decode,
        names: Iterable[str] | None = None,
        output_filter: Iterable[str] = (),
    ) -> Prediction:
        """``names``: the inputs the request sends, when known before decoding."""
        return predict_with(
            self._servable(selector), selector.signature_name, decode, names, output_filter
        )

    def classify(
        self, selector: ModelSelector, request_input: Any
    ) -> tuple[Served, Classification]:
        return examples.classify_with(
            self._servable(selector), selector.signature_name, request_input, self._check_method
        )

    def regress(self, selector: ModelSelector, request_input: Any) -> tuple[Served, Regression]:
        return examples.regress_with(
            self._servable(selector), selector.signature_name, request_input, self._check_method
        )

    def multi_inference(
        self, tasks: Sequence[Task], request_input: Any
    ) -> list[tuple[Served, Classification | Regression]]:
        """Every task on the same examples; results in task order."""
        examples.check_tasks(tasks)
        servable = self._servable(tasks[0].selector)
        return examples.multi_inference_with(servable, tasks, request_input, self._check_method)

    def metadata(self, selector: ModelSelector, fields: Iterable[str]) -> Metadata:
        """GetModelMetadata; only the signature_def field exists."""
        fields = list(fields)
        if not fields:
            raise InvalidArgument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for name in fields:
            if name != SIGNATURE_DEF_FIELD:
                raise InvalidArgument(f"Metadata field {name} is not supported")
        servable = self._servable(selector)
        return Metadata(servable.version_id, servable.signature_defs)

    def status(self, name: str, version: int | None) -> list[VersionStatus]:
        """GetModelStatus: every known version newest first, or the one asked for."""
        if not name:
            raise InvalidArgument("ModelSpec has no name specified.")
        statuses = self._statuses(name)
        if version is not None:
            statuses = [s for s in statuses if s.version == version]
            if not statuses:
                raise NotFound(f"Could not find version {version} of model {name}")
        elif not statuses:
            raise NotFound(f"Could not find any versions of model {name}")
        return statuses

    def ready(self) -> bool:
        """Every configured model has an AVAILABLE version (and the sources agree)."""
        return self._ready()
