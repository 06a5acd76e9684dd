"""The store-and-forward outbox: a crash-safe on-disk queue in front of the MQTT client.

SQLite in WAL mode with ``synchronous=FULL`` (ADR 0060): an append returns only after the
message is on disk, a crash loses nothing that was acknowledged to the caller, and a message is
deleted only when the broker's PUBACK for it arrived (`ack`). Each message gets its stable id
(a UUIDv7 string, RFC 9562 section 5.7: time-ordered) when it enters, and keeps it across
retries and restarts (docs/contracts.md section 4).

Limits are explicit (`OutboxLimits`): a byte cap with an overflow policy (``drop-oldest``
deletes the oldest messages to make room; ``refuse-new`` raises `OutboxFullError`), and a TTL
after which undelivered messages are expired. Every drop is counted by reason, persistently.

>>> import tempfile, pathlib
>>> box = Outbox.open(pathlib.Path(tempfile.mkdtemp()) / "outbox.db", OutboxLimits())
>>> m = box.append("a/b/c/d/e/f/telemetry", b"{}", now=1000.0)
>>> [x.id for x in box.next_batch(after_seq=0, limit=10)] == [m.id]
True
>>> box.ack([m.id])
1
>>> box.stats(now=1000.0).depth
0
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ConfigError, OutboxFullError, OutboxStorageError

DROP_OLDEST = "drop-oldest"
REFUSE_NEW = "refuse-new"
DROP_REASONS = ("overflow", "expired", "refused")


@dataclass(frozen=True, slots=True)
class OutboxLimits:
    max_outbox_bytes: int = 256 * 1024 * 1024  # Greengrass stream manager's default maxSize
    ttl_s: float = 7 * 24 * 3600.0  # a week of WAN outage
    overflow: str = DROP_OLDEST
    max_message_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if self.overflow not in (DROP_OLDEST, REFUSE_NEW):
            raise ConfigError(
                f"outbox overflow must be {DROP_OLDEST!r} or {REFUSE_NEW!r}; found {self.overflow!r}"
            )
        if self.max_outbox_bytes < self.max_message_bytes:
            raise ConfigError("max_outbox_bytes must be >= max_message_bytes")
        if self.ttl_s < 60:
            raise ConfigError(f"ttl_s must be >= 60; found {self.ttl_s}")


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    seq: int
    id: str
    topic: str
    payload: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int
    bytes: int
    oldest_age_s: float
    dropped: dict[str, int]
    appended: int
    acked: int


def uuid7(now_s: float) -> str:
    """A UUIDv7 (RFC 9562 section 5.7): 48-bit Unix ms, version, 74 random bits."""
    ms = int(now_s * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_created_at ON messages(created_at);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def _side_files(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def _private_directory(directory: Path) -> None:
    """Create ``directory`` 0700, or make an existing one of this user's 0700. Someone else's
    directory, or a shared sticky one such as /tmp, is refused: whoever may write there could
    replace the side files."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = directory.stat()
    if st.st_uid != os.geteuid() or st.st_mode & stat.S_ISVTX:
        raise ConfigError(
            f"the outbox directory {directory} must be this user's own (not shared, not sticky)"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(directory, 0o700)


def _owner_only(path: Path, *, create: bool) -> None:
    """Make ``path`` mode 0600 through a descriptor that never follows a symlink (ELOOP)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        return  # a side file SQLite has not created yet: it will copy the database's mode
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Outbox:
    """Thread-safe: the gateway appends from its event loop, PUBACKs arrive on the MQTT
    client's thread. One connection, serialised by a lock (appends are small). Depth and bytes
    are kept in memory and adjusted by every statement that changes them, so no operation on
    the hot path scans the table, however long the outage was."""

    def __init__(self, conn: sqlite3.Connection, limits: OutboxLimits, path: Path) -> None:
        self._db = conn
        self.limits = limits
        self.path = path
        self._lock = threading.Lock()
        self._depth = self._bytes = 0
        self._recount()

    @classmethod
    def open(cls, path: Path, limits: OutboxLimits) -> Outbox:
        """Open (or create) the outbox at ``path``. Messages are plant data: the directory is
        made 0700 and the database and its ``-wal``/``-shm`` side files 0600 before SQLite
        touches them (SQLite gives new side files the database file's mode), whatever the
        umask, and side files left looser by an older version are tightened."""
        try:
            _private_directory(path.parent)
            _owner_only(path, create=True)
            for side in _side_files(path):
                _owner_only(side, create=False)
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxStorageError(f"cannot open the outbox {path}: {exc}") from exc
        return cls(conn, limits, path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One durable transaction under the lock; storage failures become
        `OutboxStorageError` (disk full, I/O error) and leave the counts consistent."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    self._recount()
                    raise
            except sqlite3.Error as exc:
                raise OutboxStorageError(f"outbox {self.path}: {exc}") from exc

    def _count(self, name: str, n: int) -> None:
        if n:
            self._db.execute(
                "INSERT INTO counters(name, value) VALUES(?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, n),
            )

    def append(
        self, topic: str, payload: bytes, *, now: float, msg_id: str | None = None
    ) -> OutboxMessage:
        """Store one message durably and return it with its id. Raises `OutboxFullError` under
        ``refuse-new`` when it does not fit; under ``drop-oldest`` evicts the oldest first."""
        return self.append_many([(topic, payload)], now=now, msg_ids=[msg_id])[0]

    def append_many(
        self,
        items: Iterable[tuple[str, bytes]],
        *,
        now: float,
        msg_ids: Iterable[str | None] | None = None,
    ) -> list[OutboxMessage]:
        """Append several messages in one transaction (one fsync); all or none."""
        items = list(items)
        ids: list[str | None] = list(msg_ids) if msg_ids is not None else [None] * len(items)
        try:
            with self._tx() as db:
                return self._insert(db, items, ids, now)
        except OutboxFullError:
            with self._tx():  # nothing of the batch is stored; the refusal is counted
                self._count("refused", len(items))
            raise

    def _insert(
        self,
        db: sqlite3.Connection,
        items: list[tuple[str, bytes]],
        ids: list[str | None],
        now: float,
    ) -> list[OutboxMessage]:
        lim = self.limits
        out: list[OutboxMessage] = []
        for (topic, payload), given in zip(items, ids, strict=True):
            size = len(payload) + len(topic)
            if len(payload) > lim.max_message_bytes:
                raise OutboxFullError(
                    f"message for {topic} is {len(payload)} bytes; "
                    f"max_message_bytes is {lim.max_message_bytes}"
                )
            if self._bytes + size > lim.max_outbox_bytes:
                if lim.overflow == REFUSE_NEW:
                    raise OutboxFullError(
                        f"outbox holds {self._bytes} of {lim.max_outbox_bytes} bytes; "
                        f"refusing a {size}-byte message for {topic} (refuse-new)"
                    )
                self._evict_oldest(self._bytes + size - lim.max_outbox_bytes)
            msg_id = given or uuid7(now)
            cur = db.execute(
                "INSERT INTO messages(id, topic, payload, size, created_at) VALUES(?, ?, ?, ?, ?)",
                (msg_id, topic, payload, size, now),
            )
            self._depth += 1
            self._bytes += size
            out.append(OutboxMessage(int(cur.lastrowid or 0), msg_id, topic, payload, now))
        self._count("appended", len(out))
        return out

    def _evict_oldest(self, need_bytes: int) -> None:
        freed = dropped = last = 0
        for seq, size in self._db.execute("SELECT seq, size FROM messages ORDER BY seq"):
            if freed >= need_bytes:
                break
            freed += size
            dropped += 1
            last = seq
        if dropped:
            self._db.execute("DELETE FROM messages WHERE seq <= ?", (last,))
            self._depth -= dropped
            self._bytes -= freed
            self._count("overflow", dropped)

    def _recount(self) -> None:
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages").fetchone()
        self._depth, self._bytes = int(row[0]), int(row[1])

    def _delete(self, where: str, args: tuple[object, ...]) -> int:
        sizes = self._db.execute(f"DELETE FROM messages WHERE {where} RETURNING size", args)  # noqa: S608 - fixed clauses
        freed = [int(r[0]) for r in sizes.fetchall()]
        self._depth -= len(freed)
        self._bytes -= sum(freed)
        return len(freed)

    def expire(self, *, now: float) -> int:
        """Delete messages older than the TTL; returns how many (counted as ``expired``)."""
        with self._tx():
            n = self._delete("created_at < ?", (now - self.limits.ttl_s,))
            self._count("expired", n)
        return n

    def next_batch(
        self, *, after_seq: int, limit: int, before_seq: int | None = None
    ) -> list[OutboxMessage]:
        """Oldest-first messages with ``after_seq < seq`` (and ``seq < before_seq``)."""
        hi = before_seq if before_seq is not None else 1 << 62
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, id, topic, payload, created_at FROM messages "
                "WHERE seq > ? AND seq < ? ORDER BY seq LIMIT ?",
                (after_seq, hi, limit),
            ).fetchall()
        return [OutboxMessage(int(r[0]), r[1], r[2], bytes(r[3]), float(r[4])) for r in rows]

    def last_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM messages").fetchone()
        return int(row[0])

    def ack(self, msg_ids: Iterable[str]) -> int:
        """The broker acknowledged these ids (PUBACK): delete them. Unknown ids are ignored
        (a duplicate PUBACK after a reconnect)."""
        ids = list(msg_ids)
        if not ids:
            return 0
        with self._tx():
            n = sum(self._delete("id = ?", (msg_id,)) for msg_id in ids)
            self._count("acked", n)
        return n

    def stats(self, *, now: float) -> OutboxStats:
        with self._lock:
            oldest = self._db.execute(
                "SELECT created_at FROM messages ORDER BY seq LIMIT 1"
            ).fetchone()
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            depth, nbytes = self._depth, self._bytes
        return OutboxStats(
            depth=depth,
            bytes=nbytes,
            oldest_age_s=max(0.0, now - float(oldest[0])) if oldest is not None else 0.0,
            dropped={r: int(counters.get(r, 0)) for r in DROP_REASONS},
            appended=int(counters.get("appended", 0)),
            acked=int(counters.get("acked", 0)),
        )
