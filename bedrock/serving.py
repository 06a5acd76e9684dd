"""A threading HTTP server that serves a bounded number of connections at once (stdlib only).

`CappedHTTPServer` takes the connection slot on the accepting thread, before any thread is
started or any byte is read, and gives it back when the connection's thread ends. Past the cap
``refuse`` is called (record it, answer a canned reply) and the socket is closed, so a flood of
connections costs neither threads nor memory beyond the cap. The audit witness and the release
repository serve through it.

    >>> class Server(CappedHTTPServer):
    ...     def refuse(self, request, client_address):
    ...         log.warning("busy: %s", client_address[0])
    >>> Server(("127.0.0.1", 0), Handler, max_connections=64)  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class CappedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        max_connections: int,
    ) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def refuse(self, request: Any, client_address: Any) -> None:
        """Called on the accepting thread for a connection past the cap, before it is closed."""

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refuse(request, client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
