"""The IT sink's own encoding of provenance user properties is byte-for-byte paho's."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from relay.it_sink import UserProperties, pack_user_properties


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("idmz-device", "acme/plant1/stamping/line1/cell1/press-01")],
        [("idmz-msg-id", "x" * 300), ("k", "é✓ ünïcode"), ("", "")],
        [("idmz-policy-sha256", "ab" * 32)] * 40,  # a body over 127 bytes: two-byte length
    ],
)
def test_same_bytes_as_paho(pairs: list[tuple[str, str]]) -> None:
    reference = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if pairs:
        reference.UserProperty = list(pairs)
    assert UserProperties(pairs).pack() == reference.pack()


def test_refuses_what_mqtt_cannot_carry() -> None:
    with pytest.raises(ValueError, match="65535"):
        pack_user_properties([("k", "v" * 65536)])
    with pytest.raises(UnicodeEncodeError):
        pack_user_properties([("k", "\ud800")])
