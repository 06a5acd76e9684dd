"""An appliance whose start failed part way (here: the IT broker's key file is missing, so
its Mosquitto exits) is stopped cleanly and promptly: what did start (the OT broker) is stopped,
and `stop()` does not wait for a health server that never ran."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from audit.log import AuditLog
from relay.appliance import Appliance
from relay.errors import BrokerStartUpstreamError
from tests.relay.conftest import Plant, appliance_config
from tests.support.net import free_port, port_open

pytestmark = [pytest.mark.integration]


def test_stop_after_a_failed_start_returns_promptly_and_stops_what_started(
    plant: Plant, tmp_path: Path
) -> None:
    ot_port, it_port, health_port = free_port(), free_port(), free_port()
    config = appliance_config(plant, tmp_path / "home", ports=(ot_port, it_port, health_port))
    assert config.managed_it is not None
    broken_it = dataclasses.replace(config.managed_it, keyfile=tmp_path / "missing.key")
    config = dataclasses.replace(config, managed_it=broken_it)  # its Mosquitto cannot start
    audit = AuditLog.open(tmp_path / "home" / "audit", origin="test.example/idmz-audit")
    appliance = Appliance(config, audit=audit)
    try:
        with pytest.raises(BrokerStartUpstreamError):
            appliance.start()
        assert port_open(ot_port)  # the OT broker had started
        stopper = threading.Thread(target=appliance.stop, daemon=True)
        started = time.monotonic()
        stopper.start()
        stopper.join(timeout=60)
        assert not stopper.is_alive(), "Appliance.stop() hangs after a failed start()"
        print(f"stop() after a failed start: {time.monotonic() - started:.2f} s")
    finally:
        audit.close()
    assert not port_open(ot_port)
    assert not port_open(health_port)
    assert all(pid is None for pid in appliance.worker_pids())
