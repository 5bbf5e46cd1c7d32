"""Soak: minutes of mixed gRPC and REST load on the real pipeline while versions
swap, configs reload and the loader restarts; RSS over time, p99 per minute, errors.

Run with ``make bench`` or ``python -m tests.bench.bench_soak [--minutes N]``
(default 10). Everything is a real process on free 127.0.0.1 ports, as
``functions.devstack`` starts it for ``make demo``: SeaweedFS (S3), the tansu
Kafka broker, ``rollway loader``, and two single-process servers of TF
Serving's ``half_plus_two``:

``assignments``  ``rollway serve --assignments --follow=kafka`` (the demo's
                 replica). A new version is published with ``rollway publish``
                 every 60 s, so the loader stages it and the replica swaps
                 generations under load.
``config``       ``rollway serve --model_config_file``. Every 30 s
                 HandleReloadConfigRequest alternates between two valid configs
                 (the model alone, latest 1; the model with latest 2 plus a
                 second model); every 45 s a new version directory is renamed
                 into its base path (atomic) and the oldest renamed out.

Halfway through, the loader gets SIGTERM and is started again. Load runs in
``--slice-seconds`` slices (one per minute by default), all four at once: h2load
(gRPC Predict) and wrk (REST ``:predict``) against both servers, each on
``--connections`` connections paced to ``--rate`` requests/s, so that the two
cores are not saturated and latency is not queueing. Failures counted: every
non-2xx, failed, errored or timed-out request of h2load and wrk; every non-OK
request in each server's ``:tensorflow:serving:request_count`` (h2load cannot
see ``grpc-status``, a server can); every failure of a grpcio probe that sends
one Predict every 0.2 s to each server and checks the answer (and sees which
version answered, which times each swap). RSS (VmRSS of the process and its
descendants) of both servers and the loader is sampled every 2 s.

Targets: 0 failed requests, and RSS growth under 10 % from the end of the first
minute of each process's life to its last sample (each a median of 10 s of
samples; a process that lived under 80 s, such as either loader of a 2-minute
run, is not judged); and, so that the soak did soak, every action must have
taken effect (each new version answered the probe). Results:
``tests/bench/results/soak.{json,md,png}``; the first WARNING-or-worse lines of
each process's log are in the JSON, and ``--workdir DIR`` keeps the logs and
files. A missed target is reported, as in the other benchmarks, not an exit
status; an interrupted run (Ctrl-C, SIGTERM) stops every process by PID and
writes the slices it finished, exit status 130.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import signal
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from functions.devstack.children import StackError
from functions.devstack.stack import LocalStack
from functions.serving.process import ServerProcess, free_port
from tests.bench.bench_serving_compare import (
    EXPECTED,
    LOOPBACK,
    MODEL,
    MODEL_VERSION_DIR,
    PREDICT,
    REST_BODY,
    check_predict,
    check_rest,
    predict_request,
    tool_version,
    versions,
)
from tests.bench.loadgen import TOOLS

RESULTS = Path(__file__).resolve().parent / "results"
SIDE_MODEL = "side"  # the second model that config B adds and config A removes
TARGET_GROWTH_PCT = 10.0
WARMUP_S = 60.0  # RSS growth counts from the end of each process's first minute
RSS_WINDOW_S = 10.0  # RSS at a point: the median of this many seconds of samples
SAMPLE_EVERY_S = 2.0
PROBE_EVERY_S = 0.2
MARGIN_S = 10.0  # no action in the last seconds: its effect could not be seen
# (first at, then every) seconds after the load starts; the loader restarts once, halfway.
PERIODS = {"reload": (15.0, 30.0), "version_dir": (20.0, 45.0), "publish": (30.0, 60.0)}
LOADER_RESTART = "loader_restart"
SERVERS = {"assignments": "serve --assignments", "config": "serve --model_config_file"}
APIS = {"grpc": "gRPC", "rest": "REST"}
METRICS_PATH = "/monitoring/prometheus/metrics"
_REQUEST_COUNT = re.compile(r"^:tensorflow:serving:request_count\{([^}]*)\}\s+(\S+)", re.M)
_STATUS = re.compile(r'status="([^"]*)"')
_ASSIGNED = re.compile(rb"Updated partition assignment: \[\w")  # kafka-python, as in
# bench_serving_assigned: the loader's consumer holds a partition of the publish topic


# --------------------------------------------------------------- pure parts


def schedule(
    duration_s: float, periods: Mapping[str, tuple[float, float]] = PERIODS
) -> list[tuple[float, str]]:
    """The actions of a run of ``duration_s``: each kind of ``periods`` at its
    first time and then every period, none in the last MARGIN_S, and one loader
    restart halfway; sorted by time."""
    plan = [(duration_s / 2, LOADER_RESTART)]
    for kind, (first, every) in periods.items():
        at = first
        while at < duration_s - MARGIN_S:
            plan.append((at, kind))
            at += every
    return sorted(plan)


def vm_rss_kib(status: str) -> int:
    """VmRSS of a ``/proc/PID/status`` text in KiB (0 for a kernel thread or zombie)."""
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.M)
    return int(match[1]) if match else 0


def parent_pid(stat: str) -> int:
    """The parent PID in a ``/proc/PID/stat`` text. The command name, in
    parentheses, may hold spaces and parentheses itself: split after the last ')'."""
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def request_counts(metrics: str) -> dict[str, float]:
    """``:tensorflow:serving:request_count`` of a Prometheus scrape, summed over
    models, by status ("OK", "NOT_FOUND", ...)."""
    counts: dict[str, float] = {}
    for labels, value in _REQUEST_COUNT.findall(metrics):
        status = _STATUS.search(labels)
        key = status[1] if status else ""
        counts[key] = counts.get(key, 0.0) + float(value)
    return counts


SCRAPE_FAILED = "metrics scrape failed"


def non_ok(before: Mapping[str, float] | None, after: Mapping[str, float] | None) -> dict[str, int]:
    """Requests counted between two scrapes with a status other than OK, by
    status; a scrape that failed (None) counts as one failure of its own."""
    if before is None or after is None:
        return {SCRAPE_FAILED: 1}
    delta = {s: round(after[s] - before.get(s, 0.0)) for s in after if s != "OK"}
    return {s: n for s, n in delta.items() if n}


@dataclass(frozen=True)
class Growth:
    """RSS of one process at the end of its first minute, at its end, and the change."""

    start_t: float
    base_kib: float
    end_kib: float
    growth_pct: float


def rss_growth(
    points: Sequence[tuple[float, int]], warmup_s: float = WARMUP_S, window_s: float = RSS_WINDOW_S
) -> Growth | None:
    """Growth from the median RSS of ``[first + warmup_s, + window_s)`` to the
    median of the last ``window_s``, for ``(seconds, KiB)`` samples in time
    order; None when the process did not live long enough for both windows to
    be apart (``warmup_s + 2 * window_s``)."""
    if not points:
        return None
    first, last = points[0][0], points[-1][0]
    base_from = first + warmup_s
    if last < base_from + 2 * window_s:
        return None
    base = statistics.median(k for t, k in points if base_from <= t < base_from + window_s)
    end = statistics.median(k for t, k in points if t > last - window_s)
    return Growth(base_from, base, end, 100.0 * (end - base) / base if base else 0.0)


def rss_series(samples: Iterable[Sequence[Any]]) -> dict[str, list[tuple[float, int]]]:
    """``(seconds, role, pid, KiB)`` samples as one series per process: named by
    role, with ``#2``, ``#3`` ... for a role's later processes (the restarted loader)."""
    pids: dict[str, list[int]] = {}
    series: dict[str, list[tuple[float, int]]] = {}
    for t, role, pid, kib in samples:
        seen = pids.setdefault(role, [])
        if pid not in seen:
            seen.append(pid)
        index = seen.index(pid)
        name = role if index == 0 else f"{role} #{index + 1}"
        series.setdefault(name, []).append((float(t), int(kib)))
    return series


def minute_rows(
    slices: Sequence[Mapping[str, Any]], probe_failures: Mapping[str, Sequence[float]]
) -> list[dict[str, Any]]:
    """One row per load slice: its loads, and its failures of each kind. Slices
    tile the run (each covers from the previous one's end to its own), so a
    probe failure between two load runs counts in the next slice."""
    rows, start = [], 0.0
    for index, s in enumerate(slices):
        end = float(s["end_s"])
        loads: Mapping[str, Mapping[str, Any]] = s["loads"]
        probe = {
            server: sum(1 for t in times if start <= t < end)
            for server, times in probe_failures.items()
        }
        rows.append(
            {
                "minute": index + 1,
                "start_s": round(start, 1),
                "end_s": round(end, 1),
                "loads": loads,
                "tool_errors": sum(int(load.get("errors", 0)) for load in loads.values()),
                "load_runs_failed": sum(1 for load in loads.values() if "error" in load),
                "server_non_ok": {k: dict(v) for k, v in s["server_non_ok"].items()},
                "probe_failures": probe,
            }
        )
        start = end
    return rows


def failures_of(row: Mapping[str, Any]) -> int:
    """Every failed request of a minute row (a load run that failed counts one)."""
    server = sum(sum(statuses.values()) for statuses in row["server_non_ok"].values())
    probe = sum(row["probe_failures"].values())
    return int(row["tool_errors"]) + int(row["load_runs_failed"]) + int(server) + int(probe)


def effect_times(
    events: Iterable[Mapping[str, Any]], first_seen: Mapping[str, Mapping[int, float]]
) -> list[dict[str, Any]]:
    """Each action with ``took_s``: for a new version (a publish, a version
    directory), from the action to the probe's first answer from it, and ``ok``
    False if it never answered; for the others, the action's own time."""
    out = []
    for event in events:
        row = dict(event)
        server, version = row.get("server"), row.get("version")
        if row["ok"] and server is not None and version is not None:
            seen = first_seen.get(server, {}).get(int(version))
            row["took_s"] = None if seen is None else round(seen - float(row["t"]), 2)
            if seen is None:
                row["ok"], row["error"] = False, f"version {version} never answered the probe"
        else:
            row["took_s"] = row.get("seconds")
        out.append(row)
    return out


def verdict(
    rows: Sequence[Mapping[str, Any]],
    growth: Mapping[str, Growth | None],
    events: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The targets: 0 failed requests; RSS growth < TARGET_GROWTH_PCT for every
    process that lived long enough to be judged (at least one must); and, so
    that the load did meet what the soak is about, every action took effect."""
    failed = sum(failures_of(r) for r in rows)
    judged = {name: g.growth_pct for name, g in growth.items() if g is not None}
    worst = max(judged.values()) if judged else None
    rss_ok = worst is not None and worst < TARGET_GROWTH_PCT
    events_ok = all(e["ok"] for e in events)
    return {
        "failed_requests": failed,
        "requests_ok": failed == 0,
        "max_growth_pct": None if worst is None else round(worst, 2),
        "rss_ok": rss_ok,
        "target_growth_pct": TARGET_GROWTH_PCT,
        "events_failed": sum(1 for e in events if not e["ok"]),
        "events_ok": events_ok,
        "pass": failed == 0 and rss_ok and events_ok,
    }


# ------------------------------------------------------------- processes


def log_problems(path: Path, most: int = 20) -> list[str]:
    """The first ``most`` WARNING-or-worse lines of a ``--log_format=json`` log
    (``time level logger: message``), for the report's diagnosis."""
    found: list[str] = []
    if not path.exists():
        return found
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{") or len(found) >= most:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("WARNING", "ERROR", "CRITICAL"):
            found.append(
                f"{entry.get('time')} {entry['level']} {entry.get('logger')}: "
                f"{str(entry.get('message'))[:500]}"
            )
    return found


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (from each process's parent in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(parent_pid((entry / "stat").read_text()), []).append(
                    int(entry.name)
                )
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` and its descendants (``--workers``); None once it is gone."""
    try:
        total = vm_rss_kib(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
    for child in descendants(pid):
        try:
            total += vm_rss_kib(Path(f"/proc/{child}/status").read_text())
        except OSError:
            continue
    return total


def stop_own_load_tools() -> None:
    """SIGTERM, by PID, to the h2load and wrk processes this process started (an
    interrupted run's load threads would otherwise leave them to run out their slice)."""
    for pid in descendants(os.getpid()):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() in TOOLS:
                os.kill(pid, signal.SIGTERM)
        except (OSError, ProcessLookupError):
            continue


class SoakStack(LocalStack):
    """The demo's stack, its replica also exporting Prometheus metrics on its REST
    port, and its loader ready once its consumer holds the publish partition."""

    def __init__(self, workdir: Path, monitoring: Path) -> None:
        super().__init__(workdir)
        self.monitoring = monitoring

    def serve_args(self) -> list[str]:
        return [*super().serve_args(), f"--monitoring_config_file={self.monitoring}"]

    def start_loader(self, timeout: float = 90.0) -> None:
        """LocalStack's loader, waited on by kafka-python's partition-assignment line
        in the part of the log this process writes (the log is appended to, so a
        restarted loader's readiness is never read from its predecessor's lines,
        and it does not hang on the wording of rollway's own startup line)."""
        log = self.workdir / "loader.log"
        offset = log.stat().st_size if log.exists() else 0
        try:
            super().start_loader(timeout=0.0)  # starts it; its own wait gives up at once
        except StackError:
            if self.loader is None or not self.loader.running():
                raise
        assert self.loader is not None
        deadline = time.monotonic() + timeout
        while not _ASSIGNED.search(log.read_bytes()[offset:]):
            if not self.loader.running() or time.monotonic() > deadline:
                raise StackError(f"the loader did not start:\n{self.loader.log_tail()}")
            time.sleep(0.1)


def config_text(base: Path, side: Path, wide: bool) -> str:
    """A ModelServerConfig: config A (``wide`` False) serves MODEL's latest
    version; B serves its latest two, and SIDE_MODEL too. Both are valid, and in
    both MODEL's latest version answers, so alternating loses no request."""
    policy = " model_version_policy { latest { num_versions: 2 } }" if wide else ""
    lines = [
        f'  config {{ name: "{MODEL}" base_path: "{base}" model_platform: "tensorflow"{policy} }}'
    ]
    if wide:
        lines.append(
            f'  config {{ name: "{SIDE_MODEL}" base_path: "{side}" model_platform: "tensorflow" }}'
        )
    return "model_config_list {\n" + "\n".join(lines) + "\n}\n"


class VersionDirs:
    """The config server's base path for MODEL: a new version is copied in full
    under a scratch directory on the same file system and renamed in (atomic, so
    the server's poll never sees half a version); then all but the newest
    ``keep`` are renamed out and deleted."""

    def __init__(self, base: Path, scratch: Path, keep: int = 2) -> None:
        self.base, self.scratch, self.keep = base, scratch, keep
        self.versions: list[int] = []
        base.mkdir(parents=True, exist_ok=True)
        scratch.mkdir(parents=True, exist_ok=True)

    def add_next(self) -> int:
        version = (self.versions[-1] if self.versions else 0) + 1
        staged = self.scratch / f"in-{version}"
        shutil.copytree(MODEL_VERSION_DIR, staged)
        staged.rename(self.base / str(version))
        self.versions.append(version)
        while len(self.versions) > self.keep:
            old = self.versions.pop(0)
            gone = self.scratch / f"out-{old}"
            (self.base / str(old)).rename(gone)
            shutil.rmtree(gone)
        return version


class Loop(threading.Thread):
    """A daemon thread with a stop event; ``t()`` is seconds since the soak's start."""

    def __init__(self, name: str, t0: float) -> None:
        super().__init__(name=name, daemon=True)
        self.t0 = t0
        self.halt = threading.Event()

    def t(self) -> float:
        return time.monotonic() - self.t0

    def close(self, timeout: float = 30.0) -> None:
        self.halt.set()
        if self.is_alive():
            self.join(timeout)


class Sampler(Loop):
    """RSS of each role's current PID (``pids`` is asked each time: a restarted
    loader has a new one) every SAMPLE_EVERY_S: ``(seconds, role, pid, KiB)``."""

    def __init__(self, pids: Callable[[], dict[str, int]], t0: float) -> None:
        super().__init__("rss-sampler", t0)
        self.pids = pids
        self.samples: list[tuple[float, str, int, int]] = []

    def run(self) -> None:
        while True:
            t = self.t()
            for role, pid in self.pids().items():
                kib = rss_kib(pid) if pid else None
                if kib:
                    self.samples.append((round(t, 2), role, pid, kib))
            if self.halt.wait(SAMPLE_EVERY_S):
                return


class Prober(Loop):
    """One grpcio Predict every PROBE_EVERY_S that checks y (h2load cannot see
    ``grpc-status``): the first time each version answered, and every failure."""

    def __init__(self, server: str, address: str, request: bytes, t0: float) -> None:
        super().__init__(f"probe-{server}", t0)
        self.address, self.request = address, request
        self.first_seen: dict[int, float] = {}
        self.failures: list[tuple[float, str]] = []
        self.requests = 0

    def run(self) -> None:
        import grpc
        import numpy as np
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        request = predict_pb2.PredictRequest.FromString(self.request)
        with grpc.insecure_channel(self.address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not self.halt.wait(PROBE_EVERY_S):
                t = self.t()
                self.requests += 1
                try:
                    reply = stub.Predict(request, timeout=5)
                    y = reply.outputs["y"]
                    values = np.frombuffer(y.tensor_content, np.float32).tolist() or list(
                        y.float_val
                    )
                    if values != [EXPECTED]:
                        raise ValueError(f"y = {values}")
                    self.first_seen.setdefault(int(reply.model_spec.version.value), round(t, 2))
                except (grpc.RpcError, ValueError) as err:
                    detail = (
                        f"{err.code().name}: {err.details()}"
                        if isinstance(err, grpc.RpcError)
                        else str(err)
                    )
                    self.failures.append((round(t, 2), detail))


Action = Callable[[], dict[str, Any]]


class Actions(Loop):
    """Runs the plan's actions at their times, one at a time; each returns what
    it did (and, for a new version, the server and version the probes should see)."""

    def __init__(self, plan: Sequence[tuple[float, str]], actions: dict[str, Action], t0: float):
        super().__init__("soak-actions", t0)
        self.plan, self.actions = plan, actions
        self.records: list[dict[str, Any]] = []

    def run(self) -> None:
        for at, kind in self.plan:
            if self.halt.wait(max(0.0, at - self.t())):
                return
            started = self.t()
            record: dict[str, Any] = {"t": round(started, 2), "kind": kind, "ok": True, "error": ""}
            try:
                record.update(self.actions[kind]())
            except Exception as err:
                record.update(ok=False, error=f"{type(err).__name__}: {str(err)[-1500:]}")
            record["seconds"] = round(self.t() - started, 2)
            print(
                f"  [{started:6.1f} s] {kind}: {record.get('detail', '')} "
                f"{'ok' if record['ok'] else 'FAILED ' + record['error']}",
                flush=True,
            )
            self.records.append(record)


# ---------------------------------------------------------------- the soak


@dataclass(frozen=True)
class Options:
    minutes: int
    slice_seconds: float
    connections: int
    rate: float  # requests/s per API per server


class Soak:
    """The stack, the config server and the load; ``run`` returns the document."""

    def __init__(self, stack: SoakStack, work: Path, options: Options) -> None:
        self.stack, self.work, self.options = stack, work, options
        self.config_server: ServerProcess | None = None
        self.config_rest = 0  # chosen when the server starts, after the stack's ports
        self.request = b""
        self.loops: list[Loop] = []
        self.published = 0
        self.config_path = work / "models.config"
        self.configs = [
            config_text(work / "config-models" / MODEL, work / "config-models" / SIDE_MODEL, wide)
            for wide in (False, True)
        ]
        self.reloads = 0
        self.loadavg = 0.0
        self.dirs = VersionDirs(work / "config-models" / MODEL, work / "scratch")

    # ------------------------------------------------------------- start

    def start(self) -> None:
        from functions.devstack.watch import AssignmentWatcher

        stack = self.stack
        print("starting SeaweedFS, tansu, the loader ...", flush=True)
        stack.start_infra()
        stack.export_env()  # rollway publish, in this process, writes to the stack's S3
        stack.start_loader()
        watcher = AssignmentWatcher(stack.bootstrap)
        try:
            self.publish()
            watcher.wait_for(MODEL, 1, 120)
        finally:
            watcher.close()
        print("starting serve --assignments and serve --model_config_file ...", flush=True)
        stack.start_serving(180)
        self.dirs.add_next()
        shutil.copytree(MODEL_VERSION_DIR, self.work / "config-models" / SIDE_MODEL / "1")
        self.config_path.write_text(self.configs[0])
        self.config_rest = free_port()
        self.config_server = ServerProcess(
            [
                f"--model_config_file={self.config_path}",
                f"--rest_api_port={self.config_rest}",
                f"--monitoring_config_file={stack.monitoring}",
                "--file_system_poll_wait_seconds=1",
                "--log_format=json",
            ],
            self.work / "serve-config.log",
        ).start()
        self.config_server.wait_serving(timeout=180)
        request = self.request = predict_request()
        for port, rest in self.ports().values():
            check_predict(port, request)
            check_rest(f"http://{LOOPBACK}:{rest}/v1/models/{MODEL}:predict")

    def ports(self) -> dict[str, tuple[int, int]]:
        """(gRPC, REST) port of each server."""
        assert self.config_server is not None
        return {
            "assignments": (self.stack.grpc_port, self.stack.rest_port),
            "config": (self.config_server.port, self.config_rest),
        }

    def logs(self) -> dict[str, Path]:
        return {
            SERVERS["assignments"]: self.stack.workdir / "serve.log",
            SERVERS["config"]: self.work / "serve-config.log",
            "loader": self.stack.workdir / "loader.log",
        }

    def running(self) -> dict[str, bool]:
        """Whether each process still ran when the load ended (none may have died)."""
        stack, config = self.stack, self.config_server
        return {
            SERVERS["assignments"]: bool(stack.serving and stack.serving.running()),
            SERVERS["config"]: bool(config and config.proc and config.proc.poll() is None),
            "loader": bool(stack.loader and stack.loader.running()),
        }

    def pids(self) -> dict[str, int]:
        stack, config = self.stack, self.config_server
        return {
            SERVERS["assignments"]: stack.serving.pid if stack.serving else 0,
            SERVERS["config"]: config.proc.pid if config and config.proc else 0,
            "loader": stack.loader.pid if stack.loader else 0,
        }

    # ----------------------------------------------------------- actions

    def publish(self) -> dict[str, Any]:
        """``rollway publish`` of the next version (its main, in this process, as
        the demo runs it: no interpreter start on the loaded cores each minute)."""
        from functions import publish_cmd

        version = self.published + 1
        source = self.work / "src" / MODEL / str(version)
        shutil.copytree(MODEL_VERSION_DIR, source)
        argv = [
            str(source),
            f"{self.stack.landing}/{MODEL}",
            "--version",
            str(version),
            "--kafka-bootstrap-servers",
            self.stack.bootstrap,
            "--no-check",
            "--progress",
            "never",
        ]
        code = publish_cmd.main(argv)
        if code != 0:
            raise RuntimeError(f"rollway publish exited {code}")
        self.published = version
        return {
            "detail": f"published version {version}",
            "server": "assignments",
            "version": version,
        }

    def reload(self) -> dict[str, Any]:
        """HandleReloadConfigRequest with the other config."""
        import grpc
        from google.protobuf import text_format
        from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

        self.reloads += 1
        which = self.reloads % 2
        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(self.configs[which], request.config)
        assert self.config_server is not None
        with grpc.insecure_channel(self.config_server.address) as channel:
            reply = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
                request, timeout=60
            )
        if reply.status.error_code:
            raise RuntimeError(f"reload answered {reply.status}")
        return {"detail": "config B (latest 2 + side)" if which else "config A (latest 1)"}

    def new_version_dir(self) -> dict[str, Any]:
        version = self.dirs.add_next()
        return {
            "detail": f"version {version} renamed in, keeping {self.dirs.versions}",
            "server": "config",
            "version": version,
        }

    def restart_loader(self) -> dict[str, Any]:
        """SIGTERM to the loader (it must exit 0), then a new one, until it consumes."""
        loader = self.stack.loader
        assert loader is not None
        code = loader.stop()
        self.stack.start_loader()
        if code != 0:
            raise RuntimeError(f"the loader exited {code} on SIGTERM")
        new = self.stack.loader.pid if self.stack.loader else 0
        return {"detail": f"old loader exited {code}; new pid {new} consuming"}

    # -------------------------------------------------------------- load

    def scrape(self) -> dict[str, dict[str, float] | None]:
        """Each server's request counts by status; None for a server whose scrape failed."""
        out: dict[str, dict[str, float] | None] = {}
        for server, (_, rest) in self.ports().items():
            try:
                url = f"http://{LOOPBACK}:{rest}{METRICS_PATH}"
                with urllib.request.urlopen(url, timeout=10) as reply:
                    out[server] = request_counts(reply.read().decode())
            except OSError:
                out[server] = None
        return out

    def load_slice(self) -> dict[str, dict[str, Any]]:
        """The four loads at once for one slice: ``server/api`` -> Load, or its error."""
        from tests.bench.loadgen import h2load_grpc_paced, wrk_post_paced

        o, results = self.options, {}

        def run(key: str, measure: Callable[[], Any]) -> None:
            try:
                results[key] = asdict(measure())
            except Exception as err:
                results[key] = {"error": f"{type(err).__name__}: {str(err)[-1500:]}"}

        threads = []
        for server, (port, rest) in self.ports().items():
            url = f"http://{LOOPBACK}:{rest}/v1/models/{MODEL}:predict"
            runs: dict[str, Callable[[], Any]] = {
                "grpc": functools.partial(
                    h2load_grpc_paced,
                    LOOPBACK,
                    port,
                    PREDICT,
                    self.request,
                    o.connections,
                    o.slice_seconds,
                    o.rate,
                ),
                "rest": functools.partial(
                    wrk_post_paced, url, REST_BODY, o.connections, o.slice_seconds, o.rate
                ),
            }
            for api, measure in runs.items():
                thread = threading.Thread(
                    target=run, args=(f"{server}/{api}", measure), daemon=True
                )
                thread.start()
                threads.append(thread)
        for thread in threads:
            thread.join()
        return results

    def run(self) -> dict[str, Any]:
        o = self.options
        duration = o.minutes * o.slice_seconds
        plan = schedule(duration)
        t0 = time.monotonic()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        self.loadavg = round(os.getloadavg()[0], 2)  # the machine's other load, at the start
        sampler = Sampler(self.pids, t0)
        probers = {
            server: Prober(server, f"{LOOPBACK}:{port}", self.request, t0)
            for server, (port, _) in self.ports().items()
        }
        actions = Actions(
            plan,
            {
                "publish": self.publish,
                "reload": self.reload,
                "version_dir": self.new_version_dir,
                LOADER_RESTART: self.restart_loader,
            },
            t0,
        )
        self.loops = [sampler, *probers.values(), actions]
        for loop in self.loops:
            loop.start()
        slices: list[dict[str, Any]] = []
        counts = self.scrape()
        interrupted = False
        try:
            for minute in range(o.minutes):
                print(f"slice {minute + 1}/{o.minutes} ...", flush=True)
                loads = self.load_slice()
                after = self.scrape()
                slices.append(
                    {
                        "end_s": time.monotonic() - t0,
                        "loads": loads,
                        "server_non_ok": {s: non_ok(counts[s], after[s]) for s in after},
                    }
                )
                counts = after
                print(
                    "  " + ", ".join(f"{k}: {_ms(v)}" for k, v in sorted(loads.items())), flush=True
                )
        except KeyboardInterrupt:
            interrupted = True
            print("interrupted: stopping and writing what was measured", flush=True)
        finally:
            for loop in self.loops:
                loop.close(120 if loop is actions else 30)
        return self.document(slices, sampler, probers, actions, plan, started, interrupted)

    def document(
        self,
        slices: list[dict[str, Any]],
        sampler: Sampler,
        probers: Mapping[str, Prober],
        actions: Actions,
        plan: list[tuple[float, str]],
        started: str,
        interrupted: bool,
    ) -> dict[str, Any]:
        o = self.options
        rows = minute_rows(slices, {s: [t for t, _ in p.failures] for s, p in probers.items()})
        series = rss_series(sampler.samples)
        growth = {name: rss_growth(points) for name, points in series.items()}
        events = effect_times(actions.records, {s: p.first_seen for s, p in probers.items()})
        return {
            "meta": {
                "date": started,
                "cpus": os.cpu_count(),
                "loadavg_start": self.loadavg,
                "loadavg_end": round(os.getloadavg()[0], 2),
                "minutes": o.minutes,
                "slice_seconds": o.slice_seconds,
                "connections": o.connections,
                "rate_per_api_per_server": o.rate,
                "periods_s": PERIODS,
                "interrupted": interrupted,
                "running_at_the_end": self.running(),
                "log_problems": {name: log_problems(path) for name, path in self.logs().items()},
                "versions": versions(),
                "tools": {
                    "h2load": tool_version(["h2load", "--version"]),
                    "wrk": tool_version(["wrk", "-v"]),
                },
            },
            "minutes": rows,
            "probes": {
                s: {"requests": p.requests, "failures": p.failures, "first_seen": p.first_seen}
                for s, p in probers.items()
            },
            "events": events,
            "planned": [[at, kind] for at, kind in plan],
            "rss": {
                "samples": [list(s) for s in sampler.samples],
                "growth": {k: None if g is None else asdict(g) for k, g in growth.items()},
            },
            "verdict": verdict(rows, growth, events),
        }

    def close(self) -> None:
        for loop in self.loops:
            loop.halt.set()
        stop_own_load_tools()
        if self.config_server is not None:
            self.config_server.stop()


# ------------------------------------------------------------------ output


def _ms(load: Mapping[str, Any]) -> str:
    if "error" in load:
        return f"run failed ({str(load['error'])[:120]})".replace("|", "\\|")
    cell = f"{load['requests_per_second']:,.0f}/s, {load['p50_ms']:.1f} / {load['p99_ms']:.1f} ms"
    return cell + (f", **{load['errors']} errors**" if load["errors"] else "")


def _mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


def markdown(document: Mapping[str, Any]) -> str:
    meta, v = document["meta"], document["verdict"]
    keys = [f"{s}/{a}" for s in SERVERS for a in APIS]
    lines = [
        "# Soak: mixed gRPC and REST load with swaps, reloads and a loader restart",
        "",
        f"{meta['date']} · {meta['cpus']} CPUs · {meta['minutes']} x {meta['slice_seconds']:g} s"
        f" · {meta['connections']} connections per load, paced to "
        f"{meta['rate_per_api_per_server']:g} requests/s each · TF Serving's `{MODEL}`"
        + (" · **interrupted**" if meta["interrupted"] else ""),
        "",
        "Two single-process servers on 127.0.0.1, each loaded by h2load (gRPC Predict) and "
        "wrk (REST `:predict`) at once: `rollway serve --assignments --follow=kafka` (a new "
        "version published every 60 s, swapped under load) and `rollway serve "
        "--model_config_file` (HandleReloadConfigRequest alternating two configs every 30 s; "
        "a new version directory renamed in every 45 s, the oldest removed). The loader gets "
        "SIGTERM and starts again halfway. Cells: requests/s, p50 / p99 latency.",
        "",
        f"| {'minute' if meta['slice_seconds'] == 60 else 'slice'} | "
        + " | ".join(f"{SERVERS[k.split('/')[0]]} {APIS[k.split('/')[1]]}" for k in keys)
        + " | failed requests |",
        "|---:|" + "---:|" * len(keys) + "---:|",
    ]
    for row in document["minutes"]:
        failed = failures_of(row)
        detail = []
        for server, statuses in row["server_non_ok"].items():
            detail += [f"{server} {status} {n}" for status, n in statuses.items()]
        detail += [f"probe {s} {n}" for s, n in row["probe_failures"].items() if n]
        cells = " | ".join(_ms(row["loads"].get(k, {"error": "missing"})) for k in keys)
        total = f"**{failed}** ({', '.join(detail)})" if detail else str(failed)
        lines.append(f"| {row['minute']} | {cells} | {total} |")
    lines += [
        "",
        "## RSS",
        "",
        "| process | at the end of its minute 1 | at the end | growth | target | result |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, g in document["rss"]["growth"].items():
        if g is None:
            lines.append(
                f"| {name} | — | — | — | < {TARGET_GROWTH_PCT:g} % | "
                "not judged (lived under a minute and 20 s) |"
            )
            continue
        ok = g["growth_pct"] < TARGET_GROWTH_PCT
        lines.append(
            f"| {name} | {_mib(g['base_kib'])} (t = {g['start_t']:.0f} s) | {_mib(g['end_kib'])}"
            f" | {g['growth_pct']:+.1f} % | < {TARGET_GROWTH_PCT:g} % | "
            f"{'PASS' if ok else 'FAIL'} |"
        )
    lines += [
        "",
        "## Actions",
        "",
        "| t | action | what | took | result |",
        "|---:|---|---|---:|---|",
    ]
    for e in document["events"]:
        took = "—" if e.get("took_s") is None else f"{e['took_s']:.1f} s"
        result = "ok" if e["ok"] else f"FAILED: {e['error']}".replace("|", "\\|")[:300]
        lines.append(
            f"| {e['t']:.0f} s | {e['kind']} | {e.get('detail', '')} | {took} | {result} |"
        )
    probes = document["probes"]
    lines += [
        "",
        "## Verdict",
        "",
        f"- failed requests: {v['failed_requests']} (target 0): "
        f"{'PASS' if v['requests_ok'] else 'FAIL'}. Counted: h2load's and wrk's non-2xx, "
        "failed, errored and timed-out requests, each server's non-OK `request_count`, and "
        "the grpcio probes ("
        + ", ".join(f"{s}: {p['requests']} requests" for s, p in probes.items())
        + ").",
        "- RSS growth after the first minute: "
        + (
            f"worst {v['max_growth_pct']:+.1f} %"
            if v["max_growth_pct"] is not None
            else "no process lived long enough to be judged"
        )
        + f" (target < {v['target_growth_pct']:g} %): {'PASS' if v['rss_ok'] else 'FAIL'}.",
        f"- actions that did not take effect: {v['events_failed']}: "
        f"{'PASS' if v['events_ok'] else 'FAIL'}.",
        f"- overall: **{'PASS' if v['pass'] else 'FAIL'}**.",
    ]
    dead = [name for name, alive in meta.get("running_at_the_end", {}).items() if not alive]
    if dead:
        lines.append(f"- **exited before the end of the load**: {', '.join(dead)}.")
    problems = {name: len(found) for name, found in meta.get("log_problems", {}).items() if found}
    lines.append(
        "- log lines at WARNING or above (the first ones are in soak.json): "
        + (", ".join(f"{name} {n}" for name, n in problems.items()) if problems else "none")
        + "."
    )
    lines += ["", "![RSS over time and p99 per minute](soak.png)"]
    return "\n".join(lines) + "\n"


MARKERS = {
    "publish": ("tab:green", "publish (generation swap)"),
    "reload": ("tab:purple", "config reload"),
    "version_dir": ("tab:orange", "version directory renamed in"),
    LOADER_RESTART: ("tab:red", "loader restart"),
}


def chart(document: Mapping[str, Any], path: Path) -> None:
    """RSS over time: the servers, then the loader (each with its own scale, so
    that growth shows), the +10 % line over each judged process's minute-1 RSS,
    and the actions marked; below, each load's p99 per slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, panels = plt.subplots(
        3, 1, figsize=(11, 9), sharex=True, gridspec_kw={"height_ratios": [3, 2, 2]}
    )
    growth = document["rss"]["growth"]
    colors = {role: f"C{i}" for i, role in enumerate([*SERVERS.values(), "loader"])}
    for name, points in rss_series(document["rss"]["samples"]).items():
        role, _, instance = name.partition(" #")
        axis = panels[1] if role == "loader" else panels[0]
        color = colors.get(role, "C5")
        axis.plot(
            [t / 60 for t, _ in points],
            [k / 1024 for _, k in points],
            color=color,
            ls=":" if instance else "-",
            label=name,
        )
        if growth.get(name):
            limit = growth[name]["base_kib"] * (1 + TARGET_GROWTH_PCT / 100) / 1024
            axis.axhline(limit, color=color, lw=0.8, ls="-.", alpha=0.6)
    for kind, (color, label) in MARKERS.items():
        times = [e["t"] / 60 for e in document["events"] if e["kind"] == kind]
        for i, t in enumerate(times):
            for axis in panels:
                axis.axvline(
                    t,
                    color=color,
                    alpha=0.4,
                    lw=2.0 if kind == LOADER_RESTART else 0.8,
                    ls="--",
                    label=None if i or axis is not panels[0] else label,
                )
    panels[0].set_title(
        f"Soak · {document['meta']['date']} · RSS every {SAMPLE_EVERY_S:g} s "
        f"(dash-dot: +{TARGET_GROWTH_PCT:g} % over minute 1)"
    )
    panels[0].set_ylabel("servers' RSS (MiB)")
    panels[1].set_ylabel("loader's RSS (MiB)")
    rows = document["minutes"]
    for server, label in SERVERS.items():
        for api, api_label in APIS.items():
            key = f"{server}/{api}"
            points = [
                ((r["start_s"] + r["end_s"]) / 120, r["loads"][key]["p99_ms"])
                for r in rows
                if "p99_ms" in r["loads"].get(key, {})
            ]
            panels[2].plot(
                [x for x, _ in points],
                [y for _, y in points],
                marker="o",
                label=f"{label} {api_label}",
            )
    panels[2].set_ylabel("p99 per slice (ms)")
    panels[2].set_xlabel("minutes since the load started")
    panels[2].set_ylim(bottom=0)
    for axis in panels:
        axis.legend(fontsize=7, ncol=2, loc="lower left" if axis is panels[2] else "best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(document: Mapping[str, Any], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(document, indent=1) + "\n")
    table = markdown(document)
    (out / "soak.md").write_text(table)
    chart(document, out / "soak.png")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10, help="load slices (default 10)")
    parser.add_argument(
        "--slice-seconds",
        type=float,
        default=60.0,
        help="seconds per slice: one row of the table (default 60)",
    )
    parser.add_argument("--connections", type=int, default=8, help="per load (default 8)")
    parser.add_argument(
        "--rate",
        type=float,
        default=300.0,
        help="requests/s of each of the four loads (default 300)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--workdir", type=Path, help="keep the logs and files here (default: a temporary directory)"
    )
    args = parser.parse_args(argv)
    if args.minutes < 1 or args.slice_seconds < 5:
        parser.error("--minutes must be >= 1 and --slice-seconds >= 5")
    from functions.devstack.children import interrupt_on_signals
    from tests.bench.loadgen import ensure_tools

    try:
        import matplotlib  # noqa: F401  (fail before minutes of load, not after)
    except ImportError:
        parser.error("matplotlib is missing: it is in the dev extras (`make venv`)")
    ensure_tools()
    interrupt_on_signals()  # SIGINT and SIGTERM unwind through the finally blocks below
    options = Options(args.minutes, args.slice_seconds, args.connections, args.rate)
    with tempfile.TemporaryDirectory(prefix="rollway-bench-soak-") as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        (work / "monitoring.config").write_text(
            f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n'
        )
        stack = SoakStack(work / "stack", work / "monitoring.config")
        with stack:
            soak = Soak(stack, work, options)
            try:
                soak.start()
                document = soak.run()
            finally:
                soak.close()
    if not document["minutes"]:
        print("no slice finished: nothing written")
        return 1
    print(write_results(document, args.out))
    if document["meta"]["interrupted"]:
        return 130  # the shell's code for SIGINT: what was written is partial
    return 0  # as the other benchmarks: a missed target is reported, not an exit status


if __name__ == "__main__":
    raise SystemExit(main())
