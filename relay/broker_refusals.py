"""Refusals reported by the idmz broker plugin, read from its report file and turned into audit
records (ADR 0058). They replace parsing Mosquitto's debug log, where a client-chosen client id
could forge or hide a denial (security review M4, S5, S12).

The plugin (relay/native/idmz_revoke.c) appends one line per refusal, aggregated per identity,
event and access each second (the first at once, the rest as one line with their count)::

    v1 <event> <access> <count> <topic_truncated> <identity> <client_id> <topic>

Every field is percent-escaped by the plugin (no space, newline or ``%`` unescaped; ``~`` for
empty), so the split on single spaces is the structure and no client text can change it. A
line that does not parse exactly is counted and skipped, never guessed at.

>>> parse_refusal(b"v1 acl_denied write 3 0 acme/p/a/l/c/press-02 acme/p/a/l/c/press-02 x%20y")
BrokerRefusal(event='acl_denied', access='write', count=3, identity='acme/p/a/l/c/press-02', client_id='acme/p/a/l/c/press-02', topic='x y', topic_truncated=False)
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

from audit.events import AuditEvent, Outcome
from pki.errors import MalformedIdentityError
from pki.identity import ConsumerIdentity, DeviceIdentity

_log = logging.getLogger("relay.broker_refusals")

EVENTS = frozenset(
    {"acl_denied", "revoked", "client_id_refused", "identity_refused", "rate_limited"}
)
ACCESSES = frozenset({"read", "write", "connect"})
MAX_LINE_BYTES = 8192  # the plugin's longest line is under 6 KiB
MAX_COUNT = 10**12
READ_CHUNK_BYTES = 1 << 20
_FIELD = re.compile(rb"(?:[A-Za-z0-9_./:+#$-]|%[0-9A-F]{2})+|~")
_COUNT = re.compile(rb"[1-9][0-9]{0,12}")


@dataclass(frozen=True, slots=True)
class BrokerRefusal:
    """One line of the report: ``count`` refusals of ``identity`` (the certificate's, checked
    here again) with the latest one's client id and topic (as text, undecodable bytes
    replaced)."""

    event: str
    access: str
    count: int
    identity: str  # "" when the client had no identity certificate (event identity_refused)
    client_id: str
    topic: str
    topic_truncated: bool


def _unescape(field: bytes) -> str:
    if field == b"~":
        return ""
    return unquote_to_bytes(field).decode("utf-8", "replace")


def _identity(text: str) -> str | None:
    for parse in (DeviceIdentity.parse, ConsumerIdentity.parse):
        try:
            return str(parse(text))
        except MalformedIdentityError:
            continue
    return None


def parse_refusal(line: bytes) -> BrokerRefusal | None:
    """The refusal a report line holds, or None when it is not exactly a v1 line."""
    if len(line) > MAX_LINE_BYTES:
        return None
    parts = line.split(b" ")
    if len(parts) != 8 or parts[0] != b"v1":
        return None
    _v, event, access, count, truncated, identity, client_id, topic = parts
    if (
        event.decode("ascii", "replace") not in EVENTS
        or access.decode("ascii", "replace") not in ACCESSES
        or not _COUNT.fullmatch(count)
        or truncated not in (b"0", b"1")
        or not all(_FIELD.fullmatch(f) for f in (identity, client_id, topic))
    ):
        return None
    who = _unescape(identity)
    checked = _identity(who) if who else ""
    if checked is None or (not checked and event != b"identity_refused"):
        return None  # the plugin only reports identities it validated: this line is not its
    if event == b"rate_limited" and access != b"write":
        return None  # the plugin caps publishes only
    return BrokerRefusal(
        event=event.decode(),
        access=access.decode(),
        count=min(int(count), MAX_COUNT),
        identity=checked,
        client_id=_unescape(client_id),
        topic=_unescape(topic),
        topic_truncated=truncated == b"1",
    )


_REASONS = {
    "acl_denied": (
        "broker_acl_denied",
        "the {zone}-facing broker refused the {access}: the policy grants this identity no such "
        "topic (MQTT 5 reason 0x87 for a publish; a delivery is not made)",
    ),
    "revoked": ("revoked", "the {zone}-facing broker refused a revoked identity ({access})"),
    "rate_limited": (
        "broker_rate_limited",
        "the {zone}-facing broker refused publishes over the policy's max_messages_per_s and "
        "burst for this identity and topic (the plugin's cap, ADR 0141; count says how many)",
    ),
    "client_id_refused": (
        "client_id_not_bound",
        "the {zone}-facing broker refused a CONNECT whose client id is not the certificate's "
        "identity or <identity>:<suffix> (no session of another identity can be taken)",
    ),
    "identity_refused": (
        "no_identity",
        "the {zone}-facing broker refused a CONNECT whose certificate CN is not an identity path",
    ),
}


def broker_refusal_event(zone: str, refusal: BrokerRefusal) -> AuditEvent:
    """The audit record of one report line: the certificate's identity as actor, the full topic
    (as the plugin cut it, at most 1024 bytes) as resource, and how many refusals it stands
    for. Refused messages are ``relay.message.refused``; refused CONNECTs
    ``relay.session.refused``."""
    code, text = _REASONS[refusal.event]
    connect = refusal.access == "connect"
    return AuditEvent(
        actor=refusal.identity or "unknown-certificate",
        action="relay.session.refused" if connect else "relay.message.refused",
        resource=(refusal.client_id or "(empty client id)") if connect else refusal.topic,
        outcome=Outcome.DENIED,
        reason=f"{code}: " + text.format(zone=zone.upper(), access=refusal.access),
        details={
            "code": code,
            "broker": zone,
            "access": refusal.access,
            "count": refusal.count,
            "client_id": refusal.client_id[:200],
            "topic_truncated": refusal.topic_truncated,
        },
    )


class RefusalTail:
    """Follows one broker's report file and hands each refusal to ``on_refusal``.

    Starts at the file's end (refusals before this appliance started were audited by the one
    before it), reads at most 1 MiB a pass, and skips an over-long line whole.
    """

    def __init__(
        self,
        path: Path,
        on_refusal: Callable[[BrokerRefusal], None],
        *,
        poll_interval_s: float = 0.2,
    ) -> None:
        self._path = path
        self._on_refusal = on_refusal
        self._poll_s = poll_interval_s
        self.malformed = 0
        self._offset = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"refusals-{path.name}", daemon=True)

    def start(self) -> None:
        self._offset = self._size()  # here, not in the thread: what follows start() is read
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        offset = self._offset
        pending = b""
        skipping = False  # inside a line already over the limit
        while not self._stop.wait(self._poll_s):
            size = self._size()
            if size < offset:  # replaced or truncated: start over
                offset, pending, skipping = 0, b"", False
            if size == offset:
                continue
            try:
                with self._path.open("rb") as fh:
                    fh.seek(offset)
                    data = fh.read(min(size - offset, READ_CHUNK_BYTES))
            except OSError:
                continue
            offset += len(data)
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            for raw in lines:
                if skipping:
                    skipping = False
                    continue
                self._take(raw)
            if len(pending) > MAX_LINE_BYTES:
                self.malformed += 1
                pending, skipping = b"", True

    def _take(self, raw: bytes) -> None:
        refusal = parse_refusal(raw)
        if refusal is None:
            self.malformed += 1
            _log.warning("%s: skipped a line that is not a plugin report", self._path.name)
            return
        try:
            self._on_refusal(refusal)
        except Exception:  # noqa: BLE001 - one bad record must not stop the audit of the rest
            _log.exception("auditing a broker refusal failed")

    def _size(self) -> int:
        try:
            return self._path.stat().st_size
        except OSError:
            return 0
