"""``rollway up [--workdir DIR] [--storage s3|hdfs]``: the local stack of ``make demo``,
kept running.

Starts the store (SeaweedFS S3 by default; with ``--storage hdfs`` or
``ROLLWAY_DEMO_STORAGE=hdfs``, a NameNode and a DataNode), tansu (Kafka) and
``rollway loader`` on free 127.0.0.1 ports (``functions.devstack.stack``, which
says which URIs each part uses), prints the endpoints, the environment to export
and the exact ``rollway publish`` command, then waits. Ctrl-C (SIGINT) or
SIGTERM stops every child by PID and exits 0.

The serving replica (``rollway serve --follow=kafka``) cannot start empty, so a
watcher thread reading the assignments topic starts it when the first model is
assigned. Newer generations of the models it serves roll out in place, without
failing a request; a model it does not serve yet restarts it (a short gap: the
replica loads its models at startup only). Every PID is printed and kept in
``<workdir>/pids.json``. Without ``--workdir`` a temporary directory is used and
deleted on a clean exit; with it, the logs and data stay (on S3: HDFS starts
empty at every run, see ``LocalStack._start_hdfs``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from functions.devstack.children import StackError, interrupt_on_signals
from functions.devstack.stack import (
    TOPICS,
    LocalStack,
    add_storage_flag,
    check_storage_flag,
)
from functions.devstack.watch import AssignmentWatcher
from loader import assignments
from loader.errors import RollwayError
from loader.storage import open_storage

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def say(text: str = "") -> None:
    print(text, flush=True)


def rollway_command() -> str:
    """How to run this same rollway: the venv's script, else ``python -m``."""
    script = Path(sys.executable).parent / "rollway"
    if script.exists():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m functions.cli"


class ReplicaStarter:
    """Watches the assignments topic on a thread; (re)starts the replica when a
    model it does not serve gets an assignment. Failures are printed, and the
    next assignment tries again; the rest of the stack keeps running."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.stopping = threading.Event()
        self.served: set[str] = set()
        self.thread = threading.Thread(target=self._run, name="rollway-up-replica", daemon=True)

    def _run(self) -> None:
        watcher = AssignmentWatcher(self.stack.bootstrap)
        try:
            # A reused --workdir keeps its store: serve what is assigned there already.
            wanted, down_reported = set(assigned_models(self.stack.serving_store)), False
            while not self.stopping.is_set():
                try:
                    new = watcher.poll()
                except Exception as err:  # kafka-python raises many types; keep watching
                    say(f"reading the assignments topic failed (retrying): {err}")
                    self.stopping.wait(1.0)
                    continue
                for event in new:
                    versions = [v.version for v in event.versions]
                    say(f"assignment: model={event.model} generation={event.generation} "
                        f"versions={versions} labels={dict(event.labels)}")  # fmt: skip
                    wanted.add(event.model)
                replica = self.stack.serving
                code = replica.proc.poll() if replica and replica.proc else None
                down = bool(self.served) and code is not None
                if down and not down_reported and replica is not None:
                    say(f"the serving replica (pid {replica.pid}) exited with {code}; "
                        "it starts again at the next assignment")  # fmt: skip
                down_reported = down
                if (wanted != self.served or (down and new)) and not self.stopping.is_set():
                    self._start(wanted)
                wanted = set(self.served)
        finally:
            watcher.close()

    def _start(self, models: set[str]) -> None:
        verb = "restarting" if self.served else "starting"
        say(f"{verb} the serving replica for {', '.join(sorted(models))} ...")
        try:
            self.stack.start_serving()
        except StackError as err:
            if not self.stopping.is_set():
                say(f"the serving replica did not start: {err}")
            return
        finally:
            self.served = models  # a failed start is retried at the next new model
        s = self.stack
        assert s.serving is not None
        say(f"serving replica ready (pid {s.serving.pid}): gRPC 127.0.0.1:{s.grpc_port}, "
            f"REST http://127.0.0.1:{s.rest_port}; models {', '.join(sorted(models))}")  # fmt: skip


def assigned_models(uri: str) -> list[str]:
    """The models with an assignment in the store at ``uri`` (none if it cannot be read)."""
    try:
        store = open_storage(uri)
        try:
            return assignments.list_models(store)
        finally:
            store.close()
    except RollwayError as err:
        say(f"cannot list the assigned models in {uri}: {err.message}")
        return []


def print_endpoints(stack: LocalStack) -> None:
    assert stack.loader is not None
    env = stack.client_env()
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    (stack.workdir / "env.sh").write_text(f"export {exports}\n")
    rollway = rollway_command()
    pids = " ".join(f"{name}={','.join(map(str, p))}" for name, p in stack.pids().items())
    if stack.s3 is not None:
        say(f"  S3 (SeaweedFS)   {stack.s3.endpoint_url}  bucket rollway")
    if stack.hdfs is not None:
        say(f"  HDFS (NameNode)  {stack.hdfs.hdfs_uri('')}  WebHDFS "
            f"http://127.0.0.1:{stack.hdfs.http_port}  (Hadoop 2.7.3, one DataNode)")  # fmt: skip
    say(f"  Kafka (tansu)    {stack.bootstrap}  topics {', '.join(TOPICS)}")
    sources = " and ".join(f"{root}/<model>" for root in stack.source_roots())
    say(f"  loader           pid {stack.loader.pid}: {sources} -> {stack.store}")
    say(f"  serving replica  gRPC 127.0.0.1:{stack.grpc_port}, "
        f"REST http://127.0.0.1:{stack.rest_port}, from {stack.serving_store} "
        "(starts once a model is assigned)")  # fmt: skip
    say()
    say(f"Environment for clients (also in {stack.workdir / 'env.sh'}):")
    say(f"  export {exports}")
    say()
    say("Publish a SavedModel directory as the next version of MODEL:")
    say(f"  {rollway} publish SAVED_MODEL_DIR {stack.landing}/MODEL --next")
    if stack.landing_webhdfs:
        say("or, with no JVM or Hadoop classpath (only ROLLWAY_KAFKA_BOOTSTRAP_SERVERS):")
        say(f"  {rollway} publish SAVED_MODEL_DIR {stack.landing_webhdfs}/MODEL --next")
    say()
    say(f"pids: {pids} (every PID started is kept in {stack.workdir / 'pids.json'})")
    say("Ready. Ctrl-C stops everything.")


def watch(stack: LocalStack, starter: ReplicaStarter) -> str:
    """Blocks until Ctrl-C/SIGTERM (returns "") or a part dies (returns why)."""
    try:
        while not starter.stopping.wait(0.5):
            for name, proc in (
                ("loader", stack.loader.proc if stack.loader else None),
                ("tansu", stack.kafka.process if stack.kafka else None),
                ("SeaweedFS", stack.s3.proc if stack.s3 else None),
                ("the NameNode", stack.hdfs.namenode if stack.hdfs else None),
                ("the DataNode", stack.hdfs.datanode if stack.hdfs else None),
            ):
                if proc is not None and proc.poll() is not None:
                    return f"{name} (pid {proc.pid}) exited with {proc.returncode}"
    except KeyboardInterrupt:
        pass
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rollway up",
        description="Run a store (SeaweedFS S3, or HDFS), tansu (Kafka), the loader and a "
        "serving replica locally on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument(
        "--workdir", type=Path, help="logs, data and pids.json (default: a temporary "
        "directory, deleted on a clean exit)",
    )  # fmt: skip
    add_storage_flag(parser)
    args = parser.parse_args(argv)
    check_storage_flag(parser, args)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rollway-up-"))
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # reconnect noise at shutdown
    interrupt_on_signals()
    say(f"rollway up: starting on 127.0.0.1 with {args.storage} storage "
        f"(logs in {workdir.resolve()})")  # fmt: skip
    problem = ""
    stack = LocalStack(workdir, args.storage)
    starter = ReplicaStarter(stack)
    try:
        with stack:
            stack.start_infra()
            stack.export_env()  # for reading the store's assignments here
            stack.start_loader()
            print_endpoints(stack)
            starter.thread.start()
            problem = watch(stack, starter)
            say(f"{problem}: stopping" if problem else "stopping ...")
            starter.stopping.set()
            starter.thread.join(2)  # usually leaves at once; else stop() ends its wait
            for stopped in stack.stop():
                say(f"stopped {stopped.name} (pid {stopped.pid}), exit code {stopped.exit_code}")
    except KeyboardInterrupt:
        say("interrupted: every process stopped")
        return 130
    except Exception as err:  # a part did not start: say which, and where its log is
        say(f"rollway up: {err}")
        say(f"every process stopped; logs in {workdir.resolve()}")
        return 1
    finally:
        starter.stopping.set()
    if starter.thread.is_alive():
        starter.thread.join(10)
    if problem:
        say(f"logs in {workdir.resolve()}")
        return 1
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    say("all stopped")
    return 0
