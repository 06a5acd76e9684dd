"""Each edge node's Sparkplug session as the relay keeps it (relay.sparkplug, ADR 0110): what is
refused, what is a gap, what one node can do to another, and how much state a node can make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import ReasonCode, load_policy
from policies.sparkplug import SparkplugPolicy, parse_topic
from policies.sparkplug_codec import DOUBLE, INT32, STRING, UINT64, encode_sparkplug
from relay.sparkplug import SparkplugTracker
from tests.support.sparkplug_policy import GROUP, NODE_1, NODE_2, sparkplug_policy_text

NOW_MS = 1_800_000_000_000


@pytest.fixture(scope="module")
def sparkplug() -> SparkplugPolicy:
    sp = load_policy(sparkplug_policy_text()).sparkplug
    assert sp is not None
    return sp


def birth(bd: int = 1, seq: int = 0, **extra: Any) -> bytes:
    return encode_sparkplug(timestamp=NOW_MS, seq=seq, metrics=[
        {"name": "bdSeq", "datatype": UINT64, "long_value": bd},
        {"name": "speed", "alias": 7, "datatype": DOUBLE, "double_value": 1.0},
        {"name": "mode", "datatype": STRING, "string_value": "auto"},
        *extra.get("more", []),
    ])  # fmt: skip


def data(seq: int, *metrics: dict[str, Any], ts: int = NOW_MS) -> bytes:
    return encode_sparkplug(timestamp=ts, seq=seq, metrics=list(metrics))


def death(bd: int) -> bytes:
    return encode_sparkplug(
        timestamp=1, metrics=[{"name": "bdSeq", "datatype": UINT64, "long_value": bd}]
    )


class Session:
    def __init__(self, sp: SparkplugPolicy) -> None:
        self.tracker = SparkplugTracker(sp)
        self.sp = sp
        self.t = 0.0

    def send(self, topic: str, raw: bytes, ts_ms: int = NOW_MS) -> Any:
        parsed = parse_topic(topic)
        assert parsed is not None
        node = self.sp.by_node[parsed.group, parsed.node]
        self.t += 0.1
        return self.tracker.judge(node, parsed, raw, now=self.t, now_ms=ts_ms)


N1 = f"spBv1.0/{GROUP}/{{}}/press-01"
N2 = f"spBv1.0/{GROUP}/{{}}/press-02"


def test_birth_then_aliased_data_is_accepted_and_a_jump_is_a_gap(
    sparkplug: SparkplugPolicy,
) -> None:
    s = Session(sparkplug)
    decision, note = s.send(N1.format("NBIRTH"), birth(bd=3))
    assert decision.allowed and note.bd_seq == 3
    assert note.cache[0][0] == f"$sparkplug/certificates/spBv1.0/{GROUP}/NBIRTH/press-01"
    decision, note = s.send(N1.format("NDATA"), data(1, {"alias": 7, "double_value": 2.0}))
    assert decision.allowed and note.gap is None
    decision, note = s.send(N1.format("NDATA"), data(5, {"name": "mode", "string_value": "man"}))
    assert decision.allowed and note.gap == (2, 5)
    decision, note = s.send(N1.format("NDATA"), data(6, {"alias": 7, "double_value": 3.0}))
    assert note.gap is None  # counting resumes from what arrived


def test_seq_wraps_from_255_to_0_without_a_gap(sparkplug: SparkplugPolicy) -> None:
    s = Session(sparkplug)
    s.send(N1.format("NBIRTH"), birth(seq=254))
    assert s.send(N1.format("NDATA"), data(255, {"alias": 7, "double_value": 1.0}))[1].gap is None
    assert s.send(N1.format("NDATA"), data(0, {"alias": 7, "double_value": 1.0}))[1].gap is None


@pytest.mark.parametrize(
    ("metric", "code"),
    [
        ({"alias": 99, "double_value": 1.0}, ReasonCode.SPARKPLUG_METRIC_UNDEFINED),
        ({"name": "nope", "double_value": 1.0}, ReasonCode.SPARKPLUG_METRIC_UNDEFINED),
        ({"alias": 7, "int_value": 1}, ReasonCode.SPARKPLUG_DATATYPE_MISMATCH),
        (
            {"alias": 7, "datatype": INT32, "double_value": 1.0},
            ReasonCode.SPARKPLUG_DATATYPE_MISMATCH,
        ),
        ({"name": "mode", "double_value": 1.0}, ReasonCode.SPARKPLUG_DATATYPE_MISMATCH),
    ],
)
def test_data_must_match_what_the_birth_defined(
    sparkplug: SparkplugPolicy, metric: dict[str, Any], code: ReasonCode
) -> None:
    s = Session(sparkplug)
    s.send(N1.format("NBIRTH"), birth())
    decision, note = s.send(N1.format("NDATA"), data(1, metric))
    assert decision.reason_code is code and note is None
    # The refusal changed nothing: the next in-sequence message has no gap.
    ok, note = s.send(N1.format("NDATA"), data(1, {"alias": 7, "double_value": 1.0}))
    assert ok.allowed and note.gap is None


def test_data_before_a_birth_is_refused(sparkplug: SparkplugPolicy) -> None:
    s = Session(sparkplug)
    for mtype, topic in (("NDATA", N1.format("NDATA")), ("DBIRTH", N1.format("DBIRTH") + "/plc")):
        raw = birth() if mtype == "DBIRTH" else data(0, {"alias": 7, "double_value": 1.0})
        assert s.send(topic, raw)[0].reason_code is ReasonCode.SPARKPLUG_NO_BIRTH
    s.send(N1.format("NBIRTH"), birth())
    ddata = data(1, {"name": "speed", "double_value": 1.0})
    assert (
        s.send(N1.format("DDATA") + "/plc", ddata)[0].reason_code is ReasonCode.SPARKPLUG_NO_BIRTH
    )


def test_an_ndeath_of_another_session_is_refused_and_changes_nothing(
    sparkplug: SparkplugPolicy,
) -> None:
    s = Session(sparkplug)
    s.send(N1.format("NBIRTH"), birth(bd=4))
    stale = s.send(N1.format("NDEATH"), death(3))[0]
    assert stale.reason_code is ReasonCode.SPARKPLUG_BDSEQ_MISMATCH
    assert s.send(N1.format("NDATA"), data(1, {"alias": 7, "double_value": 1.0}))[0].allowed
    decision, note = s.send(N1.format("NDEATH"), death(4))
    assert decision.allowed and [c[2] for c in note.cache] == ["stale"]
    assert s.send(N1.format("NDATA"), data(2, {"alias": 7, "double_value": 1.0}))[0].reason_code \
        is ReasonCode.SPARKPLUG_NO_BIRTH  # fmt: skip


def test_one_node_cannot_change_another_nodes_session(sparkplug: SparkplugPolicy) -> None:
    s = Session(sparkplug)
    s.send(N1.format("NBIRTH"), birth(bd=1))
    s.send(N2.format("NBIRTH"), birth(bd=1, seq=100))
    s.send(N2.format("NDEATH"), death(1))
    for junk in (b"\xff" * 10, data(9, {"alias": 99, "double_value": 0.0})):
        s.send(N2.format("NDATA"), junk)
    decision, note = s.send(N1.format("NDATA"), data(1, {"alias": 7, "double_value": 1.0}))
    assert decision.allowed and note.gap is None
    assert s.tracker.online() == 1


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\x0a\xff\xff\xff\xff\x0f", ReasonCode.SPARKPLUG_MALFORMED),
        (
            data(1, *[{"alias": 7, "double_value": 1.0}] * 501),
            ReasonCode.SPARKPLUG_TOO_MANY_METRICS,
        ),
        (encode_sparkplug(timestamp=NOW_MS, metrics=[]), ReasonCode.SPARKPLUG_SEQ_INVALID),
        (data(256), ReasonCode.SPARKPLUG_SEQ_INVALID),
        (data(1, ts=NOW_MS - 301_000), ReasonCode.SPARKPLUG_TIMESTAMP_INVALID),
        (b"\x00" * 65537, ReasonCode.PAYLOAD_TOO_LARGE),
    ],
)
def test_stateless_refusals(sparkplug: SparkplugPolicy, raw: bytes, code: ReasonCode) -> None:
    s = Session(sparkplug)
    s.send(N1.format("NBIRTH"), birth())
    assert s.send(N1.format("NDATA"), raw)[0].reason_code is code


def test_a_birth_without_bdseq_or_with_unnamed_metrics_is_refused(
    sparkplug: SparkplugPolicy,
) -> None:
    s = Session(sparkplug)
    no_bd = data(0, {"name": "x", "datatype": DOUBLE, "double_value": 1.0})
    unnamed = birth(more=[{"datatype": DOUBLE, "double_value": 1.0}])
    twice = birth(more=[{"name": "speed", "datatype": DOUBLE}])
    for raw in (no_bd, unnamed, twice):
        assert s.send(N1.format("NBIRTH"), raw)[0].reason_code is ReasonCode.SPARKPLUG_BIRTH_INVALID
    assert s.tracker.online() == 0


def test_a_flooding_node_is_rate_limited_alone(sparkplug: SparkplugPolicy) -> None:
    s = Session(sparkplug)
    s.send(N1.format("NBIRTH"), birth())
    s.send(N2.format("NBIRTH"), birth())
    s.t = 1000.0
    codes = set()
    for i in range(sparkplug.limits.burst + 5):
        s.t -= 0.1  # no time passes for the bucket (a clock that steps back adds nothing)
        codes.add(s.send(N1.format("NDATA"), data((i + 1) % 256))[0].reason_code)
    assert ReasonCode.RATE_LIMITED in codes
    assert s.send(N2.format("NDATA"), data(1))[0].allowed


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["NBIRTH", "NDATA", "NDEATH", "DBIRTH", "DDATA",
                                            "DDEATH"]), st.binary(max_size=200)), max_size=30))  # fmt: skip
def test_state_stays_bounded_by_the_policy_whatever_arrives(
    sparkplug: SparkplugPolicy, messages: list[tuple[str, bytes]]
) -> None:
    s = Session(sparkplug)
    for mtype, raw in messages:
        topic = N1.format(mtype) + ("/plc" if mtype.startswith("D") else "")
        decision, _ = s.send(topic, raw)
        assert decision.reason_code is not None
    assert len(s.tracker._nodes) <= len(sparkplug.nodes)
    for state in s.tracker._nodes.values():
        assert set(state.devices) <= {"plc", "drive"}
        assert len(state.defs.names) <= sparkplug.limits.max_metrics


def test_identities_of_the_policy_are_the_nodes(sparkplug: SparkplugPolicy) -> None:
    assert {n.identity.path for n in sparkplug.nodes.values()} == {NODE_1, NODE_2}


def test_a_restarted_worker_takes_back_the_births_it_kept(
    sparkplug: SparkplugPolicy, tmp_path: Path
) -> None:
    from relay.sparkplug_births import BirthStore

    store = BirthStore(tmp_path / "sparkplug")
    s = Session(sparkplug)
    for topic, raw in ((N1.format("NBIRTH"), birth(bd=5)), (N1.format("DBIRTH") + "/plc", birth())):
        assert s.send(topic, raw)[0].allowed
        parsed = parse_topic(topic)
        assert parsed is not None
        store.changed(parsed, raw)
    restarted = SparkplugTracker(sparkplug)
    for topic, raw in store.kept(sparkplug):
        assert restarted.restore(sparkplug.by_node[topic.group, topic.node], topic, raw)
    again = Session(sparkplug)
    again.tracker = restarted
    decision, note = again.send(N1.format("NDATA"), data(77, {"alias": 7, "double_value": 1.0}))
    assert decision.allowed and note.gap is None  # the count starts again after a restore
    assert again.send(N1.format("DDATA") + "/plc", data(78, {"name": "mode", "string_value": "x"}))[
        0
    ].allowed
    assert again.send(N1.format("NDEATH"), death(5))[0].allowed  # the kept bdSeq
    parsed = parse_topic(N1.format("NDEATH"))
    assert parsed is not None
    store.changed(parsed, death(5))
    assert list(store.kept(sparkplug)) == []


def test_the_idmz_gateways_own_sparkplug_passes_the_relays_checks(
    sparkplug: SparkplugPolicy,
) -> None:
    import time

    from edge.envelope import envelope_bytes
    from edge.sparkplug import EdgeNodeState

    now = time.time()
    gw = EdgeNodeState(GROUP, "press-01", NODE_1)
    tracker = SparkplugTracker(sparkplug)
    node = sparkplug.by_node[GROUP, "press-01"]

    def judge(topic: str, raw: bytes) -> Any:
        parsed = parse_topic(topic)
        assert parsed is not None
        return tracker.judge(node, parsed, raw, now=now, now_ms=int(now * 1000))

    assert judge(*gw.birth(bd_seq=9, now_ms=int(now * 1000)))[0].allowed
    tags = {"tags": [{"name": "speed", "value": 1500.0, "unit": "rpm", "asset": "spindle",
                      "path": f"{NODE_1}/spindle"}]}  # fmt: skip
    anomaly = {"asset": "spindle", "score": 3.5, "alarm": "advisory", "rul_s": None,
               "features": {"rms": 0.4, "kurtosis": 3.1}}  # fmt: skip
    for i, (kind, data) in enumerate((("telemetry", tags), ("anomaly", anomaly))):
        changed, ts_ms, rebirth = gw.learn(envelope_bytes(f"m{i}", now - 3600, NODE_1, kind, data))
        if rebirth:
            assert judge(*gw.birth(bd_seq=gw.bd_seq, now_ms=int(now * 1000)))[0].allowed
        decision, note = judge(*gw.data(changed, ts_ms, now_ms=int(now * 1000), historical=True))
        assert decision.allowed, decision.reason
        assert note.gap is None
    assert judge(*gw.death(gw.bd_seq, 0))[0].allowed
