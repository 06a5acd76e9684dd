"""The enrollment's device-and-group lookup runs on the driver's own connection (ADR 0140): it
must read the same records as the ORM reads, pick the most specific group by whole levels, on
SQLite and PostgreSQL, and turn a database failure into `UpstreamError` (503), not a 500."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from provisioning.errors import UpstreamError
from provisioning.records import DeviceStatus
from provisioning.registry import Registry

DEVICE = "acme/plant1/press/line1/cell2/press-07"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    url = (
        f"sqlite:///{tmp_path / 'registry.sqlite'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_database")
    )
    reg = Registry.open(url)
    try:
        yield reg
    finally:
        reg.close()


def add_groups(registry: Registry, *prefixes: tuple[str, int | None]) -> None:
    with registry.unit() as unit:
        for prefix, days in prefixes:
            unit.insert_group(
                prefix, device_class="plc", validity_days=days, renewal_grace_days=2, now=NOW
            )


def test_lookup_reads_the_device_as_the_orm_does(registry: Registry) -> None:
    with registry.unit() as unit:
        unit.insert_device(
            DEVICE, device_class="gateway", asset="press 7", status=DeviceStatus.REGISTERED, now=NOW
        )
    device, group = registry.device_and_group(DEVICE)
    assert device == registry.device(DEVICE)
    assert device is not None and device.status is DeviceStatus.REGISTERED
    assert group is None


def test_lookup_of_an_unknown_device_finds_its_group(registry: Registry) -> None:
    add_groups(registry, ("acme/plant1/press/line1", 30))
    device, group = registry.device_and_group(DEVICE)
    assert device is None
    assert group == registry.group_for(DEVICE)
    assert group is not None and (group.prefix, group.validity_days) == (
        "acme/plant1/press/line1",
        30,
    )


def test_the_most_specific_group_wins_by_whole_levels(registry: Registry) -> None:
    # "acme/plant1/press/line" is a string prefix of line1 but not a level of it
    add_groups(
        registry,
        ("acme", 90),
        ("acme/plant1/press/line", 1),
        ("acme/plant1/press/line1/cell2", 7),
        ("acme/plant1/press/line1", 30),
        ("acme/plant1/press/line1/cell2/press-0", 2),
    )
    _, group = registry.device_and_group(DEVICE)
    assert group == registry.group_for(DEVICE)
    assert group is not None and (group.prefix, group.validity_days) == (
        "acme/plant1/press/line1/cell2",
        7,
    )


def test_prefix_with_like_wildcards_matches_only_itself(registry: Registry) -> None:
    add_groups(registry, ("acme/plant_/press", 5), ("acme/%", 6))
    assert registry.device_and_group(DEVICE) == (None, None)


def test_database_failure_is_an_upstream_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    registry = Registry.open(f"sqlite:///{path}")
    try:
        with sqlite3.connect(path) as other:  # the table gone under the service
            other.execute("DROP TABLE enrollment_groups")
        with pytest.raises(UpstreamError, match="registry database failed"):
            registry.device_and_group(DEVICE)
    finally:
        registry.close()
