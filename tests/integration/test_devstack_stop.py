"""The local stack's SeaweedFS stops promptly (functions/devstack/seaweedfs.py):
the real ``weed mini``, started as the demo, ``rollway up`` and the tests'
fixture start it, is gone within seconds of ``stop()``, and keeps its data."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from functions.devstack.seaweedfs import SeaweedFS

pytestmark = pytest.mark.integration

# SeaweedFS stops in a few seconds; before, it sat 15 s until SIGKILL. The
# bound is generous for a loaded machine: it checks the promptness, not speed.
STOP_BOUND_SECONDS = 10.0


def test_seaweedfs_stops_within_seconds_and_keeps_its_data(tmp_path: Path) -> None:
    weed = SeaweedFS(tmp_path / "weed").start()
    bucket = weed.create_bucket("kept")
    client = weed.client()
    client.put_object(Bucket=bucket, Key="object", Body=b"still here")
    client.close()
    proc = weed.proc
    assert proc is not None
    started = time.monotonic()
    weed.stop()
    took = time.monotonic() - started
    assert proc.poll() is not None  # exited, and reaped
    assert not Path(f"/proc/{proc.pid}").exists()
    assert took < STOP_BOUND_SECONDS, f"stop took {took:.1f} s; log:\n{weed.log_tail()}"

    with SeaweedFS(tmp_path / "weed") as again:  # the same data directory
        client = again.client()
        assert client.get_object(Bucket=bucket, Key="object")["Body"].read() == b"still here"
        client.close()
