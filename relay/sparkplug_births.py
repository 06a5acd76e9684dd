"""The births the relay accepted, kept on disk so a restarted worker still knows each node's
session (ADR 0110): no NCMD rebirth request can be sent toward OT, so the relay replays its
own copy instead of asking the node.

One file per node and device, ``<state dir>/sparkplug/<group>.<node>.<device or _>.birth``,
holding the birth exactly as received (a Sparkplug id never contains ``.``, nor starts with
``_``). A birth replaces it (fsynced: births are rare, and losing one refuses a node's data
until it is born again); a death removes it. Bounded by the policy: only its nodes and their
listed devices are ever written, each at most ``max_payload_bytes``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from bedrock.files import write_atomic
from policies.sparkplug import MessageType, SparkplugPolicy, SparkplugTopic

_log = logging.getLogger("relay.worker")
M = MessageType


class BirthStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, group: str, node: str, device: str | None) -> Path:
        return self.directory / f"{group}.{node}.{device or '_'}.birth"

    def changed(self, topic: SparkplugTopic, raw: bytes) -> None:
        """After an accepted message: keep a birth, forget what a death ended."""
        try:
            if topic.type in (M.NBIRTH, M.DBIRTH):
                if topic.type is M.NBIRTH:  # the devices of the old session are gone
                    for old in self.directory.glob(f"{topic.group}.{topic.node}.*.birth"):
                        old.unlink(missing_ok=True)
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                write_atomic(self._path(topic.group, topic.node, topic.device), raw, 0o600)
            elif topic.type is M.NDEATH:
                for old in self.directory.glob(f"{topic.group}.{topic.node}.*.birth"):
                    old.unlink(missing_ok=True)
            elif topic.type is M.DDEATH:
                self._path(topic.group, topic.node, topic.device).unlink(missing_ok=True)
        except OSError:  # the live session is still checked; only a restart would forget it
            _log.exception("cannot keep the Sparkplug birth of %s/%s", topic.group, topic.node)

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
