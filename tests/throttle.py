"""A TCP proxy on loopback that caps the bandwidth through it: a real network
condition (a slow link to the store) for tests that need an operation to take
a while, without touching the process under test."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class ThrottledProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` at most ``bytes_per_second``,
    counted over both directions and every connection together."""

    CHUNK = 16 * 1024

    def __init__(self, target: tuple[str, int], bytes_per_second: int) -> None:
        self._target = target
        self._rate = bytes_per_second
        self._lock = threading.Lock()
        self._next_send = time.monotonic()
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(self.CHUNK):
                self._wait_for(len(chunk))
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _wait_for(self, size: int) -> None:
        """Reserves ``size`` bytes of the shared budget; sleeps until they are due."""
        with self._lock:
            start = max(self._next_send, time.monotonic())
            self._next_send = start + size / self._rate
        time.sleep(max(0.0, start - time.monotonic()))
