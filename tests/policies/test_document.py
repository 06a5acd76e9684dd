"""The policy document: what loads, what is refused (with key and line), the content hash."""

from __future__ import annotations

import json

import pytest
import yaml

from policies import PolicyConfigError, load_policy
from policies.document import AuditFailureMode


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_example_policy_loads_with_the_stamping_line(policy) -> None:
    assert policy.enterprise == "acme"
    assert set(policy.device_classes) == {"gateway", "sensor-gateway"}
    assert policy.relay.on_audit_failure is AuditFailureMode.REFUSE
    assert policy.certificates.expiry_alert_days == (30, 14, 7, 1)
    assert len(policy.content_hash) == 64


def test_conduit_into_ot_is_refused_at_load_naming_key_and_line(plant_text) -> None:
    broken = _replace(plant_text, 'from = "idmz"\nto = "it"', 'from = "idmz"\nto = "ot"')
    with pytest.raises(PolicyConfigError) as err:
        load_policy(broken, source="plant.toml")
    assert err.value.key == "conduits.1.to"
    assert err.value.line is not None
    assert broken.splitlines()[err.value.line - 1].startswith("to =")
    assert "into the OT zone" in str(err.value)


def test_it_zone_publish_conduit_is_refused(plant_text) -> None:
    broken = _replace(plant_text, 'actions = ["subscribe"]', 'actions = ["subscribe", "publish"]')
    with pytest.raises(PolicyConfigError, match="IT consumers never publish"):
        load_policy(broken)


def test_consumer_with_publish_rights_is_refused(plant_text) -> None:
    broken = _replace(plant_text, 'subscribe = ["acme/plant1"]', 'publish = ["acme/plant1"]')
    with pytest.raises(PolicyConfigError) as err:
        load_policy(broken)
    assert err.value.key == "consumers.historian.publish"


def test_misspelt_limit_key_is_refused_not_defaulted(plant_text) -> None:
    broken = _replace(plant_text, "max_message_bytes = 4096", "max_mesage_bytes = 4096")
    with pytest.raises(PolicyConfigError) as err:
        load_policy(broken)
    assert err.value.key == "limits.status.max_mesage_bytes"
    assert broken.splitlines()[err.value.line - 1].startswith("max_mesage_bytes")


def test_class_topic_without_limits_is_refused(plant_text) -> None:
    broken = _replace(plant_text, '"telemetry", "status"]', '"telemetry", "status", "video"]')
    with pytest.raises(PolicyConfigError, match="no \\[limits"):
        load_policy(broken)


def test_assignment_to_unknown_class_is_refused(plant_text) -> None:
    broken = _replace(plant_text, '= "sensor-gateway"\n', '= "robot"\n')
    with pytest.raises(PolicyConfigError) as err:
        load_policy(broken)
    assert err.value.key == "assignments.acme/plant1/stamping/line1/cell3"


def test_prefix_outside_enterprise_is_refused(plant_text) -> None:
    broken = _replace(plant_text, '"acme/plant1/stamping" = ', '"globex/plant1/stamping" = ')
    with pytest.raises(PolicyConfigError, match="outside enterprise"):
        load_policy(broken)


def test_invalid_json_schema_is_refused(plant_text) -> None:
    broken = _replace(plant_text, '"type": "object",\n  "required"', '"type": 7,\n  "required"')
    with pytest.raises(PolicyConfigError, match="not a valid JSON Schema"):
        load_policy(broken)


def test_toml_syntax_error_names_the_line() -> None:
    with pytest.raises(PolicyConfigError) as err:
        load_policy('version = 1\nenterprise = "acme"\n[zones\n', source="p.toml")
    assert err.value.line == 3


def test_unknown_top_level_key_and_wrong_version_are_refused(plant_text) -> None:
    with pytest.raises(PolicyConfigError, match="unknown key"):
        load_policy(plant_text + "\nallow_all = true\n")
    with pytest.raises(PolicyConfigError, match="version 1"):
        load_policy(_replace(plant_text, "version = 1", "version = 2"))


def test_yaml_document_has_the_same_content_hash_as_toml(policy) -> None:
    as_yaml = yaml.safe_dump(json.loads(json.dumps(policy.canonical())), sort_keys=False)
    again = load_policy(as_yaml, source="plant.yaml")
    assert again.content_hash == policy.content_hash


def test_comments_and_order_do_not_change_the_hash_but_meaning_does(plant_text, policy) -> None:
    assert load_policy("# reviewed\n" + plant_text).content_hash == policy.content_hash
    changed = _replace(plant_text, "max_messages_per_s = 1\n", "max_messages_per_s = 2\n")
    assert load_policy(changed).content_hash != policy.content_hash


def test_yaml_duplicate_key_is_refused_with_its_line() -> None:
    text = "version: 1\nenterprise: acme\nenterprise: globex\n"
    with pytest.raises(PolicyConfigError) as err:
        load_policy(text, source="p.yaml")
    assert err.value.line == 3


def test_yaml_error_names_key_and_line(policy) -> None:
    data = json.loads(json.dumps(policy.canonical()))
    data["relay"]["on_audit_failure"] = "ignore"
    text = yaml.safe_dump(data, sort_keys=False)
    with pytest.raises(PolicyConfigError) as err:
        load_policy(text, source="p.yaml")
    assert err.value.key == "relay.on_audit_failure"
    assert "on_audit_failure" in text.splitlines()[err.value.line - 1]


def test_weak_certificate_policy_is_refused(plant_text) -> None:
    with pytest.raises(PolicyConfigError, match="at least 2048"):
        load_policy(_replace(plant_text, "min_rsa_bits = 3072", "min_rsa_bits = 1024"))
    with pytest.raises(PolicyConfigError, match="strictly decreasing"):
        load_policy(_replace(plant_text, "[30, 14, 7, 1]", "[7, 30]"))


def test_certificate_policy_renewal_window_alerts_and_grace(policy) -> None:
    from datetime import UTC, datetime, timedelta

    cert = policy.certificates
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=90)
    assert abs(cert.renewal_due_at(start, end) - (start + timedelta(days=60))) < timedelta(hours=1)
    assert cert.expiry_alert(end, end - timedelta(days=40)) is None
    assert cert.expiry_alert(end, end - timedelta(days=20)) == 30
    assert cert.expiry_alert(end, end - timedelta(days=6)) == 7
    assert cert.expiry_alert(end, end + timedelta(days=1)) == 1
    assert cert.renewal_accepted(end, end) and not cert.renewal_accepted(
        end, end + timedelta(seconds=1)
    )


def test_on_stale_crl_defaults_keep_the_plant_running_and_make_it_wait(policy) -> None:
    """ADR 0036: OT keep-last, IT fail-closed, both written out in the canonical form."""
    from policies.document import StaleCrlMode, Zone

    assert dict(policy.on_stale_crl) == {
        Zone.OT: StaleCrlMode.KEEP_LAST,
        Zone.IT: StaleCrlMode.FAIL_CLOSED,
    }
    zones = policy.canonical()["zones"]
    assert zones["ot"]["on_stale_crl"] == "keep-last"
    assert zones["it"]["on_stale_crl"] == "fail-closed"
    assert "on_stale_crl" not in zones["idmz"]


def test_on_stale_crl_is_chosen_per_zone_and_changes_the_content_hash(policy, plant_text) -> None:
    from policies.document import StaleCrlMode, Zone

    closed = load_policy(
        _replace(plant_text, "[zones.ot]\n", '[zones.ot]\non_stale_crl = "fail-closed"\n')
    )
    assert closed.on_stale_crl[Zone.OT] is StaleCrlMode.FAIL_CLOSED
    assert closed.on_stale_crl[Zone.IT] is StaleCrlMode.FAIL_CLOSED
    assert closed.content_hash != policy.content_hash
    again = load_policy(json.dumps(closed.canonical()), fmt="yaml")
    assert again.content_hash == closed.content_hash


@pytest.mark.parametrize(
    ("zone", "value", "message"),
    [
        ("idmz", '"keep-last"', "ot, it"),
        ("ot", '"keep-going"', "expected fail-closed or keep-last"),
        ("it", "true", "on_stale_crl"),
    ],
)
def test_a_bad_on_stale_crl_is_refused_naming_the_key(
    plant_text: str, zone: str, value: str, message: str
) -> None:
    broken = _replace(plant_text, f"[zones.{zone}]\n", f"[zones.{zone}]\non_stale_crl = {value}\n")
    with pytest.raises(PolicyConfigError, match=message) as err:
        load_policy(broken)
    assert err.value.key == f"zones.{zone}.on_stale_crl"
