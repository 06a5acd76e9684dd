"""Publish, promote and roll back, end to end on loopback: a real HTTPS mTLS repository, the
real TUF client in three gateways (two on line 1, one on line 2)."""

from __future__ import annotations

import asyncio

from policies.release import ReleaseKind, StageRequest
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
    assert status["running"]["model"] == rec.release  # type: ignore[index]


def test_promote_gives_the_canary_to_the_whole_line_and_not_to_another_line(
    fleet: Fleet, models: dict[str, bytes]
) -> None:
    canary = fleet.publish_model(models["m-1"], LINE1, "canary:1")
    check_all(fleet)
    promoted = fleet.repo.promote(
        ReleaseKind.MODEL, LINE1, reason="canary good for a shift", actor="alice",
        targets_signer=fleet.targets_signer(),
    )  # fmt: skip
    assert promoted.release == canary.release and promoted.change == "promoted"
    results = check_all(fleet)
    assert results[GW_A] == ["current", "current"]  # it runs that release already
    assert results[GW_B] == ["activated", "current"]
    assert fleet.gateways[GW_B].model_version == "m-1"
    assert fleet.gateways[GW_C].model_version is None
    assert not any(p.endswith("release.canary") for p in fleet.repo.current())


def test_rollback_offers_the_previous_model_under_a_new_release(
    fleet: Fleet, models: dict[str, bytes]
) -> None:
    first = fleet.publish_model(models["m-1"], LINE1)
    check_all(fleet)
    second = fleet.publish_model(models["m-2"], LINE1)
    check_all(fleet)
    assert fleet.gateways[GW_B].model_version == "m-2"
    back = fleet.repo.rollback(
        ReleaseKind.MODEL, LINE1, sign=fleet.resign,
        reason="m-2 alarms on every start", actor="alice", targets_signer=fleet.targets_signer(),
    )  # fmt: skip
    assert back.release > second.release > first.release
    assert back.rollback_of == second.release and back.sha256 == first.sha256
    check_all(fleet)
    for gw in (GW_A, GW_B):
        assert fleet.gateways[gw].model_version == "m-1"
        assert fleet.gateways[gw].model_release == back.release


def test_rollback_of_a_canary_returns_the_canary_to_what_the_line_runs(
    fleet: Fleet, models: dict[str, bytes]
) -> None:
    fleet.publish_model(models["m-1"], LINE1)
    fleet.publish_model(models["m-2"], LINE1, "canary:1")
    check_all(fleet)
    assert fleet.gateways[GW_A].model_version == "m-2"
    fleet.repo.rollback(
        ReleaseKind.MODEL, LINE1, sign=fleet.resign,
        reason="canary drifts", actor="alice", targets_signer=fleet.targets_signer(),
    )  # fmt: skip
    check_all(fleet)
    assert fleet.gateways[GW_A].model_version == "m-1"
    assert fleet.gateways[GW_B].model_version == "m-1"


def test_a_live_config_is_applied_without_a_restart(fleet: Fleet) -> None:
    fleet.repo.publish(
        ReleaseKind.CONFIG, LINE1, StageRequest.parse("all"), b'{"status_interval_s": 5}',
        fleet=[], sign=lambda _: "", reason="faster status", actor="alice",
        targets_signer=fleet.targets_signer(),
    )  # fmt: skip
    check_all(fleet)
    assert fleet.gateways[GW_B].gateway.config.status_interval_s == 5.0
    assert fleet.gateways[GW_C].gateway.config.status_interval_s == 10.0
    # The running schedule reads the interval at every turn: the next status comes in 5 s.
    status_job = next(
        p for p in fleet.gateways[GW_B].gateway.schedule().periodic if p.name == "status"
    )
    assert status_job.every is not None and status_job.every() == 5.0


def test_a_config_that_needs_a_restart_is_refused_with_its_reason(fleet: Fleet) -> None:
    fleet.repo.publish(
        ReleaseKind.CONFIG, LINE1, StageRequest.parse("all"), b'{"outbox_path": "/tmp/x"}',
        fleet=[], sign=lambda _: "", reason="move outbox", actor="alice",
        targets_signer=fleet.targets_signer(),
    )  # fmt: skip
    results = fleet.gateways[GW_A].check()
    refused = [r for r in results if r.result == "refused"]
    assert refused and "cannot be applied live" in refused[0].reason
    assert fleet.gateways[GW_A].agent.activators[ReleaseKind.CONFIG].running() == 0


def test_a_running_gateway_pulls_on_its_own_schedule_and_swaps_without_a_restart(
    fleet: Fleet, models: dict[str, bytes]
) -> None:
    fleet.publish_model(models["m-1"], LINE1)
    gw = fleet.add_gateway(f"{LINE1}/cell9/gw-live", interval_s=0.2, jitter_s=0.1)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(gw.gateway.run(stop))
        deadline = asyncio.get_running_loop().time() + 60
        while gw.model_version != "m-1":
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        first = gw.gateway.scorer
        fleet.publish_model(models["m-2"], LINE1)
        while gw.model_version != "m-2":
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert gw.gateway.scorer is not first and not task.done()  # same process, same task
        stop.set()
        await task

    asyncio.run(scenario())
    assert gw.agent.checks >= 2


def test_a_quiet_week_without_a_publish_does_not_freeze_the_fleet(
    fleet: Fleet, models: dict[str, bytes]
) -> None:
    """The last release was published eight days ago and nothing since; `serve` has kept
    renewing the online metadata. The snapshot (7 days) must have been renewed with it, or
    every gateway refuses every check as if the repository were under a freeze attack."""
    from datetime import UTC, datetime, timedelta

    from bedrock.clock import FixedClock, SystemClock

    fleet.repo.clock = FixedClock(datetime.now(UTC) - timedelta(days=8))
    fleet.publish_model(models["m-1"], LINE1)
    fleet.repo.clock = SystemClock()
    assert fleet.repo.renew_online()  # what `serve` does every few minutes
    results = fleet.gateways[GW_A].check()
    assert [r.result for r in results] == ["activated", "current"], results
