"""The narrow interfaces the relay's core (`relay.pipeline`) works through (ADR 0082).

The pipeline decides; these ports do the I/O. On a relay they are the real things, built by the
composition (`relay.worker.Worker`, from `relay.appliance`): `relay.ot_source.OTSource`,
`relay.it_sink.ITSink`, `relay.spool.Spool`, `relay.dedup.DedupWindow`,
`relay.deadletter.DeadLetters`, the retention log and the audit log (`AuditPort`). In the tests
they are the in-memory fakes of ``tests/support/relay_fakes.py``, so the ack-after-durable and
ordering invariants are checked as properties over random interleavings, without brokers.

Each port is only what the pipeline calls, nothing more: the drain, the retention's replay and
the connections' lifecycles stay with the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from audit.events import AuditSink
from relay.deadletter import DeadLetter
from relay.spool import SpoolRecord

# A message as the spool and the retention log keep it: topic, device, message id, provenance
# user properties, payload (the `SpoolRecord` fields, not yet encoded).
Fields = tuple[str, str, str, tuple[tuple[str, str], ...], bytes]


class AuditPort(AuditSink, Protocol):
    """The audit log (`audit.log.AuditLog`): an `audit.events.AuditSink` that also says whether
    it is broken. A broken log (a failed fdatasync) refuses everything until it is reopened,
    and for a worker reopening is a restart."""

    @property
    def broken(self) -> bool: ...


class OTAcks(Protocol):
    """The OT side: acknowledge deliveries (PUBACK), several in one write. A token is the
    delivery's own (``Delivery.ack_token``), opaque to the pipeline."""

    def ack_many(self, tokens: Iterable[Any], /) -> int: ...


class OTLink(OTAcks, Protocol):
    """The OT connection the worker runs (`relay.ot_source.OTSource`)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class ITPublisher(Protocol):
    """The IT side: QoS 1 publishes, each answered later with ``(ref, reason_code)`` (handed to
    `relay.pipeline.Pipeline.cycle`) or, when the connection drops, listed as outstanding
    (`Pipeline.it_down`)."""

    @property
    def up(self) -> bool: ...

    def publish(
        self, topic: str, payload: bytes, properties: tuple[tuple[str, str], ...], ref: object, /
    ) -> bool:
        """False when it could not be queued (not connected, or full): the caller spools."""
        ...

    def flush(self) -> None: ...


class ITLink(ITPublisher, Protocol):
    """The IT connection the worker runs (`relay.it_sink.ITSink`)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def unacked_for_s(self, now: float, /) -> float: ...

    def outstanding(self) -> int: ...


class SpoolAppender(Protocol):
    """The spool's write side: ``append`` raises `relay.errors.SpoolFullError` when full; a
    record counts as safe only once ``sync`` (fdatasync) returned."""

    @property
    def dirty(self) -> bool: ...

    def append(self, rec: SpoolRecord, /) -> None: ...

    def sync(self) -> None: ...


class Dedup(Protocol):
    """The dedup window shared by the workers: which (device, message id) are already safe."""

    def seen_many(self, pairs: Sequence[tuple[str, str]], /) -> set[tuple[str, str]]: ...

    def remember(self, items: Iterable[tuple[str, str]], now: float, /) -> None: ...


class DeadLetterStore(Protocol):
    """Where a message the IT broker refused is kept: ``append`` buffers (False: the file is
    full, only the audit record remains), ``sync`` makes what was appended durable."""

    def append(self, letter: DeadLetter, now_wall: float, /) -> bool: ...

    def sync(self) -> None: ...

    def alarm_lost(self, count: int, /) -> None:
        """Raise the alarm: ``count`` payloads were not kept (the file is full)."""
        ...


class Retainer(Protocol):
    """Keeps what IT acknowledged for ``it_retention_s`` (ADR 0081); returns once durable."""

    def retain(self, records: Sequence[Fields], /) -> None: ...
