"""The ``backend`` fixture: one model repository root per kind of store.

Tests that write and read versions only through ``backend.storage`` run
unchanged on every backend: local disk always, S3 (the real SeaweedFS server
started by conftest) too. ``backend.env`` is what a subprocess (the CLI) needs
to reach the store; the fixture also sets it in this process for the test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from loader.storage import Storage, open_storage

BACKENDS = ["local", "s3"]


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
    s3: Any = request.getfixturevalue("s3_root")  # a URI, or an object that has one
    uri = s3 if isinstance(s3, str) else s3.uri
    env = {} if isinstance(s3, str) else dict(getattr(s3, "env", {}))
    old = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield Backend(open_storage(uri), uri, env)
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
