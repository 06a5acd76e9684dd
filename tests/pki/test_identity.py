"""The naming rules of ARCHITECTURE.md section 4."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pki.errors import MalformedIdentityError
from pki.identity import (
    ConsumerIdentity,
    DeviceIdentity,
    IdentityPrefix,
    parse_spiffe,
)

PATH = "acme/plant1/press/line1/cell2/press-07"
label = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True)


def test_path_and_spiffe_round_trip() -> None:
    d = DeviceIdentity.parse(PATH)
    assert d.path == PATH
    assert d.spiffe_id == "spiffe://" + PATH
    assert DeviceIdentity.from_spiffe(d.spiffe_id) == d
    assert parse_spiffe(d.spiffe_id) == d
    assert d.topic_prefix == PATH + "/"


@given(st.lists(label, min_size=6, max_size=6))
def test_any_valid_path_round_trips(levels: list[str]) -> None:
    d = DeviceIdentity(*levels)
    assert DeviceIdentity.parse(d.path) == d
    assert DeviceIdentity.from_spiffe(d.spiffe_id) == d


@pytest.mark.parametrize(
    "bad",
    [
        "acme/plant1/press/line1/cell2",  # five levels
        "acme/plant1/press/line1/cell2/press-07/extra",  # seven
        "Acme/plant1/press/line1/cell2/press-07",  # upper case
        "acme/plant1/press/line1/cell2/+",  # MQTT wildcard
        "acme/plant1/press/line1/cell2/#",
        "acme/plant1/press/line1/cell2/$SYS",
        "acme/plant1/press/line1/cell2/pre\x00ss",  # NUL
        "acme/plant1/press/line1/cell2/..",
        "acme/plant1/press/line1/cell2/press.07",  # dots are not in the label alphabet
        "acme/plant1/press/line1/cell2/-press",  # must start alphanumeric
        "acme/plant1/press/line1/cell2/press\n",  # trailing newline
        "acme/plant1/press/line1/cell2/pressе",  # Cyrillic 'е' look-alike
        "acme//press/line1/cell2/press-07",  # empty level
        "acme/plant1/press/line1/cell2/" + "a" * 64,  # longer than a DNS label
    ],
)
def test_malformed_device_path_is_refused(bad: str) -> None:
    with pytest.raises(MalformedIdentityError):
        DeviceIdentity.parse(bad)


def test_non_spiffe_uri_is_refused() -> None:
    with pytest.raises(MalformedIdentityError, match="spiffe://"):
        DeviceIdentity.from_spiffe("https://" + PATH)


def test_prefix_matches_whole_levels_only() -> None:
    d = DeviceIdentity.parse(PATH)
    assert d.is_under(IdentityPrefix.parse("acme/plant1/press"))
    assert d.is_under(IdentityPrefix.parse(PATH))
    assert not d.is_under(IdentityPrefix.parse("acme/plant1/pre"))
    assert not d.is_under(IdentityPrefix.parse("acme/plant2"))


def test_consumer_identity_is_distinct_from_devices() -> None:
    c = ConsumerIdentity.parse("acme/it/historian")
    assert c.spiffe_id == "spiffe://acme/it/historian"
    assert parse_spiffe(c.spiffe_id) == c
    with pytest.raises(MalformedIdentityError):
        ConsumerIdentity.parse("acme/ot/historian")
