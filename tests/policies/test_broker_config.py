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
