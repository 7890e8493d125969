"""A TCP server that accepts connections, reads what it is sent, and never answers: the
Redis that hangs every caller whose client has no read timeout."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# How long a call may take before a test calls it hung: far above any timeout the tests set
# or the library's defaults (a watchdog so that a hang fails the test, not a timing check).
WATCHDOG_SECONDS = 120.0


def finishing(call: Callable[[], T]) -> T:
    """``call()``'s result or exception, from a thread; fails the test if it hangs."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as exc:  # handed to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WATCHDOG_SECONDS)
    if thread.is_alive():
        raise AssertionError(f"the call still waits after {WATCHDOG_SECONDS:g}s: it hangs")
    if "error" in outcome:
        raise outcome["error"]
    result: T = outcome["result"]
    return result


class SilentServer:
    """Listens on 127.0.0.1 (a free port) from a daemon thread until :meth:`close`.

    ``connections`` counts the connections accepted and ``received`` the bytes read, so a
    test can see how many attempts a client made and wait for one to send something.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.connections = 0
        self.received = 0
        self._sockets: list[socket.socket] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._accept, name="silent-server", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._changed:
                self.connections += 1
                self._sockets.append(sock)
                self._changed.notify_all()
            threading.Thread(target=self._read, args=(sock,), daemon=True).start()

    def _read(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._changed:
                self.received += len(data)
                self._changed.notify_all()

    def wait_for_bytes(self, count: int = 1, timeout: float = 60.0) -> bool:
        """Wait until at least ``count`` bytes were received in all."""
        with self._changed:
            return self._changed.wait_for(lambda: self.received >= count, timeout)

    def close(self) -> None:
        """Stop listening and hang up: clients then see refused connections and EOF."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        self._listener.close()
        with self._changed:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the reader; the client sees EOF
                sock.close()
