"""Compliance reports over a verified log: what happened between two times, by IEC 62443-3-3
SR 2.8 category, with refusals, certificate lifecycle, manual operator actions, and the
checkpoint that makes the report checkable.

    >>> report = build_report(audit_dir, pinned_key, start=t0, end=t1, now=now)
    >>> write_report(report, audit_dir, Path("q3.html"), "html")

The log is verified first (`verify_log`); a log that fails verification gets no report.
Entries are streamed, so a report over a million entries needs little memory.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from audit.actions import (
    ACTIONS,
    CATEGORIES,
    CERTIFICATE_ACTIONS,
    CHANGE_ACTIONS,
    Category,
    category_for,
    is_manual,
)
from audit.errors import AuditConfigError
from audit.note import VerifierKey
from audit.sparkplug_summary import SparkplugSummary
from audit.storage import RECORD_BYTES, LogPaths, iter_entries, read_index
from audit.verify import VerifiedLog, verify_log

CSV_FIELDS = ("seq", "time", "category", "actor", "action", "resource", "outcome", "reason",
              "zone", "host", "time_source")  # fmt: skip


def category_of(action: str, outcome: str) -> Category:
    """The SR 2.8 category of an entry (`audit.actions`). Malformed or failed requests are
    request errors, and any backup or restore is a backup/restore event, whatever the area."""
    if outcome == "failure":
        return Category.REQUEST_ERRORS
    if ".backup." in action or ".restore." in action:
        return Category.BACKUP_RESTORE
    return category_for(action)


def certificate_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """What a lifecycle row shows, from where each writer puts it (`audit.actions`):
    ``resource`` is the serial unless the action's resource names the device (then the serials
    are in details); the subject is ``details.identity`` (else ``subject``, ``device``, or the
    actor when the device itself acted)."""
    action = ACTIONS[str(entry["action"])]
    details = entry.get("details") or {}
    after = entry.get("after") or {}
    serial, subject = entry.get("resource"), details.get("identity")
    if action.resource_is_subject:
        serial, subject = details.get("serials") or "", entry.get("resource")
    if not subject:
        subject = details.get("subject") or details.get("device")
    if not subject and action.actor_is_subject:
        subject = entry.get("actor")  # older records: the device itself enrolled or renewed
    return {
        "event": str(action.certificate),
        "serial": serial,
        "subject": subject or "",
        "profile": details.get("profile") or "",
        "not_after": details.get("not_after") or after.get("not_after") or "",
    }


def parse_time(value: str) -> datetime:
    """An aware datetime from ISO 8601 (``Z`` accepted); date-only means midnight UTC."""
    if len(value.rstrip("Z")) == 10:  # a date: midnight UTC
        value = value.rstrip("Z") + "T00:00:00Z"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise AuditConfigError(f"not an ISO 8601 time: {value!r}") from exc
    if parsed.tzinfo is None:
        raise AuditConfigError(f"time {value!r} needs a timezone (e.g. Z)")
    return parsed


@dataclass
class Report:
    start: datetime
    end: datetime
    generated: datetime
    verified: VerifiedLog
    vkey: str
    cosigners: list[tuple[str, int]] = field(default_factory=list)
    total: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    by_category: Counter[str] = field(default_factory=Counter)
    by_outcome: Counter[str] = field(default_factory=Counter)
    refusals: Counter[tuple[str, str]] = field(default_factory=Counter)
    refusal_reasons: Counter[str] = field(default_factory=Counter)
    timeline: Counter[str] = field(default_factory=Counter)  # bucket start -> count
    bucket: timedelta = timedelta(hours=1)
    certificates: list[dict[str, Any]] = field(default_factory=list)
    operator_actions: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)  # change control (releases)
    sparkplug: SparkplugSummary = field(default_factory=SparkplugSummary)

    def bucket_of(self, when: datetime) -> str:
        steps = (when - self.start) // self.bucket
        return (self.start + steps * self.bucket).strftime("%Y-%m-%dT%H:%M:%SZ")

    def add(self, entry: dict[str, Any], when: datetime) -> None:
        action, outcome = str(entry["action"]), str(entry["outcome"])
        self.total += 1
        self.first_seq = entry["seq"] if self.first_seq is None else self.first_seq
        self.last_seq = entry["seq"]
        self.by_category[category_of(action, outcome)] += 1
        self.by_outcome[outcome] += 1
        self.timeline[self.bucket_of(when)] += 1
        if outcome == "denied":
            times = _times(entry)
            self.refusals[(str(entry["actor"]), str(entry["reason"]))] += times
            self.refusal_reasons[str(entry["reason"])] += times
        row = {k: entry.get(k) for k in ("seq", "time", "actor", "action", "resource", "reason")}
        if (
            action in CERTIFICATE_ACTIONS
            and outcome == "success"
            and len(self.certificates) < 10_000
        ):
            self.certificates.append({**row, **certificate_fields(entry)})
        if is_manual(action) and len(self.operator_actions) < 10_000:
            self.operator_actions.append(row)
        if action in CHANGE_ACTIONS and len(self.changes) < 10_000:
            details = entry.get("details") or {}
            self.changes.append({**row, "outcome": outcome, "details": dict(details)})
        self.sparkplug.add(entry)

    def to_json(self) -> dict[str, Any]:
        cp = self.verified.checkpoint.checkpoint
        return {
            "period": {"from": self.start.isoformat(), "to": self.end.isoformat()},
            "generated": self.generated.isoformat(),
            "log": {"entries_verified": self.verified.size, "verifier_key": self.vkey},
            "checkpoint": {
                "origin": cp.origin,
                "size": cp.size,
                "root_hash_hex": cp.root_hash.hex(),
                "note": self.verified.checkpoint.note,
                "cosigners": [{"name": n, "time": t} for n, t in self.cosigners],
            },
            "events": {
                "total": self.total,
                "first_seq": self.first_seq,
                "last_seq": self.last_seq,
            },
            "by_category": {c: self.by_category.get(c, 0) for c in CATEGORIES},
            "by_outcome": dict(self.by_outcome),
            "refusals": [
                {"device": d, "reason": r, "count": n} for (d, r), n in self.refusals.most_common()
            ],
            "timeline": dict(sorted(self.timeline.items())),
            "certificates": self.certificates,
            "operator_actions": self.operator_actions,
            "change_control": self.changes,
            "sparkplug": self.sparkplug.to_json(),
        }


def _times(entry: dict[str, Any]) -> int:
    """How many refusals one record stands for: a record that aggregates repeated refusals of
    one identity and reason (the broker plugin groups them per second) carries ``count``."""
    details = entry.get("details")
    count = details.get("count") if isinstance(details, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1


def _bucket_for(span: timedelta) -> timedelta:
    steps = (
        timedelta(seconds=10),
        timedelta(minutes=1),
        timedelta(minutes=5),
        timedelta(hours=1),
        timedelta(hours=6),
        timedelta(days=1),
    )
    for step in steps:
        if span / step <= 48:
            return step
    return timedelta(days=7)


def build_report(
    directory: Path,
    log_key: VerifierKey,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime,
    csv_out: Path | None = None,
    witness_keys: Sequence[VerifierKey] = (),
) -> Report:
    """Verify the log, then summarize entries with ``start <= time < end``. A missing ``start``
    is the first verified entry's time and a missing ``end`` is just after the last one's (or
    ``now`` for an empty log): without either, the report covers the whole log. With
    ``csv_out`` the matching entries are also streamed there, one row each."""
    verified = verify_log(directory, log_key, witness_keys=witness_keys)
    paths = LogPaths(directory)
    verified_records = read_index(paths)[: verified.size * RECORD_BYTES]
    if start is None or end is None:
        first, last = _time_span(paths, verified_records)
        start = start or first or now
        end = end or ((last + timedelta(seconds=1)) if last else now)
    if end <= start:
        raise AuditConfigError("the report period is empty (--to must be after --from)")
    report = Report(start, end, now, verified, log_key.vkey, bucket=_bucket_for(end - start))
    if verified.witnessed is not None:
        report.cosigners = list(verified.witnessed.cosigners)
    csv_file = csv_out.open("w", newline="") if csv_out else None
    writer = csv.DictWriter(csv_file, CSV_FIELDS, extrasaction="ignore") if csv_file else None
    try:
        if writer:
            writer.writeheader()
        for _i, data in iter_entries(paths, verified_records):
            entry = json.loads(data)
            when = parse_time(entry["time"])
            if start <= when < end:
                report.add(entry, when)
                if writer:
                    writer.writerow(
                        {**entry, "category": category_of(entry["action"], entry["outcome"])}
                    )
    finally:
        if csv_file:
            csv_file.close()
    return report


def _time_span(paths: LogPaths, records: bytes) -> tuple[datetime | None, datetime | None]:
    """The earliest and latest entry times among the verified entries (several processes may
    append, so entries are not strictly in time order)."""
    first = last = None
    for _i, data in iter_entries(paths, records):
        when = parse_time(json.loads(data)["time"])
        first = when if first is None or when < first else first
        last = when if last is None or when > last else last
    return first, last


def verification_steps(report: Report, log_dir: str = "<audit dir>") -> list[str]:
    """How an auditor checks the report without trusting the operator's tools."""
    cp = report.verified.checkpoint.checkpoint
    return [
        f"Obtain the log's verifier key out of band and compare it with: {report.vkey}",
        f"Copy the audit directory ({log_dir}) read-only to your own machine.",
        "Run: idmz audit verify --dir <copy> --key '<pinned verifier key>' --json . It must "
        f"report size >= {cp.size} and root_hash {cp.root_hash.hex()} at size {cp.size}.",
        "Independently: each line of entries.jsonl (without its newline) is a leaf; "
        "leaf = SHA-256(0x00 || line), node = SHA-256(0x01 || left || right) (RFC 6962 §2.1); "
        f"the root over the first {cp.size} lines must equal the checkpoint's base64 root.",
        "Check the checkpoint's Ed25519 signature per c2sp.org/signed-note with the pinned key, "
        "and any witness cosignatures (c2sp.org/tlog-cosignature) with the witnesses' keys.",
        "Ask the witness (GET /vkey, and its state) that it cosigned this size or a larger one "
        "consistent with it: a log rewritten after the report will not match.",
        "For a single entry, use idmz audit proof --index N and idmz audit verify-proof.",
    ]
