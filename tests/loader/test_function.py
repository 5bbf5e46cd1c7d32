"""The loader as a Knative function, with the real parts: ``python -m
functions.loader_function`` (func-python's server, as ``func build`` runs it) as a
subprocess on a loopback port, SeaweedFS S3 for the landing area and the serving
store, tansu for the topics. Deliveries are POSTed the way a KafkaSource sends
them (../shared/events/kafkasource_delivery.http). One function process serves
the module; each test uses its own model names."""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from functions.devstack.seaweedfs import TEST_BUCKET, SeaweedFS
from functions.serving.process import LOOPBACK, free_port
from loader.decode import MAX_EVENT_BYTES
from loader.events import VERSION_REJECTED, encode_model_published
from loader.publish import PublishResult, publish_version
from loader.retry import pending_key
from loader.schemas.rollway.v1.events_pb2 import ModelPublished
from loader.storage import open_storage
from loader.verify import Verdict, verify_version
from tests.conftest import REPO
from tests.kafka_broker import TansuBroker
from tests.loader.harness import (
    Stack,
    Topics,
    Watcher,
    assignments_in,
    ce_type,
    rejections_in,
    subprocess_env,
)

pytestmark = pytest.mark.integration
SHARED_EVENTS = Path(__file__).resolve().parents[3] / "shared" / "events"
FUNCTION_DIR = REPO / "functions" / "loader_function"
# rollway's dependencies that only `rollway serve` needs: not in the function's image.
SERVING_ONLY = {
    "tensorflow-cpu", "ml-dtypes", "numpy", "grpcio", "grpcio-health-checking", "uvicorn",
    "httptools", "rich",
}  # fmt: skip
OFFSETS = itertools.count(100)


@dataclass
class FunctionProcess:
    """``python -m functions.loader_function`` on 127.0.0.1:``port``."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, env: Mapping[str, str], log_path: Path) -> FunctionProcess:
        port = free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "functions.loader_function"],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                env={**env, "LISTEN_ADDRESS": f"{LOOPBACK}:{port}", "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        return cls(port, process, log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return response.status, response.read(), dict(response.getheaders())
        finally:
            connection.close()

    def post(
        self, headers: Mapping[str, str], body: bytes, path: str = "/"
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        status, data, reply_headers = self.request("POST", path, body, headers)
        return status, json.loads(data), reply_headers

    def wait_health(self, path: str, until: Any, timeout: float = 90.0) -> str:
        """Polls ``path`` until ``until(status, text)``; fails early if the process exits."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}:\n{self.log()}")
            try:
                status, data, _ = self.request("GET", path)
            except OSError:  # not listening yet
                time.sleep(0.05)
                continue
            last = f"{status} {data.decode(errors='replace')}"
            if until(status, data.decode(errors="replace")):
                return last
            time.sleep(0.05)
        raise AssertionError(f"{path} never matched; last: {last}\n{self.log()}")

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(10)


def function_env(stack: Stack, **extra: str) -> dict[str, str]:
    return {
        **stack.env,
        "ROLLWAY_STORE": stack.store_uri,
        "ROLLWAY_SOURCE_ROOTS": stack.landing,
        "ROLLWAY_KAFKA_BOOTSTRAP_SERVERS": stack.kafka.bootstrap,
        "ROLLWAY_ASSIGNMENTS_TOPIC": stack.topics.assignments,
        "ROLLWAY_DEAD_LETTER_TOPIC": stack.topics.dead_letter,
        "ROLLWAY_RETRY_INITIAL_SECONDS": "2",
        "ROLLWAY_LOG_FORMAT": "json",
        **extra,
    }


def kafkasource_delivery(
    key: bytes | None, kafka_headers: Sequence[tuple[str, bytes]] = ()
) -> dict[str, str]:
    """The HTTP headers of a KafkaSource delivery of one record (binary mode):
    each Kafka header ``h`` becomes ``ce-kafkaheader<h lowercased, alphanumerics only>``."""
    offset = next(OFFSETS)
    headers = {
        "ce-specversion": "1.0",
        "ce-id": f"partition:0/offset:{offset}",
        "ce-source": "/apis/v1/namespaces/models/kafkasources/model-publish#model-publish",
        "ce-type": "dev.knative.kafka.event",
        "ce-subject": f"partition:0#{offset}",
        "ce-time": "2026-11-20T08:55:07.439Z",
    }
    if key is not None:
        headers["ce-key"] = headers["ce-partitionkey"] = key.decode()
    for name, value in kafka_headers:
        headers["ce-kafkaheader" + re.sub("[^a-z0-9]", "", name.lower())] = value.decode()
        if name.lower() == "content-type":
            headers["content-type"] = value.decode()
    return headers


def model_published(
    model: str, version: int, uri: str, sha256: str = ""
) -> tuple[dict[str, str], bytes]:
    """A ModelPublished record (as ``rollway publish`` sends it), delivered by a KafkaSource."""
    event = ModelPublished(model=model, version=version, version_uri=uri, manifest_sha256=sha256)
    event.published_at.GetCurrentTime()
    record = encode_model_published(event, "//tests")
    return kafkasource_delivery(record.key, record.headers), record.value


@pytest.fixture(scope="module")
def stack(
    seaweedfs: SeaweedFS, kafka: TansuBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in seaweedfs.env().items():  # publish_version and the checks
            patch.setenv(name, value)
        yield Stack(
            root=f"s3://{TEST_BUCKET}/fn-{uuid.uuid4().hex[:8]}",
            kafka=kafka,
            topics=Topics.fresh(kafka),
            env=subprocess_env(seaweedfs.env()),
            workdir=tmp_path_factory.mktemp("loader-function"),
        )


@pytest.fixture(scope="module")
def function(stack: Stack) -> Iterator[FunctionProcess]:
    started = FunctionProcess.start(function_env(stack), stack.workdir / "function.log")
    try:
        started.wait_health("/health/readiness", lambda status, _: status == 200)
        yield started
    finally:
        started.stop()


@pytest.fixture
def assignments(stack: Stack) -> Iterator[Watcher]:
    watcher = Watcher(stack.kafka, stack.topics.assignments)
    yield watcher
    watcher.close()


@pytest.fixture
def dead_letters(stack: Stack) -> Iterator[Watcher]:
    watcher = Watcher(stack.kafka, stack.topics.dead_letter)
    yield watcher
    watcher.close()


def publish(stack: Stack, model: str, version: int) -> PublishResult:
    landing = open_storage(f"{stack.landing}/{model}")
    return publish_version(stack.source(model, version), landing, model, version)


def for_model(records: list[Any], model: str) -> list[Any]:
    return [a for a in assignments_in(records) if a.model == model]


def test_health_endpoints_and_other_methods(function: FunctionProcess) -> None:
    assert function.request("GET", "/health/liveness")[:2] == (200, b"alive")
    assert function.request("GET", "/health/readiness")[:2] == (200, b"ready")
    status, data, headers = function.request("GET", "/")
    assert status == 405
    assert headers["allow"] == "POST"
    assert json.loads(data)["status"] == "invalid"


def test_a_published_version_is_staged_and_assigned(
    stack: Stack, function: FunctionProcess, assignments: Watcher
) -> None:
    published = publish(stack, "fn-own", 1)
    headers, body = model_published(
        "fn-own", 1, f"{stack.landing}/fn-own/1", published.manifest_sha256
    )
    status, answer, _ = function.post(headers, body)
    assert status == 200, answer
    assert answer["status"] == "done"
    assert answer["results"] == [
        {"outcome": "staged", "model": "fn-own", "version": 1, "generation": 1}
    ]
    seen = assignments.wait_for(lambda r: bool(for_model(r, "fn-own")))
    assert [v.version for v in for_model(seen, "fn-own")[0].versions] == [1]
    assert verify_version(stack.store(), "fn-own/1").verdict is Verdict.COMPLETE

    status, answer, _ = function.post(headers, body)  # a redelivery changes nothing
    assert (status, answer["results"][0]["outcome"]) == (200, "unchanged")
    assert stack.document("fn-own").current.generation == 1


def test_a_minio_notification_is_staged(
    stack: Stack, function: FunctionProcess, assignments: Watcher
) -> None:
    publish(stack, "fn-minio", 7)
    prefix = stack.root.removeprefix(f"s3://{TEST_BUCKET}/")
    key = f"{prefix}/landing/fn-minio/7/rollway-manifest.json"
    notification = json.loads((SHARED_EVENTS / "minio_object_created.json").read_text())
    notification["Key"] = f"{TEST_BUCKET}/{key}"
    record = notification["Records"][0]["s3"]
    record["bucket"]["name"] = TEST_BUCKET
    record["object"]["key"] = key.replace("/", "%2F")
    headers = kafkasource_delivery(f"{TEST_BUCKET}/{key}".encode())
    status, answer, _ = function.post(headers, json.dumps(notification).encode())
    assert status == 200, answer
    assert answer["results"][0]["outcome"] == "staged"
    seen = assignments.wait_for(lambda r: bool(for_model(r, "fn-minio")))
    assert [v.version for v in for_model(seen, "fn-minio")[0].versions] == [7]


def test_an_incomplete_version_answers_503_until_its_files_arrive(
    stack: Stack, function: FunctionProcess, assignments: Watcher
) -> None:
    headers, body = model_published("fn-late", 3, f"{stack.landing}/fn-late/3")
    status, answer, reply_headers = function.post(headers, body)
    assert status == 503, answer  # the KafkaSource retries 5xx
    assert answer["status"] == "retry"
    assert answer["results"][0]["outcome"] == "retry"
    assert int(reply_headers["retry-after"]) >= 1
    assert stack.store().exists(pending_key("fn-late", 3))  # parked durably too

    publish(stack, "fn-late", 3)  # the files arrive; the KafkaSource sends it again
    status, answer, _ = function.post(headers, body)
    assert status == 200, answer
    assert answer["results"][0]["outcome"] == "staged"
    assert not stack.store().exists(pending_key("fn-late", 3))
    assignments.wait_for(lambda r: bool(for_model(r, "fn-late")))


def test_a_corrupt_version_is_dead_lettered_and_answered_200(
    stack: Stack, function: FunctionProcess, dead_letters: Watcher
) -> None:
    publish(stack, "fn-bad", 4)
    landing = open_storage(stack.landing)
    key = "fn-bad/4/variables/variables.data-00000-of-00001"
    data = bytearray(landing.read_bytes(key))
    data[0] ^= 0xFF
    landing.write_bytes(key, bytes(data))
    headers, body = model_published("fn-bad", 4, f"{stack.landing}/fn-bad/4")
    status, answer, _ = function.post(headers, body)
    assert status == 200, answer  # rejected for good: retrying cannot help
    assert answer["results"][0]["outcome"] == "rejected"
    assert "CORRUPT" in answer["results"][0]["reason"]
    seen = dead_letters.wait_for(lambda r: any(x.model == "fn-bad" for x in rejections_in(r)))
    rejected = next(x for x in rejections_in(seen) if x.model == "fn-bad")
    assert rejected.verdict == "CORRUPT"
    assert rejected.source_record == headers["ce-id"]
    assert ce_type(seen[-1]) == VERSION_REJECTED
    assert not stack.store().exists("fn-bad/4/rollway-manifest.json")


def test_hostile_bodies_are_dead_lettered_and_answered_200(
    stack: Stack, function: FunctionProcess, dead_letters: Watcher
) -> None:
    garbage = kafkasource_delivery(None)
    status, answer, _ = function.post(garbage, b"\x00 not json at all")
    assert (status, answer["results"][0]["outcome"]) == (200, "rejected")
    huge = kafkasource_delivery(None)
    status, answer, _ = function.post(huge, b"{" + b" " * MAX_EVENT_BYTES + b"}")
    assert (status, answer["results"][0]["outcome"]) == (200, "rejected")
    assert "MAX_EVENT_BYTES" in answer["results"][0]["reason"]
    wanted = {garbage["ce-id"], huge["ce-id"]}
    dead_letters.wait_for(lambda r: wanted <= {x.source_record for x in rejections_in(r)})


def test_requests_that_are_no_cloud_event_get_4xx(function: FunctionProcess) -> None:
    # KafkaSource does not retry 400 and 415: only for what can never succeed.
    status, answer, _ = function.post({"content-type": "application/json"}, b"{}")
    assert status == 400
    assert "ce-specversion, ce-id, ce-source, ce-type" in answer["reason"]
    old = {**kafkasource_delivery(None), "ce-specversion": "0.3"}
    assert function.post(old, b"{}")[0] == 400
    structured = {"content-type": "application/cloudevents+json"}
    assert function.post(structured, b'{"specversion": "1.0"}')[0] == 415
    assert function.request("GET", "/health/readiness")[0] == 200


def test_the_dead_letter_route_rejects_what_the_kafkasource_gave_up_on(
    stack: Stack, function: FunctionProcess, dead_letters: Watcher
) -> None:
    headers, body = model_published("fn-never", 5, f"{stack.landing}/fn-never/5")
    status, answer, _ = function.post(headers, body)
    assert status == 503
    last_answer = json.dumps(answer).encode()
    given_up = {
        **headers,  # the same CloudEvent, with Knative's error extensions
        "ce-knativeerrorcode": "503",
        "ce-knativeerrordest": "http://rollway-loader.models.svc.cluster.local",
        "ce-knativeerrordata": base64.b64encode(last_answer).decode(),
    }
    status, answer, _ = function.post(given_up, body, path="/dead-letter")
    assert status == 200, answer
    assert answer["results"][0]["outcome"] == "rejected"
    seen = dead_letters.wait_for(lambda r: any(x.model == "fn-never" for x in rejections_in(r)))
    rejected = next(x for x in rejections_in(seen) if x.model == "fn-never")
    assert rejected.version == 5
    assert rejected.verdict == "INCOMPLETE"
    assert "gave up" in rejected.reason
    assert "HTTP 503" in rejected.reason
    assert "still INCOMPLETE" in rejected.reason
    assert not stack.store().exists(pending_key("fn-never", 5))  # nothing would retry it


def test_an_unreachable_store_answers_503_and_is_not_ready(
    stack: Stack, function: FunctionProcess
) -> None:
    dead = f"http://{LOOPBACK}:{free_port()}"  # nothing listens there
    env = function_env(stack, AWS_ENDPOINT_URL=dead)
    broken = FunctionProcess.start(env, stack.workdir / "function-dead-store.log")
    try:
        broken.wait_health("/health/readiness", lambda status, text: "unreachable" in text)
        status, text = broken.request("GET", "/health/readiness")[:2]
        assert status != 200
        assert b"unreachable" in text
        assert broken.request("GET", "/health/liveness")[0] == 200  # no restart needed

        headers, body = model_published("fn-dead", 1, f"{stack.landing}/fn-dead/1")
        status, answer, _ = broken.post(headers, body)
        assert status == 503, answer  # the KafkaSource retries it
        assert answer["status"] == "unavailable"
        assert "cannot reach S3" in answer["reason"]
        secret = stack.env["AWS_SECRET_ACCESS_KEY"]
        assert secret not in json.dumps(answer)
        assert secret not in broken.log()
    finally:
        code = broken.stop()
    assert code == 0, broken.log()  # SIGTERM stops it cleanly
    assert "stopped" in broken.log()
    assert os.environ.get("AWS_ENDPOINT_URL") != dead


# -- the function project that `func build` installs ------------------------------


def _toml(path: Path) -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    document: dict[str, Any] = tomllib.loads(path.read_text())
    return document


def _requirements(pyproject: Path) -> dict[str, str]:
    dependencies = _toml(pyproject)["project"]["dependencies"]
    return {re.split(r"[<>=!~ ;\[]", d)[0].lower(): d for d in dependencies}


def test_the_function_project_has_the_loaders_dependencies() -> None:
    rollway = _requirements(REPO / "pyproject.toml")
    function = _requirements(FUNCTION_DIR / "pyproject.toml")
    assert {name for name in rollway if name not in SERVING_ONLY} <= set(function)
    assert not SERVING_ONLY & set(function)  # no TensorFlow in the function's image
    for name, requirement in function.items():
        if name in rollway:
            assert requirement == rollway[name], "keep the version specifiers equal"


def test_the_function_project_includes_every_rollway_module_it_imports() -> None:
    build = _toml(FUNCTION_DIR / "pyproject.toml")["tool"]["hatch"]["build"]
    included = set(build["targets"]["wheel"]["force-include"].values())
    # functions/settings.py: the function reads its variables with settings.from_env.
    assert {"loader", "functions/settings.py"} <= included
    probe = (
        "import json, sys, functions.loader_function.function.func; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    imported = {
        name for name in json.loads(out)
        if name.split(".")[0] == "functions" and not name.startswith("functions.loader_function")
    }  # fmt: skip
    for name in imported:
        path = name.replace(".", "/")
        assert {f"{path}.py", f"{path}/__init__.py"} & included, f"{name} is not force-included"
