"""What the gateway says about itself: the status message and the Prometheus gauges.

Both read the same state (the outbox, the readers, the uplink, the model, the window and
anomaly counts), so they are built in one place and cannot disagree.

>>> report = StatusReport(outbox, readers, uplink, scorer, metrics, clock=time.time)  # doctest: +SKIP
>>> report.status(GatewayCounts(windows=3, vibration_gaps=0, anomalies=1))["outbox"]  # doctest: +SKIP
{'depth': 4, 'bytes': 2310, 'oldest_age_s': 0.8, 'dropped': {}}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge.inference import Scorer
from edge.metrics import GatewayMetrics
from edge.outbox import Outbox
from edge.ports import Reader, UplinkPort


@dataclass(frozen=True, slots=True)
class GatewayCounts:
    windows: int  # vibration windows scored
    vibration_gaps: int  # windows restarted on a lost or out-of-order block
    anomalies: int  # anomaly events raised


class StatusReport:
    def __init__(
        self,
        outbox: Outbox,
        readers: Sequence[Reader],
        uplink: UplinkPort | None,
        scorer: Scorer | None,
        metrics: GatewayMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.readers = readers
        self.uplink = uplink
        self.scorer = scorer
        self.metrics = metrics
        self.clock = clock

    def status(self, counts: GatewayCounts) -> dict[str, object]:
        """The body of the status message."""
        ob = self.outbox.stats(now=self.clock())
        s, up = self.scorer, self.uplink
        return {
            "model": {"version": s.version, "sha256": s.sha256, "signer": s.signer} if s else None,
            "outbox": {
                "depth": ob.depth,
                "bytes": ob.bytes,
                "oldest_age_s": round(ob.oldest_age_s, 3),
                "dropped": ob.dropped,
            },
            "readers": {r.name: r.status() for r in self.readers},
            "uplink": {
                "connected": up.stats.connected,
                "connections": up.stats.connections,
                "last_error": up.stats.last_error,
            }
            if up
            else None,
            "windows": counts.windows,
            "vibration_gaps": counts.vibration_gaps,
            "anomalies": counts.anomalies,
        }

    def update_metrics(self) -> None:
        """Refresh the gauges that mirror state (counters are counted where things happen)."""
        m = self.metrics
        m.update_outbox(self.outbox.stats(now=self.clock()))
        for r in self.readers:
            m.reader_up.labels(r.name).set(1 if r.connected else 0)
        if self.uplink is not None:
            m.uplink_connected.set(1 if self.uplink.stats.connected else 0)
            m.uplink_acked.set(self.uplink.stats.acked)
