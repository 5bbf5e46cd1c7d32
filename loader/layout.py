"""Where things live under a model's base URI (TF Serving's ``model_base_path``).

    <model_base>/<version>/...                    the version's files (digits only)
    <model_base>/<version>/rollway-manifest.json  written last by ``rollway publish``
    <model_base>/_rollway/staged/<version>        created once by the loader when it
                                                  stages the version (create-if-absent)

Staging records live outside the version directory so that a version's files
are exactly what its manifest lists. Names that are not all digits are never
versions (TF Serving ignores them too), so ``_rollway`` cannot be mistaken for one.
"""

from __future__ import annotations

from collections.abc import Iterable

from loader.manifest import MANIFEST_NAME
from loader.storage import ObjectInfo, Storage
from loader.versions import parse_version

STATE_DIR = "_rollway"

__all__ = ["MANIFEST_NAME", "manifest_key", "staged_key", "version_prefix", "versions_in"]


def version_prefix(version: int) -> str:
    return f"{version}/"


def manifest_key(version: int) -> str:
    return f"{version}/{MANIFEST_NAME}"


def staged_key(version: int) -> str:
    return f"{STATE_DIR}/staged/{version}"


def versions_in(objects: Iterable[ObjectInfo]) -> set[int]:
    """Version numbers that have at least one file, from a listing of the model base."""
    found: set[int] = set()
    for info in objects:
        head, sep, _ = info.key.partition("/")
        if sep and (version := parse_version(head)) is not None:
            found.add(version)
    return found


def existing_versions(storage: Storage) -> set[int]:
    return versions_in(storage.list())
