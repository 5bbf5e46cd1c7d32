"""`rollway serve --assignments`: real servers fetching from the real SeaweedFS
store (and following a real tansu topic), each test starting from assignments
it makes in-process with the loader's own publish, stage and commit."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from functions.serving.process import ServerProcess, free_port
from loader import assignments, events
from loader.assign import StagedVersion, policy_update
from loader.emit import KafkaEmitter
from loader.fetch import fetch_version
from loader.model_config import ModelSpec
from loader.policy import VersionPolicy
from loader.publish import publish_version
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from loader.stage import stage_version, staged_versions
from loader.storage import Storage, open_storage
from loader.verify import verify_version
from tests.conftest import HALF_PLUS_THREE, HALF_PLUS_TWO, REPO, ServerFactory
from tests.integration.helpers import (
    AVAILABLE,
    END,
    Client,
    eventually,
    model_config,
    server_config,
)

pytestmark = pytest.mark.integration

HP2 = HALF_PLUS_TWO / "00000123"  # y = x / 2 + 2
HP3 = HALF_PLUS_THREE / "00000123"  # y = x / 2 + 3
SHARD = "variables/variables.data-00000-of-00001"
SWAP_BOUND_SECONDS = 20.0


@dataclass
class Store:
    """A serving store on SeaweedFS, with a landing area to publish into."""

    root: str

    @property
    def uri(self) -> str:
        return f"{self.root}/store"

    def storage(self) -> Storage:
        return open_storage(self.uri)

    def stage(self, model: str, version: int, source: Path) -> None:
        """Publishes ``source`` to the landing area, verifies it and stages it."""
        landing = open_storage(f"{self.root}/landing")
        publish_version(source, open_storage(f"{self.root}/landing/{model}"), model, version)
        report = verify_version(landing, f"{model}/{version}")
        stage_version(landing, f"{model}/{version}", self.storage(), model, version, report)

    def assign(
        self, model: str, versions: Sequence[int], labels: dict[str, int] | None = None
    ) -> AssignmentChanged:
        """Commits the next generation: exactly ``versions`` (staged), with ``labels``."""
        store = self.storage()
        staged = {
            v: StagedVersion(v, store.join(f"{model}/{v}"), info.manifest_sha256)
            for v, info in staged_versions(store, model).items()
        }
        spec = ModelSpec(model, "", VersionPolicy.specific(versions), labels or {})
        document = assignments.commit(store, model, policy_update(model, staged, spec))
        assert document is not None
        return document.current


@pytest.fixture
def store(s3_root: str) -> Store:
    return Store(s3_root)


def start(serve: ServerFactory, store: Store, *args: str, wait: bool = True) -> ServerProcess:
    return serve([f"--assignments={store.uri}", *args], wait=wait)


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    lines = (line for line in server.log().splitlines() if line.startswith("{"))
    return [json.loads(line) for line in lines]


def seconds_between(server: ServerProcess, first: str, last: str) -> float:
    """Seconds between the JSON log lines whose messages start with ``first``/``last``."""
    entries = json_lines(server)
    times = [
        datetime.fromisoformat(next(e["time"] for e in entries if e["message"].startswith(m)))
        for m in (first, last)
    ]
    return (times[1] - times[0]).total_seconds()


def test_three_replicas_serve_identical_versions_and_predictions(
    serve: ServerFactory, store: Store
) -> None:
    store.stage("hp", 1, HP2)
    store.stage("hp", 2, HP3)
    store.assign("hp", [1, 2], {"stable": 1, "canary": 2})
    replicas = [start(serve, store, wait=False) for _ in range(3)]
    for replica in replicas:
        replica.wait_serving()
    clients = [Client(replica) for replica in replicas]
    try:
        statuses = [c.states("hp") for c in clients]
        assert statuses == [{2: AVAILABLE, 1: AVAILABLE}] * 3
        for label, expected in ((None, (2, 4.5)), ("stable", (1, 3.5)), ("canary", (2, 4.5))):
            assert [c.predict("hp", 3.0, label=label) for c in clients] == [expected] * 3
    finally:
        for client in clients:
            client.close()


def test_a_replica_started_while_the_next_version_is_staged_serves_the_current_one(
    serve: ServerFactory, store: Store, tmp_path: Path
) -> None:
    store.stage("hp", 1, HP2)
    store.assign("hp", [1])
    # Version 2 is being copied into the store: half of its files, no manifest, no
    # staged marker, and no assignment names it yet.
    storage = store.storage()
    storage.write_bytes("hp/2/saved_model.pb", (HP3 / "saved_model.pb").read_bytes()[:100])
    storage.write_bytes("hp/2/variables/variables.index", b"")
    # A version whose stored files went missing cannot start a replica.
    store.stage("gone", 1, HP2)
    store.assign("gone", [1])
    storage.delete("gone/1/variables/variables.index")
    broken = start(serve, store, "--models=hp,gone", wait=False)
    cache = tmp_path / "cache"
    client = Client(start(serve, store, "--models=hp", f"--cache_dir={cache}"))
    try:
        assert client.states("hp") == {1: AVAILABLE}
        assert client.predict("hp", 3.0) == (1, 3.5)
        assert sorted(p.name for p in (cache / "hp").iterdir()) == ["1"]
    finally:
        client.close()
    assert broken.wait_exit(120) == 1
    assert f"model gone version 1: fetching {store.uri}/gone/1 failed: " in broken.log()


def test_a_damaged_cache_file_is_fetched_again_and_the_cold_start_is_reported(
    serve: ServerFactory, store: Store, tmp_path: Path
) -> None:
    store.stage("hp", 1, HP2)
    store.assign("hp", [1])
    cache = tmp_path / "cache"
    fetch_version(store.storage(), "hp", 1, cache)  # a cache left by an earlier run
    shard = cache / "hp" / "1" / SHARD
    damaged = bytearray(shard.read_bytes())
    damaged[0] ^= 0xFF
    shard.write_bytes(bytes(damaged))
    (cache / "hp" / "9").mkdir()  # a version no longer assigned
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    rest = free_port()
    server = start(
        serve, store, f"--cache_dir={cache}", "--log_format=json", f"--rest_api_port={rest}",
        f"--monitoring_config_file={monitoring}",
    )  # fmt: skip
    # start() waited for gRPC health's SERVING: by then the REST port answers too.
    with urllib.request.urlopen(f"http://127.0.0.1:{rest}/v1/models/hp", timeout=10) as status:
        assert status.status == 200
    client = Client(server)
    try:
        assert client.predict("hp", 3.0) == (1, 3.5)
        # The config comes from the store: a reload RPC would fight the assignments.
        with pytest.raises(grpc.RpcError) as refused:
            client.reload(server_config(model_config("hp", HP2.parent)))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--assignments" in (refused.value.details() or "")
    finally:
        client.close()
    assert shard.read_bytes() == (HP2 / SHARD).read_bytes()
    assert sorted(p.name for p in (cache / "hp").iterdir()) == ["1"]
    report = next(e for e in json_lines(server) if e.get("event") == "cold_start")
    (row,) = report["versions"]
    size = shard.stat().st_size
    assert (row["model"], row["version"], row["generation"]) == ("hp", 1, 1)
    assert (row["files_fetched"], row["files_reused"], row["bytes_fetched"]) == (1, 3, size)
    assert row["load_s"] > 0 and row["fetch_s"] > 0 and "warmup_s" in row
    url = f"http://127.0.0.1:{rest}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    assert f'rollway_serving_fetch_bytes{{model_name="hp",version="1"}} {size}' in text
    assert 'rollway_serving_assignment_generation{model_name="hp"} 1' in text


@dataclass
class Traffic:
    """Client threads sending Predict continuously, by model name (latest) or label."""

    server: ServerProcess
    threads: int = 8
    label: str = "stable"

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.seen: list[tuple[float, int, float]] = []  # (time, version, y)
        self.errors: list[str] = []
        self.workers = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)
        ]

    def _run(self, index: int) -> None:
        client = Client(self.server)
        label = self.label if index % 2 else None
        try:
            while not self.stop.is_set():
                try:
                    version, y = client.predict("hp", 1.0, label=label)
                    self.seen.append((time.monotonic(), version, y))
                except grpc.RpcError as err:
                    self.errors.append(f"{err.code()}: {err.details()}")
        finally:
            client.close()

    def __enter__(self) -> Traffic:
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.join(30)

    def first(self, version: int, timeout: float) -> float:
        """When ``version`` first answered (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answered = [t for t, v, _ in list(self.seen) if v == version]
            if answered:
                return min(answered)
            time.sleep(0.05)
        raise AssertionError(f"version {version} never answered; errors: {self.errors[:5]}")


@pytest.fixture(params=["poll", "kafka"])
def follow_args(request: pytest.FixtureRequest) -> Iterator[tuple[list[str], Any]]:
    """The server flags of one follow mode, and how a committed generation is announced."""
    if request.param == "poll":
        yield ["--follow=poll", "--follow_poll_seconds=0.5"], lambda _: None
        return
    kafka = request.getfixturevalue("kafka")
    topic = f"assignments-{uuid.uuid4().hex[:8]}"
    kafka.create_topics(topic)
    emitter = KafkaEmitter(kafka.bootstrap)

    def announce(assignment: AssignmentChanged) -> None:
        emitter.send([(topic, events.encode(assignment, "//rollway/tests"))])

    args = ["--follow=kafka", f"--kafka_bootstrap_servers={kafka.bootstrap}",
            f"--assignments_topic={topic}"]  # fmt: skip
    yield args, announce
    emitter.close()


def test_a_new_generation_is_served_without_a_failed_request(
    serve: ServerFactory, store: Store, tmp_path: Path, follow_args: tuple[list[str], Any]
) -> None:
    args, announce = follow_args
    store.stage("hp", 1, HP2)
    announce(store.assign("hp", [1], {"stable": 1}))
    cache = tmp_path / "cache"
    server = start(serve, store, *args, f"--cache_dir={cache}", "--log_format=json")
    with Traffic(server) as traffic:
        traffic.first(1, 30)
        store.stage("hp", 2, HP3)
        committed = time.monotonic()
        announce(store.assign("hp", [2], {"stable": 2}))
        swapped = traffic.first(2, SWAP_BOUND_SECONDS) - committed
        client = Client(server)
        try:
            eventually(lambda: assert_states(client, {2: AVAILABLE, 1: END}))
        finally:
            client.close()
        answered = len(traffic.seen)
        eventually(lambda: assert_more(traffic, answered + 50))  # traffic goes on after it
    assert traffic.errors == []
    assert {(v, y) for _, v, y in traffic.seen} == {(1, 2.5), (2, 3.5)}
    print(f"\n{args[0]}: the new version answered {swapped:.2f}s after the commit; "
          f"{len(traffic.seen)} requests, 0 errors")  # fmt: skip
    assert sorted(p.name for p in (cache / "hp").iterdir()) == ["2"]
    swap = next(e for e in json_lines(server) if e.get("event") == "assignment_swap")
    assert (swap["generation"], swap["added"], swap["removed"]) == (2, [2], [1])


def assert_states(client: Client, expected: dict[int, int]) -> None:
    assert client.states("hp") == expected


def assert_more(traffic: Traffic, count: int) -> None:
    assert len(traffic.seen) > count


def test_a_generation_that_does_not_load_leaves_the_current_one_serving(
    serve: ServerFactory, store: Store, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(HP3, bad)
    (bad / "assets.extra").mkdir()
    (bad / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"not a TFRecord file")
    store.stage("hp", 1, HP2)
    store.assign("hp", [1], {"stable": 1})
    cache = tmp_path / "cache"
    server = start(serve, store, "--follow=poll", "--follow_poll_seconds=0.2",
                   "--log_format=json", f"--cache_dir={cache}")  # fmt: skip
    client = Client(server)
    try:
        store.stage("hp", 2, bad)
        store.assign("hp", [2], {"stable": 2})
        eventually(lambda: assert_logged(server, "assignment_swap_failed"))
        assert client.predict("hp", 1.0) == (1, 2.5)
        assert client.predict("hp", 1.0, label="stable") == (1, 2.5)
        assert client.states("hp")[1] == AVAILABLE
        # A newer generation replaces the one that keeps failing.
        store.stage("hp", 3, HP3)
        store.assign("hp", [3], {"stable": 3})
        eventually(lambda: assert_answer(client, (3, 3.5)))
        assert client.predict("hp", 1.0, label="stable") == (3, 3.5)
    finally:
        client.close()
    failed = next(e for e in json_lines(server) if e.get("event") == "assignment_swap_failed")
    assert failed["generation"] == 2 and "tf_serving_warmup_requests" in failed["reason"]
    assert sorted(p.name for p in (cache / "hp").iterdir()) == ["3"]


def assert_logged(server: ServerProcess, event: str) -> None:
    assert any(e.get("event") == event for e in json_lines(server))


def assert_answer(client: Client, expected: tuple[int, float]) -> None:
    assert client.predict("hp", 1.0) == expected


def test_an_unreachable_store_fails_startup_within_the_bound(
    serve: ServerFactory, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = free_port()  # nothing listens: connections are refused
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    refused = start(serve, store, "--assignment_timeout_seconds=30", "--log_format=json",
                    wait=False)  # fmt: skip
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        hung = start(serve, store, "--assignment_timeout_seconds=3", "--log_format=json",
                     wait=False)  # fmt: skip
        assert hung.wait_exit(120) == 1
    assert refused.wait_exit(120) == 1
    log = refused.log()
    assert f"cannot read the assignments in {store.uri}" in log
    assert f"cannot reach S3 at http://127.0.0.1:{closed}" in log
    assert seconds_between(refused, "Running gRPC", "Failed to start server") <= 31
    log = hung.log()
    assert (
        "not ready within 3s (--assignment_timeout_seconds): still reading the assignments" in log
    )
    assert seconds_between(hung, "Running gRPC", "Failed to start server") <= 4.5


def test_a_pinned_generation_is_served_and_newer_ones_are_ignored(
    serve: ServerFactory, store: Store
) -> None:
    store.stage("hp", 1, HP2)
    store.assign("hp", [1])
    store.stage("hp", 2, HP3)
    store.assign("hp", [2])
    missing = start(serve, store, "--pin_generation=7", wait=False)
    pinned = start(serve, store, "--pin_generation=1", "--models=hp", "--follow=poll",
                   "--follow_poll_seconds=0.2")  # fmt: skip
    client = Client(pinned)
    try:
        assert client.states("hp") == {1: AVAILABLE}
        store.assign("hp", [1, 2])  # generation 3
        time.sleep(2.0)  # ten polls, were it following
        assert client.states("hp") == {1: AVAILABLE}
        assert client.predict("hp", 3.0) == (1, 3.5)
    finally:
        client.close()
    assert "--pin_generation=1: serving that generation; --follow=poll is off" in pinned.log()
    assert missing.wait_exit(120) == 1
    assert "generation 7 of model hp is not in the store: it keeps generations 1 to 2" in (
        missing.log()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--assignments=s3://b/s", "--model_base_path=/m"], "--assignments cannot be combined"),
        (["--assignments=s3://b/s", "--pin_generation=3", "--models=a,b"], "one model"),
    ],
)
def test_flag_conflicts_exit_2(args: list[str], message: str) -> None:
    """The whole table of conflicts is in tests/unit/test_flags.py; these run the CLI."""
    result = subprocess.run(
        [sys.executable, "-m", "functions.cli", "serve", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
