"""The local alarm sink: an anomaly is announced on the plant floor at once, uplink or not.

Each alarm is a log line at WARNING (for the journal and any local log shipper), a JSON line
appended and fsynced to the local alarm file (for an HMI or a technician with ``tail -f``), and
an optional in-process callback (for an HMI integration or the demo). A failing callback or
file never stops the others or the gateway.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

_log = logging.getLogger("idmz.edge.alarm")
AlarmCallback = Callable[[Mapping[str, object]], None]


class LocalAlarms:
    def __init__(self, path: Path | None = None, callback: AlarmCallback | None = None) -> None:
        self.path = path
        self.callback = callback
        self.raised = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def raise_alarm(self, event: Mapping[str, object]) -> None:
        self.raised += 1
        _log.warning(
            "ANOMALY asset=%s alarm=%s rul_s=%s score=%.3g threshold=%.3g model=%s",
            event.get("asset"),
            event.get("alarm", "-"),
            event.get("rul_s", "-"),
            float(event.get("score", 0.0)),  # type: ignore[arg-type]
            float(event.get("threshold", 0.0)),  # type: ignore[arg-type]
            event.get("model_version"),
        )
        if self.path is not None:
            try:
                line = (json.dumps(dict(event), sort_keys=True) + "\n").encode()
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                _log.exception("could not write the local alarm file %s", self.path)
        if self.callback is not None:
            try:
                self.callback(event)
            except Exception:  # noqa: BLE001 - a broken HMI hook must not stop the alarm path
                _log.exception("local alarm callback failed")
