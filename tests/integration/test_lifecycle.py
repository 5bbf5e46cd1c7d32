"""Version lifecycle of a real `rollway serve`: file-system polling, availability
preservation, retry after a content change, version policies, GetModelStatus
and version labels, all seen through TF Serving's gRPC API only."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow_serving.config import model_server_config_pb2

from tests.conftest import TWO_VERSIONS, ServerFactory
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

# ------------------------------------------------------------------ helpers


def publish(base: Path, version: int, offset: float) -> Path:
    """Exports y = x + offset as ``version`` next to ``base``, then renames it in."""
    staging = Path(tempfile.mkdtemp(dir=base.parent, prefix="staging-"))
    export_affine(staging, version, 1.0, offset)
    target = base / str(version)
    os.rename(staging / str(version), target)
    return target


def publish_broken(base: Path, version: int) -> Path:
    """A version directory whose saved_model.pb is garbage."""
    staging = Path(tempfile.mkdtemp(dir=base.parent, prefix="staging-"))
    (staging / str(version)).mkdir()
    (staging / str(version) / "saved_model.pb").write_bytes(b"\xff\xfe this is not a SavedModel")
    target = base / str(version)
    os.rename(staging / str(version), target)
    return target


def retire(base: Path, version: int) -> None:
    """Removes a version atomically (rename away, then delete)."""
    trash = Path(tempfile.mkdtemp(dir=base.parent, prefix="trash-"))
    os.rename(base / str(version), trash / str(version))
    shutil.rmtree(trash)


def model_base(root: Path, name: str, versions: dict[int, float]) -> Path:
    base = root / name
    base.mkdir()
    for version, offset in versions.items():
        export_affine(base, version, 1.0, offset)
    return base


class PredictLoop:
    """Predicts on a thread until stopped; records who answered and every failure.

    ``expected`` maps each version allowed to answer to its y for x = 1.
    """

    def __init__(self, client: Client, model: str, expected: dict[int, float]) -> None:
        self.client, self.model, self.expected = client, model, expected
        self.answered: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version, y = self.client.predict(self.model, 1.0)
                if self.expected.get(version) != y:
                    self.failures.append(f"answered by version {version} with {y}")
                self.answered.append(version)
            except grpc.RpcError as err:
                self.failures.append(f"{err.code()}: {err.details()}")
            except Exception as err:  # keep going; the test reports it
                self.failures.append(repr(err))

    def more(self, count: int) -> None:
        """Waits until ``count`` more requests have been answered."""
        target = len(self.answered) + count

        def answered() -> None:
            assert len(self.answered) >= target, self.failures[-3:]

        eventually(answered)

    def __enter__(self) -> PredictLoop:
        self._thread.start()
        self.more(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lifecycle")


@pytest.fixture(scope="module")
def main_config(models_root: Path) -> Any:
    return server_config(
        model_config("rolling", model_base(models_root, "rolling", {1: 10.0})),
        model_config("guarded", model_base(models_root, "guarded", {1: 10.0})),
        model_config("fixable", model_base(models_root, "fixable", {1: 10.0})),
        model_config("corrupt", model_base(models_root, "corrupt", {1: 10.0})),
        model_config("two_all", TWO_VERSIONS, "all {}"),
        model_config("two_specific", TWO_VERSIONS, "specific { versions: 123 }"),
        model_config(
            "latest_two",
            model_base(models_root, "latest_two", {1: 10.0, 2: 20.0, 3: 30.0}),
            "latest { num_versions: 2 }",
        ),
        model_config("labelled", TWO_VERSIONS, "all {}", {"stable": 123, "canary": 124}),
    )


@pytest.fixture(scope="module")
def client(serve_module: ServerFactory, models_root: Path, main_config: Any) -> Iterator[Client]:
    path = write_config(models_root / "models.config", main_config)
    server = serve_module([f"--model_config_file={path}", "--file_system_poll_wait_seconds=1"])
    c = Client(server)
    yield c
    c.close()


@pytest.fixture(scope="module")
def flagged(serve_module: ServerFactory, models_root: Path) -> Iterator[Client]:
    """A server with --allow_version_labels_for_unavailable_models."""
    path = write_config(
        models_root / "flagged.config",
        server_config(
            model_config("flagged", TWO_VERSIONS, "specific { versions: 123 }", {"stable": 123})
        ),
    )
    server = serve_module(
        [
            f"--model_config_file={path}",
            "--file_system_poll_wait_seconds=1",
            "--allow_version_labels_for_unavailable_models",
        ]
    )
    c = Client(server)
    yield c
    c.close()


# -------------------------------------------------------- latest 1 rollover


def test_new_version_replaces_old_and_removal_restores_it(
    client: Client, models_root: Path
) -> None:
    base = models_root / "rolling"
    assert client.predict("rolling", 1.0) == (1, 11.0)
    assert client.states("rolling") == {1: AVAILABLE}

    with PredictLoop(client, "rolling", {1: 11.0, 2: 21.0}) as load:
        publish(base, 2, 20.0)

        def on_version_2() -> None:
            assert client.predict("rolling", 1.0) == (2, 21.0)
            assert [(s.version, s.state) for s in client.status_list("rolling")] == [
                (2, AVAILABLE),
                (1, END),
            ]

        eventually(on_version_2)
        load.more(5)
    assert load.failures == []
    assert load.answered[-1] == 2
    assert client.predict("rolling", 1.0, version=2) == (2, 21.0)
    with pytest.raises(grpc.RpcError) as info:
        client.predict("rolling", 1.0, version=1)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "Servable not found for request: Specific(rolling, 1)"

    with PredictLoop(client, "rolling", {1: 11.0, 2: 21.0}) as load:
        retire(base, 2)

        def back_on_version_1() -> None:
            assert client.predict("rolling", 1.0) == (1, 11.0)
            assert client.states("rolling") == {2: END, 1: AVAILABLE}

        eventually(back_on_version_1)
        load.more(5)
    assert load.failures == []
    assert load.answered[-1] == 1


# ---------------------------------------------------- availability preserved


def test_broken_new_version_keeps_old_one_serving(client: Client, models_root: Path) -> None:
    base = models_root / "guarded"
    assert client.predict("guarded", 1.0) == (1, 11.0)

    with PredictLoop(client, "guarded", {1: 11.0}) as load:
        publish_broken(base, 2)

        def version_2_failed() -> Any:
            statuses = {s.version: s for s in client.status_list("guarded")}
            assert 2 in statuses
            assert statuses[2].state == END
            assert statuses[2].status.error_code != 0
            assert statuses[2].status.error_message
            assert statuses[1].state == AVAILABLE
            return statuses[2]

        failed = eventually(version_2_failed)
        load.more(20)  # and keep the load going after the failure was recorded
    assert load.failures == []
    assert len(load.answered) > 25
    assert set(load.answered) == {1}
    assert client.predict("guarded", 1.0) == (1, 11.0)
    assert [s.version for s in client.status_list("guarded")] == [2, 1]
    assert client.status_list("guarded", version=2)[0].status.error_message == (
        failed.status.error_message
    )


def test_corrupt_saved_model_is_reported_as_tf_serving_does(
    client: Client, models_root: Path
) -> None:
    """TF Serving's ReadBinaryProto: DATA_LOSS "Can't parse <path> as binary proto"."""
    broken = publish_broken(models_root / "corrupt", 2)

    def failed() -> Any:
        (status,) = client.status_list("corrupt", version=2)
        assert status.state == END
        return status.status

    status = eventually(failed)
    assert client.predict("corrupt", 1.0) == (1, 11.0)
    assert str(broken / "saved_model.pb") in status.error_message
    assert status.error_code == grpc.StatusCode.DATA_LOSS.value[0]


def test_failed_version_is_loaded_again_after_its_content_changes(
    client: Client, models_root: Path
) -> None:
    base = models_root / "fixable"
    broken = publish_broken(base, 2)

    def failed() -> None:
        (status,) = client.status_list("fixable", version=2)
        assert status.state == END
        assert status.status.error_code != 0

    eventually(failed)
    assert client.predict("fixable", 1.0) == (1, 11.0)

    # Fix version 2 in place: the valid export's files first, saved_model.pb last.
    staging = Path(tempfile.mkdtemp(dir=models_root, prefix="staging-"))
    fixed = export_affine(staging, 2, 1.0, 20.0)
    for entry in sorted(os.listdir(fixed)):
        if entry != "saved_model.pb":
            os.rename(fixed / entry, broken / entry)
    os.replace(fixed / "saved_model.pb", broken / "saved_model.pb")

    def serving_version_2() -> None:
        assert client.predict("fixable", 1.0) == (2, 21.0)
        statuses = {s.version: s for s in client.status_list("fixable")}
        assert 2 in statuses
        assert statuses[2].state == AVAILABLE
        assert statuses[2].status.error_code == 0
        assert statuses[2].status.error_message == ""
        assert statuses[1].state == END

    eventually(serving_version_2)


def test_a_half_copied_version_loads_as_soon_as_its_copy_completes(
    serve: ServerFactory, tmp_path: Path
) -> None:
    """TF Serving's default retry timing (5 retries, 60 s apart): version 2 is
    seen with only saved_model.pb, fails, and is loaded again as soon as
    variables/ arrives, long before the retry timer (issue 15, item 6)."""
    base = model_base(tmp_path, "copying", {1: 10.0})
    path = write_config(tmp_path / "models.config", server_config(model_config("copying", base)))
    server = serve([f"--model_config_file={path}", "--file_system_poll_wait_seconds=1"], fast=False)
    client = Client(server)
    try:
        assert client.predict("copying", 1.0) == (1, 11.0)
        exported = export_affine(Path(tempfile.mkdtemp(dir=tmp_path)), 2, 1.0, 20.0)
        (base / "2").mkdir()
        shutil.copy2(exported / "saved_model.pb", base / "2" / "saved_model.pb")

        def first_attempt_failed() -> None:
            assert "loading copying:2 failed (attempt 1 of 6)" in server.log()

        eventually(first_attempt_failed)
        assert client.predict("copying", 1.0) == (1, 11.0)
        shutil.copytree(exported / "variables", base / "2" / "variables")

        def serving_version_2() -> None:
            assert client.predict("copying", 1.0) == (2, 21.0)

        # Well under the 60 s retry interval; the server's poll is 1 s.
        eventually(serving_version_2, timeout=15.0)
        assert "copying:2 changed on storage; retrying now" in server.log()
    finally:
        client.close()


# ------------------------------------------------------------------ policies


def test_policy_all_serves_every_version(client: Client) -> None:
    assert [(s.version, s.state) for s in client.status_list("two_all")] == [
        (124, AVAILABLE),
        (123, AVAILABLE),
    ]
    assert client.predict("two_all", 2.0, version=123) == (123, 3.0)
    assert client.predict("two_all", 2.0, version=124) == (124, 3.0)
    assert client.predict("two_all", 2.0) == (124, 3.0)


def test_policy_specific_serves_only_the_listed_version(client: Client) -> None:
    assert client.states("two_specific") == {123: AVAILABLE}
    assert client.predict("two_specific", 2.0) == (123, 3.0)
    assert client.predict("two_specific", 2.0, version=123) == (123, 3.0)
    with pytest.raises(grpc.RpcError) as info:
        client.predict("two_specific", 2.0, version=124)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "Servable not found for request: Specific(two_specific, 124)"


def test_policy_latest_two_serves_the_two_newest(client: Client) -> None:
    assert [(s.version, s.state) for s in client.status_list("latest_two")] == [
        (3, AVAILABLE),
        (2, AVAILABLE),
    ]
    assert client.predict("latest_two", 1.0) == (3, 31.0)
    assert client.predict("latest_two", 1.0, version=3) == (3, 31.0)
    assert client.predict("latest_two", 1.0, version=2) == (2, 21.0)
    with pytest.raises(grpc.RpcError) as info:
        client.predict("latest_two", 1.0, version=1)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# ------------------------------------------------------------ GetModelStatus


def test_model_status_states_are_tf_serving_numbers() -> None:
    assert AVAILABLE == 30
    assert END == 50


def test_model_status_lists_newest_first(client: Client) -> None:
    statuses = client.status_list("two_all")
    assert [s.version for s in statuses] == [124, 123]
    assert [s.state for s in statuses] == [30, 30]
    for status in statuses:
        assert status.status.error_code == 0
        assert status.status.error_message == ""
    (one,) = client.status_list("two_all", version=123)
    assert (one.version, one.state) == (123, 30)


def test_model_status_unknown_model(client: Client) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.status_list("nope")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "Could not find any versions of model nope"


def test_model_status_unknown_version(client: Client) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.status_list("two_all", version=7)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "Could not find version 7 of model two_all"


# -------------------------------------------------------------------- labels


def test_labels_from_the_config_are_served(client: Client) -> None:
    assert client.predict("labelled", 2.0, label="stable") == (123, 3.0)
    assert client.predict("labelled", 2.0, label="canary") == (124, 3.0)
    with pytest.raises(grpc.RpcError) as info:
        client.predict("labelled", 2.0, label="nope")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "Unrecognized servable version label: nope"


def test_label_to_unavailable_version_fails_the_reload(client: Client, main_config: Any) -> None:
    config = model_server_config_pb2.ModelServerConfig()
    config.CopyFrom(main_config)
    (labelled,) = [m for m in config.model_config_list.config if m.name == "labelled"]
    labelled.version_labels["canary"] = 125
    with pytest.raises(grpc.RpcError) as info:
        client.reload(config)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == (
        "Request to assign label to version 125 of model labelled, "
        "which is not currently available for inference"
    )
    # The failed update leaves the labels as they were.
    assert client.predict("labelled", 2.0, label="canary") == (124, 3.0)
    assert client.predict("labelled", 2.0, label="stable") == (123, 3.0)


def test_new_label_to_unloaded_version_is_allowed_with_the_flag(flagged: Client) -> None:
    assert flagged.states("flagged") == {123: AVAILABLE}
    assert flagged.predict("flagged", 2.0, label="stable") == (123, 3.0)
    flagged.reload(
        server_config(
            model_config(
                "flagged", TWO_VERSIONS, "specific { versions: 123 }", {"stable": 123, "next": 124}
            )
        )
    )
    with pytest.raises(grpc.RpcError) as info:
        flagged.predict("flagged", 2.0, label="next")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "Servable not found for request: Specific(flagged, 124)"
    assert flagged.predict("flagged", 2.0, label="stable") == (123, 3.0)


def test_moving_a_label_to_unloaded_version_is_refused_even_with_the_flag(
    flagged: Client,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        flagged.reload(
            server_config(
                model_config("flagged", TWO_VERSIONS, "specific { versions: 123 }", {"stable": 124})
            )
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == (
        "Request to assign label to version 124 of model flagged, "
        "which is not currently available for inference"
    )
    assert flagged.predict("flagged", 2.0, label="stable") == (123, 3.0)
