"""The assignment document store, on the serving store's ``Storage``.

    _rollway/assignments/<model>/<generation:020d>.json   one object per generation (the truth)
    _rollway/assignments/<model>.json                      a copy of the newest (for simple readers)

Both hold an ``AssignmentDocument`` in the proto3 JSON mapping, decoded strictly.

Why this protocol: ``Storage`` has no compare-and-swap, only ``create_if_absent``,
which is atomic on every backend. So a generation number is claimed, not
overwritten:

1. ``read`` lists ``<model>/`` and decodes the highest generation object (the
   cache is used only while no generation object exists, e.g. a hand-made one).
2. ``commit`` applies the caller's update to it and creates generation N+1 with
   ``create_if_absent``. Exactly one writer creates it; a loser re-reads and
   retries, so no update is lost and no generation is made twice.
3. The winner lists again to confirm: its claim stands if it is the highest, or
   if generation N+2 was built on it (N+2's ``history[0]`` is its ``current``).
   Otherwise the number was free only because pruning had deleted it (a writer
   stalled across many commits): the stale claim is deleted, and it retries.
4. The winner then overwrites ``<model>.json`` and prunes generation objects
   older than the history bound. A crash before that leaves the cache stale,
   which is harmless: ``read`` never trusts the cache over the generation
   objects, and the next ``commit`` (or ``repair``) rewrites it.

Emitting ``AssignmentChanged`` is the caller's job: ``commit`` returns the new
document, whose ``current`` is the event to send.
"""

from __future__ import annotations

import logging
import re

from google.protobuf import json_format

from loader import backoff, proto_json
from loader.assign import Update
from loader.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RollwayError,
    Unavailable,
)
from loader.layout import STATE_DIR
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentDocument
from loader.storage import Storage, check_key

SCHEMA_VERSION = 1
# Generations kept in a document's history, and generation objects kept in the store.
HISTORY_LIMIT = 20
ASSIGNMENTS_DIR = f"{STATE_DIR}/assignments"
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
DEFAULT_RETRIES = 32
# Between lost races: writers of one model collide again unless spread (full jitter).
LOST_RACES = backoff.Backoff(initial_seconds=0.002, max_seconds=0.2)

_GENERATION_NAME = re.compile(r"([0-9]{20})\.json")
_log = logging.getLogger(__name__)


def check_model(model: str) -> str:
    """A model name usable as a key segment; InvalidArgument otherwise."""
    if not model or "/" in model or model in (".", "..") or not model.isprintable():
        raise InvalidArgument(f"invalid model name {model!r}")
    check_key(model)
    return model


def cache_key(model: str) -> str:
    return f"{ASSIGNMENTS_DIR}/{check_model(model)}.json"


def generation_key(model: str, generation: int) -> str:
    return f"{ASSIGNMENTS_DIR}/{check_model(model)}/{generation:020d}.json"


def encode(document: AssignmentDocument) -> bytes:
    text = json_format.MessageToJson(document, indent=2, sort_keys=True)
    return (text + "\n").encode()


def decode(data: bytes, model: str, where: str = "") -> AssignmentDocument:
    """Strict proto3 JSON decode; DataLoss names the problem, FailedPrecondition
    refuses a schema version this code does not know."""
    where = where or f"assignment document of {model}"
    try:
        document = proto_json.decode(data, AssignmentDocument())
    except proto_json.ProtoJsonError as err:
        raise DataLoss(f"{where} {err}") from None
    if document.schema_version == 0:
        raise DataLoss(f"{where} has no schema_version")
    if document.schema_version > SCHEMA_VERSION:
        raise FailedPrecondition(
            f"{where} has schema_version {document.schema_version}; this rollway reads "
            f"{SCHEMA_VERSION}: upgrade it"
        )
    if document.current.model != model:
        raise DataLoss(f"{where} is for model {document.current.model!r}")
    return document


def read(storage: Storage, model: str) -> AssignmentDocument | None:
    """The newest committed document of ``model``, or None if it has none."""
    for _ in range(3):
        generations = _generations(storage, model)
        if not generations:
            return _read_cache(storage, model)
        document = _read_generation(storage, model, generations[-1])
        if document is not None:
            return document
        # Pruned or withdrawn between the listing and the read: list again.
    raise Unavailable(f"the assignment of {model} in {storage.uri} kept changing while read")


def list_models(storage: Storage) -> list[str]:
    """Every model with an assignment document (cached or not yet), sorted."""
    models: set[str] = set()
    for info in storage.list(f"{ASSIGNMENTS_DIR}/"):
        parts = info.key[len(ASSIGNMENTS_DIR) + 1 :].split("/")
        if len(parts) == 1 and parts[0].endswith(".json") and len(parts[0]) > 5:
            models.add(parts[0][: -len(".json")])
        elif len(parts) == 2 and _GENERATION_NAME.fullmatch(parts[1]):
            models.add(parts[0])
    return sorted(models)


def commit(
    storage: Storage, model: str, update: Update, *, retries: int = DEFAULT_RETRIES
) -> AssignmentDocument | None:
    """Applies ``update`` to the newest document and stores the result as the next
    generation; None when ``update`` returns None (nothing to change).

    ``update`` gets the newest document (None for a model without one; a fresh copy
    on each try, since it runs again when another writer wins) and returns a
    document whose ``current.generation`` is the previous one + 1 (or 1). The store
    owns ``history`` (the previous current first, then the older ones, at most
    HISTORY_LIMIT) and ``schema_version``: whatever the update put there is
    replaced. Exceptions from ``update`` propagate. Unavailable after ``retries``
    lost races.
    """
    check_model(model)
    what = f"committing the assignment of {model}"
    for attempt in backoff.retrying(
        LOST_RACES, retry_on=_Lost, max_attempts=retries + 1, what=what
    ):
        with attempt:
            previous = read(storage, model)
            proposed = update(_copy(previous))
            if proposed is None:
                if previous is not None:
                    repair(storage, model, previous)
                return None
            document = _successor(model, previous, proposed)
            generation = document.current.generation
            if storage.create_if_absent(generation_key(model, generation), encode(document)):
                if _confirm(storage, model, document):
                    return document
                _withdraw(storage, model, generation)
            raise _Lost
    raise Unavailable(
        f"gave up committing the assignment of {model} in {storage.uri}: "
        f"{retries + 1} concurrent writers won first"
    )


class _Lost(Exception):
    """Another writer claimed the generation first: read again and retry."""


def repair(storage: Storage, model: str, document: AssignmentDocument | None = None) -> bool:
    """Rewrites ``<model>.json`` if it is older than ``document`` (default: the
    newest committed); True if it did."""
    document = document if document is not None else read(storage, model)
    if document is None:
        return False
    try:
        cached = _read_cache(storage, model)
    except DataLoss:
        cached = None  # a corrupt cache is replaced too
    if cached is not None and cached.current.generation >= document.current.generation:
        return False
    storage.write_bytes(cache_key(model), encode(document))
    return True


def _successor(
    model: str, previous: AssignmentDocument | None, proposed: AssignmentDocument
) -> AssignmentDocument:
    expected = previous.current.generation + 1 if previous is not None else 1
    if proposed.current.model != model or proposed.current.generation != expected:
        raise InvalidArgument(
            f"an assignment update of {model} proposed {proposed.current.model!r} generation "
            f"{proposed.current.generation}; expected generation {expected}"
        )
    document = _clone(proposed)
    document.schema_version = SCHEMA_VERSION
    del document.history[:]
    if previous is not None:
        document.history.append(previous.current)
        document.history.extend(previous.history[: HISTORY_LIMIT - 1])
    return document


def _confirm(storage: Storage, model: str, document: AssignmentDocument) -> bool:
    """Step 3 of the protocol; when the claim stands and is the newest, step 4."""
    generation = document.current.generation
    generations = _generations(storage, model)
    if max(generations, default=generation) > generation:
        successor = _read_generation(storage, model, generation + 1)
        return bool(
            successor is not None and successor.history and successor.history[0] == document.current
        )
    try:  # housekeeping: the generation is committed whatever happens here
        storage.write_bytes(cache_key(model), encode(document))
        for old in generations:
            if old <= generation - HISTORY_LIMIT:
                storage.delete(generation_key(model, old))
    except RollwayError as err:
        _log.warning("assignment of %s generation %d: housekeeping failed: %s",
                     model, generation, err.message)  # fmt: skip
    return True


def _withdraw(storage: Storage, model: str, generation: int) -> None:
    try:
        storage.delete(generation_key(model, generation))
    except RollwayError as err:  # not the newest, so readers ignore it; pruned later
        _log.warning("could not withdraw stale claim %d of %s: %s", generation, model, err.message)


def _generations(storage: Storage, model: str) -> list[int]:
    prefix = f"{ASSIGNMENTS_DIR}/{check_model(model)}/"
    found = []
    for info in storage.list(prefix):
        match = _GENERATION_NAME.fullmatch(info.key[len(prefix) :])
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


def _read_generation(storage: Storage, model: str, generation: int) -> AssignmentDocument | None:
    key = generation_key(model, generation)
    try:
        data = storage.read_bytes(key, limit=MAX_DOCUMENT_BYTES)
    except NotFound:
        return None
    document = decode(data, model, storage.join(key))
    if document.current.generation != generation:
        raise DataLoss(f"{storage.join(key)} holds generation {document.current.generation}")
    return document


def _read_cache(storage: Storage, model: str) -> AssignmentDocument | None:
    key = cache_key(model)
    try:
        data = storage.read_bytes(key, limit=MAX_DOCUMENT_BYTES)
    except NotFound:
        return None
    return decode(data, model, storage.join(key))


def _copy(document: AssignmentDocument | None) -> AssignmentDocument | None:
    return None if document is None else _clone(document)


def _clone(document: AssignmentDocument) -> AssignmentDocument:
    copy = AssignmentDocument()
    copy.CopyFrom(document)
    return copy
