"""Bringing the index back in line with the entries after a crash (ADR 0020, 0022).

The entries file is the durable record: a batch is acknowledged after ``fdatasync`` of the
entries. The index (offset + leaf hash per entry) is written right after, without its own
fsync, and is made durable when a checkpoint is written. So after a crash:

* index records past the last checkpoint may be missing, zeroed or torn (power loss); they
  are checked against the entries and cut at the first one that does not match;
* complete entries past the index are kept (they may have been acknowledged) and indexed,
  as long as each is one JSON line carrying the next sequence number;
* anything after that (a partial line from a write that was never acknowledged) is cut.
"""

from __future__ import annotations

import json
import os

from audit.merkle import leaf_hash
from audit.storage import RECORD_BYTES, pack_record, record_end


def first_bad_record(entries_fd: int, index: bytes, first: int) -> int:
    """The first index record at or after ``first`` that does not describe its entry
    (``len(index) // 40`` when all do). ``index`` holds the records from 0."""
    n = len(index) // RECORD_BYTES
    if first >= n:
        return n
    start = record_end(index, first - 1) if first else 0
    last_end = record_end(index, n - 1)
    if last_end < start:
        return first
    size = os.fstat(entries_fd).st_size
    data = os.pread(entries_fd, max(0, min(last_end, size) - start), start)
    base = start
    for i in range(first, n):
        end = record_end(index, i)
        if end <= start or end > base + len(data):
            return i
        line = data[start - base : end - base]
        o = i * RECORD_BYTES + 8
        if line[-1:] != b"\n" or leaf_hash(line[:-1]) != index[o : o + 32]:
            return i
        start = end
    return n


def index_tail(
    entries_fd: int, start_offset: int, first_seq: int
) -> tuple[bytes, list[bytes], int]:
    """Index the complete entries after ``start_offset``: (records, leaf hashes, end offset
    of the last good entry). Stops at the first line that is partial or not the next entry."""
    size = os.fstat(entries_fd).st_size
    data = os.pread(entries_fd, max(0, size - start_offset), start_offset)
    records: list[bytes] = []
    hashes: list[bytes] = []
    pos, seq, end = 0, first_seq, start_offset
    while (nl := data.find(b"\n", pos)) >= 0:
        line = data[pos:nl]
        try:
            entry = json.loads(line)
        except ValueError:
            break
        if not isinstance(entry, dict) or entry.get("seq") != seq:
            break
        h = leaf_hash(line)
        end += len(line) + 1
        records.append(pack_record(end, h))
        hashes.append(h)
        pos, seq = nl + 1, seq + 1
    return b"".join(records), hashes, end
