"""The report's Sparkplug section (audit/sparkplug_summary.py, ADR 0110) from the relay's
records: nodes online/offline after their last birth/death, births, gaps and what they missed."""

from __future__ import annotations

from audit.sparkplug_summary import SparkplugSummary


def record(action: str, node: str = "plant1/press-01", **details: object) -> dict[str, object]:
    return {"action": f"relay.sparkplug.{action}", "actor": "acme/p/a/l/c/gw",
            "details": {"node": node, **details}}  # fmt: skip


def test_nodes_online_offline_births_and_gaps() -> None:
    s = SparkplugSummary()
    for entry in (
        record("birth", bd_seq=1), record("gap", missing=3), record("death", bd_seq=1),
        record("birth", bd_seq=2), record("birth", "plant1/press-02", bd_seq=0),
        record("death", "plant1/press-02", bd_seq=0), record("gap", "plant1/press-02", missing=1),
        {"action": "relay.sparkplug.state", "after": {"online": True}},
        {"action": "relay.message.refused", "details": {}},
    ):  # fmt: skip
        s.add(entry)
    out = s.to_json()
    assert (out["nodes_online"], out["nodes_offline"]) == (1, 1)
    assert out["births"] == 3 and out["sequence_gaps"] == 2 and out["host_state_online"] is True
    assert out["nodes"]["plant1/press-01"]["missing"] == 3
    assert out["nodes"]["plant1/press-01"]["identity"] == "acme/p/a/l/c/gw"
