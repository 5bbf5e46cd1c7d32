"""A version's lifecycle in a server, with the names and numbers TF Serving's
GetModelStatus reports (ModelVersionStatus.State)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from loader.errors import RollwayError


class VersionState(enum.IntEnum):
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: VersionState
    error: RollwayError | None = None
