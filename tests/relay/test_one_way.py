"""One way by construction: the relay never subscribes on IT and never publishes on OT.

The static tests read the relay's source: the OT reader, its codec and the connection code it
shares with the IT side have nothing named *publish* and no encoder for an application message;
the IT writer and its codec nothing named *subscribe*, no message callback and no decoder for an
application message; no relay module uses paho. The live test
shows the consequence: a message published on the IT broker (even by the relay's own identity,
which may write there) never appears on the OT broker.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.relay.conftest import PRESS_1, RELAY_ID, Relay, envelope
from tests.support.mqtt import Subscriber, publish
from tests.support.net import wait_for

RELAY_SRC = Path(__file__).resolve().parents[2] / "relay"
OT_SIDE = ["ot_source.py", "mqtt_codec.py", "mqtt_link.py", "tls_channel.py"]
IT_SIDE = ["it_sink.py", "it_codec.py", "mqtt_link.py", "tls_channel.py"]
# What the OT side may put on the wire: CONNECT, SUBSCRIBE, PUBACK, PINGREQ, DISCONNECT.
OT_ENCODERS = {"encode_connect", "encode_subscribe", "encode_pubacks"}
# What the IT side may put on the wire: CONNECT, QoS 1 messages, PINGREQ, DISCONNECT.
IT_ENCODERS = {"encode_connect", "encode_qos1_message"}


def _names_used(path: Path) -> set[str]:
    """Every attribute and function name the module calls or reads."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
    return names


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def _defined(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)}


@pytest.mark.parametrize("module", OT_SIDE)
def test_ot_side_has_no_publish_path(module: str) -> None:
    used = _names_used(RELAY_SRC / module)
    assert not {n for n in used if "publish" in n.lower()}, "the OT side must never publish"


def test_ot_codec_encodes_only_what_a_subscriber_sends() -> None:
    encoders = {n for n in _defined(RELAY_SRC / "mqtt_codec.py") if n.startswith("encode")}
    assert encoders == OT_ENCODERS
    src = (RELAY_SRC / "mqtt_codec.py").read_text()
    # The only other packets it holds are fixed bytes: PINGREQ and DISCONNECT.
    assert "MESSAGE << 4" not in src and "0x30" not in src and "\\x3" not in src


def test_ot_reader_sends_only_through_the_codec() -> None:
    used = _names_used(RELAY_SRC / "ot_source.py")
    assert {n for n in used if n.startswith("encode_")} <= OT_ENCODERS
    assert not {n for n in _names_used(RELAY_SRC / "mqtt_link.py") if n.startswith("encode_")}


@pytest.mark.parametrize("module", IT_SIDE)
def test_it_side_has_no_subscribe_or_receive_path(module: str) -> None:
    used = _names_used(RELAY_SRC / module)
    forbidden = {"on_message", "message_callback_add", "manual_ack", "ack", "ack_many",
                 "decode_message", "encode_pubacks", "encode_subscribe"}  # fmt: skip
    assert not (used & forbidden), used & forbidden
    assert not {n for n in used if "subscribe" in n.lower()}


def test_it_codec_encodes_only_what_a_publisher_sends_and_decodes_only_puback() -> None:
    defined = _defined(RELAY_SRC / "it_codec.py")
    assert {n for n in defined if n.startswith("encode")} <= IT_ENCODERS
    assert {n for n in defined if n.startswith("decode")} == {"decode_puback"}
    used = _names_used(RELAY_SRC / "it_sink.py")
    assert {n for n in used if n.startswith("encode_")} <= IT_ENCODERS
    assert {n for n in used if n.startswith("decode_")} == {"decode_puback"}


def test_no_relay_module_uses_paho() -> None:
    for path in RELAY_SRC.glob("*.py"):
        assert not any(m == "paho" or m.startswith("paho.") for m in _imports(path)), path.name


@pytest.mark.integration
def test_message_published_on_it_never_appears_on_ot(relay: Relay, tmp_path: Path) -> None:
    out = tmp_path / "ot.txt"
    # The relay identity may read everything under acme/ on the OT broker: the widest view.
    watcher = Subscriber(relay.ot, relay.plant.cred(RELAY_ID), "acme/#", out)
    try:
        # Make the OT watcher live: a device message shows up on it.
        def live() -> bool:
            publish(relay.ot, relay.plant.cred(PRESS_1), f"{PRESS_1}/status",
                    envelope(PRESS_1, "ot-live", "status", {}), v5=True)  # fmt: skip
            return "ot-live" in out.read_text()

        wait_for(live, timeout_s=60, interval_s=0.5, what="OT watcher live")
        # The relay's own identity is allowed to write device topics on IT; do it.
        result = publish(relay.it, relay.plant.cred(RELAY_ID), f"{PRESS_1}/telemetry",
                         envelope(PRESS_1, "from-it-1"), v5=True)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        # A later OT message arrives on the watcher; the IT one never does.
        publish(relay.ot, relay.plant.cred(PRESS_1), f"{PRESS_1}/status",
                envelope(PRESS_1, "ot-after", "status", {}), v5=True)  # fmt: skip
        wait_for(lambda: "ot-after" in out.read_text(), timeout_s=60, what="later OT message")
        assert "from-it-1" not in out.read_text()
    finally:
        watcher.stop()
