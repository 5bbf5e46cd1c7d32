"""loader.assignments on every store (local disk and real S3): the commit protocol."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import pytest

from loader import assignments
from loader.assign import StagedVersion, next_generation, policy_update, with_current
from loader.errors import DataLoss, FailedPrecondition, InvalidArgument
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentDocument
from loader.storage import Storage
from tests.stores import Backend, local_and_s3_only

pytestmark = pytest.mark.integration


def staged(*versions: int) -> dict[int, StagedVersion]:
    return {v: StagedVersion(v, f"s3://store/m/{v}", f"sha{v}") for v in versions}


def add_label(name: str, version: int = 1) -> Callable[..., AssignmentDocument | None]:
    """An update that adds one label, as `rollway label` would, to the newest document."""

    def update(document: AssignmentDocument | None) -> AssignmentDocument | None:
        assert document is not None
        old = document.current
        versions = [StagedVersion.from_proto(v) for v in old.versions]
        labels = {**old.labels, name: version}
        return with_current(document, next_generation(old, old.model, versions, labels, cause=name))

    return update


def cached(storage: Storage, model: str) -> AssignmentDocument:
    return assignments.decode(storage.read_bytes(assignments.cache_key(model)), model)


def object_generations(storage: Storage, model: str) -> list[int]:
    prefix = f"{assignments.ASSIGNMENTS_DIR}/{model}/"
    return [int(info.key[len(prefix) :].split(".")[0]) for info in storage.list(prefix)]


def test_commit_then_read_round_trips(backend: Backend) -> None:
    storage = backend.storage
    assert assignments.read(storage, "m") is None
    committed = assignments.commit(storage, "m", policy_update("m", staged(1, 2), None))
    assert committed is not None and committed.schema_version == assignments.SCHEMA_VERSION
    assert committed.current.generation == 1 and committed.current.versions[0].version == 2
    assert assignments.read(storage, "m") == committed
    assert cached(storage, "m") == committed
    # Nothing to change: no generation, nothing written.
    assert assignments.commit(storage, "m", policy_update("m", staged(1, 2), None)) is None
    assert object_generations(storage, "m") == [1]


# Bookkeeping over the Storage contract, which the contract suite checks on HDFS;
# its ~25 commits cost ~10 s there.
@local_and_s3_only
def test_history_is_bounded_newest_first_and_old_objects_pruned(backend: Backend) -> None:
    storage, total = backend.storage, assignments.HISTORY_LIMIT + 5
    assignments.commit(storage, "m", policy_update("m", staged(1), None))
    for n in range(2, total + 1):
        assignments.commit(storage, "m", add_label(f"l{n}"))
    document = assignments.read(storage, "m")
    assert document is not None and document.current.generation == total
    assert [h.generation for h in document.history] == list(range(total - 1, 4, -1))
    assert len(document.history) == assignments.HISTORY_LIMIT
    assert object_generations(storage, "m") == list(range(6, total + 1))


def test_concurrent_writers_lose_no_update_and_never_share_a_generation(
    backend: Backend,
) -> None:
    storage, writers = backend.storage, 8
    assignments.commit(storage, "m", policy_update("m", staged(1), None))
    results: dict[int, AssignmentDocument | None] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(i: int) -> None:
        try:
            start.wait()
            results[i] = assignments.commit(storage, "m", add_label(f"t{i}"))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    won = sorted(r.current.generation for r in results.values() if r is not None)
    assert won == list(range(2, writers + 2))  # each generation exactly once
    final = assignments.read(storage, "m")
    assert final is not None and final.current.generation == writers + 1
    assert set(final.current.labels) == {f"t{i}" for i in range(writers)}
    # Every generation extends the one before it.
    chain = [final.current, *final.history]
    assert [a.generation for a in chain] == list(range(writers + 1, 0, -1))
    for newer, older in itertools.pairwise(chain):
        assert set(newer.labels) == set(older.labels) | {newer.cause}
    assert object_generations(storage, "m") == list(range(1, writers + 2))
    assert cached(storage, "m").current.generation <= writers + 1


def test_a_stale_cache_is_detected_and_repaired(backend: Backend) -> None:
    storage = backend.storage
    assignments.commit(storage, "m", policy_update("m", staged(1), None))
    second = assignments.commit(storage, "m", add_label("a"))
    assert second is not None
    # A writer crashed after claiming generation 3, before updating the cache.
    third = add_label("b")(second)
    assert third is not None
    third.schema_version = assignments.SCHEMA_VERSION
    third.history.insert(0, second.current)
    assert storage.create_if_absent(assignments.generation_key("m", 3), assignments.encode(third))
    assert cached(storage, "m").current.generation == 2
    read = assignments.read(storage, "m")
    assert read is not None and read.current.generation == 3
    assert assignments.repair(storage, "m") is True
    assert cached(storage, "m") == read
    assert assignments.repair(storage, "m") is False
    # A later commit builds on generation 3.
    fourth = assignments.commit(storage, "m", add_label("c"))
    assert fourth is not None and fourth.current.generation == 4
    assert fourth.history[0].generation == 3 and set(fourth.current.labels) == {"a", "b", "c"}


def test_a_claim_on_a_pruned_generation_number_is_withdrawn(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer stalled while generations went past it re-creates a pruned number:
    the claim must not stand, and the update is retried on the newest document."""
    storage = backend.storage
    first = assignments.commit(storage, "m", policy_update("m", staged(1), None))
    for name in ("a", "b"):
        assignments.commit(storage, "m", add_label(name))
    storage.delete(assignments.generation_key("m", 2))  # as pruning would
    real_read, reads = assignments.read, []

    def stale_then_real(storage_: Storage, model: str) -> AssignmentDocument | None:
        reads.append(model)
        return first if len(reads) == 1 else real_read(storage_, model)

    monkeypatch.setattr(assignments, "read", stale_then_real)
    result = assignments.commit(storage, "m", add_label("late"))
    assert result is not None and result.current.generation == 4
    assert set(result.current.labels) == {"a", "b", "late"}
    assert object_generations(storage, "m") == [1, 3, 4]  # the stale claim was withdrawn


def test_list_models(backend: Backend) -> None:
    storage = backend.storage
    assert assignments.list_models(storage) == []
    for model in ("b", "a.v2"):
        assignments.commit(storage, model, policy_update(model, staged(1), None))
    # A model whose first writer crashed before writing the cache is listed too.
    doc = policy_update("c", staged(1), None)(None)
    assert doc is not None
    doc.schema_version = assignments.SCHEMA_VERSION
    storage.create_if_absent(assignments.generation_key("c", 1), assignments.encode(doc))
    storage.write_bytes(f"{assignments.ASSIGNMENTS_DIR}/c/notes.txt", b"ignored")
    assert assignments.list_models(storage) == ["a.v2", "b", "c"]


def test_documents_are_decoded_strictly(backend: Backend) -> None:
    storage = backend.storage
    assignments.commit(storage, "m", policy_update("m", staged(1), None))
    key = assignments.generation_key("m", 2)
    storage.write_bytes(key, b'{"schemaVersion": 1, "current": {"model": "m", "x": 1}}')
    with pytest.raises(DataLoss, match="does not match its schema"):
        assignments.read(storage, "m")
    storage.write_bytes(key, b'{"schemaVersion": 9, "current": {"model": "m"}}')
    with pytest.raises(FailedPrecondition, match="schema_version 9"):
        assignments.read(storage, "m")
    with pytest.raises(InvalidArgument):
        assignments.read(storage, "../m")


def test_an_update_must_propose_the_next_generation(backend: Backend) -> None:
    def wrong(document: AssignmentDocument | None) -> AssignmentDocument | None:
        doc = policy_update("m", staged(1), None)(document)
        assert doc is not None
        doc.current.generation = 7
        return doc

    with pytest.raises(InvalidArgument, match="expected generation 1"):
        assignments.commit(backend.storage, "m", wrong)
