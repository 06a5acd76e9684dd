from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.edge.harness import train_simulator_model
from tests.support.ca import ProductCA, make_ca
from tests.support.release_fleet import Fleet, start_fleet

LINE1 = "acme/plant1/press/line1"
LINE2 = "acme/plant1/press/line2"
GW_A = f"{LINE1}/cell1/gw-a"
GW_B = f"{LINE1}/cell2/gw-b"
GW_C = f"{LINE2}/cell1/gw-c"


@pytest.fixture(scope="session")
def release_ca(tmp_path_factory: pytest.TempPathFactory) -> ProductCA:
    return make_ca(tmp_path_factory.mktemp("release-ca"), age=timedelta(days=365))


@pytest.fixture(scope="session")
def models() -> dict[str, bytes]:
    return {v: train_simulator_model(v) for v in ("m-1", "m-2", "m-3")}


@pytest.fixture
def fleet(release_ca: ProductCA, tmp_path: Path) -> Iterator[Fleet]:
    f = start_fleet(release_ca, tmp_path, (GW_A, GW_B, GW_C))
    try:
        yield f
    finally:
        f.stop()
