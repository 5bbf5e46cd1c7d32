"""The ``backend`` fixture: one model repository root per kind of store.

Tests that write and read versions only through ``backend.storage`` run
unchanged on every backend: local disk, S3 (the real SeaweedFS server started by
conftest), and HDFS through both ``hdfs://`` (libhdfs) and ``webhdfs://`` (the
real NameNode and DataNode started by conftest, or the cluster named by
ROLLWAY_TEST_HDFS_URI / ROLLWAY_TEST_WEBHDFS_URL). ``backend.env`` is what a
subprocess (the CLI) needs to reach the store; the fixture also sets it in this
process for the test.

A test that gains nothing from a store's particulars (a usage error, a Kafka
failure), or whose cost on HDFS would not pay for itself, is marked
``@local_and_s3_only`` with a comment saying why (HDFS 2.7 makes a client wait
400 ms at the close of about half the files written, and every ``rollway``
subprocess on hdfs:// starts a JVM).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from loader.storage import Storage, open_storage

BACKENDS = ["local", "s3", "hdfs", "webhdfs"]
BACKENDS_LOCAL_S3 = ["local", "s3"]
local_and_s3_only = pytest.mark.parametrize("backend", BACKENDS_LOCAL_S3, indirect=True)


@dataclass
class Backend:
    """A model repository root on one kind of store."""

    storage: Storage
    uri: str  # what the CLI is given for the root
    env: dict[str, str] = field(default_factory=dict)  # what the CLI needs to reach it

    def version_uri(self, prefix: str) -> str:
        return f"{self.uri.rstrip('/')}/{prefix}"

    def subprocess_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        root = tmp_path / "store"
        root.mkdir()
        yield Backend(open_storage(str(root)), str(root))
        return
    # s3_root, hdfs_root or webhdfs_root: a URI, or an object that has one (and env)
    root: Any = request.getfixturevalue(f"{request.param}_root")
    uri = root if isinstance(root, str) else root.uri
    env = {} if isinstance(root, str) else dict(getattr(root, "env", {}))
    old = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    storage = open_storage(uri)
    try:
        yield Backend(storage, uri, env)
    finally:
        storage.close()  # WebHDFS and S3 hold connection pools
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
