"""functions/devstack/hdfs.py: a real NameNode and DataNode start ready on loopback
and stop by PID; a machine without a prerequisite gets an error naming the package."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from functions.devstack import hdfs_dist as devstack
from functions.devstack.hdfs import HdfsCluster
from functions.devstack.hdfs_dist import HdfsDist, MissingPrerequisite
from loader.storage import open_storage

LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it
LISTEN = "0A"


def listening_addresses(pid: int) -> set[str]:
    """The local addresses (hex, as in /proc/net/tcp*) of the sockets ``pid`` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN and fields[9] in inodes:
                found.add(fields[1].rsplit(":", 1)[0])
    return found


def test_a_cluster_is_ready_on_loopback_and_stops_by_pid(
    hdfs_dist: HdfsDist, tmp_path: Path
) -> None:
    cluster = HdfsCluster(tmp_path / "hdfs", hdfs_dist).start()
    try:
        pids = cluster.pids
        assert len(pids) == 2
        # Ready means writable at once, through the DataNode's redirect.
        storage = open_storage(cluster.webhdfs_uri("/ready"))
        storage.write_bytes("a/b", b"payload")
        assert storage.read_bytes("a/b") == b"payload"
        storage.close()
        for pid in pids:
            assert listening_addresses(pid) == {LOOPBACK_HEX}
        env = cluster.env()
        assert Path(env["ARROW_LIBHDFS_DIR"], "libhdfs.so").is_file()
        assert Path(env["JAVA_HOME"], "bin", "java").is_file()
        assert "hadoop-hdfs-2.7.3.jar" in env["CLASSPATH"]
        assert cluster.hdfs_uri("/m").startswith("hdfs://127.0.0.1:")
    finally:
        cluster.stop()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"PID {pid} still runs"


def test_without_java_the_error_names_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(MissingPrerequisite, match="openjdk-17-jre-headless"):
        devstack.prepare(tmp_path / "cache")
    with pytest.raises(MissingPrerequisite, match="no java on PATH"):
        HdfsCluster(tmp_path / "hdfs").start()


def test_without_gcc_the_error_says_so_before_downloading(
    hdfs_dist: HdfsDist, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "java").symlink_to(hdfs_dist.java)  # Java, and nothing else
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(devstack, "_ensure_jersey", lambda log: None)
    with pytest.raises(MissingPrerequisite, match="gcc"):
        devstack.prepare(tmp_path / "cache")
    assert not (tmp_path / "cache" / "downloads").exists()


def test_without_jersey_and_root_the_error_names_the_packages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(devstack, "SYSTEM_JARS", tmp_path)  # no Jersey jars there
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(MissingPrerequisite) as caught:
        devstack._ensure_jersey(tmp_path / "log")
    for package in devstack.JERSEY_PACKAGES:
        assert package in str(caught.value)


def test_a_second_preparer_waits_for_the_lock_and_says_why(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a');"
         " fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
         str(lock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(TimeoutError, match="another process"), devstack._locked(lock, 0.5):
            pass
    finally:
        holder.kill()
        holder.wait()
    with devstack._locked(lock, timeout=5):  # free once the holder is gone
        pass
