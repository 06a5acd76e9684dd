"""EST refusals are audited off the event loop: while their durable audit appends wait on a
stalled disk, the same server keeps answering other requests (security review L1)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from audit.events import AuditEvent, AuditReceipt, AuditSink
from tests.provisioning.conftest import Env
from tests.support.net import wait_for

EST = "/.well-known/est"


class StalledAudit:
    """The real audit log behind a disk that stalls: every append waits until the test opens
    the gate, then is recorded for real."""

    def __init__(self, log: AuditSink) -> None:
        self.log = log
        self.gate = threading.Event()
        self.waiting = 0
        self._lock = threading.Lock()

    def _stall(self) -> None:
        with self._lock:
            self.waiting += 1
        self.gate.wait(timeout=60)

    def record(self, event: AuditEvent) -> AuditReceipt:
        self._stall()
        return self.log.record(event)

    def record_batch(self, events: Sequence[AuditEvent]) -> list[AuditReceipt]:
        self._stall()
        return self.log.record_batch(events)


def test_est_refusals_waiting_on_a_stalled_audit_disk_do_not_stall_the_server(env: Env) -> None:
    stalled = StalledAudit(env.services.enrollment.audit)
    env.services.enrollment.audit = stalled
    before = len(env.audit_records())
    requests = [
        (f"{EST}/simpleenroll", {}),  # no token
        (f"{EST}/simpleenroll", {"Authorization": "Bearer x"}),  # a body that is not base64
        (f"{EST}/simplereenroll", {}),  # a body that is not base64
    ]
    statuses: list[int] = []

    def post(path: str, headers: dict[str, str]) -> None:
        with env.client() as http:
            headers = {"Content-Type": "application/pkcs10", **headers}
            statuses.append(http.post(path, content=b"%%%", headers=headers).status_code)

    threads = [threading.Thread(target=post, args=r, daemon=True) for r in requests]
    for t in threads:
        t.start()
    try:
        # All three wait in their audit appends at once: none of them holds the event loop ...
        wait_for(lambda: stalled.waiting == len(requests), what="three stalled audit appends")
        with env.client() as http:  # ... which still serves everyone else.
            assert http.get("/healthz").status_code == 200
        assert stalled.waiting == len(requests) and len(env.audit_records()) == before
    finally:
        stalled.gate.set()
        for t in threads:
            t.join(timeout=60)
    assert sorted(statuses) == [400, 400, 401]
    records = env.audit_records()[before:]
    assert sorted(r["action"] for r in records) == [
        "provisioning.enroll.refused",
        "provisioning.enroll.refused",
        "provisioning.renew.refused",
    ]
    assert {r["actor"] for r in records} == {"client:127.0.0.1"}
