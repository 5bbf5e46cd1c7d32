"""A real HDFS: a NameNode and a DataNode (Hadoop 2.7.3), from PyPI and Debian
packages (prepared by ``functions.devstack.hdfs_dist``).

``HdfsCluster(workdir).start()`` puts every address on 127.0.0.1, each on a
free port, formats a fresh namespace under ``workdir``, runs the DataNode and
the NameNode as two JVMs (-Xmx256m), and returns once WebHDFS lists ``/``, a
CREATE is redirected to the DataNode and the DataNode takes the bytes: polled,
never a fixed sleep. ``stop`` sends SIGTERM to each PID, then SIGKILL after a
timeout. A server that fails to start raises RuntimeError or TimeoutError with
its log tail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

from functions.devstack.hdfs_dist import (
    DATANODE,
    DATANODE_JVM_OPTS,
    LOG4J_TEMPLATE,
    LOOPBACK,
    NAMENODE,
    SERVER_JVM_OPTS,
    HdfsDist,
    prepare,
    run_logged,
    tail_of,
)
from functions.serving.process import Started, stopped_on_failure


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports; sockets stay open until all are chosen."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]


def _site(properties: dict[str, object]) -> str:
    rows = "".join(f"  <property><name>{k}</name><value>{v}</value></property>\n"
                   for k, v in properties.items())  # fmt: skip
    return f'<?xml version="1.0"?>\n<configuration>\n{rows}</configuration>\n'


class HdfsCluster(Started):
    """One NameNode and one DataNode with configuration, data and logs under ``workdir``."""

    def __init__(self, workdir: Path, dist: HdfsDist | None = None) -> None:
        self.workdir = workdir
        self.dist = dist
        self.rpc_port = self.http_port = self.datanode_http_port = 0
        self.namenode: subprocess.Popen[bytes] | None = None
        self.datanode: subprocess.Popen[bytes] | None = None

    def hdfs_uri(self, path: str = "/") -> str:
        return f"hdfs://{LOOPBACK}:{self.rpc_port}/{path.lstrip('/')}"

    def webhdfs_uri(self, path: str = "/") -> str:
        return f"webhdfs://{LOOPBACK}:{self.http_port}/{path.lstrip('/')}"

    def env(self) -> dict[str, str]:
        """The environment an hdfs:// client needs (webhdfs:// needs none)."""
        assert self.dist is not None, "start() first"
        return self.dist.client_env()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in (self.namenode, self.datanode) if p is not None]

    def _write_conf(self) -> Path:
        rpc, http, data, dn_http, dn_ipc = _free_ports(5)
        self.rpc_port, self.http_port, self.datanode_http_port = rpc, http, dn_http
        conf = self.workdir / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "core-site.xml").write_text(_site({
            "fs.defaultFS": f"hdfs://{LOOPBACK}:{rpc}",
            "hadoop.tmp.dir": self.workdir / "tmp",
            # The DataNode starts first and dials the NameNode until it is up: keep
            # retrying every 100 ms, not once a second then 5 s of back-off.
            "ipc.client.connect.retry.interval": 100,
            "ipc.client.connect.max.retries": 600,
        }))  # fmt: skip
        (conf / "hdfs-site.xml").write_text(_site({
            "dfs.namenode.name.dir": self.workdir / "name",
            "dfs.datanode.data.dir": self.workdir / "data",
            "dfs.namenode.rpc-address": f"{LOOPBACK}:{rpc}",
            "dfs.namenode.http-address": f"{LOOPBACK}:{http}",
            "dfs.namenode.secondary.http-address": f"{LOOPBACK}:0",
            "dfs.datanode.address": f"{LOOPBACK}:{data}",
            "dfs.datanode.http.address": f"{LOOPBACK}:{dn_http}",
            "dfs.datanode.ipc.address": f"{LOOPBACK}:{dn_ipc}",
            "dfs.datanode.hostname": LOOPBACK,  # WebHDFS redirects stay on loopback
            "dfs.replication": 1,
            "dfs.permissions.enabled": "false",
            "dfs.webhdfs.enabled": "true",
            "dfs.namenode.safemode.extension": 0,
        }))  # fmt: skip
        (conf / "log4j.properties").write_text(LOG4J_TEMPLATE.format(level="INFO"))
        return conf

    def _java(self, conf: Path, main: str, *args: str) -> list[str]:
        assert self.dist is not None
        classpath = self.dist.server_classpath(conf)
        extra = DATANODE_JVM_OPTS if main == DATANODE else ()
        # Jetty unpacks its web apps under java.io.tmpdir: keep them in workdir.
        tmp = f"-Djava.io.tmpdir={self.workdir / 'tmp'}"
        return [str(self.dist.java), *SERVER_JVM_OPTS, *extra, tmp, "-cp", classpath, main, *args]

    def _spawn(self, name: str, conf: Path, main: str) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                self._java(conf, main), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.workdir, start_new_session=True,
            )  # fmt: skip

    def start(self, timeout: float = 120.0) -> HdfsCluster:
        self.dist = self.dist or prepare()
        # Every start formats a new namespace, and a DataNode holding blocks of an
        # older one refuses it ("Incompatible clusterIDs"): start from empty dirs.
        for kept in ("name", "data", "tmp"):
            shutil.rmtree(self.workdir / kept, ignore_errors=True)
        (self.workdir / "tmp").mkdir(parents=True)
        conf = self._write_conf()
        with stopped_on_failure(self.stop):
            # The DataNode's JVM starts while the namespace is formatted.
            self.datanode = self._spawn("datanode", conf, DATANODE)
            log = self.workdir / "format.log"
            format_ = self._java(conf, NAMENODE, "-format", "-nonInteractive", "-force")
            if run_logged(format_, log, cwd=self.workdir, timeout=timeout) != 0:
                raise RuntimeError(f"formatting the NameNode failed; log {log}:\n{tail_of(log)}")
            self.namenode = self._spawn("namenode", conf, NAMENODE)
            self._wait_ready(timeout)
        return self

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {name}.log ---\n{tail_of(self.workdir / f'{name}.log', lines)}"
            for name in ("namenode", "datanode")
        )

    def _wait_ready(self, timeout: float) -> None:
        """Ready means a file can be written: WebHDFS lists /, the NameNode
        redirects a CREATE to the registered DataNode, and that takes the bytes."""
        base = f"http://{LOOPBACK}:{self.http_port}/webhdfs/v1"
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        with requests.Session() as session:
            while True:
                for name, proc in (("NameNode", self.namenode), ("DataNode", self.datanode)):
                    if proc is not None and proc.poll() is not None:
                        raise RuntimeError(
                            f"the {name} exited with {proc.returncode} before HDFS was ready;"
                            f" logs in {self.workdir}:\n{self.log_tail()}"
                        )
                try:
                    last = self._probe(session, base)
                except requests.RequestException as err:
                    last = type(err).__name__
                if not last:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"HDFS not ready on {LOOPBACK}:{self.http_port} after {timeout:.0f}s"
                        f" ({last}); logs in {self.workdir}:\n{self.log_tail()}"
                    )
                time.sleep(0.1)

    def _probe(self, session: requests.Session, base: str) -> str:
        """'' when ready, else what is still missing."""
        listing = session.get(f"{base}/", params={"op": "LISTSTATUS"}, timeout=5)
        if listing.status_code != 200:
            return f"LISTSTATUS / answered {listing.status_code}"
        create = session.put(
            f"{base}/.rollway-ready", params={"op": "CREATE", "overwrite": "true"},
            allow_redirects=False, timeout=5,
        )  # fmt: skip
        location = create.headers.get("Location", "")
        if create.status_code != 307 or f"{LOOPBACK}:{self.datanode_http_port}/" not in location:
            return f"CREATE answered {create.status_code}, not a redirect to the DataNode"
        written = session.put(location, data=b"ready", timeout=10)
        if written.status_code != 201:
            return f"the DataNode answered {written.status_code} to a write"
        session.delete(f"{base}/.rollway-ready", params={"op": "DELETE"}, timeout=5)
        return ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to both PIDs, then SIGKILL to any still running after ``timeout``."""
        procs = [p for p in (self.datanode, self.namenode) if p is not None]
        self.datanode = self.namenode = None
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
