"""The repository's signing keys are read only from files that only their owner can read."""

from __future__ import annotations

from pathlib import Path

import pytest

from release.errors import ReleaseConfigError
from release.keys import generate_key, load_signer


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_signing_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    """An online, root or release signer key whose mode drifted (a copy, a restore, an
    attacker preparing to read it) is refused, and the message names the file and mode."""
    key = tmp_path / "online.pem"
    generate_key(key)
    assert load_signer(key).public_key is not None  # 0600 as written
    key.chmod(mode)
    with pytest.raises(ReleaseConfigError, match=f"0600.*{mode:04o}"):
        load_signer(key)
