"""What ``loader.decode`` decides about one object event (its module docstring
says when each applies). A module of its own, so that ``loader.decode_minio``
answers with the same ``Ignored`` and ``Rejected``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ArchiveFormat = Literal["tar", "tar.gz", "zip"]


@dataclass(frozen=True)
class Archive:
    """A version packed in one file; ``sha256`` (from the event) or else the
    digest file at ``digest_uri`` gives its expected digest."""

    uri: str
    digest_uri: str | None
    sha256: str | None
    format: ArchiveFormat


@dataclass(frozen=True)
class Published:
    """``version_uri`` is the version directory, or the archive (then ``archive``
    is set and ``manifest_sha256`` is None). ``event_id`` is the CloudEvent id,
    ``<bucket>/<key>@<sequencer|eTag>`` for MinIO, or ``sha256:<hex of the value>``."""

    model: str
    version: int
    version_uri: str
    manifest_sha256: str | None
    event_id: str
    source_record: str
    archive: Archive | None = None


@dataclass(frozen=True)
class Ignored:
    """Well formed, but nothing for the loader to do: commit and move on."""

    reason: str


@dataclass(frozen=True)
class Rejected:
    """Cannot be acted on, and retrying cannot help: dead-letter it. Fields beyond
    ``reason`` are filled when the event names them validly."""

    reason: str
    model: str = ""
    version: int = -1
    version_uri: str = ""
    source_record: str = ""
    event_id: str = ""


Decision = Published | Ignored | Rejected
