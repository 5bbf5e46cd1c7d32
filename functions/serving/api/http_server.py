"""The HTTP transport of the REST APIs: uvicorn, with the httptools parser, on
a socket bound here, in its own asyncio event loop on a daemon thread.

``serve_http(app, options)`` serves any ASGI application; ``Dispatcher``
mounts several route tables (TF Serving's REST API today, the Open Inference
Protocol's ``/v2`` later) on one port. The contract:

* **Binding.** ``reuse_port=True`` sets SO_REUSEPORT, so several processes
  share the port and the kernel spreads connections over them; without it a
  port already in use raises ``BindError`` naming the address.
* **Slow clients.** A request's head and whole body must arrive within
  ``read_timeout_seconds``, counted from the connection (first request) or
  the request's first byte (later ones). A late body gets a JSON 408 and the
  connection is closed; a head that never completes is just closed. Idle
  keep-alive connections close after ``keep_alive_seconds``. A waiting
  connection costs a few kilobytes on the loop and no thread, so thousands of
  them do not keep real clients from being answered.
* **Bodies.** Applications read bodies as they stream and enforce their own
  limit (413 with their own headers). When an application answers before the
  body is in, the rest is read and dropped, never buffered, and the connection
  is closed once more than twice ``max_request_bytes`` has been dropped.
* **Drain.** ``HttpServer.close()`` stops accepting, closes idle connections,
  lets every request in flight send its whole response, and returns when that
  is done or after ``drain_seconds``. ASGI lifespan shutdown then runs, which
  ``Dispatcher`` turns into its applications' ``close()``.
* **Quiet.** No signal handlers (the process owns SIGTERM), no access log, no
  ``Server`` header; uvicorn's errors and warnings still reach the log.

Why uvicorn with httptools: on half_plus_two's REST predict (``wrk -t1 -c32``,
on two cores shared with other test runs, interleaved runs) it answered
1,670-3,950 requests/s, against 1,550-1,970/s for Hypercorn (h11, pure
Python) and 1,310-1,760/s for the waitress WSGI server it replaces (README.md,
"Why uvicorn serves the REST API"). Its parser is C (llhttp), and its protocol
class is small enough to extend with the read timeout it lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from functions.serving.api.http_errors import error_body
from loader.errors import FailedPrecondition

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_LISTEN_BACKLOG = 2048
_START_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class HttpServerOptions:
    host: str
    port: int
    reuse_port: bool = False
    read_timeout_seconds: float = 10.0
    max_request_bytes: int = 256 * 2**20
    drain_seconds: float = 10.0
    # Above the idle timeouts of the proxies in front (Knative's queue-proxy,
    # Envoy, Go's 90 s), so a proxy never reuses a connection as it closes.
    keep_alive_seconds: int = 120


class BindError(FailedPrecondition):
    """The listening socket could not be bound (the port is in use, say)."""


class Dispatcher:
    """Route tables on one port: the first mount whose prefix starts the path
    answers, else ``default``. Owns the ASGI lifespan: on shutdown it calls
    ``close()`` on every application that has one."""

    def __init__(self, default: AsgiApp, mounts: Mapping[str, AsgiApp] | None = None) -> None:
        self._default = default
        self._mounts = tuple((mounts or {}).items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope.get("path", "")
        for prefix, app in self._mounts:
            if path.startswith(prefix):
                await app(scope, receive, send)
                return
        await self._default(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for app in (self._default, *(app for _, app in self._mounts)):
                    close = getattr(app, "close", None)
                    if close is not None:
                        close()
                await send({"type": "lifespan.shutdown.complete"})
                return


class _Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a read timeout per request.

    uvicorn bounds only idle keep-alive connections (and cancels that timer on
    any byte), so a client that sends its head or body a byte at a time holds
    a connection, and its slot in a proxy, forever (slowloris). One timer per
    request fixes that: armed when the connection opens or the request's first
    byte arrives, disarmed when the request is complete; when it fires a late
    body gets 408 and the connection is closed.
    """

    read_timeout_seconds: ClassVar[float]
    max_request_bytes: ClassVar[int]

    _read_timer: asyncio.TimerHandle | None = None
    _head_done = False
    _close_when_read = False
    _dropped = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_done = False
        self._dropped = 0
        if self._read_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._head_done = True
        super().on_headers_complete()
        if self.pipeline:  # queued behind a response: we stopped reading, not the client
            self._disarm()
        # uvicorn closes a non-keep-alive connection as soon as the response is
        # sent; after an early answer (413) with body bytes still arriving, that
        # close resets the connection, and a client still writing never reads
        # the answer. Close only once the request is in (or dropped) instead.
        cycle = self.cycle
        self._close_when_read = cycle is not None and not cycle.keep_alive
        if cycle is not None and self._close_when_read:
            cycle.keep_alive = True

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:  # answered early (413): drop
            # Clients that send their whole body before reading (urllib,
            # requests) see the answer when it is up to twice the limit.
            self._dropped += len(body)
            if self._dropped > 2 * self.max_request_bytes:
                self.transport.close()
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()
        if self._close_when_read and self.cycle is not None and self.cycle.response_complete:
            self.transport.close()

    def on_response_complete(self) -> None:
        if self._close_when_read and self.cycle is not None and not self.cycle.more_body:
            self.transport.close()
        super().on_response_complete()
        cycle = self.cycle
        if cycle is not None and cycle.more_body and self._read_timer is None:
            self._arm()  # a pipelined request whose body is still to come

    def _arm(self) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(self.read_timeout_seconds, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._head_done and cycle is not None and not cycle.response_started:
            payload = error_body(
                f"Request body not received within {self.read_timeout_seconds * 1000:.0f} ms "
                "(--rest_api_read_timeout_in_ms)"
            )
            head = [STATUS_LINE[408]]
            for name, value in [
                *self.server_state.default_headers,
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ]:
                head += [name, b": ", value, b"\r\n"]
            self.transport.write(b"".join([*head, b"\r\n", payload]))
            # The application's receive() now returns http.disconnect and its
            # send() does nothing: this connection has its answer.
            cycle.response_started = cycle.response_complete = cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = threading.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The process's handlers (server.py) own SIGTERM and SIGINT and call
        # HttpServer.close(); uvicorn's would replace them.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


class HttpServer:
    """A running ``serve_http`` server; ``close()`` drains it."""

    def __init__(
        self, server: _Server, thread: threading.Thread, port: int, options: HttpServerOptions
    ) -> None:
        self._server = server
        self._thread = thread
        self._options = options
        self.port = port

    def close(self) -> None:
        """Stops accepting, lets in-flight requests finish (at most
        ``drain_seconds``), closes every connection; blocks until done."""
        self._server.should_exit = True
        self._thread.join(self._options.drain_seconds + 5.0)


def serve_http(app: AsgiApp, options: HttpServerOptions) -> HttpServer:
    """Binds ``options.host:port`` and serves ``app`` there until ``close()``;
    raises ``BindError`` if the address cannot be bound."""
    sock = _bind(options)
    protocol = type(
        "HttpProtocol",
        (_Protocol,),
        {
            "read_timeout_seconds": options.read_timeout_seconds,
            "max_request_bytes": options.max_request_bytes,
        },
    )
    config = uvicorn.Config(
        app,
        loop="asyncio",
        http=protocol,
        ws="none",
        interface="asgi3",
        lifespan="auto",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=options.keep_alive_seconds,
        timeout_graceful_shutdown=math.ceil(options.drain_seconds),
    )
    uvicorn_log = logging.getLogger("uvicorn.error")
    if uvicorn_log.level == logging.NOTSET:  # its INFO lines repeat ours
        uvicorn_log.setLevel(logging.WARNING)
    server = _Server(config)

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException:  # uvicorn exits (SystemExit) on startup failures
            log.exception("the HTTP server on %s:%d stopped", options.host, options.port)
        finally:
            server.listening.set()
            sock.close()

    thread = threading.Thread(target=run, name="rollway-http", daemon=True)
    thread.start()
    server.listening.wait(_START_TIMEOUT_SECONDS)
    if not server.started:
        raise BindError(f"the HTTP server on {options.host}:{options.port} did not start")
    port: int = sock.getsockname()[1]
    log.info("Exporting HTTP/REST API at %s:%d ...", options.host, port)
    return HttpServer(server, thread, port, options)


def _bind(options: HttpServerOptions) -> socket.socket:
    address = f"{options.host}:{options.port}"
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            options.host, options.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise BindError(f"could not bind the HTTP/REST API to {address}: {err}") from err
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only, on Linux
        if options.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(_LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        raise BindError(
            f"could not bind the HTTP/REST API to {address}: {err.strerror or err}"
        ) from err
    return sock
