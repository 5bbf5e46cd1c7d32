"""The Storage contract (loader/storage/base.py), run unchanged against every backend.

Every backend runs against a real server: s3 against SeaweedFS, hdfs (libhdfs)
and webhdfs against the session's NameNode and DataNode (tests/conftest.py), or
against the cluster named by ROLLWAY_TEST_HDFS_URI / ROLLWAY_TEST_WEBHDFS_URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import tracemalloc
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import pytest

from loader.errors import InvalidArgument, NotFound
from loader.storage import ObjectInfo, Storage, open_storage

MiB = 1024 * 1024


def keys(infos: Iterable[ObjectInfo]) -> list[str]:
    return [info.key for info in infos]


@pytest.fixture(params=["local", "s3", "hdfs", "webhdfs"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    kind = request.param
    if kind == "local":
        uri = str(tmp_path / "root")
    elif kind == "s3":
        uri = request.getfixturevalue("s3_root")
    else:  # a fresh root on the session's HDFS; hdfs_root also sets libhdfs's environment
        uri = request.getfixturevalue(f"{kind}_root").uri
    store = open_storage(uri)
    try:
        yield store
    finally:
        with contextlib.suppress(Exception):  # keep the shared server small
            for info in list(store.list()):
                store.delete(info.key)
        store.close()


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ at every offset mod 251 (catches shifted ranges)."""
    block = bytes((i * 7 + seed) % 251 for i in range(251))
    return (block * (size // 251 + 1))[:size]


def sha256_of(reader: BinaryIO, chunk: int = MiB) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: reader.read(chunk), b""):
        digest.update(block)
    return digest.hexdigest()


def test_write_then_read_round_trips(storage: Storage) -> None:
    data = pattern(10_000)
    info = storage.write("models/m/1/saved_model.pb", io.BytesIO(data))
    assert (info.key, info.size) == ("models/m/1/saved_model.pb", len(data))
    assert storage.read_bytes("models/m/1/saved_model.pb") == data
    with storage.open_read("models/m/1/saved_model.pb") as reader:
        assert reader.read() == data


def test_empty_file_round_trips(storage: Storage) -> None:
    storage.write_bytes("empty", b"")
    assert storage.stat("empty").size == 0
    assert storage.read_bytes("empty") == b""


def test_ranged_reads(storage: Storage) -> None:
    data = pattern(10_000)
    storage.write_bytes("r", data)

    def read(start: int, length: int | None = None) -> bytes:
        with storage.open_read("r", start, length) as reader:
            return reader.read()

    assert read(0) == data
    assert read(1234) == data[1234:]
    assert read(1234, 100) == data[1234:1334]
    assert read(0, 1) == data[:1]
    assert read(9_990, 100) == data[9_990:]  # the range runs past the end
    assert read(10_000) == b""  # starts at the end
    assert read(20_000, 5) == b""  # starts past the end
    assert read(10, 0) == b""


def test_list_is_sorted_recursive_and_prefix_matched(storage: Storage) -> None:
    names = ["b.txt", "a/2", "a/1", "a/sub/x", "ab", "a-c", "a/sub/y/z"]
    for name in names:
        storage.write_bytes(name, name.encode())
    infos = list(storage.list())
    assert keys(infos) == sorted(names)
    assert all(info.size == len(info.key) for info in infos)
    assert keys(storage.list("a/")) == ["a/1", "a/2", "a/sub/x", "a/sub/y/z"]
    assert keys(storage.list("a/sub/")) == ["a/sub/x", "a/sub/y/z"]
    assert keys(storage.list("a")) == ["a-c", "a/1", "a/2", "a/sub/x", "a/sub/y/z", "ab"]
    assert keys(storage.list("a/s")) == ["a/sub/x", "a/sub/y/z"]
    assert keys(storage.list("b.txt")) == ["b.txt"]
    assert keys(storage.list("nothing/")) == []
    assert keys(storage.list("nothing")) == []


def test_list_hides_nothing_extra_after_writes_and_creates(storage: Storage) -> None:
    storage.write_bytes("v/data", b"1")
    storage.write_bytes("v/data", b"22")
    assert storage.create_if_absent("v/MANIFEST", b"m")
    assert not storage.create_if_absent("v/MANIFEST", b"other")
    storage.delete("v/gone")
    assert [(i.key, i.size) for i in storage.list()] == [("v/MANIFEST", 1), ("v/data", 2)]


def test_stat_reports_size_and_etag_where_the_backend_has_one(
    storage: Storage, request: pytest.FixtureRequest
) -> None:
    storage.write_bytes("d/f", pattern(4321))
    info = storage.stat("d/f")
    assert (info.key, info.size) == ("d/f", 4321)
    if request.node.callspec.params["storage"] == "s3":
        assert info.etag == hashlib.md5(pattern(4321)).hexdigest()
        assert [i.etag for i in storage.list("d/")] == [info.etag]


def test_missing_keys_are_not_found(storage: Storage) -> None:
    storage.write_bytes("present", b"x")
    with pytest.raises(NotFound, match="missing"):
        storage.stat("missing")
    with pytest.raises(NotFound, match="missing"):
        storage.open_read("missing")
    with pytest.raises(NotFound):
        storage.open_read("dir/missing", 5, 10)
    with pytest.raises(NotFound):
        storage.read_bytes("missing")
    assert not storage.exists("missing")
    assert storage.exists("present")


def test_delete_is_idempotent(storage: Storage) -> None:
    storage.write_bytes("k", b"x")
    storage.delete("k")
    assert not storage.exists("k")
    storage.delete("k")
    storage.delete("never/was")


def test_create_if_absent_creates_once(storage: Storage) -> None:
    assert storage.create_if_absent("assign/gen-1", b"first")
    assert not storage.create_if_absent("assign/gen-1", b"second")
    assert storage.read_bytes("assign/gen-1") == b"first"
    storage.write_bytes("plain", b"written")
    assert not storage.create_if_absent("plain", b"create")
    assert storage.read_bytes("plain") == b"written"


def test_create_if_absent_has_exactly_one_winner_under_concurrency(storage: Storage) -> None:
    racers = 8
    barrier = threading.Barrier(racers)
    results: dict[int, bool] = {}

    def race(i: int) -> None:
        barrier.wait()
        results[i] = storage.create_if_absent("race/lock", f"writer-{i}".encode() * 1000)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, won in results.items() if won]
    assert len(results) == racers and len(winners) == 1
    assert storage.read_bytes("race/lock") == f"writer-{winners[0]}".encode() * 1000
    assert keys(storage.list("race/")) == ["race/lock"]


def test_write_replaces_an_existing_file(storage: Storage) -> None:
    storage.write_bytes("f", b"old content, longer")
    info = storage.write_bytes("f", b"new")
    assert info.size == 3
    assert storage.read_bytes("f") == b"new"
    assert storage.stat("f").size == 3


def test_large_object_round_trips_in_parts(storage: Storage, tmp_path: Path) -> None:
    data = os.urandom(21 * MiB)  # above the S3 multipart threshold
    expected = hashlib.sha256(data).hexdigest()
    # A stream of unknown size, as a publisher reading a pipe would give.
    stream = io.BufferedReader(io.BytesIO(data))
    info = storage.write("big/unknown-size.bin", stream)
    assert info.size == len(data)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    with path.open("rb") as source:  # a real file whose size is given
        assert storage.write("big/file.bin", source, len(data)).size == len(data)
    for key in ("big/unknown-size.bin", "big/file.bin"):
        assert storage.stat(key).size == len(data)
        with storage.open_read(key) as reader:
            assert sha256_of(reader) == expected
    with storage.open_read("big/file.bin", 20 * MiB, MiB) as reader:
        assert reader.read() == data[20 * MiB :]


def test_two_hundred_small_files_list_correctly(storage: Storage) -> None:
    names = [f"many/{i % 7}/file-{i:03d}" for i in range(200)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: storage.write_bytes(name, name.encode()), names))
    infos = list(storage.list("many/"))
    assert keys(infos) == sorted(names)
    assert {info.size for info in infos} == {len(names[0])}


@pytest.mark.parametrize("bad", ["../x", "/abs", "a/../b", "a//b", "./a"])
def test_keys_that_could_escape_the_root_are_rejected(storage: Storage, bad: str) -> None:
    for call in (
        lambda: storage.stat(bad),
        lambda: storage.open_read(bad),
        lambda: storage.write_bytes(bad, b"x"),
        lambda: storage.create_if_absent(bad, b"x"),
        lambda: storage.delete(bad),
        lambda: list(storage.list(bad)),
    ):
        with pytest.raises(InvalidArgument):
            call()


def test_streaming_read_of_a_big_object_uses_bounded_memory(storage: Storage) -> None:
    size = 24 * MiB
    storage.write("stream/big", io.BytesIO(pattern(size, seed=3)), size)
    chunk = MiB
    digest = hashlib.sha256()
    total = 0
    tracemalloc.start()
    try:
        with storage.open_read("stream/big") as reader:
            while block := reader.read(chunk):
                assert len(block) <= chunk
                digest.update(block)
                total += len(block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    assert digest.hexdigest() == hashlib.sha256(pattern(size, seed=3)).hexdigest()
    assert peak < 8 * MiB, f"reading {size} bytes in {chunk}-byte chunks peaked at {peak}"
