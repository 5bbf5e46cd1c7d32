"""A base path's listing, read as versions: the pure part of the repository.

Which version directories a recursive listing shows (``group_versions``), a
cheap content fingerprint of each (``listing_fingerprint``), whether a version
with a manifest is still arriving (``wait_reason``) or failed (``load_error``),
and what a scan reports to the manager (``reported``). No I/O here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from functions.serving.core.version_ref import VersionRef
from loader.errors import Code, LoadError
from loader.storage import ObjectInfo
from loader.verify import Problem, ProblemKind, Verdict, decide
from loader.versions import parse_version

# What a listing shows while a version is still being written (or rewritten).
_STILL_ARRIVING = frozenset({ProblemKind.FILE_MISSING, ProblemKind.SIZE_MISMATCH})
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")


@dataclass(frozen=True)
class Listed:
    """One version directory, as a recursive listing of the base path shows it."""

    version: int
    name: str
    files: Mapping[str, ObjectInfo]  # by path relative to the version directory


def group_versions(listing: Iterable[ObjectInfo]) -> dict[int, Listed]:
    """The version directories of a base path, from a recursive listing of it: the
    files under each child whose name ``parse_version`` accepts. When two names
    stand for one number (``7``, ``007``) the lexically first wins, as in
    ``scan_versions``. Keys ending in '/' (S3 directory markers) are no files."""
    by_name: dict[str, dict[str, ObjectInfo]] = {}
    for info in listing:
        head, sep, rest = info.key.partition("/")
        if sep and rest and not rest.endswith("/") and parse_version(head) is not None:
            by_name.setdefault(head, {})[rest] = info
    found: dict[int, Listed] = {}
    for name in sorted(by_name):
        number = parse_version(name)
        if number is not None and number not in found:
            found[number] = Listed(number, name, by_name[name])
    return found


def listing_fingerprint(files: Mapping[str, ObjectInfo]) -> str:
    """A digest of the files' paths, sizes and ETags (where the store has them)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        info = files[path]
        digest.update(f"{path}\0{info.size}\0{info.etag or ''}\n".encode())
    return digest.hexdigest()


def wait_reason(problems: Iterable[Problem]) -> str:
    """Why a version with a manifest is not complete yet ('' when its listing does
    not say so): a listed file missing or of another size, as while it is still
    being written. Any other problem fails its load instead, with the reason."""
    return "; ".join(str(p) for p in problems if p.kind in _STILL_ARRIVING)


def load_error(location: str, problems: Sequence[Problem]) -> LoadError:
    """The load failure for a version with these verification problems."""
    verdict = decide(problems)
    code = Code.DATA_LOSS if verdict is Verdict.CORRUPT else Code.UNAVAILABLE
    detail = "; ".join(str(p) for p in sorted(problems, key=lambda p: p.path))
    return LoadError(f"{location} is {verdict.value}: {detail}", code)


def cache_name(model: str) -> str:
    """``model`` as one directory name: itself when that is safe, else a digest."""
    if _SAFE_NAME.fullmatch(model):
        return model
    return "_" + hashlib.sha256(model.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Scan:
    """What a base path holds now."""

    found: Mapping[int, VersionRef] = field(default_factory=dict)
    waiting: Mapping[int, tuple[VersionRef, str]] = field(default_factory=dict)  # and why
    missing: bool = False  # no base path (on S3: nothing under the prefix)


def reported(scan: Scan, available: Iterable[int]) -> dict[int, VersionRef]:
    """The versions to report: those found, and those waiting that serve already
    (a version rewritten in place keeps serving: TF Serving never reloads one)."""
    found = dict(scan.found)
    for number in available:
        if number in scan.waiting:
            found[number] = scan.waiting[number][0]
    return found
