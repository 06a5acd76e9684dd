"""Property tests: whatever a hostile device sends, the payload check returns a `Decision` and
never raises, and nothing it accepts carries a lone surrogate, a non-finite number or nesting
beyond the limit (security review H2, L2)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pki.identity import DeviceIdentity
from policies import Decision, Policy, ReasonCode, check_payload, load_policy
from policies.strict_json import StrictJSONRefusal, parse_strict
from tests.policies.conftest import PLANT_POLICY
from tests.support.portable_json import portable_depth

PRESS = DeviceIdentity.parse("acme/plant1/stamping/line1/cell1/press-01")
POLICY: Policy = load_policy(PLANT_POLICY.read_text())
TOPICS = [f"{PRESS.path}/{sub}" for sub in ("telemetry", "features", "events/anomaly", "status")]
MAX_DEPTH = POLICY.limits["telemetry"].max_json_depth
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Strings as a device can write them, lone surrogates included (JSON escapes carry them).
# Surrogate halves are drawn often on purpose; a drawn pair in order becomes a valid character.
texts = st.lists(
    st.one_of(
        st.characters(exclude_categories=()),
        st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "[", "{", '"', "\\"]),
    ),
    max_size=20,
).map("".join)
nasty_numbers = st.sampled_from(
    ["1e400", "-1e400", "1E309", "NaN", "Infinity", "-Infinity", "1" + "0" * 400, "-0", "1e-400"]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


def _raw(value: Any) -> str:
    """JSON text for ``value``; lone surrogates come out as \\udXXX escapes (ensure_ascii),
    and infinities as the non-JSON literal Python writes."""
    return json.dumps(value)


KINDS = {"telemetry": "telemetry", "features": "features", "events/anomaly": "anomaly",
         "status": "status"}  # fmt: skip


@st.composite
def envelopes(draw: st.DrawFn) -> tuple[str, bytes]:
    """A topic and an envelope, valid but for what is drawn hostile: any field (``data``
    included, and one extra field) replaced by any JSON text, an overflowing number, a string
    with lone surrogates, deep nesting or a long string; sometimes a key written twice."""
    sub = draw(st.sampled_from(list(KINDS)))
    fields: dict[str, str] = {
        "v": "1",
        "id": json.dumps(draw(st.text(min_size=1, max_size=8))),
        "ts": '"2026-11-22T10:00:00.000Z"',
        "device": json.dumps(PRESS.path),
        "kind": json.dumps(KINDS[sub]),
        "data": "{}",
        "extra": "0",
    }
    hostile = st.one_of(
        nasty_numbers,
        texts.map(_raw),
        json_values.map(_raw),
        st.dictionaries(texts, json_values, min_size=1, max_size=3).map(_raw),
        st.dictionaries(texts, nasty_numbers, min_size=1, max_size=2).map(
            lambda d: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in d.items()) + "}"
        ),
        st.integers(1, 3 * MAX_DEPTH).map(lambda n: "[" * n + "]" * n),
        # huge strings and arrays, below and above the topic classes' size limits
        st.integers(1, 70_000).map(lambda n: json.dumps("x" * n)),
        st.integers(1, 40_000).map(lambda n: "[" + ",".join(["0"] * n) + "]"),
    )
    for name in fields:
        if draw(st.integers(0, 3)) == 0:
            fields[name] = draw(hostile)
    text = ",".join(f'"{k}":{v}' for k, v in fields.items())
    if draw(st.integers(0, 7)) == 0:
        text += ',"v":1'  # the same key twice
    return f"{PRESS.path}/{sub}", ("{" + text + "}").encode()


def _check_total(topic: str, payload: bytes) -> Decision:
    decision = check_payload(POLICY, PRESS, topic, payload)
    assert isinstance(decision, Decision)
    assert decision.reason.isprintable()
    if decision.allowed:
        assert portable_depth(json.loads(payload)) <= MAX_DEPTH  # what is forwarded is portable
    return decision


@PROPERTY_SETTINGS
@given(envelopes())
@example((TOPICS[0], b'{"v":1,"id":"x","ts":"\\ud800","device":"%s","kind":"telemetry","data":{}}'
          % PRESS.path.encode()))  # fmt: skip
def test_check_payload_is_total_over_hostile_envelopes(message: tuple[str, bytes]) -> None:
    _check_total(*message)


@PROPERTY_SETTINGS
@given(st.sampled_from(TOPICS), json_values)
def test_check_payload_is_total_over_arbitrary_json(topic: str, value: Any) -> None:
    try:
        payload = json.dumps(value).encode()
    except (ValueError, OverflowError):
        return
    _check_total(topic, payload)


@PROPERTY_SETTINGS
@given(st.sampled_from(TOPICS), st.binary(max_size=300))
def test_check_payload_is_total_over_arbitrary_bytes(topic: str, payload: bytes) -> None:
    _check_total(topic, payload)


@PROPERTY_SETTINGS
@given(st.integers(MAX_DEPTH + 1, 5000), st.sampled_from(["[", '{"a":']))
def test_nesting_beyond_the_limit_is_always_refused(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    inner = opener * depth + "1" + closer * depth
    head = '{"v":1,"id":"d","ts":"2026-11-22T10:00:00.000Z","kind":"telemetry","device":'
    body = f'{head}"{PRESS.path}","data":{{"x":{inner}}}}}'.encode()
    decision = _check_total(TOPICS[0], body)
    assert decision.reason_code is ReasonCode.PAYLOAD_TOO_DEEP


@PROPERTY_SETTINGS
@given(
    st.recursive(
        st.none() | st.integers() | texts,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
        max_leaves=40,
    ),
    st.integers(1, 12),
    st.booleans(),
)
def test_nesting_measured_on_the_bytes_equals_the_parsed_depth(
    value: Any, limit: int, ascii_only: bool
) -> None:
    # Brackets, quotes and backslashes inside strings (texts draws them often) never count.
    try:
        text = json.dumps(value, ensure_ascii=ascii_only).encode()
    except UnicodeEncodeError:  # a lone surrogate: only as a \udXXX escape
        text = json.dumps(value).encode()
    depth = _depth_of(value)
    found = parse_strict(text, max_depth=limit)
    too_deep = isinstance(found, StrictJSONRefusal) and found.code is ReasonCode.PAYLOAD_TOO_DEEP
    assert too_deep == (depth > limit), (depth, limit, found)


def _depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth_of, value), default=0)
    return 0
