"""The loader pipeline: decode -> verify -> stage -> assign, for one event.

``Pipeline.handle`` takes one decoded decision and returns a ``Result`` whose
outcome is durable before it returns:

- STAGED: the version is in the serving store (manifest written last, marker
  created) and the model's assignment was recomputed;
- UNCHANGED: the same version with the same manifest was staged before (a
  duplicate or replayed event); the assignment is recomputed anyway, so a crash
  between staging and assigning heals on redelivery;
- RETRY: the version is still arriving (INCOMPLETE); it is parked in the store
  and will be retried with backoff until the deadline;
- REJECTED: for good (CORRUPT, a hostile event, a new manifest for a staged
  version, the retry deadline passed); the caller sends it to the dead letter;
- IGNORED: not for us.

The caller (Kafka consumer or HTTP function) emits the events a result implies
(``loader.emit``) and only then acknowledges the record. Errors the store or
network raise (``Unavailable`` and the like) propagate: nothing durable
happened, so the caller must redeliver. Every step is idempotent, so running an
event twice, concurrently or after a crash, gives the same store.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loader import archive, assign, assignments, manifest
from loader.decode import Archive, Decision, DecodeConfig, Ignored, Published, Rejected
from loader.errors import AlreadyExists, DataLoss, FailedPrecondition, InvalidArgument, NotFound
from loader.model_config import ModelSpec
from loader.retry import Parking, Pending, RetryPolicy, next_attempt
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from loader.stage import StageResult, stage_version, staged_versions
from loader.storage import Storage, open_storage
from loader.unpack import DEFAULT_MAX_MEMBERS, DEFAULT_MAX_UNPACKED_BYTES
from loader.verify import Problem, Verdict, VerificationReport, verify_version

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    STAGED = "staged"
    UNCHANGED = "unchanged"
    RETRY = "retry"
    REJECTED = "rejected"
    IGNORED = "ignored"


@dataclass(frozen=True)
class LoaderConfig:
    store_uri: str  # the serving store root: <store>/<model>/<version>/
    source_roots: tuple[str, ...] = ()  # where events may point; () = the store only
    models: Mapping[str, ModelSpec] = field(default_factory=dict)  # policies and labels
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    workers: int = 8
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES  # per archive (--max-archive-bytes)
    max_members: int = DEFAULT_MAX_MEMBERS  # per archive (--max-archive-members)

    def decode_config(self) -> DecodeConfig:
        return DecodeConfig(self.source_roots or (self.store_uri,))


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    reason: str = ""
    model: str = ""
    version: int = -1
    version_uri: str = ""  # where the event said it was published
    cause: str = ""  # the event id
    source_record: str = ""
    verdict: Verdict | None = None
    problems: tuple[Problem, ...] = ()
    staged: StageResult | None = None
    assignment: AssignmentChanged | None = None  # in force after this event
    assignment_changed: bool = False
    retry_at: float | None = None
    timings: Mapping[str, float] = field(default_factory=dict)  # verify_s, stage_s, assign_s


class Pipeline:
    """One per process; ``handle`` is thread-safe (storages are, and cached per root)."""

    def __init__(self, config: LoaderConfig, clock: Any = time.time) -> None:
        self.config = config
        self.store = open_storage(config.store_uri)
        self.parking = Parking(self.store)
        self.decode_config = config.decode_config()
        self._clock = clock
        self._sources: dict[str, Storage] = {}
        self._lock = threading.Lock()

    def handle(self, decision: Decision) -> Result:
        if isinstance(decision, Ignored):
            return Result(Outcome.IGNORED, decision.reason)
        if isinstance(decision, Rejected):
            return Result(
                Outcome.REJECTED, decision.reason, decision.model, decision.version,
                decision.version_uri, decision.event_id, decision.source_record,
            )  # fmt: skip
        return self._published(decision)

    def retry_due(self) -> list[Result]:
        """Runs every parked version whose next attempt is due."""
        results = []
        for pending in self.parking.due(self._clock()):
            results.append(self._published(published_from_json(pending.event)))
        return results

    # -- the steps --------------------------------------------------------------

    def _published(self, event: Published) -> Result:
        base = Result(
            Outcome.STAGED, "", event.model, event.version, event.version_uri,
            event.event_id, event.source_record,
        )  # fmt: skip
        timings: dict[str, float] = {}
        started = time.monotonic()
        try:
            if event.archive is not None:
                staged = self._stage_archive(event, event.archive)
            else:
                report_or_result = self._verify(event, base)
                if isinstance(report_or_result, Result):
                    return report_or_result
                timings["verify_s"] = time.monotonic() - started
                source, prefix = self._source(event.version_uri)
                started = time.monotonic()
                staged = stage_version(
                    source, prefix, self.store, event.model, event.version, report_or_result,
                    workers=self.config.workers,
                )  # fmt: skip
            timings["stage_s"] = time.monotonic() - started
        except (AlreadyExists, DataLoss, InvalidArgument) as err:
            # A new manifest for a staged version, bytes that contradict their
            # manifest, or an archive that breaks a rule: final.
            return self._reject(base, err.message)
        except (NotFound, FailedPrecondition) as err:
            # An archive or its digest file not there yet, or a version that
            # changed under us after verification (re-published): look again later.
            return self._park(event, base, err.message)
        started = time.monotonic()
        assignment, changed, note = self._assign(event)
        timings["assign_s"] = time.monotonic() - started
        self.parking.release(event.model, event.version)
        return dataclasses.replace(
            base,
            outcome=Outcome.UNCHANGED if staged.already_staged else Outcome.STAGED,
            reason=note,
            staged=staged,
            assignment=assignment,
            assignment_changed=changed,
            timings=timings,
        )

    def _verify(self, event: Published, base: Result) -> VerificationReport | Result:
        """The COMPLETE report to stage from, or the Result that ends this event."""
        source, prefix = self._source(event.version_uri)
        report = verify_version(
            source, prefix, workers=self.config.workers,
            expected_model=event.model, expected_version=event.version,
        )  # fmt: skip
        base = dataclasses.replace(base, verdict=report.verdict, problems=report.problems)
        if report.verdict is Verdict.INCOMPLETE:
            return self._park(event, base, _summary(report.problems))
        if report.verdict is Verdict.CORRUPT:
            return self._reject(base, f"CORRUPT: {_summary(report.problems)}")
        if event.manifest_sha256 and report.manifest is not None:
            stored = manifest_sha256(report.manifest)
            if stored != event.manifest_sha256:
                return self._reject(
                    base,
                    f"the manifest at {event.version_uri} (sha256 {stored}) is not the one "
                    f"the event announced ({event.manifest_sha256}): republished since?",
                )
        return report

    def _stage_archive(self, event: Published, found: Archive) -> StageResult:
        """Digest from the event, else from ``<archive>.sha256`` (NotFound until written)."""
        source, key = self._source(found.uri)
        return archive.stage_archive(
            source, key, found.sha256, self.store, event.model, event.version,
            max_unpacked_bytes=self.config.max_unpacked_bytes,
            max_members=self.config.max_members, workers=self.config.workers,
        )  # fmt: skip

    def _assign(self, event: Published) -> tuple[AssignmentChanged | None, bool, str]:
        staged = {
            version: assign.StagedVersion(
                version, self.store.join(f"{event.model}/{version}"), info.manifest_sha256
            )
            for version, info in staged_versions(self.store, event.model).items()
        }
        update = assign.policy_update(
            event.model, staged, self.config.models.get(event.model), cause=event.event_id
        )
        try:
            document = assignments.commit(self.store, event.model, update)
        except FailedPrecondition as err:  # e.g. a config label on a version not served
            log.warning("assignment of %s unchanged: %s", event.model, err.message)
            current = assignments.read(self.store, event.model)
            return (current.current if current else None), False, err.message
        if document is not None:
            return document.current, True, ""
        current = assignments.read(self.store, event.model)
        return (current.current if current is not None else None), False, ""

    # -- outcomes ---------------------------------------------------------------

    def _park(self, event: Published, base: Result, reason: str) -> Result:
        now = self._clock()
        previous = self.parking.get(base.model, base.version)
        first_seen = previous.first_seen if previous is not None else now
        attempts = (previous.attempts if previous is not None else 0) + 1
        at = next_attempt(self.config.retry, first_seen, attempts, now)
        if at is None:
            minutes = self.config.retry.deadline_seconds / 60
            return self._reject(base, f"still INCOMPLETE after {minutes:g} min: {reason}")
        self.parking.park(
            Pending(
                base.model, base.version, first_seen, attempts, at, reason,
                published_to_json(event),
            )
        )  # fmt: skip
        return dataclasses.replace(base, outcome=Outcome.RETRY, reason=reason, retry_at=at)

    def _reject(self, base: Result, reason: str) -> Result:
        self.parking.release(base.model, base.version)
        return dataclasses.replace(base, outcome=Outcome.REJECTED, reason=reason)

    def _source(self, uri: str) -> tuple[Storage, str]:
        """(storage, key) for ``uri``: one storage per configured source root,
        opened once (an S3 client costs ~0.2 s of CPU and a connection pool), so
        many models do not mean many clients. Decoding already proved ``uri``
        lies under a root; the parent directory is the fallback."""
        uri = uri.rstrip("/")
        for configured in self.decode_config.roots:
            root = configured.rstrip("/")
            if uri.startswith(root + "/"):
                return self._storage(root), uri[len(root) + 1 :]
        parent, _, name = uri.rpartition("/")
        return self._storage(parent), name

    def _storage(self, root: str) -> Storage:
        with self._lock:
            storage = self._sources.get(root)
            if storage is None:
                storage = self._sources[root] = open_storage(root)
        return storage


def manifest_sha256(document: Any) -> str:
    import hashlib

    return hashlib.sha256(manifest.encode(document)).hexdigest()


def _summary(problems: tuple[Problem, ...]) -> str:
    if not problems:
        return "no problems recorded"
    head = "; ".join(f"{p.kind.name} {p.path}: {p.detail}".strip() for p in problems[:3])
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    return head + more


def published_to_json(event: Published) -> dict[str, Any]:
    return dataclasses.asdict(event)


def published_from_json(data: Mapping[str, Any]) -> Published:
    fields = dict(data)
    found = fields.pop("archive", None)
    return Published(**fields, archive=Archive(**found) if found else None)
