"""`rollway serve --model_base_path=s3://... | hdfs://... | webhdfs://...`, as TF
Serving users launch it, against real stores: SeaweedFS (S3) and a real HDFS
NameNode and DataNode (both ``hdfs://`` through libhdfs and ``webhdfs://``).

Versions go to the store as ``rollway publish`` writes them (files first, the
manifest last) or as a plain TF Serving layout (no manifest). The server fetches
a chosen version into --cache_dir, verifies it against its manifest, loads it
and follows newly published versions at --file_system_poll_wait_seconds. The
same completeness rule holds on local disk, tested here too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from functions.serving.process import ServerProcess, free_port
from loader.errors import Code
from loader.manifest import MANIFEST_NAME
from loader.publish import publish_version
from loader.storage import open_storage
from tests.conftest import HALF_PLUS_TWO, ServerFactory
from tests.integration.helpers import (
    AVAILABLE,
    END,
    Client,
    eventually,
    model_config,
    server_config,
    write_config,
)
from tests.models import export_affine

pytestmark = pytest.mark.integration

SHARD = "variables/variables.data-00000-of-00001"
POLL = "--file_system_poll_wait_seconds=1"


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def connect(server: ServerProcess, made: list[Client]) -> Client:
    client = Client(server)
    made.append(client)
    return client


def exported(tmp: Path, version: int) -> Path:
    """Version ``version`` of a model that answers y = x + 10 * version."""
    return export_affine(tmp / f"export-{version}", version, 1.0, 10.0 * version)


def publish(base_uri: str, source: Path, version: int) -> None:
    """``rollway publish``'s library call: the files, then the manifest."""
    storage = open_storage(base_uri)
    try:
        publish_version(source, storage, "m", version, workers=2)
    finally:
        storage.close()


def with_manifest(tmp: Path, version: int, source: Path | None = None) -> Path:
    """A local copy of version ``version`` (of ``source``, else a new export),
    published: its manifest beside its files."""
    base = tmp / f"published-{version}"
    publish(str(base), source or exported(tmp, version), version)
    return base / str(version)


def upload(
    base_uri: str,
    directory: Path,
    version: int,
    skip: tuple[str, ...] = (),
    manifest_first: bool = False,
) -> None:
    """Copies a local version directory to ``<base_uri>/<version>/`` as it is,
    leaving out ``skip``; its manifest (if it has one) last, as a publisher
    writes it, or first, so that no poll can see the version without it."""
    storage = open_storage(base_uri)
    try:
        files = sorted(
            p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()
        )
        for rel in sorted(files, key=lambda rel: (rel == MANIFEST_NAME) != manifest_first):
            if rel not in skip:
                storage.write_bytes(f"{version}/{rel}", (directory / rel).read_bytes())
    finally:
        storage.close()


def corrupt(path: Path) -> None:
    """Flips one byte: same size, so only hashing can tell."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def failed_with(client: Client, version: int, code: Code) -> str:
    """The error message of ``version``, once it ended with ``code``."""
    statuses = client.statuses("m")
    assert version in statuses, statuses
    status = statuses[version]
    assert (status.state, status.status.error_code) == (END, int(code))
    return str(status.status.error_message)


def assert_answers(client: Client, version: int, y: float) -> None:
    assert client.predict("m", 1.0) == (version, y)


def assert_logged(log: str, text: str) -> None:
    assert text in log, log[-2000:]


def is_serving(client: Client) -> bool:
    stub = health_pb2_grpc.HealthStub(client.channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


# ------------------------------------------------------------------------ S3


def test_s3_versions_are_fetched_verified_served_and_followed(
    serve: ServerFactory, s3_root: str, tmp_path: Path, clients: list[Client]
) -> None:
    base = f"{s3_root}/m"
    cache = tmp_path / "cache"
    publish(base, exported(tmp_path, 1), 1)
    server = serve(["--model_name=m", f"--model_base_path={base}", POLL, f"--cache_dir={cache}"])
    client = connect(server, clients)
    assert client.predict("m", 1.0) == (1, 11.0)
    assert (cache / "m" / "1" / MANIFEST_NAME).is_file()  # the verified copy is complete

    publish(base, exported(tmp_path, 2), 2)

    def second() -> None:
        assert client.predict("m", 1.0) == (2, 21.0)
        assert client.states("m") == {2: AVAILABLE, 1: END}
        assert not (cache / "m" / "1").exists()  # unloaded: it leaves the cache

    eventually(second)
    assert "Traceback" not in server.log()


def test_s3_incomplete_and_corrupt_versions_never_replace_the_served_one(
    serve: ServerFactory, s3_root: str, tmp_path: Path, clients: list[Client]
) -> None:
    base = f"{s3_root}/m"
    publish(base, exported(tmp_path, 1), 1)
    server = serve(["--model_name=m", f"--model_base_path={base}", POLL])
    client = connect(server, clients)
    assert client.predict("m", 1.0) == (1, 11.0)

    # Version 2's manifest is there, but a file it lists is not (yet).
    second = with_manifest(tmp_path, 2)
    upload(base, second, 2, skip=(SHARD,), manifest_first=True)

    def waiting() -> None:
        log = server.log()
        assert "Version 2 of servable m is not loaded yet" in log
        assert f"FILE_MISSING {SHARD}" in log

    eventually(waiting)
    assert 2 not in client.states("m")
    assert client.predict("m", 1.0) == (1, 11.0)

    storage = open_storage(base)
    storage.write_bytes(f"2/{SHARD}", (second / SHARD).read_bytes())
    storage.close()
    eventually(lambda: assert_answers(client, 2, 21.0))

    # Version 3 is complete by its listing, but one file has other bytes.
    third = with_manifest(tmp_path, 3)
    corrupt(third / SHARD)
    upload(base, third, 3, manifest_first=True)
    message = eventually(lambda: failed_with(client, 3, Code.DATA_LOSS))
    assert f"CHECKSUM_MISMATCH {SHARD}" in message
    assert client.predict("m", 1.0) == (2, 21.0)
    assert "Traceback" not in server.log()


def test_s3_plain_layout_is_served_and_waits_with_require_manifest(
    serve: ServerFactory, s3_root: str, tmp_path: Path, clients: list[Client]
) -> None:
    base = f"{s3_root}/m"
    source = exported(tmp_path, 1)
    upload(base, source, 1)  # TF Serving's layout: no manifest
    plain = connect(serve(["--model_name=m", f"--model_base_path={base}", POLL]), clients)
    assert plain.predict("m", 1.0) == (1, 11.0)

    strict_server = serve(
        ["--model_name=m", f"--model_base_path={base}", POLL, "--require_manifest"], wait=False
    )
    strict = connect(strict_server, clients)
    eventually(lambda: assert_logged(strict_server.log(), "--require_manifest is set"), 60)
    assert not is_serving(strict)
    with pytest.raises(grpc.RpcError) as none:
        strict.states("m")
    assert none.value.code() is grpc.StatusCode.NOT_FOUND  # no version announced

    # Its manifest arrives (written last, as rollway publish does): now it loads.
    manifest = (with_manifest(tmp_path, 1, source) / MANIFEST_NAME).read_bytes()
    storage = open_storage(base)
    storage.write_bytes(f"1/{MANIFEST_NAME}", manifest)
    storage.close()
    strict_server.wait_serving()
    assert strict.predict("m", 1.0) == (1, 11.0)


def test_s3_base_path_in_a_model_config_file(
    serve: ServerFactory, s3_root: str, tmp_path: Path, clients: list[Client]
) -> None:
    publish(f"{s3_root}/m", exported(tmp_path, 1), 1)
    config = write_config(
        tmp_path / "models.config",
        server_config(
            model_config("m", f"{s3_root}/m"),  # type: ignore[arg-type]
            model_config("half_plus_two", HALF_PLUS_TWO),
        ),
    )
    client = connect(serve([f"--model_config_file={config}", POLL]), clients)
    assert client.predict("m", 1.0) == (1, 11.0)
    assert client.predict("half_plus_two", 2.0) == (123, 3.0)


def test_an_unreachable_store_is_reported_once_and_polling_goes_on(
    serve: ServerFactory,
    s3_root: str,
    tmp_path: Path,
    clients: list[Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Model "m" is on an S3 endpoint where nothing listens; model "local" shows
    the polls that follow (each poll reads both, "m" first)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    local = tmp_path / "local"
    shutil.copytree(exported(tmp_path, 1), local / "1")
    config = write_config(
        tmp_path / "models.config",
        server_config(
            model_config("m", f"{s3_root}/m"),  # type: ignore[arg-type]
            model_config("local", local),
        ),
    )
    server = serve([f"--model_config_file={config}", POLL], wait=False)
    wanted = f"Could not read base path {s3_root}/m for servable m: cannot reach S3"
    eventually(lambda: assert_logged(server.log(), wanted), 90)
    client = connect(server, clients)
    shutil.copytree(exported(tmp_path, 2), local / "2")
    eventually(lambda: assert_state(client, "local", 2, AVAILABLE), 90)
    log = server.log()
    assert log.count(wanted) == 1
    assert "Traceback" not in log
    assert not is_serving(client)  # "m" has no version: not ready, as TF Serving


def assert_state(client: Client, model: str, version: int, state: int) -> None:
    assert client.states(model).get(version) == state


# ------------------------------------------------------------- startup errors


def test_an_unknown_scheme_exits_2_naming_it(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(["--model_base_path=foo://x/m"], wait=False)
    assert server.wait_exit(60) == 2
    assert "foo://" in server.log()


def test_an_unknown_scheme_in_the_config_file_exits_2(serve: ServerFactory, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "models.config",
        server_config(model_config("m", "foo://x/m")),  # type: ignore[arg-type]
    )
    server = serve([f"--model_config_file={config}"], wait=False)
    assert server.wait_exit(60) == 2
    assert "model m: no storage backend reads the URI scheme foo://" in server.log()


# ----------------------------------------------------------------- local disk


def test_local_versions_follow_the_same_rule(
    serve: ServerFactory, tmp_path: Path, clients: list[Client]
) -> None:
    base = tmp_path / "m"
    shutil.copytree(exported(tmp_path, 1), base / "1")  # no manifest: loads as before
    client = connect(serve(["--model_name=m", f"--model_base_path={base}", POLL]), clients)
    assert client.predict("m", 1.0) == (1, 11.0)

    second = with_manifest(tmp_path, 2)
    good = (second / SHARD).read_bytes()
    corrupt(second / SHARD)
    os.replace(second, base / "2")  # appears whole
    message = eventually(lambda: failed_with(client, 2, Code.DATA_LOSS))
    assert f"CHECKSUM_MISMATCH {SHARD}" in message
    assert client.predict("m", 1.0) == (1, 11.0)

    (base / "2" / SHARD).write_bytes(good)  # repaired: its content changed, so it loads again
    eventually(lambda: assert_answers(client, 2, 21.0))


# ---------------------------------------------------------------------- HDFS


@pytest.mark.parametrize("root_fixture", ["hdfs_root", "webhdfs_root"])
def test_hdfs_versions_are_served_and_followed(
    serve: ServerFactory,
    request: pytest.FixtureRequest,
    root_fixture: str,
    tmp_path: Path,
    clients: list[Client],
) -> None:
    """Needs the HDFS dev stack (tests/conftest.py: hdfs_root, webhdfs_root); the
    hdfs_root fixture sets libhdfs's environment, which the server inherits."""
    root = request.getfixturevalue(root_fixture)
    base = f"{root.uri.rstrip('/')}/m"
    publish(base, exported(tmp_path, 1), 1)
    server = serve(["--model_name=m", f"--model_base_path={base}", POLL])
    client = connect(server, clients)
    assert client.predict("m", 1.0) == (1, 11.0)

    publish(base, exported(tmp_path, 2), 2)
    eventually(lambda: assert_answers(client, 2, 21.0), 60)
    # libhdfs's JVM lives in the server; SIGTERM still drains (the JVM runs with -Xrs).
    assert server.stop() == 0
    assert "Traceback" not in server.log()
    assert "received SIGTERM; shutting down" in server.log()
