"""A package of someone else's that shadows one of idmz's generic import names is refused before
any of it runs (ADR 0003): `idmz` exits 2 naming the package and where it came from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from idmz.install import PACKAGES, foreign_packages, install_problem
from tests.support.product import PACKAGES as PRODUCT_PACKAGES


def test_this_install_answers_every_import_name_itself() -> None:
    assert set(PACKAGES) == set(PRODUCT_PACKAGES)
    assert foreign_packages() == {}
    assert install_problem() is None


def test_a_foreign_package_shadowing_ours_is_refused_before_it_runs(tmp_path: Path) -> None:
    ran = tmp_path / "foreign-code-ran"
    shadow = tmp_path / "shadow" / "audit"
    shadow.mkdir(parents=True)
    # An unrelated `audit` distribution (one exists on PyPI) earlier on sys.path.
    (shadow / "__init__.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    env = {**os.environ, "PYTHONPATH": str(shadow.parent)}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from idmz.cli import main; sys.exit(main(['--help']))"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"audit from {shadow.parent.resolve()}" in done.stderr
    assert "refusing to run" in done.stderr and done.stdout == ""
    assert not ran.exists(), "the foreign package's code ran"
