"""Counters of one worker, snapshotted to a JSON file the appliance turns into Prometheus metrics.

Worker processes do not share memory; each writes ``worker-<n>.stats.json`` (atomically, about
once a second) and the appliance's /metrics endpoint sums them with a ``worker`` label. Per-device
counters are capped at ``max_devices`` distinct devices (the rest count under ``other``) so a
flood of names cannot exhaust memory or the metrics endpoint.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bedrock.files import write_atomic

OTHER = "other"


class WorkerStats:
    def __init__(self, *, max_devices: int = 10_000) -> None:
        self.max_devices = max_devices
        self.lock = threading.Lock()
        self.forwarded = 0
        self.spooled = 0
        self.drained = 0
        self.duplicates = 0
        self.dropped = 0  # 0 unless the dead-letter file is full (then a payload is not kept)
        self.audit_failures = 0
        self.spool_full_events = 0
        self.replayed = 0  # re-sent from retention after the IT broker lost its state
        self.dead_letters = 0  # refused by IT or revoked while spooled: audited, kept aside
        self.dead_letter_bytes = 0
        self.dead_letter_full = False  # alarm: payloads are no longer kept
        self.refused: Counter[str] = Counter()
        self.device_forwarded: Counter[str] = Counter()
        self.device_refused: Counter[str] = Counter()
        self.spool_bytes = 0
        self.inflight = 0
        self.ot_connected = False
        self.it_connected = False
        self.spool_full = False
        self.it_stalled = False  # alarm: outstanding IT publishes, no PUBACK for it_ack_deadline_s
        self.it_unacked_s = 0.0
        self.it_outstanding = 0
        self.audit_ok = True
        self.policy_sha256 = ""
        self.revoked_devices = 0
        self.latency_ms_sum = 0.0
        self.latency_count = 0
        # Sparkplug B (ADR 0110)
        self.sparkplug_births = 0  # NBIRTH and DBIRTH accepted
        self.sparkplug_deaths = 0  # NDEATH and DDEATH accepted
        self.sparkplug_gaps = 0  # seq jumps: possible loss before the relay
        self.sparkplug_missing = 0  # messages the gaps skipped
        self.sparkplug_nodes_online = 0

    def device_key(self, table: Counter[str], device: str) -> str:
        if device in table or len(table) < self.max_devices:
            return device
        return OTHER

    def count_refusal(self, code: str, device: str) -> None:
        with self.lock:
            self.refused[code] += 1
            if device:
                self.device_refused[self.device_key(self.device_refused, device)] += 1

    def count_acked(self, forwarded: Counter[str], latency_s: float, inflight: int) -> None:
        """One OT acknowledgement's worth: messages forwarded per device, their summed
        latency, and what is still in flight."""
        with self.lock:
            n = sum(forwarded.values())
            self.forwarded += n
            for device, count in forwarded.items():
                self.device_forwarded[self.device_key(self.device_forwarded, device)] += count
            self.latency_ms_sum += latency_s * 1000
            self.latency_count += n
            self.inflight = inflight

    def count_duplicate(self) -> None:
        with self.lock:
            self.duplicates += 1

    def count_sparkplug(self, mtype: str, gap: tuple[int, int] | None, online: int) -> None:
        with self.lock:
            self.sparkplug_births += mtype in ("NBIRTH", "DBIRTH")
            self.sparkplug_deaths += mtype in ("NDEATH", "DDEATH")
            if gap is not None:
                self.sparkplug_gaps += 1
                self.sparkplug_missing += (gap[1] - gap[0]) % 256
            self.sparkplug_nodes_online = online

    def count_dead_letters(self, count: int, lost: int) -> None:
        with self.lock:
            self.dead_letters += count
            self.dropped += lost

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "forwarded": self.forwarded,
                "spooled": self.spooled,
                "drained": self.drained,
                "duplicates": self.duplicates,
                "dropped": self.dropped,
                "audit_failures": self.audit_failures,
                "spool_full_events": self.spool_full_events,
                "replayed": self.replayed,
                "dead_letters": self.dead_letters,
                "dead_letter_bytes": self.dead_letter_bytes,
                "dead_letter_full": self.dead_letter_full,
                "refused": dict(self.refused),
                "device_forwarded": dict(self.device_forwarded),
                "device_refused": dict(self.device_refused),
                "spool_bytes": self.spool_bytes,
                "inflight": self.inflight,
                "ot_connected": self.ot_connected,
                "it_connected": self.it_connected,
                "spool_full": self.spool_full,
                "it_stalled": self.it_stalled,
                "it_unacked_s": self.it_unacked_s,
                "it_outstanding": self.it_outstanding,
                "audit_ok": self.audit_ok,
                "policy_sha256": self.policy_sha256,
                "revoked_devices": self.revoked_devices,
                "latency_ms_sum": self.latency_ms_sum,
                "latency_count": self.latency_count,
                "sparkplug_births": self.sparkplug_births,
                "sparkplug_deaths": self.sparkplug_deaths,
                "sparkplug_gaps": self.sparkplug_gaps,
                "sparkplug_missing": self.sparkplug_missing,
                "sparkplug_nodes_online": self.sparkplug_nodes_online,
                "pid": os.getpid(),
            }


def write_snapshot(path: Path, snapshot: dict[str, Any]) -> None:
    # Not durable: a snapshot is rewritten every few seconds and only read for display.
    write_atomic(path, json.dumps(snapshot, separators=(",", ":")).encode(), durable=False)


def read_snapshots(directory: Path) -> dict[str, dict[str, Any]]:
    """worker name -> its last snapshot (unreadable or half-written files are skipped)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("worker-*.stats.json")):
        try:
            out[path.name.split(".")[0]] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out
