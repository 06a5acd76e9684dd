"""The decision engine: may this principal publish or subscribe to this topic?

Pure and fast. The relay calls `evaluate` for every message, so the grant path is one cached
dictionary lookup per device plus a string comparison: a topic is allowed only if it is *exactly*
``<device path>/<sub-topic>`` for a sub-topic of the device's class. Sub-topics were validated
at load time, so exact equality also rules out every malformed topic (NUL, wildcards, upper case,
look-alike Unicode, ``..``, empty levels) without scanning it. Only refusals run the full
classification, to name the reason. Cost on this machine: about 0.5 µs per granted call and a
few µs per refusal (``bench/policy_evaluate.py`` is the place for a timing claim).

>>> from pki.identity import DeviceIdentity
>>> d = DeviceIdentity.parse("acme/plant1/stamping/line1/cell1/press-01")
>>> evaluate(policy, d, Action.PUBLISH, d.path + "/telemetry").allowed  # doctest: +SKIP
True
"""

from __future__ import annotations

from pki.identity import ConsumerIdentity, DeviceIdentity
from policies.decision import Action, Decision, ReasonCode
from policies.document import Policy
from policies.topic import strip_shared_subscription, topic_filter_problem, topic_name_problem

_ALLOWED_PUBLISH = Decision.allow("device publishes a sub-topic its class lists")
_ALLOWED_SUBSCRIBE = Decision.allow("consumer subscribes under a granted prefix")
# Bounds the per-device cache; devices come from broker-verified certificates, so this is a
# safety net, not a working-set size.
DEVICE_CACHE_LIMIT = 65_536

_Entry = tuple[str, frozenset[str]] | None


def _device_entry(policy: Policy, device: DeviceIdentity) -> _Entry:
    cache = policy.device_cache
    try:
        return cache[device]
    except KeyError:
        pass
    entry: _Entry = None
    name = policy.class_of(device) if device.enterprise == policy.enterprise else None
    if name is not None and policy.device_data_flows:
        entry = (device.topic_prefix, policy.class_topics[name])
    if len(cache) >= DEVICE_CACHE_LIMIT:
        cache.clear()
    cache[device] = entry
    return entry


def evaluate(
    policy: Policy, principal: DeviceIdentity | ConsumerIdentity, action: Action, topic: str
) -> Decision:
    """Decide whether ``principal`` may ``action`` on ``topic`` (a topic name to publish, or a
    subscription filter). Deny by default; the Decision names the reason."""
    if type(principal) is DeviceIdentity:
        if action is Action.PUBLISH:
            entry = _device_entry(policy, principal)
            if entry is not None:
                prefix, subs = entry
                if topic.startswith(prefix) and topic[len(prefix) :] in subs:
                    return _ALLOWED_PUBLISH
            return _refuse_device_publish(policy, principal, topic)
        if action is Action.SUBSCRIBE:
            return Decision.deny(
                ReasonCode.FLOW_INTO_OT,
                f"device {principal} may not subscribe: nothing flows toward OT",
            )
    elif type(principal) is ConsumerIdentity:
        if action is Action.PUBLISH:
            return Decision.deny(
                ReasonCode.CONSUMER_PUBLISH_FORBIDDEN, f"IT consumer {principal} never publishes"
            )
        if action is Action.SUBSCRIBE:
            return _consumer_subscribe(policy, principal, topic)
    else:
        raise TypeError(
            f"principal must be a DeviceIdentity or ConsumerIdentity; found {principal!r}"
        )
    raise TypeError(f"action must be an Action; found {action!r}")


def _refuse_device_publish(policy: Policy, device: DeviceIdentity, topic: str) -> Decision:
    problem = topic_name_problem(topic)
    if problem:
        return Decision.deny(*problem)
    if not topic.startswith(device.topic_prefix):
        return Decision.deny(
            ReasonCode.TOPIC_OUTSIDE_IDENTITY,
            f"device {device} may publish only under its own path; topic {topic!r} is outside it",
        )
    if not policy.device_data_flows:
        return Decision.deny(
            ReasonCode.NO_CONDUIT,
            "device data needs two conduits: ot -> idmz publish and idmz -> it publish",
        )
    if device.enterprise != policy.enterprise:
        return Decision.deny(
            ReasonCode.ENTERPRISE_MISMATCH,
            f"device {device} is not in enterprise {policy.enterprise!r}",
        )
    cls = policy.class_of(device)
    if cls is None:
        return Decision.deny(
            ReasonCode.DEVICE_UNASSIGNED, f"device {device} has no device class in the policy"
        )
    sub = topic[len(device.topic_prefix) :]
    return Decision.deny(
        ReasonCode.TOPIC_NOT_IN_CLASS, f"device class {cls!r} does not list sub-topic {sub!r}"
    )


def _consumer_subscribe(policy: Policy, consumer: ConsumerIdentity, topic: str) -> Decision:
    _group, topic_filter = strip_shared_subscription(topic)
    problem = topic_filter_problem(topic_filter)
    if problem:
        return Decision.deny(*problem)
    if not policy.consumers_may_subscribe:
        return Decision.deny(
            ReasonCode.NO_CONDUIT, "no conduit lets the IT zone subscribe in the IDMZ"
        )
    if consumer.enterprise != policy.enterprise:
        return Decision.deny(
            ReasonCode.ENTERPRISE_MISMATCH,
            f"consumer {consumer} is not in enterprise {policy.enterprise!r}",
        )
    rule = policy.consumers.get(consumer.name)
    if rule is None:
        return Decision.deny(
            ReasonCode.CONSUMER_UNKNOWN, f"no consumer rule for {consumer} in the policy"
        )
    levels = tuple(topic_filter.split("/"))
    for prefix in rule.subscribe:
        if levels[: len(prefix.levels)] == prefix.levels:
            return _ALLOWED_SUBSCRIBE
    return Decision.deny(
        ReasonCode.TOPIC_OUTSIDE_GRANT,
        f"consumer {consumer} may subscribe only under "
        f"{', '.join(p.path for p in rule.subscribe) or 'nothing'}; filter {topic!r} is outside",
    )
