"""Rendering: TLS-only listeners, identity-bound ACLs, no wildcard writes, no injection."""

from __future__ import annotations

import pytest

from pki.identity import ConsumerIdentity, DeviceIdentity
from policies import PolicyConfigError
from policies.broker_config import BrokerSettings, Registry, TlsFiles, render_brokers

TLS = TlsFiles(
    "/etc/idmz/ca/chain.pem", "/etc/idmz/tls/ot.pem", "/etc/idmz/tls/ot.key", "/etc/idmz/ca/crl.pem"
)
PRESS = DeviceIdentity.parse("acme/plant1/stamping/line1/cell1/press-01")
ONE_PRESS = Registry(devices=(PRESS,))


def _render(policy, registry=ONE_PRESS, port=8883, **overrides):
    ot = BrokerSettings(port, TLS, "/etc/idmz/ot.acl", **overrides)
    it = BrokerSettings(8884, TLS, "/etc/idmz/it.acl")
    return render_brokers(policy, registry, ot=ot, it=it)


def test_both_brokers_are_tls_only_with_client_certificates(policy) -> None:
    out = _render(policy)
    for broker in (out.ot, out.it):
        lines = broker.config.splitlines()
        for required in (
            "allow_anonymous false",
            "tls_version tlsv1.2",
            "require_certificate true",
            "use_identity_as_username true",
            "crlfile /etc/idmz/ca/crl.pem",
        ):
            assert required in lines
        assert [ln for ln in lines if ln.startswith(("listener", "port "))] in (
            ["listener 8883"],
            ["listener 8884"],
        )
        assert f"# idmz-policy-sha256: {policy.content_hash}" in lines


def test_no_user_gets_a_wildcard_write(policy) -> None:
    out = _render(policy)
    for acl in (out.ot.acl, out.it.acl):
        writes = [ln for ln in acl.splitlines() if ln.startswith("topic write")]
        assert writes
        assert not any("+" in ln or "#" in ln for ln in writes)


def test_ot_acl_binds_each_device_to_its_own_class_topics(policy) -> None:
    acl = _render(policy).ot.acl.splitlines()
    start = acl.index(f"user {PRESS.path}")
    block = acl[start + 1 : start + 5]
    assert block == [
        f"topic write {PRESS.path}/{s}"
        for s in ("telemetry", "features", "events/anomaly", "status")
    ]
    assert "user acme/it/idmz-relay" in acl and "topic read acme/#" in acl


def test_unassigned_devices_and_unknown_consumers_get_no_rights_and_a_note(policy) -> None:
    welder = DeviceIdentity.parse("acme/plant1/welding/line1/cell1/w-01")
    stranger = ConsumerIdentity.parse("acme/it/stranger")
    out = _render(policy, Registry(devices=(PRESS, welder), consumers=(stranger,)))
    assert welder.path not in out.ot.acl + out.it.acl
    assert "stranger" not in out.it.acl
    assert any(welder.path in n for n in out.notes) and any("stranger" in n for n in out.notes)


@pytest.mark.parametrize(
    "overrides",
    [
        {"persistence_dir": "/var/lib/idmz\nlistener 1883"},
        {"bind_address": "0.0.0.0 \nallow_anonymous true"},
        {"log_dest": ("file /var/log/x\nallow_anonymous true",)},
        {"port": 0},
    ],
)
def test_render_inputs_cannot_inject_configuration(policy, overrides) -> None:
    with pytest.raises(PolicyConfigError):
        _render(policy, **overrides)


def test_persistence_and_logs_are_inputs(policy) -> None:
    out = _render(
        policy, persistence_dir="/var/lib/idmz/ot", log_dest=("file /var/log/idmz/ot.log",)
    )
    lines = out.ot.config.splitlines()
    assert "persistence_location /var/lib/idmz/ot/" in lines
    assert "log_dest file /var/log/idmz/ot.log" in lines


def test_missing_conduits_render_no_rights(plant_text) -> None:
    from policies import load_policy

    text = plant_text.replace(
        'from = "idmz"\nto = "it"\nactions = ["publish"]', 'from = "idmz"\nto = "it"\nactions = []'
    )
    text = text.replace('actions = ["subscribe"]', "actions = []")
    out = _render(load_policy(text))
    assert "topic write" not in out.ot.acl + out.it.acl
    assert "topic read acme/plant1" not in out.it.acl
    assert any("conduit" in n for n in out.notes)


def test_every_listener_binds_the_client_id_to_the_certificate(policy) -> None:
    # Review H3/S3: without this a client could take another identity's session (ADR 0058).
    for broker in (_render(policy).ot, _render(policy).it):
        lines = broker.config.splitlines()
        assert "use_identity_as_username true" in lines
        assert "use_username_as_clientid true" in lines


def test_the_plugin_gets_a_bound_id_listener_and_the_same_grants_as_the_acl(policy) -> None:
    from policies.broker_config import BrokerPlugin

    plugin = BrokerPlugin("/opt/idmz_revoke.so", "/run/revoked.txt", "/run/ot.rules",
                          "/run/ot-refusals.log", bound_port=18883)  # fmt: skip
    out = _render(policy, plugin=plugin)
    lines = out.ot.config.splitlines()
    assert [ln for ln in lines if ln.startswith("listener")] == ["listener 8883", "listener 18883"]
    bound = lines[lines.index("listener 18883") :]
    assert "require_certificate true" in bound and "use_identity_as_username true" not in bound
    for line in ("plugin /opt/idmz_revoke.so", "plugin_opt_rules_file /run/ot.rules",
                 "plugin_opt_report_file /run/ot-refusals.log"):  # fmt: skip
        assert line in lines
    rules = [ln for ln in out.ot.rules.splitlines() if not ln.startswith("#")]
    acl_writes = [ln.split()[2] for ln in out.ot.acl.splitlines() if ln.startswith("topic write")]
    assert sorted(r.split()[2] for r in rules if r.startswith("write ")) == sorted(acl_writes)
    assert all(r.split()[1] == PRESS.path for r in rules if r.startswith("write "))
    assert "read acme/it/idmz-relay acme/#" in rules
    it_rules = out.it.rules.splitlines()
    assert f"write acme/it/idmz-relay {PRESS.path}/telemetry" in it_rules


def test_a_devices_ot_writes_carry_its_topic_classes_limits_as_the_plugins_cap(policy) -> None:
    # ADR 0141: a flooding gateway is capped at the OT broker at exactly the numbers the relay's
    # limiter applies; reads, the IT broker and the acl_file carry no cap.
    out = _render(policy)
    cls = policy.device_classes[policy.class_of(PRESS)]  # type: ignore[index]
    capped = [ln for ln in out.ot.rules.splitlines() if ln.startswith(f"write {PRESS.path} ")]
    expected = []
    for sub in cls.publish:
        lim = policy.limits[sub]
        rate = f"{lim.max_messages_per_s:g}"
        expected.append(f"write {PRESS.path} {PRESS.path}/{sub} {rate} {lim.burst}")
    assert sorted(capped) == sorted(expected)
    assert all(len(ln.split(" ")) == 3 for ln in out.ot.rules.splitlines() if ln.startswith("read"))
    assert all(len(ln.split(" ")) == 3 for ln in out.it.rules.splitlines() if ln[:1] in "rw")
    assert not [
        ln for ln in out.ot.acl.splitlines() if ln.startswith("topic") and len(ln.split()) > 3
    ]


@pytest.mark.parametrize(
    ("rate", "burst", "fields"),
    [
        (0.00001, 3, " 0.00001 3"),  # never an exponent, which the plugin would refuse
        (2.5, 1, " 2.5 1"),
        (1_000_000, 1_000_000_000, " 1000000 1000000000"),
        (1_000_001, 10, ""),  # past what the plugin takes: no cap (the relay's limiter stays)
        (5, 1_000_000_001, ""),
        (float("inf"), 10, ""),
    ],
)
def test_a_rate_cap_is_a_plain_decimal_in_the_plugins_range_or_absent(rate, burst, fields) -> None:
    from policies.broker_config import rate_cap
    from policies.document import TopicLimits

    assert rate_cap(TopicLimits("telemetry", 1024, rate, burst, "envelope")) == fields
    assert rate_cap(None) == ""


def test_the_plugins_cap_bounds_match_the_renderers() -> None:
    # The renderer renders no cap past what the plugin takes, so a limit the plugin refuses
    # could never turn into a skipped rule, hence a device that may publish nothing.
    from pathlib import Path

    from policies.broker_config import MAX_CAP_BURST, MAX_CAP_RATE

    source = (Path(__file__).parents[2] / "relay" / "native" / "idmz_revoke.c").read_text()
    assert f"#define IDMZ_MAX_RATE {MAX_CAP_RATE}.0 " in source
    assert f"#define IDMZ_MAX_BURST {MAX_CAP_BURST}.0 " in source


def test_the_queue_for_each_client_is_bounded(policy) -> None:
    # Review H2: max_queued_messages 0 (unbounded) let one stuck session fill the memory.
    assert "max_queued_messages 100000" in _render(policy).ot.config.splitlines()
    assert "max_queued_messages 500" in _render(policy, max_queued_messages=500).ot.config
    with pytest.raises(PolicyConfigError, match="unbounded"):
        _render(policy, max_queued_messages=0)


def test_relay_client_ids_belong_to_the_relay_and_derive_from_its_secret(policy) -> None:
    from policies.broker_config import relay_client_id

    secret = b"0123456789abcdef-relay-secret"
    ids = {relay_client_id(policy, secret, i, side) for i in range(3) for side in ("ot", "it")}
    assert len(ids) == 6
    assert all(cid.startswith("acme/it/idmz-relay:") for cid in ids)
    assert relay_client_id(policy, secret, 0, "ot") != relay_client_id(policy, b"x" * 32, 0, "ot")
    with pytest.raises(PolicyConfigError, match="at least 16"):
        relay_client_id(policy, b"short", 0, "ot")
