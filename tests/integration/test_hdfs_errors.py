"""hdfs:// without a JVM: every command says in one line what is missing.

libhdfs needs JAVA_HOME, libhdfs.so (ARROW_LIBHDFS_DIR or HADOOP_HOME) and
CLASSPATH. loader/storage/hdfs.py checks them before pyarrow loads libhdfs, and
the first operation raises Unavailable naming each missing one, how to get it,
and webhdfs:// as the way without a JVM: the CLI prints that line and exits 1,
the store-error code of `rollway verify` and `rollway publish`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from functions.serving.process import free_port
from loader.errors import Unavailable
from loader.storage import open_storage
from loader.storage.hdfs import missing_setup
from tests.conftest import HALF_PLUS_TWO, REPO, RemoteRoot

pytestmark = pytest.mark.integration
JVM_VARS = ("JAVA_HOME", "CLASSPATH", "ARROW_LIBHDFS_DIR", "HADOOP_HOME", "LIBHDFS_OPTS")
TIMEOUT = 180


def rollway_without_jvm(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in JVM_VARS}
    return subprocess.run(
        [sys.executable, "-m", "functions.cli", *args], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip


def unreachable_hdfs(path: str) -> str:
    return f"hdfs://127.0.0.1:{free_port()}{path}"


def the_line(stderr: str, command: str) -> str:
    """The command's own message: exactly one line, and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"rollway {command}:")]
    assert len(lines) == 1, stderr
    return lines[0]


def assert_names_everything_missing(line: str) -> None:
    for needed in ("JAVA_HOME", "openjdk-17-jre-headless", "ARROW_LIBHDFS_DIR", "CLASSPATH",
                   "hadoop classpath --glob", "webhdfs://"):  # fmt: skip
        assert needed in line, line


def test_verify_without_a_jvm_is_a_store_error_in_one_line() -> None:
    uri = unreachable_hdfs("/models/half/1")
    done = rollway_without_jvm("verify", uri)
    assert done.returncode == 1, done.stderr
    line = the_line(done.stderr, "verify")
    assert uri in line
    assert_names_everything_missing(line)


def test_publish_without_a_jvm_is_a_store_error_in_one_line() -> None:
    uri = unreachable_hdfs("/models/half")
    done = rollway_without_jvm("publish", "--no-check", str(HALF_PLUS_TWO / "00000123"), uri)
    assert done.returncode == 1, done.stderr  # 1: the upload failed; 2 is for usage errors
    line = the_line(done.stderr, "publish")
    assert "no manifest was written" in line
    assert_names_everything_missing(line)


def test_webhdfs_needs_no_jvm(webhdfs_root: RemoteRoot) -> None:
    done = rollway_without_jvm("verify", f"{webhdfs_root.uri}/models/half/1")
    assert done.returncode == 3, done.stderr  # INCOMPLETE: nothing published there yet


def test_opening_never_connects_and_the_first_operation_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in JVM_VARS:
        monkeypatch.delenv(name, raising=False)
    storage = open_storage("hdfs://127.0.0.1:1/models")  # parses only, like webhdfs://
    for operation in (lambda: storage.stat("m/1/x"), lambda: list(storage.list("m/"))):
        with pytest.raises(Unavailable, match=r"hdfs://127\.0\.0\.1:1/models") as caught:
            operation()
        assert caught.value.retriable
        assert "JAVA_HOME is not set" in caught.value.message
    storage.close()


def test_each_missing_piece_is_named_alone(tmp_path: Path) -> None:
    java = tmp_path / "jre"
    (java / "lib" / "server").mkdir(parents=True)
    (java / "lib" / "server" / "libjvm.so").touch()
    (tmp_path / "native").mkdir()
    (tmp_path / "native" / "libhdfs.so").touch()
    complete = {"JAVA_HOME": str(java), "ARROW_LIBHDFS_DIR": str(tmp_path / "native"),
                "CLASSPATH": "/etc/hadoop:/opt/hadoop/common/hadoop-common.jar"}  # fmt: skip
    assert missing_setup(complete) == []
    without_classpath = {**complete, "CLASSPATH": ""}
    assert [p.split()[0] for p in missing_setup(without_classpath)] == ["CLASSPATH"]
    globbed = {**complete, "CLASSPATH": "/opt/hadoop/common/*"}
    assert "--glob" in missing_setup(globbed)[0]
    no_jvm = {**complete, "JAVA_HOME": str(tmp_path / "native")}
    assert missing_setup(no_jvm) == [f"JAVA_HOME={tmp_path}/native holds no lib/server/libjvm.so"]
    no_lib = {**complete, "ARROW_LIBHDFS_DIR": str(tmp_path)}
    assert missing_setup(no_lib) == [f"{tmp_path} holds no libhdfs.so"]
    hadoop_home = {**complete, "ARROW_LIBHDFS_DIR": "", "HADOOP_HOME": str(tmp_path)}
    assert missing_setup(hadoop_home) == [f"{tmp_path}/lib/native holds no libhdfs.so"]


def test_an_unreachable_namenode_is_unavailable(hdfs_root: RemoteRoot) -> None:
    # With libhdfs loaded in this process (hdfs_root set its environment).
    storage = open_storage(unreachable_hdfs("/models"))
    with pytest.raises(Unavailable) as caught:
        storage.stat("m/1/saved_model.pb")
    assert caught.value.retriable and "127.0.0.1" in caught.value.message
