"""Config changes on a running `rollway serve`: ModelService.HandleReloadConfigRequest
and polling of --model_config_file, seen through TF Serving's gRPC API only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow_serving.apis import model_management_pb2

from tests.conftest import BAD_HALF_PLUS_TWO, HALF_PLUS_TWO, TWO_VERSIONS, ServerFactory
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


def expect_not_found(call: Callable[[], object], details: str) -> None:
    """Raises AssertionError (which ``eventually`` retries) unless ``call`` fails so."""
    try:
        result = call()
    except grpc.RpcError as err:
        assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, details)
    else:
        raise AssertionError(f"expected NOT_FOUND {details!r}, got {result!r}")


H2 = model_config("half_plus_two", HALF_PLUS_TWO)


@pytest.fixture(scope="module")
def extra(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The model that comes and goes: y = x + 40 in version 1. (TF Serving's
    saved_model_half_plus_three is not used here: see test_startup.py.)"""
    base = tmp_path_factory.mktemp("extra")
    export_affine(base, 1, 1.0, 40.0)
    return model_config("extra", base)


@pytest.fixture(scope="module")
def client(
    serve_module: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Client]:
    path = tmp_path_factory.mktemp("reload") / "models.config"
    write_config(path, server_config(H2))
    c = Client(serve_module([f"--model_config_file={path}"]))
    yield c
    c.close()


# ----------------------------------------------------- HandleReloadConfigRequest


def test_reload_adds_a_model_that_serves_when_the_rpc_returns(client: Client, extra: Any) -> None:
    client.reload(server_config(H2))
    client.reload(server_config(H2, extra))
    assert client.predict("extra", 2.0) == (1, 42.0)
    assert client.states("extra") == {1: AVAILABLE}
    assert client.predict("half_plus_two", 2.0) == (123, 3.0)


def test_reload_removes_a_model(client: Client, extra: Any) -> None:
    client.reload(server_config(H2, extra))
    assert client.predict("extra", 2.0) == (1, 42.0)

    client.reload(server_config(H2))

    def removed() -> None:
        expect_not_found(
            lambda: client.predict("extra", 2.0),
            "Servable not found for request: Latest(extra)",
        )
        assert client.states("extra") == {1: END}

    eventually(removed)
    assert client.predict("half_plus_two", 2.0) == (123, 3.0)

    # It can come back, and then it serves as soon as the reload returns.
    client.reload(server_config(H2, extra))
    assert client.predict("extra", 2.0) == (1, 42.0)


def test_reload_changes_a_version_policy(client: Client) -> None:
    client.reload(server_config(H2, model_config("two", TWO_VERSIONS)))
    assert client.predict("two", 2.0) == (124, 3.0)
    assert client.states("two") == {124: AVAILABLE}

    client.reload(server_config(H2, model_config("two", TWO_VERSIONS, "all {}")))

    def both() -> None:
        assert client.states("two") == {124: AVAILABLE, 123: AVAILABLE}
        assert client.predict("two", 2.0, version=123) == (123, 3.0)

    eventually(both)

    client.reload(
        server_config(H2, model_config("two", TWO_VERSIONS, "specific { versions: 123 }"))
    )

    def only_123() -> None:
        assert client.states("two") == {124: END, 123: AVAILABLE}
        assert client.predict("two", 2.0) == (123, 3.0)

    eventually(only_123)
    expect_not_found(
        lambda: client.predict("two", 2.0, version=124),
        "Servable not found for request: Specific(two, 124)",
    )


def test_reload_can_load_a_version_and_label_it_in_one_config(client: Client) -> None:
    """README: labels are checked after the config's versions have loaded."""
    client.reload(
        server_config(H2, model_config("labelled", TWO_VERSIONS, "specific { versions: 123 }"))
    )
    assert client.states("labelled") == {123: AVAILABLE}
    client.reload(
        server_config(
            H2,
            model_config(
                "labelled",
                TWO_VERSIONS,
                "specific { versions: 123 versions: 124 }",
                {"stable": 123, "canary": 124},
            ),
        )
    )
    assert client.predict("labelled", 2.0, label="stable") == (123, 3.0)
    assert client.predict("labelled", 2.0, label="canary") == (124, 3.0)


def test_reload_with_an_empty_config_is_invalid(client: Client) -> None:
    client.reload(server_config(H2))
    with pytest.raises(grpc.RpcError) as info:
        client.models.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(), timeout=30
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Only ModelConfigList is currently supported" in (info.value.details() or "")
    assert client.predict("half_plus_two", 2.0) == (123, 3.0)


def test_reload_with_bad_half_plus_two_reports_a_failed_version(client: Client) -> None:
    """bad_half_plus_two is reported as a failed version without crashing the server."""
    client.reload(server_config(H2))
    with pytest.raises(grpc.RpcError) as info:
        client.reload(server_config(H2, model_config("bad", BAD_HALF_PLUS_TWO)))
    assert info.value.code() != grpc.StatusCode.OK
    details = info.value.details() or ""
    assert "did not become available" in details
    assert "bad" in details and "123" in details

    assert client.server.proc is not None and client.server.proc.poll() is None
    assert client.predict("half_plus_two", 2.0) == (123, 3.0)
    statuses = client.statuses("bad")
    assert list(statuses) == [123]
    assert statuses[123].state == END
    assert statuses[123].status.error_code != 0
    assert statuses[123].status.error_message
    expect_not_found(
        lambda: client.predict("bad", 2.0), "Servable not found for request: Latest(bad)"
    )

    client.reload(server_config(H2))
    assert client.predict("half_plus_two", 2.0) == (123, 3.0)


# ------------------------------------------------------- --model_config_file poll


def test_model_config_file_is_polled(serve: ServerFactory, tmp_path: Path, extra: Any) -> None:
    path = tmp_path / "models.config"
    write_config(path, server_config(H2))
    server = serve([f"--model_config_file={path}", "--model_config_file_poll_wait_seconds=1"])
    c = Client(server)
    try:
        assert c.predict("half_plus_two", 2.0) == (123, 3.0)
        expect_not_found(
            lambda: c.predict("extra", 2.0),
            "Servable not found for request: Latest(extra)",
        )

        write_config(path, server_config(H2, extra))

        def extra_added() -> None:
            assert c.predict("extra", 2.0) == (1, 42.0)

        eventually(extra_added)
        assert c.predict("half_plus_two", 2.0) == (123, 3.0)

        write_config(path, server_config(extra))

        def two_removed() -> None:
            expect_not_found(
                lambda: c.predict("half_plus_two", 2.0),
                "Servable not found for request: Latest(half_plus_two)",
            )
            assert c.states("half_plus_two") == {123: END}

        eventually(two_removed)
        assert c.predict("extra", 2.0) == (1, 42.0)
    finally:
        c.close()
