"""The gateway's staging of a pulled model when its disk fails under it: a full or failing
disk at any step leaves a model and signature pair that verifies (what a restart loads), the
running model in service, a "failed" result with its reason, and the update service alive for
the next check (a crash at the same step is the same case: the pair must verify). Real FUSE filesystem that fails on command (tests/support/faulty_fs.py)."""

from __future__ import annotations

import errno
from datetime import UTC, datetime
from pathlib import Path

from edge.activation import released_model_paths
from edge.model_signing import load_verified_model
from tests.release.conftest import LINE1
from tests.support.faulty_fs import mounted_or_skip
from tests.support.release_fleet import Fleet, FleetGateway

GW_D = f"{LINE1}/cell3/gw-d"


def model_result(gw: FleetGateway, results: list) -> str:  # type: ignore[type-arg]
    return next(r.result for r in results if r.kind == "model")


def test_a_disk_failing_while_a_model_is_staged_leaves_a_pair_that_verifies_and_updates_running(
    fleet: Fleet, models: dict[str, bytes], tmp_path: Path
) -> None:
    with mounted_or_skip(tmp_path / "fs") as fs:
        # The staging directory on the faulty disk (the TUF cache stays on the real one: the
        # passthrough filesystem has no symlinks, which python-tuf's root history uses).
        state = fleet.tmp / "gw" / GW_D.replace("/", "_") / "state" / "release"
        state.mkdir(parents=True)
        (state / "active").symlink_to(fs.mountpoint)
        gw = fleet.add_gateway(GW_D)
        fleet.publish_model(models["m-1"], LINE1)
        assert model_result(gw, gw.check()) == "activated"
        fleet.publish_model(models["m-2"], LINE1)

        fetched = gw.agent._fetch()  # the network part, as `run` does it in its thread
        fs.fail("fsyncdir", errno.EIO, once=True)  # the next directory sync fails
        results = gw.agent._activate(fetched)  # must not raise: that would end the service

        assert model_result(gw, results) == "failed"
        assert "Input/output error" in gw.gateway.status()["release"]["last"][-1]["reason"]  # type: ignore[index]
        assert gw.model_version == "m-1" and gw.model_release == 1
        model, signature = released_model_paths(state)
        verified = load_verified_model(model, signature, fleet.trust(), now=datetime.now(UTC))
        assert (verified.version, verified.release) == ("m-1", 1)  # what a restart would load

        fs.heal()
        assert model_result(gw, gw.check()) == "activated"
        assert gw.model_version == "m-2"
        model, signature = released_model_paths(state)
        verified = load_verified_model(model, signature, fleet.trust(), now=datetime.now(UTC))
        assert verified.version == "m-2"
