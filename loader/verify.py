"""Verify: proving that a version directory on any ``Storage`` is complete.

COMPLETE needs the manifest (written last by ``rollway publish``) present and
valid, every listed file there with its size and sha256, nothing unlisted
beside them, and the listed files forming a sound SavedModel. All problems are
collected; the pure policy ``decide`` turns them into a verdict: INCOMPLETE
when the version may still be arriving (retry later), CORRUPT when stored bytes
contradict the manifest, the publisher's final word (reject). Errors of the
store itself (``Unavailable``, ``Unauthenticated``, ...) are raised, not turned
into verdicts: they say nothing about the version.

A version's files must be regular files inside it. A symbolic link (only
local disk has them) is never followed, even to an identical file: a listed
path that is a link, or lies under a linked directory, is CORRUPT
(``NOT_REGULAR_FILE``), since what it points to can change without the version
changing, and staging or serving must never read outside the version.

Legacy versions (plain TF Serving layout, no manifest) pass only with
``allow_legacy=True``, once the listing of (key, size, etag) stays unchanged
for ``settle_seconds``. That is weaker than a manifest, hence opt-in: an S3
multipart upload shows no object until it completes, so a half-uploaded
version can look settled for minutes, and without checksums corrupted bytes go
unnoticed. Under that rule a settled directory that is not a sound SavedModel
is CORRUPT, as TF Serving would fail to load it.
"""

from __future__ import annotations

import enum
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from loader.errors import NotFound
from loader.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    SAVED_MODEL_FILES,
    ManifestError,
    VersionManifest,
    decode,
    sha256_stream,
)
from loader.progress import Progress
from loader.schemas.rollway.v1.manifest_pb2 import FileEntry
from loader.storage.base import NotRegularFile, ObjectInfo, Storage

METHOD_MANIFEST = "manifest"
METHOD_LEGACY = "legacy-settled"
INDEX = "variables/variables.index"
_SHARD = re.compile(r"variables/variables\.data-(\d{5})-of-(\d{5})")
LINK_DETAIL = (
    "is a symbolic link, which is never followed: a version's files must be regular files inside it"
)


class Verdict(enum.Enum):
    COMPLETE = "COMPLETE"
    INCOMPLETE = "INCOMPLETE"
    CORRUPT = "CORRUPT"


class ProblemKind(enum.Enum):
    MANIFEST_MISSING = "MANIFEST_MISSING"  # not written yet (or nothing there at all)
    FILE_MISSING = "FILE_MISSING"  # listed, not (yet) visible in storage
    NOT_SETTLED = "NOT_SETTLED"  # legacy: the listing changed while we watched
    MANIFEST_INVALID = "MANIFEST_INVALID"
    MANIFEST_MISMATCH = "MANIFEST_MISMATCH"  # names another model or version
    SIZE_MISMATCH = "SIZE_MISMATCH"  # truncated, empty or grown
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    UNLISTED_FILE = "UNLISTED_FILE"
    NO_SAVED_MODEL = "NO_SAVED_MODEL"
    MISSING_INDEX = "MISSING_INDEX"  # data shards without variables.index
    MISSING_SHARD = "MISSING_SHARD"  # a variables.data-i-of-N the index needs
    INCONSISTENT_SHARDS = "INCONSISTENT_SHARDS"  # shards disagree on N, or i >= N
    EMPTY_FILE = "EMPTY_FILE"  # a zero-byte saved_model.pb(txt) or variables.index
    LOAD_FAILED = "LOAD_FAILED"  # TensorFlow could not load it (rollway verify --load)
    NOT_REGULAR_FILE = "NOT_REGULAR_FILE"  # a symbolic link (never followed), device or FIFO


# What each kind means for the version. Every kind is here (a unit test checks).
# The INCOMPLETE kinds are those a publisher still writing would cause; the
# manifest is written last, so anything else it contradicts is CORRUPT.
_STILL_ARRIVING = {ProblemKind.MANIFEST_MISSING, ProblemKind.FILE_MISSING, ProblemKind.NOT_SETTLED}
SEVERITY: dict[ProblemKind, Verdict] = {
    kind: Verdict.INCOMPLETE if kind in _STILL_ARRIVING else Verdict.CORRUPT for kind in ProblemKind
}


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    path: str  # relative to the version directory; "" for the directory itself
    detail: str

    def __str__(self) -> str:
        return f"{self.kind.value} {self.path or '.'}: {self.detail}"


def decide(problems: Iterable[Problem]) -> Verdict:
    """CORRUPT if any problem is corrupt-kind, else INCOMPLETE if any, else COMPLETE."""
    verdicts = {SEVERITY[problem.kind] for problem in problems}
    for verdict in (Verdict.CORRUPT, Verdict.INCOMPLETE):
        if verdict in verdicts:
            return verdict
    return Verdict.COMPLETE


class _BytesCallback(Progress):
    def __init__(self, callback: Callable[[int], None]) -> None:
        self._callback = callback

    def advance(self, nbytes: int) -> None:
        self._callback(nbytes)


@dataclass(frozen=True)
class VerificationReport:
    verdict: Verdict
    problems: tuple[Problem, ...]  # all of them, sorted by path
    method: str  # METHOD_MANIFEST or METHOD_LEGACY
    manifest: VersionManifest | None = field(compare=False)
    files_checked: int
    bytes_hashed: int
    seconds: float

    def with_problems(self, extra: Iterable[Problem]) -> VerificationReport:
        """This report with more problems (e.g. a failed trial load), verdict re-decided."""
        problems = (*self.problems, *extra)
        return replace(self, problems=problems, verdict=decide(problems))


def verify_version(
    storage: Storage,
    prefix: str = "",
    *,
    workers: int = 8,
    progress: Progress | Callable[[int], None] | None = None,
    allow_legacy: bool = False,
    settle_seconds: float = 30.0,
    expected_model: str | None = None,
    expected_version: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> VerificationReport:
    """Verifies the version directory ``prefix`` ('' for the storage root).

    ``progress`` hears ``planned`` once, then ``advance``/``file_done`` from the
    hashing threads; a plain callable gets just the byte counts.
    ``expected_model``/``expected_version``, when given, must match the
    manifest (a manifest copied from another version is CORRUPT). Memory is
    bounded by ``workers`` read chunks, whatever the file sizes.
    """
    started = clock()
    sink = _BytesCallback(progress) if callable(progress) else (progress or Progress())
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    listing = _list(storage, base)
    method, manifest, files, nbytes = METHOD_MANIFEST, None, 0, 0
    if MANIFEST_NAME not in listing and allow_legacy:
        method = METHOD_LEGACY
        problems, files = _legacy(storage, base, listing, settle_seconds, sleep)
    elif MANIFEST_NAME not in listing:
        detail = "manifest not written yet"
        if not listing:
            detail += f"; no files at all under {storage.join(base)}"
        problems = [Problem(ProblemKind.MANIFEST_MISSING, "", detail)]
    else:
        manifest, problems = _read_manifest(storage, base, listing[MANIFEST_NAME])
        if manifest is not None:
            problems += listing_problems(manifest, listing, expected_model, expected_version)
            to_hash = _compare(manifest, listing)[0]
            sink.planned(len(to_hash), sum(entry.size for entry in to_hash))
            hashed, nbytes = _hash_all(storage, base, to_hash, workers, sink)
            problems += hashed
            files = len(manifest.files)
    ordered = tuple(sorted(problems, key=lambda p: p.path))
    seconds = clock() - started
    return VerificationReport(decide(ordered), ordered, method, manifest, files, nbytes, seconds)


def listing_problems(
    manifest: VersionManifest,
    listing: Mapping[str, ObjectInfo],
    expected_model: str | None = None,
    expected_version: int | None = None,
) -> list[Problem]:
    """Every problem ``verify_version`` finds without reading a file's contents.

    ``listing`` maps paths relative to the version directory (the manifest's
    among them) to what the store lists there. A version with none of these
    problems is COMPLETE once its files hash to the manifest's sha256.
    """
    problems = _identity(manifest, expected_model, expected_version)
    problems += _compare(manifest, listing)[1]
    problems += structure_problems(entry.path for entry in manifest.files)
    problems += _empty_essentials({entry.path: entry.size for entry in manifest.files})
    return problems


def structure_problems(paths: Iterable[str]) -> list[Problem]:
    """What keeps these relative paths from being a loadable SavedModel's files."""
    present = set(paths)
    problems: list[Problem] = []
    if not present.intersection(SAVED_MODEL_FILES):
        detail = "neither saved_model.pb nor saved_model.pbtxt is there"
        problems.append(Problem(ProblemKind.NO_SAVED_MODEL, "saved_model.pb", detail))
    shards = {path: match for path in present if (match := _SHARD.fullmatch(path))}
    if shards and INDEX not in present:
        detail = f"{len(shards)} variables data shard(s) but no index"
        problems.append(Problem(ProblemKind.MISSING_INDEX, INDEX, detail))
    if INDEX not in present:
        return problems
    counts = sorted({int(match.group(2)) for match in shards.values()})
    if not counts:
        detail = "variables.index is there but no variables.data-*-of-* shard"
        problems.append(Problem(ProblemKind.MISSING_SHARD, "variables/", detail))
    if len(counts) > 1:
        detail = f"shards disagree on their count: {counts}"
        problems.append(Problem(ProblemKind.INCONSISTENT_SHARDS, "variables/", detail))
    for path, match in sorted(shards.items()):
        if int(match.group(1)) >= int(match.group(2)):
            detail = "shard number is not below the shard count"
            problems.append(Problem(ProblemKind.INCONSISTENT_SHARDS, path, detail))
    for count in counts:
        for index in range(count):
            name = f"variables/variables.data-{index:05d}-of-{count:05d}"
            if name not in present:
                detail = f"shard {index + 1} of {count} is missing"
                problems.append(Problem(ProblemKind.MISSING_SHARD, name, detail))
    return problems


def _list(storage: Storage, base: str) -> dict[str, ObjectInfo]:
    # Keys ending in '/' are "directory marker" objects some S3 tools create.
    return {
        info.key[len(base) :]: info
        for info in storage.list(base)
        if info.key.startswith(base) and info.key != base and not info.key.endswith("/")
    }


def _read_manifest(
    storage: Storage, base: str, info: ObjectInfo
) -> tuple[VersionManifest | None, list[Problem]]:
    def invalid(details: Iterable[str]) -> list[Problem]:
        return [Problem(ProblemKind.MANIFEST_INVALID, MANIFEST_NAME, d) for d in details]

    if info.link:
        return None, [Problem(ProblemKind.NOT_REGULAR_FILE, MANIFEST_NAME, LINK_DETAIL)]
    if info.size > MAX_MANIFEST_BYTES:
        return None, invalid([f"{info.size} bytes, over the {MAX_MANIFEST_BYTES} limit"])
    try:
        with storage.open_read(base + MANIFEST_NAME, 0, MAX_MANIFEST_BYTES + 1) as reader:
            data = reader.read()
        return decode(data), []
    except NotRegularFile as err:  # replaced by a link since the listing
        return None, [Problem(ProblemKind.NOT_REGULAR_FILE, MANIFEST_NAME, err.message)]
    except NotFound:
        detail = "the manifest disappeared while being read"
        return None, [Problem(ProblemKind.MANIFEST_MISSING, MANIFEST_NAME, detail)]
    except ManifestError as err:
        return None, invalid(err.problems)


def _identity(manifest: VersionManifest, model: str | None, version: int | None) -> list[Problem]:
    return [
        Problem(
            ProblemKind.MANIFEST_MISMATCH, MANIFEST_NAME, f"it is for {what} {got!r}, not {want!r}"
        )
        for what, got, want in (
            ("model", manifest.model, model),
            ("version", manifest.version, version),
        )
        if want is not None and got != want
    ]


def _compare(
    manifest: VersionManifest, listing: Mapping[str, ObjectInfo]
) -> tuple[list[FileEntry], list[Problem]]:
    """Listed files whose size is right (still to hash), and the problems of the rest."""
    to_hash: list[FileEntry] = []
    problems: list[Problem] = []
    links = {path for path, info in listing.items() if info.link}
    for entry in manifest.files:
        info = listing.get(entry.path)
        linked = _linked_directory(entry.path, links)
        if info is not None and info.link:
            problems.append(Problem(ProblemKind.NOT_REGULAR_FILE, entry.path, LINK_DETAIL))
        elif info is None and linked:
            detail = f"is under {linked!r}, which {LINK_DETAIL}"
            problems.append(Problem(ProblemKind.NOT_REGULAR_FILE, entry.path, detail))
        elif info is None:
            detail = f"listed in the manifest ({entry.size} bytes) but not in storage"
            problems.append(Problem(ProblemKind.FILE_MISSING, entry.path, detail))
        elif info.size != entry.size:
            what = "empty" if info.size == 0 else "truncated" if info.size < entry.size else "grown"
            detail = f"{what}: {info.size} bytes stored, the manifest lists {entry.size}"
            problems.append(Problem(ProblemKind.SIZE_MISMATCH, entry.path, detail))
        else:
            to_hash.append(entry)
    listed = {entry.path for entry in manifest.files}
    for path, info in listing.items():
        if path != MANIFEST_NAME and path not in listed:
            if info.link:
                detail = f"not listed in the manifest, and {LINK_DETAIL}"
                problems.append(Problem(ProblemKind.NOT_REGULAR_FILE, path, detail))
            else:
                detail = f"{info.size} bytes, not listed in the manifest"
                problems.append(Problem(ProblemKind.UNLISTED_FILE, path, detail))
    return to_hash, problems


def _linked_directory(path: str, links: set[str]) -> str:
    """The directory of ``path`` that is a symbolic link ('' if none is)."""
    parts = path.split("/")
    for end in range(1, len(parts)):
        if (directory := "/".join(parts[:end])) in links:
            return directory
    return ""


def _hash_all(
    storage: Storage, base: str, entries: list[FileEntry], workers: int, sink: Progress
) -> tuple[list[Problem], int]:
    """Streams and hashes ``entries`` in parallel (largest first, to balance the pool).
    The first storage error stops the other workers and is raised."""
    stop = threading.Event()

    def check(entry: FileEntry) -> tuple[Problem | None, int]:
        try:
            with storage.open_read(base + entry.path) as reader:
                size, sha = sha256_stream(reader, sink.advance, stop)
        except NotRegularFile as err:  # replaced by a link since the listing
            return Problem(ProblemKind.NOT_REGULAR_FILE, entry.path, err.message), 0
        except NotFound:
            detail = "listed in the manifest but disappeared while being read"
            return Problem(ProblemKind.FILE_MISSING, entry.path, detail), 0
        sink.file_done(entry.path)
        if size != entry.size:
            detail = f"changed while being read: {size} bytes read, the manifest lists {entry.size}"
            return Problem(ProblemKind.SIZE_MISMATCH, entry.path, detail), size
        if sha != entry.sha256:
            detail = f"sha256 is {sha}, the manifest lists {entry.sha256}"
            return Problem(ProblemKind.CHECKSUM_MISMATCH, entry.path, detail), size
        return None, size

    ordered = sorted(entries, key=lambda entry: -entry.size)
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="verify") as pool:
        futures = [pool.submit(check, entry) for entry in ordered]
        try:
            results = [future.result() for future in futures]
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise
    return [p for p, _ in results if p is not None], sum(n for _, n in results)


def _legacy(
    storage: Storage,
    base: str,
    first: dict[str, ObjectInfo],
    settle_seconds: float,
    sleep: Callable[[float], None],
) -> tuple[list[Problem], int]:
    """Problems of a manifest-less version, and how many files it has."""
    if settle_seconds > 0:
        sleep(settle_seconds)
    second = _list(storage, base)
    if not second:
        detail = f"no manifest, and no files at all under {storage.join(base)}"
        return [Problem(ProblemKind.MANIFEST_MISSING, "", detail)], 0
    if second != first:
        changed = sorted(k for k in first.keys() | second.keys() if first.get(k) != second.get(k))
        detail = f"no manifest, and within {settle_seconds:g}s these changed: {', '.join(changed)}"
        return [Problem(ProblemKind.NOT_SETTLED, "", detail)], len(second)
    problems = structure_problems(second)
    problems += _empty_essentials({path: info.size for path, info in second.items()})
    problems += [
        Problem(ProblemKind.NOT_REGULAR_FILE, path, LINK_DETAIL)
        for path, info in second.items()
        if info.link
    ]
    return problems, len(second)


def _empty_essentials(sizes: dict[str, int]) -> list[Problem]:
    # An empty saved_model.pb parses as an empty SavedModel; only a load would notice.
    return [
        Problem(ProblemKind.EMPTY_FILE, path, "zero bytes, so no SavedModel can load")
        for path in (*SAVED_MODEL_FILES, INDEX)
        if sizes.get(path) == 0
    ]
