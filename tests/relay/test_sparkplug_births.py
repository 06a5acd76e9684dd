"""The births worker 0 keeps on disk for a restart (relay.sparkplug_births, ADR 0110): what a
flood of births from one edge node costs the OT reader, and what a restart takes back."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from policies import load_policy
from policies.sparkplug import MessageType, SparkplugPolicy, SparkplugTopic
from policies.sparkplug_codec import UINT64, encode_sparkplug
from relay.ot_source import Delivery
from relay.sparkplug_births import BirthStore
from tests.support.relay_fakes import memory_worker
from tests.support.sparkplug_policy import GROUP, sparkplug_policy_text

M = MessageType


@pytest.fixture(scope="module")
def sparkplug() -> SparkplugPolicy:
    sp = load_policy(sparkplug_policy_text()).sparkplug
    assert sp is not None
    return sp


class FsyncCount:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = os.fsync

        def counted(fd: int) -> None:
            self.calls += 1
            real(fd)

        monkeypatch.setattr(os, "fsync", counted)


def test_a_birth_flood_costs_the_ot_reader_no_fsync_and_the_commit_cycle_one_per_file(
    sparkplug: SparkplugPolicy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edge node may send births as fast as its rate allows (50/s, 256 KiB each by
    default). Fsynced on the OT reader's thread, each cost ~10 ms of worker 0's only reader
    (every Sparkplug node's and its share of JSON traffic): one node stalled everyone's. Now
    the reader only writes; the committer makes the latest of each file durable once a cycle."""
    store = BirthStore(tmp_path / "sparkplug")
    fsyncs = FsyncCount(monkeypatch)
    node = SparkplugTopic(GROUP, M.NBIRTH, "press-01")
    device = SparkplugTopic(GROUP, M.DBIRTH, "press-01", "plc")
    for i in range(50):
        store.changed(node, b"node birth %d" % i)
        store.changed(device, b"device birth %d" % i)
    assert fsyncs.calls == 0  # the OT reader's thread
    store.sync()  # the committer's, once a cycle
    assert fsyncs.calls == 3  # the two files written, then the directory
    store.sync()
    assert fsyncs.calls == 3  # nothing new: nothing to make durable
    kept = dict(store.kept(sparkplug))
    assert kept == {node: b"node birth 49", device: b"device birth 49"}


def test_a_death_is_made_durable_by_the_next_cycle_and_forgets_the_births(
    sparkplug: SparkplugPolicy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BirthStore(tmp_path / "sparkplug")
    store.changed(SparkplugTopic(GROUP, M.NBIRTH, "press-01"), b"birth")
    store.changed(SparkplugTopic(GROUP, M.DBIRTH, "press-01", "plc"), b"device")
    store.sync()
    fsyncs = FsyncCount(monkeypatch)
    store.changed(SparkplugTopic(GROUP, M.NDEATH, "press-01"), b"death")
    assert list(store.kept(sparkplug)) == [] and fsyncs.calls == 0
    store.sync()
    assert fsyncs.calls == 1  # the directory: the removals


def test_a_kept_birth_is_durable_before_its_message_is_acknowledged_on_ot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committer runs beside the OT reader: here right after the NBIRTH entered the
    pipeline, with IT away (spooled: audited, fsynced and acknowledged in that one cycle). Once
    acknowledged the OT broker forgets the birth, so the relay's copy must be durable first:
    lost to a power cut, it would judge the node's data against an older birth, or refuse it."""
    worker, _, ot, it = memory_worker(tmp_path, sparkplug_policy_text(), "sparkplug.toml")
    it.up = False
    token = (0, 1, 1)
    acked_at_birth_fsync: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".birth"):
            acked_at_birth_fsync.append(token in ot.acked)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    receive = worker._pipe.receive

    def receive_then_commit(*args: Any) -> bool:
        woke = receive(*args)
        if args[0] == token:
            assert worker._commit_cycle()  # the committer's turn, between the reader's steps
        return woke

    monkeypatch.setattr(worker._pipe, "receive", receive_then_commit)
    raw = encode_sparkplug(timestamp=int(time.time() * 1000), seq=0, metrics=[
        {"name": "bdSeq", "datatype": UINT64, "long_value": 3}])  # fmt: skip
    try:
        worker.on_delivery(Delivery(f"spBv1.0/{GROUP}/NBIRTH/press-01", raw, None, False, token))
        assert token in ot.acked and not worker.stats.refused  # accepted, spooled, acknowledged
        assert acked_at_birth_fsync[:1] == [False]
    finally:
        worker.stop()


def test_corrupted_oversized_or_foreign_kept_births_are_skipped_at_restart(
    sparkplug: SparkplugPolicy, tmp_path: Path
) -> None:
    """Whatever lies in the births directory, a restarting worker 0 starts: a file that is not
    a birth any more, one above ``max_payload_bytes``, or one of a node the policy does not
    name is not taken back, and that node's data is refused until it is born again."""
    worker, *_ = memory_worker(tmp_path, sparkplug_policy_text(), "sparkplug.toml")
    directory = worker._sparkplug._births.directory if worker._sparkplug else None
    worker.stop()
    assert directory is not None
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{GROUP}.press-01._.birth").write_bytes(b"\x0a\xff\xff\xff\xff\x0f garbage")
    big = sparkplug.limits.max_payload_bytes + 1
    (directory / f"{GROUP}.press-02._.birth").write_bytes(b"\x00" * big)
    (directory / f"{GROUP}.intruder._.birth").write_bytes(b"")
    worker, _, ot, _ = memory_worker(tmp_path, sparkplug_policy_text(), "sparkplug.toml")
    try:
        assert worker.stats.sparkplug_nodes_online == 0
        ndata = encode_sparkplug(timestamp=int(time.time() * 1000), seq=1, metrics=[])
        worker.on_delivery(Delivery(f"spBv1.0/{GROUP}/NDATA/press-01", ndata, None, False,
                                    (0, 1, 1)))  # fmt: skip
        assert worker._commit_cycle()
        assert worker.stats.refused["sparkplug_no_birth"] == 1 and ot.acked == [(0, 1, 1)]
    finally:
        worker.stop()
