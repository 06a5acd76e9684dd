"""The CRL watcher survives a CRL path it cannot look at (review note on `CrlWatcher._run`):
an error other than 'missing' is logged, the last CRL stays in force, and the watcher picks
the CRL up again once the path is readable."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.revocation import CrlWatcher, RevocationState
from tests.support.ca import make_test_pki

PRESS = "acme/plant1/stamping/line1/cell1/press-01"


def test_crl_path_that_is_not_a_directory_does_not_kill_the_watcher(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = make_test_pki(tmp_path / "pki")
    crl_dir = tmp_path / "published"
    crl_dir.mkdir()
    shutil.copy(pki.crlfile, crl_dir / "crl.pem")
    changes: list[RevocationState] = []
    watcher = CrlWatcher(
        crl_dir / "crl.pem",
        pki.dir / "ca" / "issuing.pem",
        None,
        clock=lambda: datetime.now(UTC),
        on_change=lambda _old, new: changes.append(new),
        poll_interval_s=0.02,
    )
    watcher.start()
    try:
        before = watcher.state
        crl_dir.rename(tmp_path / "moved")
        crl_dir.write_text("a file where the CRL's directory was")  # stat: NotADirectoryError
        deadline = time.monotonic() + 30
        while "cannot look at the CRL" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "NotADirectoryError" in caplog.text
        assert watcher.refresh() is before  # the hot path keeps the last CRL, never raises
        assert watcher._thread is not None and watcher._thread.is_alive()

        creds = pki.device(PRESS)
        pki.revoke(creds)  # a new CRL, published where the watcher looks once it is back
        crl_dir.unlink()
        crl_dir.mkdir()
        shutil.copy(pki.crlfile, crl_dir / "crl.pem")
        deadline = time.monotonic() + 30
        while watcher.state.crl_number == before.crl_number and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.state.crl_number != before.crl_number
        assert changes[-1] is watcher.state and creds.serial in watcher.state.revoked_serials
    finally:
        watcher.stop()
        pki.ca.close()
