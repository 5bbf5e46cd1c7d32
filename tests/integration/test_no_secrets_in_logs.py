"""No credential in any output, at any level: a real `rollway serve --assignments=s3://...`
at --log_level=DEBUG, with AWS_SESSION_TOKEN set, reading the real SeaweedFS.

botocore at DEBUG prints ``x-amz-security-token:<token>`` in the canonical request
and the headers of every request; functions/serving/logs.py keeps it (and urllib3,
s3transfer) at INFO, and masks credential values on the handler besides."""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

import pytest

from loader import assignments
from loader.assign import StagedVersion, policy_update
from loader.model_config import ModelSpec
from loader.policy import VersionPolicy
from loader.publish import publish_version
from loader.stage import stage_version, staged_versions
from loader.storage import open_storage
from loader.verify import verify_version
from tests.conftest import HALF_PLUS_TWO, ServerFactory

pytestmark = pytest.mark.integration


def assigned_store(root: str) -> str:
    """``<root>/store`` holding half_plus_two version 1, staged and assigned."""
    landing, store = open_storage(f"{root}/landing"), open_storage(f"{root}/store")
    publish_version(HALF_PLUS_TWO / "00000123", open_storage(f"{root}/landing/hp"), "hp", 1)
    report = verify_version(landing, "hp/1")
    stage_version(landing, "hp/1", store, "hp", 1, report)
    staged = {
        v: StagedVersion(v, store.join(f"hp/{v}"), info.manifest_sha256)
        for v, info in staged_versions(store, "hp").items()
    }
    spec = ModelSpec("hp", "", VersionPolicy.specific([1]), {})
    assert assignments.commit(store, "hp", policy_update("hp", staged, spec)) is not None
    return f"{root}/store"


def test_serve_at_debug_prints_no_credential(
    serve: ServerFactory,
    s3_root: str,
    s3_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    store = assigned_store(s3_root)  # staged without a session token
    token = "IQoJb3JpZ2luX2VjE" + secrets.token_urlsafe(96)  # shaped like an STS token
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    server = serve([f"--assignments={store}", "--log_level=DEBUG"], wait=False)
    # A store may refuse an unknown token and the server fail to start: still no leak.
    with contextlib.suppress(RuntimeError, TimeoutError):
        server.wait_serving()
    server.stop()
    output = server.log()
    assert " DEBUG " in output, output[-3000:]  # rollway's own DEBUG lines are on
    secret = s3_env["AWS_SECRET_ACCESS_KEY"]
    for value, name in ((token, "AWS_SESSION_TOKEN"), (secret, "AWS_SECRET_ACCESS_KEY")):
        for piece in (value, value[:24], value[-24:]):
            assert piece not in output, f"{name} is in the output of rollway serve"
    assert "x-amz-security-token:" not in output.lower()
    assert "Authorization': b'AWS4" not in output
