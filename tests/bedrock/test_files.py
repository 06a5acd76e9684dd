"""The one atomic write (ADR 0007): its two durability promises, checked on a real filesystem
that records what reached it and fails on command (tests/support/faulty_fs.py). Its defences
against planted files and symlinks are tested in tests/pki/test_key_files.py."""

from __future__ import annotations

import errno
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bedrock.files import write_atomic
from tests.support.faulty_fs import FaultyFs, mounted_or_skip

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FaultyFs]:
    with mounted_or_skip(tmp_path) as mounted:
        yield mounted


def ops_after(fs: FaultyFs, start: int) -> list[tuple[str, str]]:
    return [(op.op, op.path) for op in fs.ops()[start:]]


def test_durable_write_fsyncs_the_file_before_the_rename_and_the_directory_after(
    fs: FaultyFs,
) -> None:
    (fs.mountpoint / "d").mkdir()
    start = len(fs.ops())
    write_atomic(fs.mountpoint / "d" / "crl.pem", b"new", 0o644)
    seen = ops_after(fs, start)
    kinds = [op for op, _ in seen]
    assert "fsync" in kinds and "fsyncdir" in kinds and "rename" in kinds
    assert kinds.index("fsync") < kinds.index("rename") < kinds.index("fsyncdir")
    assert (fs.backing / "d" / "crl.pem").read_bytes() == b"new"


def test_non_durable_write_is_atomic_but_never_fsyncs(fs: FaultyFs) -> None:
    start = len(fs.ops())
    write_atomic(fs.mountpoint / "stats.json", b"{}", durable=False)
    kinds = [op for op, _ in ops_after(fs, start)]
    assert "rename" in kinds and "fsync" not in kinds and "fsyncdir" not in kinds
    assert (fs.backing / "stats.json").read_bytes() == b"{}"


def test_failed_fsync_leaves_the_old_file_and_no_temporary_file(fs: FaultyFs) -> None:
    target = fs.mountpoint / "chain.pem"
    write_atomic(target, b"old")
    fs.fail("fsync", errno.EIO)
    with pytest.raises(OSError) as raised:
        write_atomic(target, b"new")
    assert raised.value.errno == errno.EIO
    fs.heal()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in fs.backing.iterdir()) == ["chain.pem"]


def test_mode_is_exact_whatever_the_durability(tmp_path: Path) -> None:
    for durable in (True, False):
        path = tmp_path / f"f-{durable}"
        write_atomic(path, b"x", 0o640, durable=durable)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
