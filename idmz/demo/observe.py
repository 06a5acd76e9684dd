"""What the demo looks at to decide a step: the independent clients' captures, the audit log,
the relay's health and metrics, the gateways' local files. Reading only; nothing here changes
what the parts do.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from audit.storage import LogPaths, iter_entries, read_index

# mosquitto_sub -F: topic, MQTT 5 user properties ("key:value" separated by spaces), payload.
CAPTURE_FORMAT = "%t\t%P\t%p"


@dataclass(frozen=True, slots=True)
class Message:
    """One message an independent subscriber printed."""

    topic: str
    properties: dict[str, str]
    body: dict[str, Any]  # the JSON envelope ({} when the payload was not JSON)
    raw: str  # the line as mosquitto_sub printed it

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def device(self) -> str:
        return str(self.body.get("device", ""))

    @property
    def data(self) -> dict[str, Any]:
        d = self.body.get("data")
        return d if isinstance(d, dict) else {}

    @property
    def ts(self) -> datetime | None:
        return parse_ts(self.body.get("ts"))


def parse_ts(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class Capture:
    """The file an independent ``mosquitto_sub -V mqttv5 -F`` writes, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._pending = b""
        self.messages: list[Message] = []

    def read(self) -> list[Message]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return self.messages
        self._offset += len(data)
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()  # a line still being written
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            parts = line.split("\t", 2)
            if len(parts) != 3:
                continue
            topic, props, payload = parts
            pairs = (p.split(":", 1) for p in props.split(" ") if ":" in p)
            try:
                body = json.loads(payload)
            except ValueError:
                body = {}
            self.messages.append(
                Message(topic, dict(pairs), body if isinstance(body, dict) else {}, line)
            )
        return self.messages

    def where(self, *, device: str | None = None, kind: str | None = None) -> list[Message]:
        return [
            m
            for m in self.read()
            if (device is None or m.topic.startswith(device + "/"))
            and (kind is None or m.kind == kind)
        ]

    def newer_than(self, device: str, when: datetime) -> Message | None:
        """A message from ``device`` stamped after ``when`` (a barrier: the path is flowing)."""
        for m in reversed(self.where(device=device)):
            ts = m.ts
            if ts is not None and ts > when:
                return m
        return None

    def containing(self, text: str) -> list[Message]:
        return [m for m in self.read() if text in m.raw]


class AuditTail:
    """The audit log's entries, re-read on demand (the log is small during a demo)."""

    def __init__(self, directory: Path) -> None:
        self.paths = LogPaths(directory)

    def events(self) -> list[dict[str, Any]]:
        try:
            index = read_index(self.paths)
            return [json.loads(raw) for _, raw in iter_entries(self.paths, index)]
        except (OSError, ValueError):
            return []

    def find(self, action: str, **match: str) -> list[dict[str, Any]]:
        out = []
        for e in self.events():
            if e.get("action") != action:
                continue
            details = e.get("details") or {}
            if all(e.get(k) == v or details.get(k) == v for k, v in match.items()):
                out.append(e)
        return out


def http_text(url: str, timeout_s: float = 5.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback http
            return str(resp.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())
    except OSError:
        return None


def http_json(url: str) -> dict[str, Any] | None:
    text = http_text(url)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def metric(text: str | None, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    total = 0.0
    for line in (text or "").splitlines():
        m = _SAMPLE.match(line.strip())
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out
