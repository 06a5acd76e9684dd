"""The relay's inspection is total (security review H2): `Inspector.inspect` returns a verdict
for any topic, bytes and properties; a defect inside it is an ``inspection_error`` refusal,
and a worker on real brokers audits it, logs the traceback without payload bytes,
acknowledges the message and goes on, without dropping its OT connection."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.log import AuditLog
from audit.storage import LogPaths, iter_entries, read_index
from pki.identity import DeviceIdentity
from policies import load_policy
from relay.config import BrokerEndpoint, TLSFiles, WorkerConfig
from relay.inspector import Inspector, Verdict
from relay.revocation import RevocationState
from relay.worker import Worker
from tests.policies.test_payload_properties import envelopes, texts
from tests.relay.conftest import HISTORIAN, POLICY_PATH, PRESS_1, PRESS_2, RELAY_ID, Plant, envelope
from tests.relay.test_ot_source import _broker_conf
from tests.support.mosquitto import Broker, start_broker
from tests.support.mqtt import Endpoint, Subscriber, publish
from tests.support.net import free_port, wait_for

POLICY = load_policy(POLICY_PATH.read_text())
PRESS = DeviceIdentity.parse(PRESS_1)
ORIGIN = "test.example/idmz-audit"


class _FailsOnce:
    """A revocation view with a defect: its first lookup raises, as any bug in the checks
    could. (A stand-in for a fault no real input produces any more.)"""

    fingerprints: dict[str, str] = {}  # noqa: RUF012 - read-only here
    crl_number = None

    def __init__(self) -> None:
        self.calls = 0

    @property
    def revoked_devices(self) -> frozenset[str]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("a defect in the revocation view")
        return frozenset()


topics = st.one_of(
    st.sampled_from([f"{PRESS_1}/telemetry", f"{PRESS_1}/status", f"{PRESS_2}/telemetry"]),
    st.builds(lambda t: f"{PRESS_1}/{t}", texts),
    texts,
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    topics,
    st.one_of(envelopes().map(lambda m: m[1]), st.binary(max_size=300)),
    st.one_of(st.none(), texts),
    st.floats(0, 1e9),
)
def test_inspect_returns_a_verdict_for_any_input(
    topic: str, payload: bytes, property_id: str | None, now: float
) -> None:
    revoked = RevocationState(revoked_devices=frozenset({PRESS_2}))
    verdict = Inspector(POLICY, revoked).inspect(topic, payload, property_id, now)
    assert isinstance(verdict, Verdict)
    assert verdict.error is None  # no real input makes the checks raise
    assert verdict.msg_id and verdict.reason.isprintable()
    if verdict.accepted:
        assert verdict.device == PRESS and topic.startswith(PRESS_1 + "/")


def test_defect_in_inspection_is_an_inspection_error_refusal() -> None:
    inspector = Inspector(POLICY, RevocationState())
    inspector.revocation = _FailsOnce()  # type: ignore[assignment]
    verdict = inspector.inspect(f"{PRESS_1}/telemetry", b'{"secret":"s-1"}', "m-1", 0.0)
    assert (verdict.accepted, verdict.reason_code) == (False, "inspection_error")
    assert verdict.device == PRESS and verdict.msg_id == "m-1"
    assert isinstance(verdict.error, RuntimeError)
    assert "s-1" not in verdict.reason and "defect" not in verdict.reason
    again = inspector.inspect(f"{PRESS_1}/telemetry", b"{}", "m-2", 0.0)
    assert again.error is None and again.reason_code == "payload_schema_violation"


# -- a worker on real brokers --------------------------------------------------------------


@pytest.fixture
def brokers(plant: Plant, tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    ot_port, it_port = free_port(), free_port()
    ot = start_broker(_broker_conf(plant, ot_port), ot_port, tmp_path, name="ot")
    try:
        it = start_broker(_broker_conf(plant, it_port), it_port, tmp_path, name="it")
        try:
            yield ot, it
        finally:
            it.stop()
    finally:
        ot.stop()


def _config(plant: Plant, ot: Broker, it: Broker, home: Path) -> WorkerConfig:
    cred = plant.cred(RELAY_ID)
    tls = TLSFiles(plant.pki.cafile, cred.cert, cred.key)
    return WorkerConfig(
        ot=BrokerEndpoint("127.0.0.1", ot.port, tls),
        it=BrokerEndpoint("127.0.0.1", it.port, tls),
        policy_text=POLICY_PATH.read_text(),
        policy_source=str(POLICY_PATH),
        state_dir=home / "relay",
        audit_dir=home / "audit",
        audit_origin=ORIGIN,
        crl_path=None,
        issuing_ca_path=None,
        ledger_path=None,
        shared_subscription=False,
    )


def _sessions(ot: Broker) -> int:
    lines = ot.log_path.read_text(errors="replace").splitlines()
    return sum(1 for x in lines if "New client connected" in x and f"u'{RELAY_ID}'" in x)


def _refusals(audit_dir: Path) -> list[dict[str, Any]]:
    paths = LogPaths(audit_dir)
    found = [json.loads(raw) for _, raw in iter_entries(paths, read_index(paths))]
    return [e for e in found if e["action"] == "relay.message.refused"]


def _run_worker(config: WorkerConfig, audit: AuditLog) -> Worker:
    worker = Worker(config, 0, audit=audit)
    worker.start()
    wait_for(lambda: worker.stats.ot_connected and worker.stats.it_connected, timeout_s=60,
             what="worker connected to both brokers")  # fmt: skip
    return worker


def test_worker_refuses_audits_and_acknowledges_a_message_whose_inspection_raised(
    plant: Plant,
    brokers: tuple[Broker, Broker],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ot, it = brokers
    ot_end = Endpoint(ot.port, plant.pki.cafile)
    config = _config(plant, ot, it, tmp_path / "home")
    audit = AuditLog.open(config.audit_dir, origin=ORIGIN)
    it_side = Subscriber(Endpoint(it.port, plant.pki.cafile), plant.cred(HISTORIAN), "acme/#",
                         tmp_path / "it.txt")  # fmt: skip

    def send(device: str, msg_id: str, data: object = None) -> None:
        result = publish(ot_end, plant.cred(device), f"{device}/telemetry",
                         envelope(device, msg_id, data=data), v5=True)  # fmt: skip
        assert result.returncode == 0, result.stderr

    def on_it(marker: str) -> bool:
        return any(f'"{marker}"' in line for line in it_side.lines())

    worker = _run_worker(config, audit)
    try:
        probes = iter(range(1_000_000))

        def live() -> bool:  # probes until one crossed: the IT subscription is in place
            send(PRESS_2, f"probe-{next(probes)}")
            return any('"probe-' in line for line in it_side.lines())

        wait_for(live, timeout_s=60, interval_s=0.5, what="a probe on IT")
        sessions = _sessions(ot)
        worker._inspector.revocation = _FailsOnce()  # type: ignore[assignment]
        with caplog.at_level(logging.ERROR, logger="relay.worker"):
            send(PRESS_1, "bug-1", {"secret": "payload-secret-7"})
            send(PRESS_2, "after-bug")
            wait_for(lambda: on_it("after-bug"), timeout_s=60, what="the next message on IT")
            wait_for(lambda: _refusals(config.audit_dir), timeout_s=60, what="the refusal")
        [record] = _refusals(config.audit_dir)
        assert record["actor"] == PRESS_1 and record["details"]["code"] == "inspection_error"
        assert record["details"]["msg_id"] == "bug-1"
        assert "payload-secret-7" not in json.dumps(record)
        assert not on_it("bug-1")
        assert worker.stats.refused["inspection_error"] == 1
        assert _sessions(ot) == sessions  # the OT connection was never dropped
        logged = [r for r in caplog.records if "inspection_error" in r.getMessage()]
        assert logged and "RuntimeError" in logged[0].getMessage()
        assert 'File "' in logged[0].getMessage()  # the traceback, for whoever fixes the bug
        assert "payload-secret-7" not in caplog.text
    finally:
        worker.stop()
    # It was acknowledged once its refusal was durable: the resumed session does not bring it
    # back to a worker whose checks work.
    worker = _run_worker(dataclasses.replace(config), audit)
    try:
        send(PRESS_1, "after-restart")
        wait_for(lambda: on_it("after-restart"), timeout_s=60, what="a message after restart")
        assert not on_it("bug-1")
        assert len(_refusals(config.audit_dir)) == 1
    finally:
        worker.stop()
        audit.close()
        it_side.stop()
