"""The one strict configuration reader (ADR 0007): a wrong type, a typo'd key or a missing
required key is refused by name with the caller's own error type, in every configuration file
(relay.toml, gateway.toml, the policy document), never coerced and never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bedrock.tables import Table
from idmz.home import Home
from idmz.relay_config import load_relay_config
from relay.errors import RelayConfigError

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "relay.toml"


class OwnError(Exception):
    pass


def table(data: dict[str, object]) -> Table:
    return Table(data, "x.toml", error=OwnError)


def test_a_boolean_is_never_a_number() -> None:
    with pytest.raises(OwnError, match=r"x\.toml\.port: expected int; found a boolean"):
        table({"port": True}).integer("port")
    with pytest.raises(OwnError, match="found a boolean"):
        table({"ttl_s": False}).number("ttl_s")


def test_an_integer_is_accepted_where_a_float_is_asked_for() -> None:
    assert table({"ttl_s": 3}).number("ttl_s") == 3.0


def test_a_typo_is_refused_by_name_not_defaulted() -> None:
    t = table({"max_outbox_byte": 1})
    assert t.integer("max_outbox_bytes", 10) == 10
    with pytest.raises(OwnError, match=r"unknown key.*max_outbox_byte"):
        t.done()


def test_a_missing_required_key_is_named() -> None:
    with pytest.raises(OwnError, match=r"x\.toml\.tls\.ca is required"):
        sub = table({"tls": {}}).sub("tls")
        assert sub is not None
        sub.text("ca", required=True)


def relay_toml(replace: str, by: str) -> str:
    text = DEPLOY.read_text()
    assert re.search(replace, text, flags=re.MULTILINE)
    return re.sub(replace, by, text, count=1, flags=re.MULTILINE)


@pytest.mark.parametrize(
    ("replace", "by", "named"),
    [
        (r"^port = 8883", "port = true", r"ot\.port: expected int; found a boolean"),
        (r"^port = 8883", 'port = "8883x"', r"ot\.port: expected int; found str"),
        (r"^workers = 1", "workers = 1.5", r"workers: expected int; found float"),
        (r"^audit_denials = true", 'audit_denials = "no"', r"audit_denials: expected bool"),
        (r"^\[health\]", "[health]\nprot = 1", r"unknown key\(s\) prot"),
    ],
)
def test_a_wrongly_typed_relay_toml_is_refused_by_name_not_coerced(
    tmp_path: Path, replace: str, by: str, named: str
) -> None:
    home = Home(tmp_path / "home").ensure()
    with pytest.raises(RelayConfigError, match=named):
        load_relay_config(relay_toml(replace, by), home=home, source=DEPLOY, environ={})
