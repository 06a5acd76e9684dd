"""The real broker ports of a worker (the composition's default for `Worker`'s ``links``):
the lean OT reader and IT writer (`relay.ports.OTLink`, `relay.ports.ITLink`) with the
worker's secret-derived client ids, its subscription and limits, calling back into it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from policies.broker_config import (
    PACKET_OVERHEAD_BYTES,
    max_packet_bytes,
    relay_client_id,
    relay_subscription,
)
from policies.sparkplug import SPARKPLUG_PREFIX
from relay.it_sink import ITSink
from relay.ot_source import OTSource
from relay.ports import ITLink, OTLink
from relay.share_secret import ensure_share_secret

if TYPE_CHECKING:
    from relay.worker import Worker


def broker_links(worker: Worker) -> tuple[OTLink, ITLink]:
    """The real ports to the brokers (the composition's default): the lean OT reader and IT
    writer, with the worker's client ids, subscription and limits, calling back into it."""
    config, policy, limits = worker.config, worker.policy, worker.config.limits
    ot = OTSource(
        config.ot,
        client_id=client_id(worker, "ot"),
        subscription=subscription(worker),
        receive_maximum=limits.max_inflight,
        session_expiry_s=config.session_expiry_s,
        # Above what the OT broker accepts, so it never has to drop a message for us.
        max_packet_bytes=max_packet_bytes(policy) + PACKET_OVERHEAD_BYTES,
        on_delivery=worker.on_delivery,
        on_state=worker.on_ot_state,
        more_subscriptions=sparkplug_subscriptions(worker),
    )
    it = ITSink(
        config.it,
        client_id=client_id(worker, "it"),
        # Persistent, so that a CONNACK without the session says the broker lost its state.
        session_expiry_s=config.session_expiry_s,
        on_acked=worker.on_it_acked,
        on_down=worker.on_it_down,
        on_up=worker.on_it_up,
    )
    return ot, it


def client_id(worker: Worker, side: str) -> str:
    """``<relay identity>:<secret-derived tag>-<index>-<side>`` (ADR 0058): the brokers'
    plugin admits it only with the relay's certificate, and no device can guess it."""
    config, policy = worker.config, worker.policy
    secret_file = config.share_secret_file or config.state_dir / "share-secret"
    return relay_client_id(policy, ensure_share_secret(secret_file), worker.index, side)


def sparkplug_subscriptions(worker: Worker) -> tuple[str, ...]:
    """``spBv1.0/<group>/#`` per Sparkplug group of the policy, plain (never shared) and held by
    worker 0 alone: a node's sequence numbers, bdSeq and aliases are checked against its own
    history, which one worker must see whole and in order (ADR 0110)."""
    sp = worker.policy.sparkplug
    if sp is None or worker.index != 0:
        return ()
    return tuple(f"{SPARKPLUG_PREFIX}{group}/#" for group in sp.groups)


def subscription(worker: Worker) -> str:
    """One worker: a plain persistent subscription (Mosquitto 2.0.11 restores it from
    persistence after a broker restart and keeps strict order). Several: an MQTT 5 shared
    subscription (ADR 0052) whose group is derived from the relay's secret (ADR 0034), so a
    gateway that knows the policy's public group name cannot join it."""
    config, policy = worker.config, worker.policy
    if not config.shared_subscription:
        return f"{policy.enterprise}/#"
    secret_file = config.share_secret_file or config.state_dir / "share-secret"
    return relay_subscription(policy, ensure_share_secret(secret_file))
