"""Payload checks: size, UTF-8, strict JSON, the envelope schema, sender and kind."""

from __future__ import annotations

import json

import pytest

from policies import ReasonCode, check_payload


def envelope(device: str, kind: str = "telemetry", **extra: object) -> dict[str, object]:
    return {
        "v": 1,
        "id": "01HZX3K9Q2",
        "ts": "2026-11-22T10:00:00.000Z",
        "device": device,
        "kind": kind,
        "data": {"tags": [{"name": "ram_force", "value": 812.5, "unit": "kN", "quality": "good"}]},
        **extra,
    }


def _check(policy, press, body: bytes, sub: str = "telemetry"):
    return check_payload(policy, press, f"{press.path}/{sub}", body)


def test_envelope_the_edge_sends_is_accepted(policy, press) -> None:
    for sub, kind in [
        ("telemetry", "telemetry"),
        ("events/anomaly", "anomaly"),
        ("status", "status"),
    ]:
        body = json.dumps(envelope(press.path, kind)).encode()
        decision = _check(policy, press, body, sub)
        assert decision.allowed, decision


def test_oversized_payload_is_refused(policy, press) -> None:
    body = json.dumps(envelope(press.path, "status", pad="x" * 5000)).encode()
    assert _check(policy, press, body, "status").reason_code is ReasonCode.PAYLOAD_TOO_LARGE


def test_non_utf8_payload_is_refused(policy, press) -> None:
    assert (
        _check(policy, press, b'{"v": 1, "x": "\xff"}').reason_code is ReasonCode.PAYLOAD_NOT_UTF8
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"v": 1, "v": 1}',  # duplicate keys: relay and consumer could read different values
        b'{"v": NaN}',
    ],
)
def test_malformed_or_ambiguous_json_is_refused(policy, press, body) -> None:
    assert _check(policy, press, body).reason_code is ReasonCode.PAYLOAD_NOT_JSON


def test_schema_violation_is_refused_without_echoing_the_payload(policy, press) -> None:
    doc = envelope(press.path)
    del doc["ts"]
    doc["id"] = "secret-value-123"
    decision = _check(policy, press, json.dumps(doc).encode())
    assert decision.reason_code is ReasonCode.PAYLOAD_SCHEMA_VIOLATION
    assert "secret-value-123" not in decision.reason


def test_envelope_claiming_another_device_is_refused(policy, press, other_press) -> None:
    body = json.dumps(envelope(other_press.path)).encode()
    assert _check(policy, press, body).reason_code is ReasonCode.ENVELOPE_DEVICE_MISMATCH


def test_envelope_kind_must_match_the_topic_class(policy, press) -> None:
    body = json.dumps(envelope(press.path, "anomaly")).encode()
    assert _check(policy, press, body).reason_code is ReasonCode.ENVELOPE_KIND_MISMATCH


def test_topic_refusal_comes_before_payload_checks(policy, press, other_press) -> None:
    body = json.dumps(envelope(press.path)).encode()
    decision = check_payload(policy, press, f"{other_press.path}/telemetry", body)
    assert decision.reason_code is ReasonCode.TOPIC_OUTSIDE_IDENTITY
