"""The gRPC transport: a ``grpc.aio`` server on an event loop of its own thread.

Why asyncio: the synchronous ``grpc.server`` hands every RPC from gRPC's
poller to a thread-pool worker and back (condition waits, executor queues);
under load a profile put a third of the time there. ``grpc.aio`` runs the
handlers on one event loop, and the async handlers of the prediction service
(``grpc_api``) call the data plane inline, or on :attr:`executor` where the
runtime needs concurrent calls (batching, TFLite interpreter pools).
Synchronous handlers (ModelService, the profiler: they block for seconds)
run on the same executor, gRPC's "migration thread pool".

The loop runs in a daemon thread so that the process's main thread keeps the
startup sequence, the signals and the drain as plain blocking code; other
threads reach the loop only through :meth:`call` and :meth:`submit`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent import futures
from typing import Any, TypeVar

import grpc

T = TypeVar("T")


class GrpcServer:
    def __init__(self, options: Sequence[tuple[str, int | str]], threads: int) -> None:
        """``options``: the server's channel arguments; ``threads``: the executor
        (--grpc_max_threads) for synchronous handlers and off-loop inference."""
        self.executor = futures.ThreadPoolExecutor(threads, thread_name_prefix="rollway-grpc")
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="rollway-grpc-loop", daemon=True
        )
        self._thread.start()

        async def create() -> grpc.aio.Server:
            return grpc.aio.server(migration_thread_pool=self.executor, options=list(options))

        self.server: grpc.aio.Server = self.call(create())

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Runs ``coroutine`` on the loop and waits for its result (any thread but the loop's)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Schedules ``coroutine`` on the loop without waiting (any thread)."""
        asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def add_port(self, address: str, credentials: grpc.ServerCredentials | None) -> int:
        """Binds ``address``; returns the port, 0 when it could not bind."""

        async def add() -> int:
            if credentials is not None:
                return self.server.add_secure_port(address, credentials)
            return self.server.add_insecure_port(address)

        try:
            return self.call(add())
        except RuntimeError:  # grpc.aio raises where grpc.server returned 0
            return 0

    def start(self) -> None:
        self.call(self.server.start())

    def stop(self, grace_seconds: float) -> None:
        """Refuses new RPCs, lets in-flight ones finish for ``grace_seconds``,
        cancels the rest; then stops the loop and the executor."""
        self.call(self.server.stop(grace_seconds))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.executor.shutdown(wait=False, cancel_futures=True)


def off_loop(executor: futures.Executor | None) -> Callable[[Callable[[], T]], Awaitable[T]]:
    """How an async handler runs a blocking call: inline on the loop when
    ``executor`` is None (no hand-off: the fastest path for a short call),
    else on ``executor``."""
    if executor is None:

        async def inline(call: Callable[[], T]) -> T:
            return call()

        return inline

    async def on_executor(call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, call)

    return on_executor
