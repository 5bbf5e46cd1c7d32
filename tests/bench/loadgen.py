"""C load generators for the benchmarks: ``h2load`` for gRPC, ``wrk`` for REST.

Python clients on the same two cores measure the client, so load comes from
Debian's ``nghttp2-client`` (h2load) and ``wrk``. Each driver returns one
:class:`Load`: throughput, p50 and p99 latency, completed requests and errors.
The parsers of the tools' output are pure functions (unit-tested without the
tools). The ``*_paced`` drivers cap the rate, for long runs that must leave the
cores to the servers (the soak); with rate 0 they are the plain ones.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

TOOLS = {"h2load": "nghttp2-client", "wrk": "wrk"}
WARM_UP_SECONDS = 1.0


@dataclass(frozen=True)
class Load:
    """One load run: completed requests per second over the measured window."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int  # completed
    errors: int  # failed / non-2xx


def _missing() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def ensure_tools() -> None:
    """Makes ``h2load`` and ``wrk`` present, installing their Debian packages if not.

    Runs ``apt-get install`` (as root, quiet, non-interactive), and ``apt-get
    update`` only if that install fails. Raises :class:`RuntimeError` naming the
    missing tools if they are still absent.
    """
    if not _missing():
        return
    packages = sorted({TOOLS[tool] for tool in _missing()})
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", *packages]
    detail = ""
    try:
        done = subprocess.run(install, check=False, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
            done = subprocess.run(install, check=False, env=env, capture_output=True, text=True)
        detail = (done.stderr or done.stdout).strip()[-2000:]
    except OSError as err:  # no apt-get on this machine
        detail = str(err)
    if missing := _missing():
        raise RuntimeError(
            f"load generators missing: {', '.join(missing)}; install the Debian packages "
            f"{' '.join(packages)} (`apt-get install -y {' '.join(packages)}`, as root). "
            f"apt-get said: {detail or 'nothing'}"
        )


def grpc_frame(message: bytes) -> bytes:
    """One gRPC message on the wire: uncompressed flag, 4-byte big-endian length, bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def percentile_ms(micros: Sequence[int], q: float) -> float:
    """The nearest-rank ``q``-th percentile of ``micros``, in milliseconds (0 if empty)."""
    if not micros:
        return 0.0
    ordered = sorted(micros)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1] / 1000.0


def parse_h2load_log(lines: Iterable[str]) -> tuple[list[int], int]:
    """Parses h2load's ``--log-file``: (latencies in microseconds of 2xx responses, errors).

    Each row is ``start_us<TAB>status<TAB>duration_us``; status -1 is a failed
    stream, and every status outside 200-299 counts as an error.
    """
    ok: list[int] = []
    errors = 0
    for line in lines:
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        status, micros = int(fields[1]), int(fields[2])
        if 200 <= status < 300:
            ok.append(micros)
        else:
            errors += 1
    return ok, errors


_H2LOAD_FAILED = re.compile(r"^requests: .*?(\d+) failed, (\d+) errored, (\d+) timeout", re.M)


def parse_h2load_summary(text: str) -> int:
    """Requests h2load counts as failed, errored or timed out in its summary (not logged ones)."""
    match = _H2LOAD_FAILED.search(text)
    return sum(int(n) for n in match.groups()) if match else 0


def h2load_grpc(
    host: str,
    port: int,
    method: str,
    message: bytes,
    connections: int,
    seconds: float,
    streams: int = 1,
    threads: int = 1,
) -> Load:
    """Drives a unary gRPC ``method`` (e.g. ``/tensorflow.serving.PredictionService/Predict``)
    with h2load: ``connections`` HTTP/2 connections, ``streams`` concurrent
    streams each, for ``seconds`` after a short warm-up, posting
    ``grpc_frame(message)``.

    h2load sees HTTP status only, never the ``grpc-status`` trailer: a gRPC
    error still answers HTTP 200 and counts as a success here. Callers must
    verify one real response separately (e.g. with a grpcio stub) before
    trusting the numbers.
    """
    return h2load_grpc_paced(host, port, method, message, connections, seconds, 0, streams, threads)


def h2load_grpc_paced(
    host: str,
    port: int,
    method: str,
    message: bytes,
    connections: int,
    seconds: float,
    rate: float,
    streams: int = 1,
    threads: int = 1,
) -> Load:
    """:func:`h2load_grpc` at about ``rate`` requests/s in all (h2load's
    ``--rps``, per connection: ``rate / connections``, at least 1), so that a
    long run leaves CPU to the rest of the machine; ``rate`` 0 is unpaced,
    exactly :func:`h2load_grpc`. The same caveat: ``grpc-status`` is not seen.
    """
    ensure_tools()
    threads = max(1, min(threads, connections))
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        body, log = Path(tmp) / "request.bin", Path(tmp) / "requests.log"
        body.write_bytes(grpc_frame(message))
        argv = h2load_argv(
            f"http://{host}:{port}{method}", body, log, connections, seconds, streams, threads,
            paced_per_connection(rate, connections),
        )  # fmt: skip
        done = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=seconds + 60
        )
        if done.returncode != 0 or not log.exists():
            raise RuntimeError(f"h2load failed ({done.returncode}): {done.stdout}{done.stderr}")
        with log.open() as rows:
            micros, errors = parse_h2load_log(rows)
    errors = max(errors, parse_h2load_summary(done.stdout))
    return Load(
        requests_per_second=len(micros) / seconds,
        p50_ms=percentile_ms(micros, 50),
        p99_ms=percentile_ms(micros, 99),
        requests=len(micros),
        errors=errors,
    )


def paced_per_connection(rate: float, connections: int) -> int:
    """Requests/s for each of ``connections`` to make about ``rate`` in all; 0 (unpaced)
    when ``rate`` is 0, else at least 1."""
    if rate <= 0:
        return 0
    return max(1, round(rate / max(1, connections)))


def h2load_argv(
    url: str,
    body: Path,
    log: Path,
    connections: int,
    seconds: float,
    streams: int = 1,
    threads: int = 1,
    rps_per_connection: int = 0,
) -> list[str]:
    """h2load's command line for a gRPC POST of the framed ``body``, each request
    logged to ``log``; ``--rps`` only when ``rps_per_connection`` is positive."""
    argv = [
        "h2load", url,
        "-c", str(connections), "-m", str(streams), "-t", str(threads),
        "-D", f"{seconds:g}", f"--warm-up-time={WARM_UP_SECONDS:g}",
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        "--data", str(body), f"--log-file={log}",
    ]  # fmt: skip
    if rps_per_connection > 0:
        argv.append(f"--rps={rps_per_connection}")
    return argv


# Prints one machine-readable line when wrk finishes: latencies are microseconds.
_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("ROLLWAY_WRK %d %d %d %d %d %d %d %d %d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
"""

_WRK_LINE = re.compile(r"^ROLLWAY_WRK((?: -?\d+){9})$", re.M)


def parse_wrk_output(text: str) -> Load:
    """Parses the ``ROLLWAY_WRK`` line our wrk script's ``done`` writes.

    wrk's ``summary.requests`` counts every completed response; those with a
    status >= 400 (``errors.status``: wrk's "Non-2xx or 3xx responses") and
    socket errors count as errors, and are subtracted from ``requests``.
    """
    match = _WRK_LINE.search(text)
    if match is None:
        raise ValueError(f"no ROLLWAY_WRK line in wrk's output:\n{text}")
    total, duration_us, p50_us, p99_us, status, *socket = (int(n) for n in match[1].split())
    failed_responses = min(status, total)
    seconds = duration_us / 1e6
    return Load(
        requests_per_second=(total - failed_responses) / seconds if seconds else 0.0,
        p50_ms=p50_us / 1000.0,
        p99_ms=p99_us / 1000.0,
        requests=total - failed_responses,
        errors=failed_responses + sum(socket),
    )


def wrk_script(body_path: Path, content_type: str) -> str:
    """The Lua script for a POST of the file at ``body_path``."""
    return _WRK_SCRIPT.format(content_type=content_type, body=str(body_path))


def wrk_paced_script(body_path: Path, content_type: str, delay_ms: float) -> str:
    """:func:`wrk_script` whose connections each wait ``delay_ms`` after a response
    before the next request (wrk's ``delay`` hook; latency excludes the wait)."""
    hook = f"delay = function() return {max(0, round(delay_ms))} end\n" if delay_ms > 0 else ""
    return wrk_script(body_path, content_type) + hook


def wrk_post(
    url: str,
    body: bytes,
    connections: int,
    seconds: float,
    threads: int = 1,
    content_type: str = "application/json",
) -> Load:
    """Drives ``url`` with wrk POSTing ``body`` on ``connections`` keep-alive
    connections for ``seconds``. Responses with status >= 400 and socket errors
    count as errors; percentiles are wrk's (its ``--latency`` histogram, over
    all responses), throughput counts successful responses only.
    """
    return wrk_post_paced(url, body, connections, seconds, 0, threads, content_type)


def wrk_post_paced(
    url: str,
    body: bytes,
    connections: int,
    seconds: float,
    rate: float,
    threads: int = 1,
    content_type: str = "application/json",
) -> Load:
    """:func:`wrk_post` at no more than about ``rate`` requests/s in all: each
    connection waits ``connections / rate`` seconds after each response (so the
    rate reached is a little lower, by the response time); ``rate`` 0 is
    unpaced, exactly :func:`wrk_post`.
    """
    ensure_tools()
    threads = max(1, min(threads, connections))
    delay_ms = 1000.0 * connections / rate if rate > 0 else 0.0
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        body_path, script = Path(tmp) / "body", Path(tmp) / "post.lua"
        body_path.write_bytes(body)
        script.write_text(wrk_paced_script(body_path, content_type, delay_ms))
        argv = [
            "wrk", "-c", str(connections), "-t", str(threads), "-d", f"{max(1, round(seconds))}s",
            "--latency", "-s", str(script), url,
        ]  # fmt: skip
        done = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=seconds + 60
        )
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
        return parse_wrk_output(done.stdout)
