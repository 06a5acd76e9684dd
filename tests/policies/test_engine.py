"""Topic rules: a device publishes only its class's sub-topics under its own path; consumers
only subscribe under their prefixes; nothing flows toward OT; refusals name a stable reason."""

from __future__ import annotations

import pytest

from pki.identity import ConsumerIdentity, DeviceIdentity
from policies import (
    AccessDeniedError,
    Action,
    ReasonCode,
    evaluate,
    load_policy,
    split_device_topic,
)


def test_device_may_publish_each_sub_topic_of_its_class(policy, press) -> None:
    for sub in ("telemetry", "features", "events/anomaly", "status"):
        decision = evaluate(policy, press, Action.PUBLISH, f"{press.path}/{sub}")
        assert decision.allowed, decision
        assert decision.reason_code is ReasonCode.ALLOWED


def test_decision_cannot_be_used_as_a_bool(policy, press) -> None:
    decision = evaluate(policy, press, Action.PUBLISH, "#")
    with pytest.raises(TypeError, match="not a bool"):
        bool(decision)
    with pytest.raises(TypeError):
        if decision:  # the bug this prevents: a refusal read as a grant
            pass


def test_enforce_raises_access_denied_with_the_decision(policy, press, other_press) -> None:
    with pytest.raises(AccessDeniedError) as err:
        evaluate(policy, press, Action.PUBLISH, f"{other_press.path}/telemetry").enforce()
    assert err.value.decision.reason_code is ReasonCode.TOPIC_OUTSIDE_IDENTITY
    assert evaluate(policy, press, Action.PUBLISH, f"{press.path}/status").enforce().allowed


def test_device_cannot_publish_under_another_devices_path(policy, press, other_press) -> None:
    decision = evaluate(policy, press, Action.PUBLISH, f"{other_press.path}/telemetry")
    assert not decision.allowed
    assert decision.reason_code is ReasonCode.TOPIC_OUTSIDE_IDENTITY


def test_device_cannot_publish_a_sub_topic_its_class_does_not_list(policy) -> None:
    sensor = DeviceIdentity.parse("acme/plant1/stamping/line1/cell3/vib-01")
    decision = evaluate(policy, sensor, Action.PUBLISH, f"{sensor.path}/events/anomaly")
    assert decision.reason_code is ReasonCode.TOPIC_NOT_IN_CLASS
    assert evaluate(policy, sensor, Action.PUBLISH, f"{sensor.path}/telemetry").allowed


def test_most_specific_assignment_wins(policy) -> None:
    sensor = DeviceIdentity.parse("acme/plant1/stamping/line1/cell3/vib-01")
    assert policy.class_of(sensor) == "sensor-gateway"
    assert policy.class_of(DeviceIdentity.parse("acme/plant1/stamping/line2/c/d")) == "gateway"


def test_unassigned_device_is_refused(policy) -> None:
    welder = DeviceIdentity.parse("acme/plant1/welding/line1/cell1/welder-01")
    decision = evaluate(policy, welder, Action.PUBLISH, f"{welder.path}/telemetry")
    assert decision.reason_code is ReasonCode.DEVICE_UNASSIGNED


def test_device_of_another_enterprise_is_refused(policy) -> None:
    foreign = DeviceIdentity.parse("globex/plant1/stamping/line1/cell1/press-01")
    decision = evaluate(policy, foreign, Action.PUBLISH, f"{foreign.path}/telemetry")
    assert decision.reason_code is ReasonCode.ENTERPRISE_MISMATCH


@pytest.mark.parametrize(
    ("suffix", "code"),
    [
        ("#", ReasonCode.TOPIC_WILDCARD),
        ("+", ReasonCode.TOPIC_WILDCARD),
        ("telemetry/#", ReasonCode.TOPIC_WILDCARD),
        ("telemetry\x00", ReasonCode.TOPIC_CONTROL_CHARACTER),
        ("Telemetry", ReasonCode.TOPIC_UPPER_CASE),
        ("telemetry/", ReasonCode.TOPIC_EMPTY_LEVEL),
        ("/telemetry", ReasonCode.TOPIC_EMPTY_LEVEL),
        ("../press-02/telemetry", ReasonCode.TOPIC_DOT_SEGMENT),
        ("t\u0435lemetry", ReasonCode.TOPIC_NOT_ASCII),  # Cyrillic 'е'
        ("telemetry\u200b", ReasonCode.TOPIC_NOT_ASCII),  # zero-width space
        ("tele metry", ReasonCode.TOPIC_INVALID_LEVEL),
        ("x" * 600, ReasonCode.TOPIC_TOO_LONG),
    ],
)
def test_malformed_topic_under_own_path_is_refused(policy, press, suffix, code) -> None:
    decision = evaluate(policy, press, Action.PUBLISH, f"{press.path}/{suffix}")
    assert not decision.allowed
    assert decision.reason_code is code


@pytest.mark.parametrize(
    ("topic", "code"),
    [
        ("$SYS/broker/clients/total", ReasonCode.TOPIC_RESERVED),
        ("$share/g/acme/plant1/stamping/line1/cell1/press-01/telemetry", ReasonCode.TOPIC_RESERVED),
        ("#", ReasonCode.TOPIC_WILDCARD),
        ("+", ReasonCode.TOPIC_WILDCARD),
        ("", ReasonCode.TOPIC_EMPTY),
    ],
)
def test_reserved_wildcard_and_empty_topics_are_refused(policy, press, topic, code) -> None:
    assert evaluate(policy, press, Action.PUBLISH, topic).reason_code is code


def test_device_may_not_subscribe_because_nothing_flows_toward_ot(policy, press) -> None:
    decision = evaluate(policy, press, Action.SUBSCRIBE, f"{press.path}/telemetry")
    assert decision.reason_code is ReasonCode.FLOW_INTO_OT


def test_it_consumer_can_never_publish(policy, historian) -> None:
    decision = evaluate(policy, historian, Action.PUBLISH, "acme/plant1/stamping/x/y/z/telemetry")
    assert decision.reason_code is ReasonCode.CONSUMER_PUBLISH_FORBIDDEN


def test_consumer_subscribes_only_under_its_prefixes(policy) -> None:
    mes = ConsumerIdentity.parse("acme/it/mes")
    assert evaluate(policy, mes, Action.SUBSCRIBE, "acme/plant1/stamping/line1/#").allowed
    assert evaluate(policy, mes, Action.SUBSCRIBE, "acme/plant1/stamping/line1/+/+/status").allowed
    assert evaluate(
        policy, mes, Action.SUBSCRIBE, "$share/mes/acme/plant1/stamping/line1/#"
    ).allowed
    for outside in ("acme/plant1/stamping/#", "acme/+/stamping/line1/#", "#", "acme/plant1/#"):
        decision = evaluate(policy, mes, Action.SUBSCRIBE, outside)
        assert not decision.allowed, outside
    assert (
        evaluate(policy, mes, Action.SUBSCRIBE, "#").reason_code is ReasonCode.TOPIC_OUTSIDE_GRANT
    )
    assert (
        evaluate(policy, mes, Action.SUBSCRIBE, "$SYS/#").reason_code is ReasonCode.TOPIC_RESERVED
    )


def test_unknown_consumer_is_refused(policy) -> None:
    stranger = ConsumerIdentity.parse("acme/it/stranger")
    decision = evaluate(policy, stranger, Action.SUBSCRIBE, "acme/plant1/#")
    assert decision.reason_code is ReasonCode.CONSUMER_UNKNOWN


def test_empty_policy_refuses_everything(press, historian) -> None:
    empty = load_policy(
        'version = 1\nenterprise = "acme"\n[zones.ot]\n[zones.idmz]\n[zones.it]\n', source="e.toml"
    )
    assert evaluate(empty, press, Action.PUBLISH, f"{press.path}/telemetry").reason_code in {
        ReasonCode.NO_CONDUIT,
        ReasonCode.DEVICE_UNASSIGNED,
    }
    assert not evaluate(empty, historian, Action.SUBSCRIBE, "acme/plant1/#").allowed


def test_empty_consumer_allow_list_refuses(plant_text, historian) -> None:
    text = plant_text.replace('subscribe = ["acme/plant1"]', "subscribe = []", 1)
    decision = evaluate(load_policy(text), historian, Action.SUBSCRIBE, "acme/plant1/#")
    assert decision.reason_code is ReasonCode.TOPIC_OUTSIDE_GRANT


def test_missing_conduit_refuses_device_publish(plant_text, press) -> None:
    text = plant_text.replace(
        'from = "ot"\nto = "idmz"\nactions = ["publish"]', 'from = "ot"\nto = "idmz"\nactions = []'
    )
    decision = evaluate(load_policy(text), press, Action.PUBLISH, f"{press.path}/telemetry")
    assert decision.reason_code is ReasonCode.NO_CONDUIT


def test_split_device_topic_names_the_sender(press) -> None:
    assert split_device_topic(f"{press.path}/events/anomaly") == (press, "events/anomaly")
    assert split_device_topic("acme/plant1/x/telemetry") is None
    assert split_device_topic("ACME/plant1/a/b/c/d/telemetry") is None
    assert split_device_topic(f"{press.path}/") is None


def test_missing_idmz_to_it_conduit_refuses_device_data(plant_text, press) -> None:
    text = plant_text.replace(
        'from = "idmz"\nto = "it"\nactions = ["publish"]', 'from = "idmz"\nto = "it"\nactions = []'
    )
    decision = evaluate(load_policy(text), press, Action.PUBLISH, f"{press.path}/telemetry")
    assert decision.reason_code is ReasonCode.NO_CONDUIT
