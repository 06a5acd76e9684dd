"""The relay's core (`relay.pipeline`) on in-memory ports, over random interleavings.

Hypothesis drives gateways' messages (accepted or refused by the inspection, some re-sent with
the same id), OT deliveries, commit cycles, IT answers (acks and 0x87 refusals), IT connection
losses that keep a prefix of what was on the wire, the drain, audit failures, a full spool and
worker restarts. The fakes (`tests/support/relay_fakes.py`) check at the moment of each call:

* nothing reaches IT before its audit record is durable;
* nothing is acknowledged on OT before its audit record is durable and it is safe (IT
  acknowledged it, its spool record is fsynced, it is a kept dead letter, or it is a refusal or
  a duplicate of something safe or still held on OT), and nothing is acknowledged twice;

and the machine checks after every step that each device's messages reach IT in arrival order,
(a message the IT broker refused once is a dead letter and out of that order, ADR 0080),
and at the end, once the faults stop, that everything is acknowledged and nothing acknowledged
was lost (each accepted message is at IT or a kept dead letter).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from relay.errors import PipelineError
from relay.pipeline import Item, ItemState, advance
from tests.support.relay_fakes import DEVICES, InvariantError, World


class RelayCore(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.sent: dict[str, int] = {}

    @rule(device=st.sampled_from(DEVICES), accepted=st.booleans(), data=st.data())
    def publish(self, device: str, accepted: bool, data: st.DataObject) -> None:
        n = self.sent.get(device, 0)
        resend = n > 0 and data.draw(st.booleans(), label="resend")
        if resend:
            msg_id = f"m{data.draw(st.integers(0, n - 1), label='which')}"
        else:
            msg_id, self.sent[device] = f"m{n}", n + 1
        self.world.publish(device, msg_id, accepted)

    @rule(count=st.integers(1, 8))
    def deliver(self, count: int) -> None:
        self.world.deliver(count)

    @rule()
    def cycle(self) -> None:
        self.world.cycle()

    @rule(count=st.integers(1, 8), refuse=st.lists(st.booleans(), max_size=8))
    def it_answers(self, count: int, refuse: list[bool]) -> None:
        self.world.it_answer(count, refuse)

    @precondition(lambda self: self.world.it.up)
    @rule(received=st.integers(0, 4))
    def it_connection_lost(self, received: int) -> None:
        self.world.it_down(received)

    @precondition(lambda self: not self.world.it.up)
    @rule()
    def it_connection_back(self) -> None:
        self.world.it.up = True

    @rule(count=st.integers(1, 8))
    def drain(self, count: int) -> None:
        self.world.drain(count)

    @rule(failing=st.booleans())
    def audit_log(self, failing: bool) -> None:
        self.world.audit.failing = failing

    @rule(capacity=st.sampled_from([0, 2, 1_000_000]))
    def spool_capacity(self, capacity: int) -> None:
        self.world.spool.capacity = capacity

    @rule(received=st.integers(0, 4))
    def restart(self, received: int) -> None:
        self.world.restart(received)

    @invariant()
    def each_device_reaches_it_in_arrival_order(self) -> None:
        assert_arrival_order(self.world)

    def teardown(self) -> None:
        settle(self.world)


def assert_arrival_order(world: World) -> None:
    arrival: dict[tuple[str, str], int] = {}
    for p in world.published:
        if p.accepted:
            arrival.setdefault((p.device, p.msg_id), p.n)
    seen: set[tuple[str, str]] = set()
    last: dict[str, int] = {}
    for key in world.it.log:
        if key in seen:
            continue  # a re-send after a lost acknowledgement: same id, consumers drop it
        if key in world.it.refused:
            continue  # refused by IT once: a dead letter, taken out of the order (ADR 0080)
        seen.add(key)
        n = arrival[key]
        if n < last.get(key[0], -1):
            raise InvariantError(f"{key} reached IT after a message that arrived later")
        last[key[0]] = n


def settle(world: World) -> None:
    """The faults stop: everything is acknowledged and nothing acknowledged is lost."""
    world.audit.failing = False
    world.spool.capacity = 1_000_000
    world.it.up = True
    for _ in range(200):
        world.deliver(1_000)
        world.drain(1_000)
        world.it_answer(1_000, [])
        world.cycle()
        if not (world.pending or world.unacked or world.spool.records or world.it.inflight):
            break
    assert not world.unacked and not world.pending, "messages never acknowledged"
    assert not world.spool.records, "the spool never drained"
    delivered = set(world.it.log) | world.letters.kept_keys()
    lost = world.acked_keys - delivered
    assert not lost, f"acknowledged on OT but never at IT nor a dead letter: {sorted(lost)}"
    assert_arrival_order(world)


RelayCore.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_no_interleaving_acknowledges_early_reorders_or_loses = RelayCore.TestCase


# -- the same invariants, one attack at a time ---------------------------------------------


def test_message_is_not_forwarded_or_acknowledged_while_the_audit_log_fails() -> None:
    world = World()
    world.audit.failing = True
    world.publish(DEVICES[0], "m0", accepted=True)
    world.publish(DEVICES[0], "m1", accepted=False)
    world.deliver(2)
    assert world.cycle() is False
    assert world.it.inflight == [] and world.spool.records == [] and world.acked == set()
    assert world.pipeline.stats.audit_failures == 1
    world.audit.failing = False
    assert world.cycle() is True
    world.it_answer(1, [])
    world.cycle()
    assert len(world.acked) == 2 and world.it.log == [(DEVICES[0], "m0")]


def test_duplicate_of_a_message_already_safe_is_not_forwarded_again() -> None:
    world = World()
    world.dedup.known.add((DEVICES[0], "m0"))  # another worker forwarded it
    world.publish(DEVICES[0], "m0", accepted=True)
    world.deliver(1)
    world.cycle()
    assert world.it.inflight == [] and len(world.acked) == 1
    assert world.pipeline.stats.duplicates == 1
    [event] = world.audit.events
    assert event.details["duplicate"] is True


def test_message_refused_by_it_is_a_dead_letter_and_blocks_nothing() -> None:
    world = World()
    for n in range(3):
        world.publish(DEVICES[0], f"m{n}", accepted=True)
    world.deliver(3)
    world.cycle()
    world.it_answer(3, [True, False, False])
    world.cycle()
    assert world.letters.kept_keys() == {(DEVICES[0], "m0")}
    assert world.it.log == [(DEVICES[0], "m1"), (DEVICES[0], "m2")]
    assert len(world.acked) == 3 and world.pipeline.stats.dead_letters == 1
    assert any(e.action == "relay.message.refused_by_it" for e in world.audit.events)


def test_full_spool_holds_messages_unacknowledged_until_there_is_room() -> None:
    world = World()
    world.spool.capacity = 0
    world.it.up = False
    world.publish(DEVICES[0], "m0", accepted=True)
    world.deliver(1)
    world.cycle()
    assert world.acked == set() and world.pipeline.stats.spool_full
    world.spool.capacity = 10
    world.cycle()  # the held message goes to the spool; the next cycle's fsync makes it safe
    world.cycle()
    assert len(world.acked) == 1 and world.spool.durable() == {(DEVICES[0], "m0")}


def test_a_transition_the_state_machine_does_not_have_raises() -> None:
    done = Item(1, (0, 0), "t", b"", DEVICES[0], "m0", 0.0, ItemState.ACKED)
    with pytest.raises(PipelineError):
        advance(done, ItemState.FORWARDED)
    refused = Item(2, (0, 1), "t", b"", DEVICES[0], "m1", 0.0, ItemState.REFUSED)
    with pytest.raises(PipelineError):  # a refusal is never forwarded, audited or not
        advance(refused, ItemState.FORWARDED)
