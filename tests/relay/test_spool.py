"""The spool's record format, `Spool.prepend` (what an IT broker lost goes back in front), and
the retention log's bounds: in-process, on the real file system."""

from __future__ import annotations

from pathlib import Path

from relay.retention import Retention, bump_epoch, read_epoch
from relay.spool import RecordFile, Spool, SpoolRecord, encode_record


def _rec(i: int, device: str = "acme/p/a/l/c/d1", payload: bytes = b'{"v":1}') -> SpoolRecord:
    return SpoolRecord(f"{device}/telemetry", device, f"m-{i}", (("idmz-msg-id", f"m-{i}"),),
                       payload)  # fmt: skip


def test_records_with_a_nul_or_a_lone_surrogate_round_trip(tmp_path: Path) -> None:
    """The cheap NUL-joined header must never split a field that holds a NUL: JSON instead."""
    f = RecordFile(tmp_path / "r.dat")
    records = [_rec(1), SpoolRecord("t\0x", "d", "i", (("k\0", "v"),), b"p"),
               SpoolRecord("t", "d", "\ud800", (), b"")]  # fmt: skip
    for rec in records:
        f.append(encode_record(rec))
    f.sync()
    f.close()
    assert [r for _, r in RecordFile(tmp_path / "r.dat").read(0, 10)] == records


def test_prepended_records_leave_first_and_survive_a_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", max_bytes=1 << 20)
    for i in range(3):
        spool.append(_rec(i))
    spool.sync()
    (end, _), *_ = spool.read(spool.cursor, 1)
    spool.commit(end)  # m-0 went to IT
    spool.append(_rec(3))  # buffered, not yet synced
    assert spool.prepend([_rec(100), _rec(101)]) == 2
    expected = ["m-100", "m-101", "m-1", "m-2", "m-3"]
    assert [r.msg_id for r in spool.records()] == expected
    spool.close()
    again = Spool(tmp_path / "s", max_bytes=1 << 20)
    assert again.cursor == 0 and [r.msg_id for r in again.records()] == expected


def test_retention_keeps_the_window_and_the_byte_bound(tmp_path: Path) -> None:
    payload = b"x" * 1000
    ret = Retention(tmp_path / "ret", max_bytes=40_000, window_s=100.0, now=1000.0)
    for i in range(200):  # 200 kB offered over 200 s: far past both bounds
        ret.append(encode_record(_rec(i, payload=payload)))
        ret.sync(1000.0 + i)
    kept = [int(r.msg_id[2:]) for r in ret.records()]
    assert kept == list(range(kept[0], 200))  # the newest, in order, none missing
    assert ret.size_bytes <= 40_000 + 40_000 // 4 + 2000
    ret.sync(1000.0 + 199 + 200)  # nothing new for twice the window
    assert list(ret.records()) == []
    ret.close()


def test_the_epoch_and_the_lost_session_are_signals_once(tmp_path: Path) -> None:
    ret = Retention(tmp_path / "ret", max_bytes=1 << 20, window_s=100.0, now=0.0)
    assert ret.lost_state(session_present=False, epoch=0) == ""  # first connection ever
    ret.mark_handled(0)
    assert ret.lost_state(session_present=True, epoch=0) == ""
    assert "session" in ret.lost_state(session_present=False, epoch=0)
    assert read_epoch(tmp_path) == 0
    epoch = bump_epoch(tmp_path, "the IT broker exited with -9")
    assert read_epoch(tmp_path) == epoch == 1
    assert "epoch" in ret.lost_state(session_present=True, epoch=epoch)
    ret.mark_handled(epoch)
    assert ret.lost_state(session_present=True, epoch=epoch) == ""
