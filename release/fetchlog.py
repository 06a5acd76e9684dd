"""The repository's fetch log, and which gateway fetched which release (``idmz release status``).

One JSON line per answered request (``<home>/release/fetch.jsonl``): when, which device (from
its verified certificate), which file, the HTTP status. A download of an artifact names its
release (the history maps prefix + SHA-256 to it), so the log says, by site, area and line,
which release each gateway took and when it last asked for metadata. What a gateway *runs* it
says itself in its status message (``release.running``); docs/release.md.

    >>> log = FetchLog(Path("idmz-data/release/fetch.jsonl"))                 # doctest: +SKIP
    >>> fleet_status(log.entries(), repo.history())[0]["model"]               # doctest: +SKIP
    7
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bedrock.clock import Clock, SystemClock
from release.records import ReleaseRecord
from release.server import Fetch

MAX_LOG_BYTES = 16 * 1024 * 1024  # then the log is rotated to fetch.jsonl.1 (one generation)


@dataclass(frozen=True, slots=True)
class FetchEntry:
    at: str
    identity: str
    path: str
    status: int
    length: int
    reason: str = ""


class FetchLog:
    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self.path = path
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()

    def append(self, fetch: Fetch) -> None:
        entry = FetchEntry(self.clock.now().isoformat(), **asdict(fetch))
        line = (json.dumps(asdict(entry), sort_keys=True) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size > MAX_LOG_BYTES:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            # Not durable on purpose: a lost last line costs a status row, not a decision
            # (refusals and downloads are in the audit log, which is).
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            with os.fdopen(fd, "ab") as fh:
                fh.write(line)

    def entries(self) -> list[FetchEntry]:
        out: list[FetchEntry] = []
        for p in (self.path.with_name(self.path.name + ".1"), self.path):
            try:
                text = p.read_text()
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                try:
                    out.append(FetchEntry(**json.loads(line)))
                except (ValueError, TypeError):
                    continue  # a torn last line after a crash
        return out


def fleet_status(
    entries: Iterable[FetchEntry], history: Sequence[ReleaseRecord]
) -> list[dict[str, object]]:
    """Per gateway: site, area, line, the latest release of each kind it downloaded, and when
    it last reached the repository. Sorted by identity."""
    by_blob = {(r.kind, r.prefix, r.sha256): r.release for r in history}
    rows: dict[str, dict[str, object]] = {}
    for e in entries:
        if not e.identity or e.status != 200:
            continue
        levels = e.identity.split("/")
        row = rows.setdefault(
            e.identity,
            {
                "identity": e.identity,
                "site": levels[1] if len(levels) > 1 else "",
                "area": levels[2] if len(levels) > 2 else "",
                "line": levels[3] if len(levels) > 3 else "",
                "model": None,
                "config": None,
                "last_seen": e.at,
            },
        )
        row["last_seen"] = e.at
        parts = e.path.split("/")
        if parts[0] == "targets" and len(parts) >= 4:
            kind, prefix = parts[1], "/".join(parts[2:-1])
            sha = parts[-1].split(".", 1)[0]
            release = by_blob.get((kind, prefix, sha))
            if release is not None and kind in ("model", "config"):
                row[kind] = release
    return [rows[k] for k in sorted(rows)]
