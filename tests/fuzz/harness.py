"""Coverage-guided fuzzing (atheris/libFuzzer) of what a hostile device's bytes reach.

Two targets:

* ``codec``: the bytes the OT broker sends, cut into up to three reads, through the relay's
  `Framer` and MQTT 5 decoders (messages, CONNACK, SUBACK, DISCONNECT, and the IT side's
  PUBACK), and every decoded message on through `Inspector.inspect`, as `OTSource` hands it to
  the worker. The only exception allowed is `MQTTProtocolError` (the link drops the
  connection on it); the inspector must return a verdict and never fail inside.
* ``inspector``: `Inspector.inspect` and `check_payload` on a topic, an ``idmz-msg-id`` and a
  payload taken from the input (layout in `split_inspector_input`). Strict JSON must refuse
  what IT consumers could read differently: nothing accepted holds a lone surrogate, an
  infinite number or nesting beyond the limit.

Run one for longer (see docs/relay.md, "Fuzzing")::

    .venv/bin/python -m tests.fuzz.harness inspector -max_total_time=600 \\
        -dict=tests/fuzz/json.dict /tmp/corpus-inspector tests/fuzz/corpus/inspector

The first corpus directory receives what libFuzzer finds; keep the seeds in the repository
read-only by listing them second. A crash is written as ``crash-<sha1>`` (``-artifact_prefix``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports(include=["relay", "policies"]):
    from pki.identity import DeviceIdentity
    from policies import ReasonCode, check_payload, load_policy
    from relay.errors import MQTTProtocolError
    from relay.inspector import Inspector, Verdict
    from relay.it_codec import decode_puback
    from relay.mqtt_codec import (
        MESSAGE,
        SUBACK,
        Framer,
        decode_connack,
        decode_disconnect,
        decode_message,
        decode_suback,
    )
    from relay.ot_source import MSG_ID_PROPERTY
    from relay.revocation import RevocationState

from tests.relay.conftest import POLICY_PATH, PRESS_1, PRESS_2
from tests.support.portable_json import portable_depth

POLICY = load_policy(POLICY_PATH.read_text())
PRESS = DeviceIdentity.parse(PRESS_1)
# A fixed view in which PRESS_2 is revoked, so both branches are reachable.
REVOCATION = RevocationState(revoked_devices=frozenset({PRESS_2}))
TOPICS = [
    f"{PRESS_1}/telemetry",
    f"{PRESS_1}/features",
    f"{PRESS_1}/events/anomaly",
    f"{PRESS_1}/status",
    f"{PRESS_2}/telemetry",
]
_MSG_ID_KEY = MSG_ID_PROPERTY.encode()
CONNACK, DISCONNECT, PUBACK = 2, 14, 4


def split_inspector_input(data: bytes) -> tuple[str, str | None, bytes]:
    """(topic, property id, payload) from ``data``: byte 0 picks one of `TOPICS`, or (from
    len(TOPICS) on) a raw topic: the bytes up to the first NUL, read as OTSource reads a topic
    (UTF-8, else surrogateescape). Byte 1, when odd, makes a property id of the bytes up to the
    next NUL. The rest is the payload."""
    if len(data) < 2:
        return TOPICS[0], None, data
    choice, flags, rest = data[0], data[1], data[2:]
    if choice < len(TOPICS):
        topic = TOPICS[choice]
    else:
        raw, _, rest = rest.partition(b"\0")
        topic = raw.decode("utf-8", "surrogateescape")
    property_id = None
    if flags & 1:
        raw, _, rest = rest.partition(b"\0")
        property_id = raw.decode("utf-8", "surrogateescape")
    return topic, property_id, rest


def _judge(inspector: Inspector, topic: str, payload: bytes, property_id: str | None) -> None:
    verdict = inspector.inspect(topic, payload, property_id, 0.0)
    assert isinstance(verdict, Verdict)
    if verdict.error is not None:
        raise AssertionError("the inspection raised") from verdict.error
    if verdict.accepted:
        document = json.loads(payload)
        limit = POLICY.limits[topic[len(PRESS.topic_prefix) :]].max_json_depth
        assert portable_depth(document) <= limit, "nesting beyond the limit was accepted"


def inspector_target(data: bytes) -> None:
    topic, property_id, payload = split_inspector_input(data)
    _judge(Inspector(POLICY, REVOCATION), topic, payload, property_id)
    if topic.startswith(PRESS.topic_prefix):
        decision = check_payload(POLICY, PRESS, topic, payload)
        assert decision.reason_code is not ReasonCode.INSPECTION_ERROR, decision.reason


def codec_target(data: bytes) -> None:
    framer = Framer(max_packet_bytes=64 * 1024)
    inspector = Inspector(POLICY, REVOCATION)
    cuts = sorted({data[0] % (len(data) + 1), data[-1] % (len(data) + 1)}) if data else []
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    try:
        for piece in pieces:
            for first, body in framer.feed(piece):
                kind, flags = first >> 4, first & 0x0F
                if kind == MESSAGE:
                    topic, _, _, msg_id, payload = decode_message(flags, body, _MSG_ID_KEY)
                    name = topic.decode("utf-8", "surrogateescape")  # as OTSource does
                    _judge(inspector, name, payload, msg_id)
                elif kind == CONNACK:
                    decode_connack(flags, body)
                elif kind == SUBACK:
                    decode_suback(flags, body)
                elif kind == DISCONNECT:
                    decode_disconnect(flags, body)
                elif kind == PUBACK:
                    decode_puback(flags, body)
    except MQTTProtocolError:
        pass  # the documented refusal: the link drops the connection


TARGETS: dict[str, Callable[[bytes], None]] = {
    "codec": codec_target,
    "inspector": inspector_target,
}


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        raise SystemExit(
            f"usage: python -m tests.fuzz.harness {{{'|'.join(TARGETS)}}} [libFuzzer args]"
        )
    target = TARGETS[argv[1]]
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
