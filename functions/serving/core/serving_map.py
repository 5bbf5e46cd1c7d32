"""The request path's view of what is served: TF Serving's ServingMap.

An immutable snapshot per model (AVAILABLE versions, the newest of them, the
labels), replaced as a whole by the manager whenever a version changes state,
so resolving a request takes no lock. Resolution follows TF Serving's rules and
messages: a label, else a version number, else the newest AVAILABLE version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from loader.errors import InvalidArgument, NotFound

S = TypeVar("S")


@dataclass(frozen=True)
class ModelView(Generic[S]):
    available: Mapping[int, S]
    labels: Mapping[str, int] = field(default_factory=dict)

    @property
    def latest(self) -> int | None:
        return max(self.available, default=None)


@dataclass(frozen=True)
class ServingMap(Generic[S]):
    models: Mapping[str, ModelView[S]] = field(default_factory=dict)

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> S:
        """The servable a request names, or NotFound/InvalidArgument as TF Serving."""
        view = self.models.get(name)
        if label is not None:  # an empty label is a label too, as in TF Serving
            if view is None or label not in view.labels:
                raise InvalidArgument(f"Unrecognized servable version label: {label}")
            version = view.labels[label]
        if version is None:
            latest = view.latest if view is not None else None
            if view is None or latest is None:
                raise NotFound(f"Servable not found for request: Latest({name})")
            return view.available[latest]
        servable = view.available.get(version) if view is not None else None
        if servable is None:
            raise NotFound(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def labels(self, name: str) -> dict[str, int]:
        view = self.models.get(name)
        return dict(view.labels) if view else {}

    def serves(self, name: str) -> bool:
        """At least one version of ``name`` is AVAILABLE."""
        view = self.models.get(name)
        return view is not None and bool(view.available)
