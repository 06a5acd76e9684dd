"""Private keys and the other files pki writes: whoever can plant a file or a symlink in the
key's directory (a leftover from a crash, another local user) never gets the key written
where they can read it, nor a looser mode (security review L3). Real files, real umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bedrock.files import write_atomic
from pki.credentials import CredentialDir
from pki.keys import generate_private_key, load_private_key, write_private_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0)  # the most permissive umask a process can run with
    yield
    os.umask(old)


def test_planted_world_readable_tmp_cannot_loosen_the_key_mode(
    tmp_path: Path, loose_umask: None
) -> None:
    key_path = tmp_path / "key.pem"
    planted = tmp_path / "key.pem.tmp"  # the name the old writer used
    planted.write_text("leftover")
    planted.chmod(0o666)
    write_private_key(key_path, generate_private_key(), None)
    assert mode(key_path) == 0o600 and not key_path.is_symlink()
    assert planted.read_text() == "leftover"  # never opened
    load_private_key(key_path, None)


def test_symlink_planted_at_the_tmp_name_is_never_followed(tmp_path: Path) -> None:
    readable = tmp_path / "attacker-readable"
    readable.write_text("")
    readable.chmod(0o644)
    (tmp_path / "key2.pem.tmp").symlink_to(readable)
    write_private_key(tmp_path / "key2.pem", generate_private_key(), None)
    assert readable.read_text() == ""  # nothing written through the link
    assert mode(tmp_path / "key2.pem") == 0o600 and not (tmp_path / "key2.pem").is_symlink()


def test_symlink_at_the_key_path_is_replaced_not_written_through(
    tmp_path: Path,
) -> None:
    readable = tmp_path / "attacker-readable"
    readable.write_text("")
    key_path = tmp_path / "key.pem"
    key_path.symlink_to(readable)
    write_private_key(key_path, generate_private_key(), b"passphrase")
    assert readable.read_text() == ""
    assert not key_path.is_symlink() and mode(key_path) == 0o600
    load_private_key(key_path, b"passphrase")


def test_device_key_in_a_credential_directory_is_owner_only_whatever_the_umask(
    tmp_path: Path, loose_umask: None
) -> None:
    creds = CredentialDir(tmp_path)
    write_atomic(creds.key, b"-----BEGIN PRIVATE KEY-----\n", 0o600)
    write_atomic(creds.cert, b"-----BEGIN CERTIFICATE-----\n")
    assert mode(creds.key) == 0o600 and mode(creds.cert) == 0o644


def test_public_files_keep_their_mode_under_a_strict_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "root.pem", b"cert")
    finally:
        os.umask(old)
    assert mode(tmp_path / "root.pem") == 0o644


def test_rewrites_leave_no_temporary_files(tmp_path: Path) -> None:
    for _ in range(3):
        write_private_key(tmp_path / "key.pem", generate_private_key(), None)
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


def test_failed_write_leaves_the_old_key_and_no_temporary_file(tmp_path: Path) -> None:
    key_path = tmp_path / "key.pem"
    write_private_key(key_path, generate_private_key(), None)
    before = key_path.read_bytes()
    with pytest.raises(TypeError):
        write_atomic(key_path, "not bytes", 0o600)  # type: ignore[arg-type]
    assert key_path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]
