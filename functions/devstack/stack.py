"""The whole pipeline on one machine: what ``make demo`` and ``rollway up`` run.

``LocalStack`` starts, as child processes on free 127.0.0.1 ports with their
logs under ``workdir``: the store, the tansu Kafka broker with rollway's three
topics, ``rollway loader``, and one ``rollway serve`` replica in
``--follow=kafka`` mode. Each part is started by its own method, in that order,
so callers can report progress between them.

The store is ``storage``, one of ``STORAGES``:

- ``s3`` (the default): SeaweedFS, bucket ``rollway``. Publish into
  ``s3://rollway/landing/<model>``; the loader stages into ``s3://rollway/store``,
  which the replica reads.
- ``hdfs``: a NameNode and a DataNode (``functions.devstack.hdfs``). Publish into
  ``hdfs://127.0.0.1:RPC/rollway/landing/<model>`` (libhdfs, as trainers on a
  Hadoop cluster write) or the same folder as ``webhdfs://127.0.0.1:HTTP/...``
  (no JVM needed); the loader, one long-lived process that pays for its JVM
  once, reads both and stages through ``hdfs://``; the replica reads the store
  through ``webhdfs://``, so serving needs no JVM, Hadoop classpath or libhdfs
  (a replica starts faster and smaller, as a scaled-out pod should).

The replica is started last, and only once some model has an assignment:
``rollway serve --assignments`` with nothing assigned exits at startup (an
empty server is never ready), so ``start_serving`` needs a first generation.
The replica serves every model assigned when it starts; later generations of
those models roll out through the assignments topic without a restart.

Contract on exit (``stop``, also run by ``__exit__`` on an exception or Ctrl-C):
every child is stopped by PID with SIGTERM, then SIGKILL after a timeout; SIGINT
and SIGTERM are ignored meanwhile so a second Ctrl-C cannot leave orphans. Every
PID ever started is also written to ``<workdir>/pids.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from functions.devstack.children import (
    Child,
    StackError,
    Stopped,
    signals_ignored,
    stop_all,
    terminate,
    wait_serving,
)
from functions.devstack.hdfs import HdfsCluster
from functions.devstack.hdfs_dist import MissingPrerequisite
from functions.devstack.seaweedfs import SeaweedFS
from functions.devstack.tansu import TansuBroker
from functions.serving.process import LOOPBACK, free_port
from loader import events
from loader.errors import InvalidArgument

STORAGES = ("s3", "hdfs")
BUCKET = "rollway"
LANDING = f"s3://{BUCKET}/landing"  # with storage="s3"; LocalStack.landing in general
STORE = f"s3://{BUCKET}/store"
HDFS_LANDING, HDFS_STORE = "/rollway/landing", "/rollway/store"  # paths on the HDFS
# What libhdfs (an hdfs:// client) reads from the environment; the replica gets none.
HDFS_CLIENT_VARS = ("JAVA_HOME", "ARROW_LIBHDFS_DIR", "CLASSPATH", "LIBHDFS_OPTS")
TOPICS = (events.PUBLISH_TOPIC, events.ASSIGNMENTS_TOPIC, events.DEAD_LETTER_TOPIC)
# Variables that would redirect a child's S3 client elsewhere; client_env drops them.
_FOREIGN_S3_VARS = (
    "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "S3_ENDPOINT", "S3_USE_HTTPS",
    "S3_VERIFY_SSL", "AWS_CA_BUNDLE", "AWS_DEFAULT_REGION", "AWS_PROFILE",
)  # fmt: skip


STORAGE_ENV = "ROLLWAY_DEMO_STORAGE"


def add_storage_flag(parser: argparse.ArgumentParser) -> None:
    """``--storage`` of ``rollway up`` and ``make demo``; its default comes from STORAGE_ENV."""
    parser.add_argument(
        "--storage", choices=STORAGES, default=os.environ.get(STORAGE_ENV) or "s3",
        help=f"the store: s3 (SeaweedFS) or hdfs (a NameNode and a DataNode)"
        f" [{STORAGE_ENV}, default s3]",
    )  # fmt: skip


def check_storage_flag(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """argparse checks choices on the command line only, not a default from the environment."""
    if args.storage not in STORAGES:
        parser.error(f"{STORAGE_ENV}={args.storage!r}: choose one of {', '.join(STORAGES)}")


class LocalStack:
    def __init__(self, workdir: Path, storage: str = "s3") -> None:
        if storage not in STORAGES:
            raise InvalidArgument(f"storage must be one of {', '.join(STORAGES)}, not {storage!r}")
        self.storage = storage
        self.workdir = workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.grpc_port = self.rest_port = 0  # chosen once the store and tansu hold theirs
        self.s3: SeaweedFS | None = None
        self.hdfs: HdfsCluster | None = None
        self.kafka: TansuBroker | None = None
        self.loader: Child | None = None
        self.serving: Child | None = None
        self._pids: dict[str, list[int]] = {}
        self._lock = threading.Lock()  # start_serving may run on a watcher thread
        self._stopped = False

    # ------------------------------------------------------------ endpoints

    @property
    def bootstrap(self) -> str:
        assert self.kafka is not None, "start_infra() comes first"
        return self.kafka.bootstrap

    @property
    def landing(self) -> str:
        """Where ``rollway publish`` writes (``<landing>/<model>``)."""
        return self._uri(LANDING, HDFS_LANDING)

    @property
    def landing_webhdfs(self) -> str:
        """The HDFS landing folder through WebHDFS (no JVM needed); "" on S3."""
        return self._uri("", HDFS_LANDING, webhdfs=True)

    @property
    def store(self) -> str:
        """The serving store, as the loader writes it."""
        return self._uri(STORE, HDFS_STORE)

    @property
    def serving_store(self) -> str:
        """The serving store, as the replica (and ``rollway up``) reads it."""
        return self._uri(STORE, HDFS_STORE, webhdfs=True)

    def _uri(self, s3_uri: str, hdfs_path: str, *, webhdfs: bool = False) -> str:
        """``s3_uri`` on S3; on HDFS, ``hdfs_path`` as an hdfs:// URI (libhdfs) or,
        with ``webhdfs``, a webhdfs:// one."""
        if self.storage == "s3":
            return s3_uri
        hdfs = self._hdfs()
        return hdfs.webhdfs_uri(hdfs_path) if webhdfs else hdfs.hdfs_uri(hdfs_path)

    def source_roots(self) -> list[str]:
        return [self.landing, *([self.landing_webhdfs] if self.landing_webhdfs else [])]

    def _hdfs(self) -> HdfsCluster:
        assert self.hdfs is not None, "start_infra() comes first"
        return self.hdfs

    def client_env(self) -> dict[str, str]:
        """What a rollway client needs: the store's (S3 credentials and endpoint, or
        libhdfs's JVM and classpath), and Kafka."""
        kafka = {"ROLLWAY_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}
        if self.storage == "hdfs":
            return {**self._hdfs().env(), **kafka}
        assert self.s3 is not None, "start_infra() comes first"
        return {**self.s3.env(), **kafka}

    def export_env(self) -> None:
        """Points this process's own store and Kafka clients at the stack."""
        for name in _FOREIGN_S3_VARS:
            os.environ.pop(name, None)
        os.environ.update(self.client_env())

    def child_env(self, jvm: bool = True) -> dict[str, str]:
        """The environment of a child; ``jvm=False`` leaves out libhdfs's variables
        (the replica reads webhdfs://, and must not need them)."""
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_S3_VARS}
        env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
        env = {**env, **self.client_env(), "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        if not jvm:
            env = {k: v for k, v in env.items() if k not in HDFS_CLIENT_VARS}
        return env

    def pids(self) -> dict[str, list[int]]:
        """Every PID started, by part (a restarted replica adds one)."""
        return {name: list(pids) for name, pids in self._pids.items()}

    def _record(self, name: str, pid: int) -> None:
        self._pids.setdefault(name, []).append(pid)
        (self.workdir / "pids.json").write_text(json.dumps(self._pids, indent=1))

    # ---------------------------------------------------------------- start

    def start_infra(self) -> None:
        """The store (SeaweedFS with the bucket, or HDFS), then tansu with the
        topics; both ready. HDFS's first start on a machine prepares its cache
        (downloads and a build; see functions.devstack.hdfs): minutes, once."""
        if self.storage == "hdfs":
            self._start_hdfs()
        else:
            self.s3 = SeaweedFS(self.workdir / "seaweedfs")
            self.s3.workdir.mkdir(parents=True, exist_ok=True)
            self.s3.start()
            assert self.s3.proc is not None
            self._record("weed", self.s3.proc.pid)
            self.s3.create_bucket(BUCKET)
        self.kafka = TansuBroker(self.workdir / "tansu.log")
        self._record("tansu", self.kafka.process.pid)
        self.kafka.create_topics(*TOPICS)
        self.grpc_port, self.rest_port = free_port(), free_port()

    def _start_hdfs(self) -> None:
        """A fresh HDFS in ``<workdir>/hdfs``: unlike SeaweedFS, HDFS does not keep
        its data across ``rollway up`` runs (HdfsCluster formats a new namespace)."""
        cluster = HdfsCluster(self.workdir / "hdfs")
        self.hdfs = cluster  # before start: stop() must reach a half-started cluster
        try:
            cluster.start()
        except MissingPrerequisite as err:
            raise StackError(f"HDFS cannot run on this machine: {err}") from err
        except (RuntimeError, TimeoutError) as err:
            raise StackError(f"HDFS did not start: {err}") from err
        finally:
            for name, proc in (("datanode", cluster.datanode), ("namenode", cluster.namenode)):
                if proc is not None:
                    self._record(name, proc.pid)

    def start_loader(self, timeout: float = 60.0) -> None:
        """``rollway loader``; started once its consumer runs (it reads the publish
        topic from the earliest offset, so events sent before it joins are kept)."""
        args = [
            sys.executable, "-m", "functions.cli", "loader",
            "--bootstrap-servers", self.bootstrap, "--topic", events.PUBLISH_TOPIC,
            "--group", "rollway-loader", "--store", self.store,
            "--source-roots", ",".join(self.source_roots()),
            "--assignments-topic", events.ASSIGNMENTS_TOPIC,
            "--dead-letter-topic", events.DEAD_LETTER_TOPIC,
            "--retry-initial-seconds", "0.5", "--retry-max-seconds", "2",
            "--retry-deadline-seconds", "60", "--session-timeout-ms", "6000",
            "--metrics-address", LOOPBACK, "--log-format", "json",
        ]  # fmt: skip
        self.loader = Child("loader", args, self.workdir / "loader.log", self.child_env()).start()
        self._record("loader", self.loader.pid)
        deadline = time.monotonic() + timeout
        while '"loader consuming' not in self.loader.log_tail():
            if not self.loader.running() or time.monotonic() > deadline:
                raise StackError(f"the loader did not start:\n{self.loader.log_tail()}")
            time.sleep(0.1)

    def serve_args(self) -> list[str]:
        return [
            sys.executable, "-m", "functions.cli", "serve",
            f"--assignments={self.serving_store}", "--follow=kafka",
            f"--kafka_bootstrap_servers={self.bootstrap}",
            f"--assignments_topic={events.ASSIGNMENTS_TOPIC}",
            f"--cache_dir={self.workdir / 'cache'}", f"--bind_address={LOOPBACK}",
            f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
            "--assignment_timeout_seconds=120", "--log_format=json",
        ]  # fmt: skip

    def start_serving(self, timeout: float = 120.0) -> None:
        """Starts (or restarts) the replica and waits until gRPC health says SERVING.
        Some model must have an assignment already (see the module docstring)."""
        with self._lock:  # not held while waiting: stop() must never wait on a start
            if self._stopped:
                raise StackError("the stack is stopping")
            if self.serving is not None:
                self.serving.stop()
            log = self.workdir / "serve.log"
            env = self.child_env(jvm=False)
            serving = Child("serve", self.serve_args(), log, env).start()
            self.serving = serving
            self._record("serve", serving.pid)
        wait_serving(serving, f"{LOOPBACK}:{self.grpc_port}", timeout)

    # ----------------------------------------------------------------- stop

    def stop(self) -> list[Stopped]:
        """Stops every child by PID: the loader and the replica first (so they never
        see the broker or the store vanish mid-record), then tansu and the store;
        the parts of each wave in parallel (tansu alone takes ~5 s to drain)."""
        with signals_ignored(), self._lock:
            self._stopped = True
            apps = [(c.name, c.proc, c.stop) for c in (self.serving, self.loader) if c and c.proc]
            infra: list[tuple[str, subprocess.Popen[bytes], Callable[[], object]]] = []
            if self.kafka is not None:
                infra.append(("tansu", self.kafka.process, self.kafka.stop))
            if self.s3 is not None and self.s3.proc is not None:
                infra.append(("weed", self.s3.proc, self.s3.stop))
            if self.hdfs is not None:
                for name, proc in (
                    ("datanode", self.hdfs.datanode),
                    ("namenode", self.hdfs.namenode),
                ):
                    if proc is not None:
                        infra.append((name, proc, functools.partial(terminate, proc)))
            stopped = stop_all(apps) + stop_all(infra)
            if self.hdfs is not None:
                self.hdfs.stop()  # both exited already: only its bookkeeping is left
            self.serving = self.loader = None
            self.kafka, self.s3, self.hdfs = None, None, None
        return stopped

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
