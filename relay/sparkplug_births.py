"""The births the relay accepted, kept on disk so a restarted worker still knows each node's
session (ADR 0110): no NCMD rebirth request can be sent toward OT, so the relay replays its
own copy instead of asking the node.

One file per node and device, ``<state dir>/sparkplug/<group>.<node>.<device or _>.birth``,
holding the birth exactly as received (a Sparkplug id never contains ``.``, nor starts with
``_``). A birth replaces it, a death removes it, on the OT reader's thread without an fsync
and before the message enters the pipeline; the committer makes them durable once a commit
cycle, before that cycle acknowledges anything on OT (`sync`: one fsync per file written, then
the directory), however many births arrived meanwhile. An edge node may send births as fast as
its rate allows: fsynced one by one on the OT reader (~10 ms each) they stalled every other
node's traffic. Losing the last cycle's births to a power cut refuses a node's data until it
is born again. Bounded by the policy: only its nodes and their listed devices are ever written,
each at most ``max_payload_bytes``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from bedrock.files import fsync_dir, write_atomic
from policies.sparkplug import MessageType, SparkplugPolicy, SparkplugTopic

_log = logging.getLogger("relay.worker")
M = MessageType


class BirthStore:
    """``changed`` on the OT reader's thread, ``sync`` on the committer's."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._written: set[Path] = set()  # since the last sync
        self._dirty = False  # a file written or removed since the last sync

    def _path(self, group: str, node: str, device: str | None) -> Path:
        return self.directory / f"{group}.{node}.{device or '_'}.birth"

    def changed(self, topic: SparkplugTopic, raw: bytes) -> None:
        """After an accepted message: keep a birth, forget what a death ended (durable at the
        next `sync`)."""
        written = None
        try:
            if topic.type in (M.NBIRTH, M.DBIRTH):
                if topic.type is M.NBIRTH:  # the devices of the old session are gone
                    for old in self.directory.glob(f"{topic.group}.{topic.node}.*.birth"):
                        old.unlink(missing_ok=True)
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                written = self._path(topic.group, topic.node, topic.device)
                write_atomic(written, raw, 0o600, durable=False)
            elif topic.type is M.NDEATH:
                for old in self.directory.glob(f"{topic.group}.{topic.node}.*.birth"):
                    old.unlink(missing_ok=True)
            elif topic.type is M.DDEATH:
                self._path(topic.group, topic.node, topic.device).unlink(missing_ok=True)
        except OSError:  # the live session is still checked; only a restart would forget it
            _log.exception("cannot keep the Sparkplug birth of %s/%s", topic.group, topic.node)
        with self._lock:
            self._dirty = True
            if written is not None:
                self._written.add(written)

    def sync(self) -> None:
        """Make what `changed` did since the last call durable: each file written (its latest
        bytes, once), then the directory (the renames and removals)."""
        with self._lock:
            if not self._dirty:
                return
            written, self._written, self._dirty = self._written, set(), False
        try:
            for path in sorted(written):
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                except FileNotFoundError:  # removed since: the directory's fsync covers it
                    continue
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            if self.directory.is_dir():
                fsync_dir(self.directory)
        except OSError:
            _log.exception("cannot make the Sparkplug births in %s durable", self.directory)

    def kept(self, sparkplug: SparkplugPolicy) -> Iterator[tuple[SparkplugTopic, bytes]]:
        """The kept births of the policy's nodes, node births first; files of nodes or devices
        the policy no longer names, or larger than its limit, are skipped."""
        limit = sparkplug.limits.max_payload_bytes
        found = []
        for node in sparkplug.nodes.values():
            for device in (None, *node.devices):
                path = self._path(node.group, node.node, device)
                try:
                    if path.stat().st_size > limit:
                        continue
                    raw = path.read_bytes()
                except OSError:
                    continue
                mtype = M.NBIRTH if device is None else M.DBIRTH
                found.append((SparkplugTopic(node.group, mtype, node.node, device), raw))
        yield from sorted(found, key=lambda f: f[0].device is not None)
