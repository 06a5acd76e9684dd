"""Mutual TLS for the relay's broker connections: the one client `ssl.SSLContext`, and a
TLS byte channel one thread reads while another writes.

Why not an `ssl.SSLSocket` shared by a reader and a writer thread: CPython's `_ssl` releases
the GIL around ``SSL_read``/``SSL_write`` on the same OpenSSL ``SSL`` object, and OpenSSL does
not support concurrent use of one ``SSL`` object; concurrent ``recv``/``send`` on one
SSLSocket corrupts TLS state in practice (python/cpython#77271, #151508;
miguelgrinberg/python-engineio#461; jasonrbriggs/stomp.py#452). `TLSChannel` therefore keeps
TLS in memory (`ssl.SSLObject` over two `ssl.MemoryBIO`), touches it only under one lock, and
moves ciphertext over a plain TCP socket, where one thread in ``recv`` and another in
``sendall`` is ordinary POSIX socket use. The lock is never held while waiting for the network
to deliver bytes, only while sending them (so records leave in the order they were sealed).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading

from relay.config import BrokerEndpoint
from relay.errors import UpstreamError

READ_CHUNK_BYTES = 256 * 1024


def client_context(endpoint: BrokerEndpoint) -> ssl.SSLContext:
    """TLS 1.2 or later, our client certificate, the broker's certificate verified against the
    CA file and required to name ``endpoint.host`` (DNS or IP SAN), even on loopback."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(endpoint.tls.cafile))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_cert_chain(str(endpoint.tls.certfile), str(endpoint.tls.keyfile))
    except (OSError, ssl.SSLError) as exc:
        raise UpstreamError(
            f"cannot load the relay's client certificate {endpoint.tls.certfile}: {exc}"
        ) from exc
    return context


class TLSChannel:
    """A connected, handshaken TLS stream. `recv` from one thread; `send` from any thread."""

    def __init__(
        self,
        sock: socket.socket,
        tls: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
    ) -> None:
        self._sock = sock
        self._tls = tls
        self._in, self._out = incoming, outgoing
        self._lock = threading.Lock()
        self._eof = False

    @classmethod
    def connect(
        cls, context: ssl.SSLContext, host: str, port: int, *, timeout_s: float
    ) -> TLSChannel:
        """TCP connect and TLS handshake; raises `OSError` or `ssl.SSLError`."""
        sock = socket.create_connection((host, port), timeout=timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = context.wrap_bio(incoming, outgoing, server_hostname=host)
            channel = cls(sock, tls, incoming, outgoing)
            channel._handshake()
        except BaseException:
            sock.close()
            raise
        return channel

    def _handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                data = self._sock.recv(READ_CHUNK_BYTES)
            else:
                self._flush()
                return
            if not data:
                raise ConnectionResetError("the broker closed the connection in the handshake")
            self._in.write(data)

    def _flush(self) -> None:
        pending = self._out.read()
        if pending:
            self._sock.sendall(pending)

    def settimeout(self, timeout_s: float) -> None:
        """Applies to both directions: a `send` blocked this long means a dead broker."""
        self._sock.settimeout(timeout_s)

    def send(self, data: bytes) -> None:
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[self._tls.write(view) :]
            self._flush()

    def recv(self) -> bytes:
        """Plaintext, at least one byte; b"" when the broker closed the stream. Raises
        `TimeoutError` when nothing arrived within the timeout, `OSError`/`ssl.SSLError`."""
        while not self._eof:
            data = self._sock.recv(READ_CHUNK_BYTES)
            if not data:
                return b""
            chunks = []
            with self._lock:
                self._in.write(data)
                try:
                    while chunk := self._tls.read(READ_CHUNK_BYTES):
                        chunks.append(chunk)
                    self._eof = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLZeroReturnError:  # close_notify, after what came before it
                    self._eof = True
                self._flush()  # e.g. a TLS 1.3 KeyUpdate answer
            if chunks:
                return b"".join(chunks)
        return b""

    def shutdown(self) -> None:
        """Any thread: ends the TCP stream, so a thread blocked in `recv` returns."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """The reading thread, once it is done with the channel."""
        self._sock.close()
