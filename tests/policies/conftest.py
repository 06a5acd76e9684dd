from __future__ import annotations

from pathlib import Path

import pytest

from pki.identity import ConsumerIdentity, DeviceIdentity
from policies import Policy, load_policy

REPO = Path(__file__).resolve().parents[2]
PLANT_POLICY = REPO / "deploy" / "policy" / "plant.toml"


@pytest.fixture(scope="session")
def plant_text() -> str:
    return PLANT_POLICY.read_text()


@pytest.fixture(scope="session")
def policy(plant_text: str) -> Policy:
    return load_policy(plant_text, source="plant.toml")


@pytest.fixture
def press() -> DeviceIdentity:
    return DeviceIdentity.parse("acme/plant1/stamping/line1/cell1/press-01")


@pytest.fixture
def other_press() -> DeviceIdentity:
    return DeviceIdentity.parse("acme/plant1/stamping/line1/cell1/press-02")


@pytest.fixture
def historian() -> ConsumerIdentity:
    return ConsumerIdentity.parse("acme/it/historian")
