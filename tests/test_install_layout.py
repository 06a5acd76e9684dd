"""What an install of idmz puts into site-packages (ADR 0003).

The file list is setuptools' own (`build_py`, what `pip wheel .` packs besides the metadata),
read from pyproject.toml in a subprocess: no network, no build directory, nothing written.
It must hold the seven product packages and nothing else: no tests, benchmarks, docs or deploy
examples, and no data (the evaluation recordings and conformance vectors in ../shared, models,
databases, compiled plugins). And since the import names are generic (`audit`, `edge`, `relay`,
`policies` are all distribution names on PyPI too), no other installed distribution may provide
any of them.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import PurePosixPath

import pytest

from tests.support.product import PACKAGES, ROOT

LAYOUT_ADR = ROOT / "docs" / "adr" / "0003-install-layout-flat-import-names.md"
NOT_SHIPPED_DIRS = {"tests", "bench", "docs", "deploy", "scripts", "shared", "build"}
NOT_SHIPPED_NAMES = {"datasets", "vectors", "cwru-bearing", "fixtures", "__pycache__"}
DATA_SUFFIXES = {
    ".mat", ".npy", ".npz", ".csv", ".wav", ".parquet", ".onnx", ".pkl", ".joblib",
    ".db", ".sqlite", ".so", ".pem", ".key", ".der", ".crt", ".whl", ".gz", ".zip",
}  # fmt: skip
MAX_WHEEL_BYTES = 4 * 1024 * 1024  # the sources are ~1.5 MB; a data file would show

_FILE_LIST = """
import json, os, sys, warnings
warnings.simplefilter("ignore")  # setuptools' beta notice for [tool.setuptools]
from setuptools.dist import Distribution
dist = Distribution({"script_name": "setup.py"})
dist.parse_config_files()
build_py = dist.get_command_obj("build_py")
build_py.ensure_finalized()
out = os.path.abspath(build_py.build_lib)
files = [os.path.relpath(f, out) for f in build_py.get_outputs(include_bytecode=False)]
json.dump({"packages": sorted(dist.packages), "files": sorted(files)}, sys.stdout)
"""


@pytest.fixture(scope="module")
def wheel() -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _FILE_LIST],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    listed: dict[str, list[str]] = json.loads(done.stdout)
    return listed


def test_wheel_ships_exactly_the_packages_the_adr_names(wheel: dict[str, list[str]]) -> None:
    tops = {package.split(".")[0] for package in wheel["packages"]}
    assert tops == set(PACKAGES)
    assert {PurePosixPath(f).parts[0] for f in wheel["files"]} == set(PACKAGES)
    adr = LAYOUT_ADR.read_text(encoding="utf-8")
    assert all(f"`{name}`" in adr for name in PACKAGES), "ADR 0003 names each top-level package"


def test_wheel_ships_no_tests_bench_docs_or_data(wheel: dict[str, list[str]]) -> None:
    leaked = [
        f
        for f in wheel["files"]
        if NOT_SHIPPED_DIRS & set(PurePosixPath(f).parts[1:])
        or NOT_SHIPPED_NAMES & set(PurePosixPath(f).parts)
        or PurePosixPath(f).suffix.lower() in DATA_SUFFIXES
    ]
    assert not leaked, f"would go into the wheel: {leaked}"
    assert not [p for p in wheel["packages"] if p.split(".")[-1] in NOT_SHIPPED_DIRS]


def test_wheel_size_is_bounded(wheel: dict[str, list[str]]) -> None:
    size = sum((ROOT / f).stat().st_size for f in wheel["files"])
    assert 0 < size < MAX_WHEEL_BYTES, f"{size} bytes of sources and package data"


def test_no_other_installed_distribution_provides_our_import_names() -> None:
    providers = importlib.metadata.packages_distributions()
    foreign = {
        name: sorted(set(providers.get(name, [])) - {"idmz"})
        for name in PACKAGES
        if set(providers.get(name, [])) - {"idmz"}
    }
    assert not foreign, f"other distributions install our top-level names: {foreign}"
