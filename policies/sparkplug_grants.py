"""The broker grants Sparkplug B needs (ADR 0110), rendered with the others by
`policies.broker_config.render_brokers`:

* OT broker: each registered edge node writes exactly its node's NBIRTH/NDEATH/NDATA and its
  listed devices' DBIRTH/DDEATH/DDATA; never NCMD, DCMD or STATE. It may read one topic, the
  configured primary host's STATE, which only the appliance writes (from configuration, never
  from IT). The relay reads ``spBv1.0/<group>/#`` of the policy's groups.
* IT broker: the relay writes exactly the nodes' topics and their birth-cache topics
  (``$sparkplug/certificates/...``, retained); consumers read the groups they are granted,
  births included. Nobody on IT writes anything toward a node: there is no IT→OT path, and on
  IT an NCMD or a STATE from a host application is refused by the broker as well.
"""

from __future__ import annotations

from collections.abc import Iterable

from pki.identity import ConsumerIdentity, DeviceIdentity
from policies.document import Policy, Zone
from policies.sparkplug import BIRTH_CACHE_PREFIX, SPARKPLUG_PREFIX, state_topic

# (zone, user, [(access, topic filter), ...]) per user block
Grant = tuple[Zone, str, list[tuple[str, str]]]


def sparkplug_ot_writes(policy: Policy) -> dict[str, frozenset[str]]:
    """What each identity may write on OT outside its own path: its node's exact topics, and
    the relay's STATE (what `idmz policy check` accepts in an OT ACL)."""
    sp = policy.sparkplug
    if sp is None:
        return {}
    out = {i.path: frozenset(n.topics()) for i, n in sp.nodes.items()}
    if sp.host_id:
        out[policy.relay.identity.path] = frozenset({state_topic(sp.host_id)})
    return out


def sparkplug_grants(
    policy: Policy, devices: Iterable[DeviceIdentity], notes: list[str]
) -> list[Grant]:
    """The grants for the registered ``devices`` (unregistered nodes get none, noted)."""
    sp = policy.sparkplug
    if sp is None or not policy.device_data_flows:
        return []
    relay = policy.relay.identity.path
    state = state_topic(sp.host_id) if sp.host_id else None
    registered = set(devices)
    grants: list[Grant] = []
    it_writes: list[tuple[str, str]] = []
    for identity, node in sorted(sp.nodes.items(), key=lambda kv: kv[0].path):
        if identity not in registered:
            notes.append(f"sparkplug node {node.group}/{node.node}: {identity} is not registered")
            continue
        ot = [("write", t) for t in node.topics()]
        if state is not None:
            ot.append(("read", state))
        grants.append((Zone.OT, identity.path, ot))
        it_writes += [("write", t) for t in node.topics() + node.births()]
    relay_ot = [("read", f"{SPARKPLUG_PREFIX}{g}/#") for g in sp.groups]
    if state is not None:
        relay_ot.append(("write", state))  # the appliance's STATE publisher (relay.sparkplug_state)
    grants.append((Zone.OT, relay, relay_ot))
    if it_writes:
        grants.append((Zone.IT, relay, it_writes))
    if policy.consumers_may_subscribe:
        for name, rule in sorted(policy.consumers.items()):
            reads = [
                ("read", f"{prefix}{SPARKPLUG_PREFIX}{g}/#")
                for g in rule.sparkplug_groups
                for prefix in ("", BIRTH_CACHE_PREFIX)
            ]
            if reads:
                grants.append((Zone.IT, ConsumerIdentity(policy.enterprise, name).path, reads))
    return grants
