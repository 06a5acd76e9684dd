"""The relay's inspection CPU per message: Sparkplug B NDATA with 50 metrics against the JSON
envelope with 50 tags, in the same run (ADR 0110; ADR 0054: throughput is CPU per message).

    .venv/bin/python bench/relay_sparkplug.py [--messages 20000]
    .venv/bin/python bench/relay.py --sparkplug-profile   # the same, from the relay bench

Both profiles run the worker's real `relay.inspector.Inspector` on the example policy (the
Sparkplug one with a node added; rate limits raised so the limiter runs but never refuses):

* json: ``<device>/telemetry``, a 50-tag envelope: identity, policy, rate, size, strict JSON,
  JSON Schema, envelope device;
* sparkplug: ``spBv1.0/<group>/NDATA/<node>``, 50 metrics by alias after an NBIRTH that defined
  them: node map, rate, size, protobuf decode, metric count, seq, timestamp skew, every alias
  and datatype against the birth.

The broker hops, TLS, audit and forwarding cost the same per message for both (the payload is
forwarded byte for byte), so this is the part that differs. CPU time (``time.process_time``),
which a loaded machine distorts less than wall time. Last line:

    RESULT relay_sparkplug sparkplug_us_per_msg=... json_us_per_msg=... ratio=... sparkplug_bytes=... json_bytes=...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from policies import load_policy  # noqa: E402
from policies.sparkplug_codec import DOUBLE, UINT64, encode_sparkplug  # noqa: E402
from relay.inspector import Inspector  # noqa: E402
from relay.revocation import RevocationState  # noqa: E402

DEVICE = "acme/plant1/stamping/line1/cell4/spb-gw-01"
METRICS = 50
SECTION = f"""
[device_classes.sparkplug-gateway]
publish = ["telemetry"]
sparkplug = true

[sparkplug]
max_messages_per_s = 1000000
burst = 1000000

[sparkplug.nodes."{DEVICE}"]
group = "plant1"
node = "press-01"
"""


def bench_policy_text() -> str:
    text = (REPO / "deploy" / "policy" / "plant.toml").read_text()
    text = text.replace(
        "max_messages_per_s = 20\nburst = 100", "max_messages_per_s = 1000000\nburst = 1000000"
    )
    text = text.replace(
        '"acme/plant1/stamping/line1/cell3" = "sensor-gateway"',
        '"acme/plant1/stamping/line1/cell3" = "sensor-gateway"\n'
        '"acme/plant1/stamping/line1/cell4" = "sparkplug-gateway"',
    )
    return text + SECTION


def json_payload(i: int) -> bytes:
    tags = [{"name": f"tag{n:02d}", "value": 100.0 + n + i % 7, "unit": "mm/s",
             "quality": "good", "asset": "spindle", "source_ts": "2026-12-07T10:00:00.000Z"}
            for n in range(METRICS)]  # fmt: skip
    body = {"v": 1, "id": f"m-{i}", "ts": "2026-12-07T10:00:00.000Z", "device": DEVICE,
            "kind": "telemetry", "data": {"tags": tags}}  # fmt: skip
    return json.dumps(body, separators=(",", ":")).encode()


def sparkplug_birth(now_ms: int) -> bytes:
    return encode_sparkplug(timestamp=now_ms, seq=0, metrics=[
        {"name": "bdSeq", "datatype": UINT64, "long_value": 0},
        *({"name": f"spindle/tag{n:02d}", "alias": n, "datatype": DOUBLE, "double_value": 0.0}
          for n in range(METRICS)),
    ])  # fmt: skip


def sparkplug_ndata(i: int, now_ms: int) -> bytes:
    return encode_sparkplug(timestamp=now_ms, seq=(i + 1) % 256, metrics=[
        {"alias": n, "timestamp": now_ms, "double_value": 100.0 + n + i % 7}
        for n in range(METRICS)
    ])  # fmt: skip


def run(messages: int) -> dict[str, float]:
    policy = load_policy(bench_policy_text())
    now_ms = int(time.time() * 1000)
    out: dict[str, float] = {}
    profiles = {
        "json": (f"{DEVICE}/telemetry", [json_payload(i) for i in range(messages)]),
        "sparkplug": ("spBv1.0/plant1/NDATA/press-01",
                      [sparkplug_ndata(i, now_ms) for i in range(messages)]),
    }  # fmt: skip
    for name, (topic, payloads) in profiles.items():
        inspector = Inspector(policy, RevocationState())
        if name == "sparkplug":
            born = inspector.inspect("spBv1.0/plant1/NBIRTH/press-01", sparkplug_birth(now_ms),
                                     None, 0.0)  # fmt: skip
            if not born.accepted:
                raise SystemExit(f"the bench NBIRTH was refused: {born.reason}")
        start = time.process_time()
        accepted = sum(inspector.inspect(topic, p, None, 1.0).accepted for p in payloads)
        cpu = time.process_time() - start
        if accepted != messages:
            raise SystemExit(f"{name}: only {accepted} of {messages} accepted")
        out[f"{name}_us"] = cpu / messages * 1e6
        out[f"{name}_bytes"] = sum(len(p) for p in payloads) / messages
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--messages", type=int, default=20000)
    args = ap.parse_args(argv)
    r = run(args.messages)
    print(
        f"RESULT relay_sparkplug sparkplug_us_per_msg={r['sparkplug_us']:.1f} "
        f"json_us_per_msg={r['json_us']:.1f} ratio={r['sparkplug_us'] / r['json_us']:.2f} "
        f"sparkplug_bytes={r['sparkplug_bytes']:.0f} json_bytes={r['json_bytes']:.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
