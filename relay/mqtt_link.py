"""One MQTT 5 client connection over mutual TLS, the part both relay adapters share: connect,
CONNACK, keepalive, the read loop, thread-safe writes tagged with a connection generation, and
reconnecting with backoff until stopped (ADR 0055, ADR 0056).

A `Link` does not know what its side says. It sends the CONNECT it was given and, afterwards,
only bytes its owner hands it; it answers PINGRESP and DISCONNECT itself and passes every other
packet to the owner's `LinkHandler`. What each side can put on the wire is decided by the codec
its owner imports: `relay.mqtt_codec` for the OT reader (no application message encoder),
`relay.it_codec` for the IT writer (no SUBSCRIBE encoder); ``tests/relay/test_one_way.py``
checks both.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Protocol

import bedrock.errors as category
from relay.config import BrokerEndpoint
from relay.errors import MQTTProtocolError, RelayError, UpstreamError
from relay.mqtt_codec import (
    CONNACK,
    DISCONNECT,
    DISCONNECT_NORMAL,
    PINGREQ,
    PINGRESP,
    Connack,
    Framer,
    decode_connack,
    decode_disconnect,
    reason_name,
)
from relay.tls_channel import TLSChannel, client_context

CONNECT_TIMEOUT_S = 10.0


class LinkHandler(Protocol):
    """The owner's side of a `Link`; every method runs on the link's thread, never with the
    link's lock held. Raising `UpstreamError` from `on_connected`/`on_packets` ends the
    connection (logged) and the link reconnects."""

    def on_connected(self, connack: Connack, generation: int) -> None: ...

    def on_packets(self, packets: list[tuple[int, bytes]], generation: int) -> None: ...

    def on_disconnected(self, was_up: bool) -> None: ...


class SessionEndedError(RelayError, category.UpstreamError):
    """The link's own signal that the connection is over (stop, or the broker closed it)."""


class Link:
    def __init__(
        self,
        endpoint: BrokerEndpoint,
        *,
        side: str,
        connect_packet: bytes,
        max_packet_bytes: int,
        handler: LinkHandler,
        reconnect_delay_s: tuple[float, float],
    ) -> None:
        self._endpoint = endpoint
        self._where = f"the {side} broker {endpoint.host}:{endpoint.port}"
        self._log = logging.getLogger(f"relay.{side.lower()}")
        self._connect_packet = connect_packet
        self._max_packet_bytes = max_packet_bytes
        self._handler = handler
        self._delay = reconnect_delay_s
        self._context = client_context(endpoint)
        self._lock = threading.Lock()  # _channel, generation, _last_send_at; held to send
        self._channel: TLSChannel | None = None
        self.generation = 0
        self._last_send_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{side.lower()}-link", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """DISCONNECT (normal; a persistent session stays on the broker) and end the thread."""
        self._stop.set()
        with self._lock:
            channel = self._channel
            if channel is not None:
                with contextlib.suppress(OSError):
                    channel.send(DISCONNECT_NORMAL)
                channel.shutdown()
        if self._thread.is_alive():
            self._thread.join(timeout=CONNECT_TIMEOUT_S + 5)

    def send(self, data: bytes, generation: int) -> bool:
        """Write ``data`` in one TLS write if the connection ``generation`` is still the current
        one; False otherwise or when the write fails (the connection is then dropped)."""
        with self._lock:
            if self._channel is None or generation != self.generation:
                return False
            return self._send_locked(self._channel, data)

    def _send_locked(self, channel: TLSChannel, data: bytes) -> bool:
        try:
            channel.send(data)
        except OSError as exc:  # ssl.SSLError and TimeoutError included
            self._log.warning("cannot write to %s (%s); dropping the connection", self._where, exc)
            channel.shutdown()  # the link's thread sees it and reconnects
            return False
        self._last_send_at = time.monotonic()
        return True

    # -- the link's thread -------------------------------------------------------------------

    def _run(self) -> None:
        delay = self._delay[0]
        while not self._stop.is_set():
            started = time.monotonic()
            self._session()
            if time.monotonic() - started > self._delay[1]:  # it had worked for a while
                delay = self._delay[0]
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self._delay[1])

    def _session(self) -> None:
        try:
            channel = TLSChannel.connect(
                self._context, self._endpoint.host, self._endpoint.port,
                timeout_s=CONNECT_TIMEOUT_S,
            )  # fmt: skip
        except OSError as exc:
            self._log.warning("cannot connect to %s: %s", self._where, exc)
            return
        up = False
        try:
            connack, keepalive, framer, first = self._connect(channel)
            up = True
            self._handler.on_connected(connack, self.generation)
            self._read_loop(channel, keepalive, framer, first)
        except SessionEndedError as exc:
            if not self._stop.is_set():
                self._log.warning("lost %s (%s); reconnecting", self._where, exc)
        except MQTTProtocolError as exc:
            self._log.error("protocol error from %s: %s; reconnecting", self._where, exc)
        except UpstreamError as exc:
            self._log.error("%s; reconnecting", exc)
        except OSError as exc:
            if not self._stop.is_set():
                self._log.warning("lost %s (%s); reconnecting", self._where, exc)
        except Exception:  # noqa: BLE001 - an owner callback failed: reconnect, never lose
            self._log.exception("handling a packet from %s failed; reconnecting", self._where)
        finally:
            with self._lock:
                self.generation += 1
                self._channel = None
            channel.shutdown()
            channel.close()
            self._handler.on_disconnected(up)

    def _connect(
        self, channel: TLSChannel
    ) -> tuple[Connack, float, Framer, list[tuple[int, bytes]]]:
        framer = Framer(max_packet_bytes=self._max_packet_bytes)
        channel.send(self._connect_packet)
        packets: list[tuple[int, bytes]] = []
        while not packets:
            packets = framer.feed(self._recv(channel, up=False))
        first, body = packets[0]
        if first >> 4 != CONNACK:
            raise MQTTProtocolError(f"expected CONNACK, received packet type {first >> 4}")
        connack = decode_connack(first & 0x0F, body)
        if connack.reason_code >= 0x80:
            raise UpstreamError(
                f"{self._where} refused the relay's CONNECT: {reason_name(connack.reason_code)}"
                + (f" ({connack.reason_string})" if connack.reason_string else "")
            )
        keepalive = float(self._endpoint.keepalive_s)
        if connack.server_keepalive_s is not None:  # §3.2.2.3.14: the server's value wins
            keepalive = float(connack.server_keepalive_s)
        channel.settimeout(keepalive / 2 if keepalive else 60.0)
        with self._lock:
            self.generation += 1
            self._channel = channel
            self._last_send_at = time.monotonic()
        return connack, keepalive, framer, packets[1:]

    def _recv(self, channel: TLSChannel, *, up: bool) -> bytes:
        try:
            data = channel.recv()
        except TimeoutError:
            if up:
                return b""
            raise SessionEndedError("no CONNACK within the connect timeout") from None
        if not data:
            raise SessionEndedError("stopped" if self._stop.is_set() else "connection closed")
        return data

    def _read_loop(
        self,
        channel: TLSChannel,
        keepalive: float,
        framer: Framer,
        packets: list[tuple[int, bytes]],
    ) -> None:
        handler, generation = self._handler, self.generation
        ping_sent_at = 0.0
        while True:
            if packets:
                rest = []
                for first, body in packets:
                    kind = first >> 4
                    if first == PINGRESP << 4 and not body:
                        ping_sent_at = 0.0
                    elif kind == DISCONNECT:
                        code, reason = decode_disconnect(first & 0x0F, body)
                        raise UpstreamError(
                            f"{self._where} disconnected the relay: {reason_name(code)}"
                            + (f" ({reason})" if reason else "")
                        )
                    else:
                        rest.append((first, body))
                if rest:
                    handler.on_packets(rest, generation)
            now = time.monotonic()
            if ping_sent_at and now - ping_sent_at > max(keepalive, 1.0):
                raise SessionEndedError(f"no PINGRESP within {keepalive:g} s")
            if keepalive and not ping_sent_at and now - self._last_send_at >= keepalive / 2:
                with self._lock:
                    self._send_locked(channel, PINGREQ)
                ping_sent_at = now
            data = self._recv(channel, up=True)
            packets = framer.feed(data) if data else []
