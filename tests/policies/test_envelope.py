"""The envelope contract has one owner, `policies.envelope` (docs/contracts.md section 4): what
a gateway builds passes the relay's payload check, what a hostile gateway claims in the
envelope's fields is read as a claim (a non-string is no claim), and no other product module
spells the provenance property names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from policies.envelope import PROVENANCE_PROPERTIES, Envelope, Kind, claims

ROOT = Path(__file__).resolve().parents[2]
# The packages on either side of the contract ("idmz-device" is also a Vault role name in pki).
SIDES = ("policies", "relay", "edge", "idmz")


def test_an_envelope_is_compact_json_in_the_contract_key_order() -> None:
    env = Envelope("m-1", "2026-11-22T10:00:00.000Z", "acme/a/b/c/d/gw-01", Kind.STATUS, {"ok": 1})
    text = env.to_json().decode()
    assert list(json.loads(text)) == ["v", "id", "ts", "device", "kind", "data"]
    assert " " not in text and json.loads(text)["v"] == 1


def test_nan_in_an_envelope_is_refused_at_the_source() -> None:
    env = Envelope("m-1", "2026-11-22T10:00:00.000Z", "acme/a/b/c/d/gw", "features", {"x": 1e400})
    with pytest.raises(ValueError):
        env.to_json()


@pytest.mark.parametrize(
    "document",
    [
        {"id": 7, "device": ["acme/a/b/c/d/gw"], "kind": {"k": 1}},
        ["acme/a/b/c/d/gw"],
        "acme/a/b/c/d/gw",
        None,
    ],
)
def test_a_non_string_envelope_field_is_no_claim(document: object) -> None:
    claimed = claims(document)
    assert (claimed.id, claimed.device, claimed.kind) == (None, None, None)


def test_no_other_product_module_spells_the_provenance_property_names() -> None:
    owner = Path("policies/envelope.py")
    pattern = re.compile("|".join(re.escape(f'"{name}"') for name in PROVENANCE_PROPERTIES))
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in SIDES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.relative_to(ROOT) != owner
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []
