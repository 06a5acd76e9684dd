"""Property tests: whatever the topic, no identity is ever authorized outside its own path or on
a malformed topic, and IT consumers never publish."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pki.identity import ConsumerIdentity, DeviceIdentity
from policies import Action, evaluate
from policies.topic import LEVEL

label = st.from_regex(LEVEL, fullmatch=True)
# Mostly plausible names, so identities land inside the policy's assignments.
site_label = st.one_of(
    st.sampled_from(["acme", "plant1", "stamping", "line1", "cell1", "cell3"]), label
)
devices = st.builds(
    DeviceIdentity,
    st.just("acme"),
    st.sampled_from(["plant1", "plant2"]),
    st.sampled_from(["stamping", "welding"]),
    site_label,
    site_label,
    label,
)
consumers = st.builds(ConsumerIdentity, st.just("acme"), st.sampled_from(["historian", "mes", "x"]))
SUBS = ["telemetry", "features", "events/anomaly", "status"]
NASTY = [
    "#", "+", "/", "//", "..", ".", "\x00", "$SYS", "$share", "\u0430", "\u200b", "\uff0f",
    "\u2215", "A", "T", " ", "\n", "\x7f", "é", "\u0131",
]  # fmt: skip
chunks = st.one_of(st.sampled_from(NASTY), label, st.sampled_from(SUBS), st.text(max_size=5))


@st.composite
def hostile_topics(draw: st.DrawFn, device: DeviceIdentity, other: DeviceIdentity) -> str:
    base = draw(st.sampled_from([device.path, other.path, "", "$SYS", device.path.upper()]))
    parts = draw(st.lists(chunks, max_size=4))
    seps = draw(
        st.lists(st.sampled_from(["/", "", "//"]), min_size=len(parts), max_size=len(parts))
    )
    return base + "".join(s + p for s, p in zip(seps, parts, strict=True))


def _only_legal_topic(policy, device: DeviceIdentity, topic: str) -> bool:
    cls = policy.class_of(device)
    if cls is None:
        return False
    return topic in {f"{device.path}/{sub}" for sub in policy.device_classes[cls].publish}


@settings(max_examples=1500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), device=devices, other=devices)
def test_no_identity_is_authorized_beyond_its_own_class_topics(policy, data, device, other) -> None:
    topic = data.draw(hostile_topics(device, other))
    decision = evaluate(policy, device, Action.PUBLISH, topic)
    if decision.allowed:
        assert _only_legal_topic(policy, device, topic), topic
        assert topic.startswith(device.path + "/")
        assert topic.isascii() and topic == topic.lower()
        assert not set(topic) & {"#", "+", "\x00", "$"}
        assert "//" not in topic and "/./" not in topic and "/../" not in topic
        assert not topic.endswith("/")


@settings(max_examples=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(device=devices, other=devices, sub=st.sampled_from(SUBS))
def test_device_is_never_authorized_under_another_identitys_path(
    policy, device, other, sub
) -> None:
    if other == device:
        return
    assert not evaluate(policy, device, Action.PUBLISH, f"{other.path}/{sub}").allowed


@settings(max_examples=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(consumer=consumers, topic=st.text(max_size=80) | st.sampled_from(SUBS + NASTY))
def test_it_consumers_can_never_publish(policy, consumer, topic) -> None:
    assert not evaluate(policy, consumer, Action.PUBLISH, topic).allowed


@settings(max_examples=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(device=devices, topic=st.text(max_size=80))
def test_devices_can_never_subscribe(policy, device, topic) -> None:
    assert not evaluate(policy, device, Action.SUBSCRIBE, topic).allowed


@settings(max_examples=800, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    consumer=consumers,
    levels=st.lists(
        st.one_of(
            label, st.sampled_from(["+", "#", "acme", "plant1", "stamping", "line1", *NASTY])
        ),
        max_size=8,
    ),
    share=st.booleans(),
)
def test_consumer_is_never_granted_a_filter_outside_its_prefixes(
    policy, consumer, levels, share
) -> None:
    topic_filter = "/".join(levels)
    asked = f"$share/g/{topic_filter}" if share else topic_filter
    decision = evaluate(policy, consumer, Action.SUBSCRIBE, asked)
    if decision.allowed:
        rule = policy.consumers[consumer.name]
        assert any(tuple(levels[: len(p.levels)]) == p.levels for p in rule.subscribe), asked
        assert topic_filter.isascii() and topic_filter == topic_filter.lower()
        assert not topic_filter.startswith("$") and "\x00" not in topic_filter
