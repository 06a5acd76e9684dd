"""Publish, promote and roll back, end to end on loopback: a real HTTPS mTLS repository, the
real TUF client in three gateways (two on line 1, one on line 2)."""

from __future__ import annotations

from tests.release.conftest import GW_A, GW_B, GW_C, LINE1
from tests.support.release_fleet import Fleet


def check_all(fleet: Fleet) -> dict[str, list[str]]:
    return {i: [r.result for r in g.check()] for i, g in fleet.gateways.items()}


def test_a_canary_of_one_reaches_only_that_gateway_of_its_line(
    fleet: Fleet, models: dict[str, bytes]
) -> None:
    rec = fleet.publish_model(models["m-1"], LINE1, "canary:1")
    assert rec.canary == (GW_A,)
    results = check_all(fleet)
    assert results[GW_A] == ["activated", "current"]
    assert fleet.gateways[GW_A].model_version == "m-1"
    assert fleet.gateways[GW_B].model_version is None
    assert fleet.gateways[GW_C].model_version is None
    status = fleet.gateways[GW_A].gateway.status()["release"]
    assert status["running"]["model"] == rec.release
