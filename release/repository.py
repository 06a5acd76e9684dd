"""The TUF repository the gateways pull from (python-tuf's Metadata API behind this module).

On disk, under one directory (``<home>/release/repository``)::

    metadata/  1.root.json root.json  N.targets.json  N.snapshot.json  timestamp.json
    targets/   <kind>/<prefix>/<sha256>.release.<stage>     (consistent snapshot: never reused)
    history.json                                            every release, in order
    keys/online.pem                                         snapshot + timestamp key (0600)

Targets are channels (`policies.release.target_path`): publishing replaces what a channel
offers, under a release number that only grows. A rollback offers an earlier artifact again
under a *new* number, so no gateway is ever asked to accept older metadata or a lower release.

    >>> repo = ReleaseRepository(Path("idmz-data/release/repository"))
    >>> rec = repo.publish(ReleaseKind.MODEL, "acme/plant1/press/line1", StageRequest.parse("canary:1"),
    ...                    data, fleet=ids, sign=bundle_for, reason="week 49", actor="alice",
    ...                    targets_signer=signer)                              # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from pathlib import Path

from securesystemslib.signer import Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from bedrock.clock import Clock, SystemClock
from bedrock.files import write_atomic
from policies.release import (
    ReleaseKind,
    ReleaseStage,
    ReleaseTarget,
    StageRequest,
    check_prefix,
    parse_custom,
    pick_canary,
    target_path,
)
from release.errors import ReleaseConfigError, ReleaseRefusedError, ReleaseStateError
from release.keys import generate_key, load_signer, public_key_of_certificate
from release.records import Expiry, ReleaseRecord, record_before, record_of

SPEC_VERSION = "1.0.31"
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024


class ReleaseRepository:
    def __init__(self, root: Path, *, clock: Clock | None = None) -> None:
        self.root = root
        self.metadata_dir = root / "metadata"
        self.targets_dir = root / "targets"
        self.history_path = root / "history.json"
        self.online_key_path = root / "keys" / "online.pem"
        self.clock = clock or SystemClock()
        if not (self.metadata_dir / "root.json").is_file():
            raise ReleaseConfigError(f"no release repository at {root} (idmz release init)")

    # -- creation and keys --------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        root_key_dir: Path,
        signer_certs: Sequence[bytes],
        targets_signer: Signer,
        expiry: Expiry | None = None,
        clock: Clock | None = None,
    ) -> ReleaseRepository:
        """A new repository: root key generated into ``root_key_dir`` (take it offline),
        online key under ``root/keys``, targets keys from the release signers' certificates,
        and version 1 of every role with no targets."""
        if (root / "metadata" / "root.json").exists():
            raise ReleaseConfigError(f"a release repository already exists at {root}")
        if not signer_certs:
            raise ReleaseConfigError("a release repository needs at least one release signer")
        clock, expiry = clock or SystemClock(), expiry or Expiry()
        now = clock.now()
        (root / "metadata").mkdir(parents=True, exist_ok=True)
        (root / "targets").mkdir(exist_ok=True)
        (root / "keys").mkdir(mode=0o700, exist_ok=True)
        root_key_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
        root_signer = generate_key(root_key_dir / "root-key.pem")
        online = generate_key(root / "keys" / "online.pem")
        signed_root = Root(expires=now + timedelta(days=expiry.root_days), consistent_snapshot=True)
        signed_root.add_key(root_signer.public_key, Root.type)
        signed_root.add_key(online.public_key, Snapshot.type)
        signed_root.add_key(online.public_key, Timestamp.type)
        for pem in signer_certs:
            signed_root.add_key(public_key_of_certificate(pem), Targets.type)
        root_md = Metadata(signed_root)
        root_md.sign(root_signer)
        write_atomic(root / "expiry.json", json.dumps(asdict(expiry)).encode())
        _write_root(root / "metadata", root_md)
        write_atomic(root / "history.json", b"[]\n")
        repo = cls(root, clock=clock)
        targets = Metadata(Targets(expires=now + timedelta(days=expiry.targets_days)))
        repo._commit_targets(targets, None, targets_signer, online_signer=online, first=True)
        return repo

    def set_signers(self, signer_certs: Sequence[bytes], *, root_key: Path) -> int:
        """Replace the targets keys with these signers' (a revoked or lost signer is dropped):
        a new root version, signed by the offline root key. Returns the new root version."""
        if not signer_certs:
            raise ReleaseConfigError("at least one release signer is needed")
        root_signer = load_signer(root_key)
        with self._locked():
            root_md = self._root()
            signed = root_md.signed
            for keyid in list(signed.roles[Targets.type].keyids):
                signed.revoke_key(keyid, Targets.type)
            for pem in signer_certs:
                signed.add_key(public_key_of_certificate(pem), Targets.type)
            signed.version += 1
            signed.expires = self.clock.now() + timedelta(days=self.expiry.root_days)
            root_md.signatures.clear()
            root_md.sign(root_signer)
            try:
                self._root().signed.verify_delegate(
                    Root.type, root_md.signed_bytes, root_md.signatures
                )
            except UnsignedMetadataError as exc:
                raise ReleaseRefusedError(f"{root_key} is not this repository's root key") from exc
            _write_root(self.metadata_dir, root_md)
            return signed.version

    # -- reading ----------------------------------------------------------------------

    @property
    def expiry(self) -> Expiry:
        return Expiry(**json.loads((self.root / "expiry.json").read_bytes()))

    def trusted_root(self) -> bytes:
        """``1.root.json``: what a gateway pins (it then follows root rotations itself)."""
        return (self.metadata_dir / "1.root.json").read_bytes()

    def _root(self) -> Metadata[Root]:
        return Metadata[Root].from_file(str(self.metadata_dir / "root.json"))

    def _timestamp(self) -> Metadata[Timestamp]:
        return Metadata[Timestamp].from_file(str(self.metadata_dir / "timestamp.json"))

    def _snapshot(self) -> Metadata[Snapshot]:
        version = self._timestamp().signed.snapshot_meta.version
        return Metadata[Snapshot].from_file(str(self.metadata_dir / f"{version}.snapshot.json"))

    def _targets(self) -> Metadata[Targets]:
        version = self._snapshot().signed.meta["targets.json"].version
        return Metadata[Targets].from_file(str(self.metadata_dir / f"{version}.targets.json"))

    def current(self) -> dict[str, ReleaseTarget]:
        """What every channel offers now, by target path."""
        return {p: parse_custom(t.custom) for p, t in self._targets().signed.targets.items()}

    def history(self) -> list[ReleaseRecord]:
        try:
            rows = json.loads(self.history_path.read_bytes())
            return [ReleaseRecord(**{**r, "canary": tuple(r["canary"])}) for r in rows]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ReleaseStateError(f"release history {self.history_path}: {exc}") from exc

    def artifact(self, record: ReleaseRecord) -> bytes:
        """The bytes a record released, checked against its SHA-256."""
        data = self._blob(record.kind, record.prefix, record.stage, record.sha256).read_bytes()
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise ReleaseStateError(f"stored artifact of release {record.release} was changed")
        return data

    # -- changes ------------------------------------------------------------------------

    def publish(
        self,
        kind: ReleaseKind,
        prefix: str,
        stage: StageRequest,
        data: bytes,
        *,
        fleet: Sequence[str],
        sign: Callable[[int], str],
        reason: str,
        actor: str,
        targets_signer: Signer,
        version: str = "",
    ) -> ReleaseRecord:
        """Offer ``data`` to the gateways under ``prefix`` (to the first N of ``fleet`` for a
        canary) under the next release number; ``sign(release)`` returns the model's bundle
        for that number ("" for a config)."""
        check_prefix(prefix)
        if not reason.strip():
            raise ReleaseRefusedError("a release needs a reason (change control)")
        if not data or len(data) > MAX_ARTIFACT_BYTES:
            raise ReleaseRefusedError(f"artifact must be 1..{MAX_ARTIFACT_BYTES} bytes")
        canary: tuple[str, ...] = ()
        if stage.stage is ReleaseStage.CANARY:
            canary = pick_canary(fleet, prefix, stage.count)
            if not canary:
                raise ReleaseRefusedError(f"no known gateway under {prefix} for a canary")
        with self._locked():
            number = self._next_release()
            record = ReleaseRecord(
                "published", number, kind.value, prefix, stage.stage.value,
                hashlib.sha256(data).hexdigest(), len(data), reason, actor, self._now(),
                canary, version=version, signature=sign(number),
            )  # fmt: skip
            drop = [target_path(kind, prefix, ReleaseStage.CANARY)] if not canary else []
            self._apply(record, data, targets_signer, drop=drop)
            return record

    def promote(
        self, kind: ReleaseKind, prefix: str, *, reason: str, actor: str, targets_signer: Signer
    ) -> ReleaseRecord:
        """The canary of ``prefix`` becomes what every gateway under it runs (same release)."""
        with self._locked():
            canary = self.current().get(target_path(kind, prefix, ReleaseStage.CANARY))
            if canary is None:
                raise ReleaseRefusedError(f"no canary of {kind} on {prefix} to promote")
            source = record_of(self.history(), canary)
            record = replace(
                source, change="promoted", stage=ReleaseStage.ALL.value, canary=(), reason=reason,
                actor=actor, at=self._now(),
            )  # fmt: skip
            data = self.artifact(source)
            self._apply(record, data, targets_signer, drop=[source.path])
            return record

    def rollback(
        self,
        kind: ReleaseKind,
        prefix: str,
        *,
        sign: Callable[[int, bytes], str],
        reason: str,
        actor: str,
        targets_signer: Signer,
    ) -> ReleaseRecord:
        """Offer again what ran before the latest change of ``prefix`` (with a canary: what
        the rest runs; without: the previous release for everyone), under a NEW release;
        ``sign(release, data)`` re-signs the model's bundle for that number."""
        with self._locked():
            now_offered = self.current()
            canary = now_offered.get(target_path(kind, prefix, ReleaseStage.CANARY))
            every = now_offered.get(target_path(kind, prefix, ReleaseStage.ALL))
            if canary is not None:
                if every is None:
                    raise ReleaseRefusedError(
                        f"the canary on {prefix} replaced nothing; publish a release instead"
                    )
                back_to, replaced = record_of(self.history(), every), canary.release
            else:
                if every is None:
                    raise ReleaseRefusedError(f"nothing of {kind} published on {prefix}")
                back_to, replaced = (
                    record_before(self.history(), kind, prefix, every),
                    every.release,
                )
            number, data = self._next_release(), self.artifact(back_to)
            record = replace(
                back_to, change="rolled_back", release=number, stage=ReleaseStage.ALL.value,
                canary=(), reason=reason, actor=actor, at=self._now(), rollback_of=replaced,
                signature=sign(number, data),
            )  # fmt: skip
            drop = [target_path(kind, prefix, ReleaseStage.CANARY)]
            self._apply(record, data, targets_signer, drop=drop)
            return record

    def renew_online(self, *, force: bool = False) -> bool:
        """Re-sign the snapshot and the timestamp at half their lifetime (``serve``, every few
        minutes): a week without a publish must not freeze the fleet on an expired snapshot."""
        with self._locked():
            now, expiry = self.clock.now(), self.expiry
            online = load_signer(self.online_key_path)
            ts, snapshot = self._timestamp(), self._snapshot()
            snap_left = snapshot.signed.expires - now
            if force or snap_left <= timedelta(days=expiry.snapshot_days / 2):
                _resign(snapshot, now + timedelta(days=expiry.snapshot_days), online, bump=True)
                self._write(
                    self.metadata_dir / f"{snapshot.signed.version}.snapshot.json", snapshot
                )
                ts.signed.snapshot_meta = MetaFile(snapshot.signed.version)
            elif ts.signed.expires - now > timedelta(seconds=expiry.timestamp_s / 2):
                return False
            _resign(ts, now + timedelta(seconds=expiry.timestamp_s), online, bump=True)
            self._write(self.metadata_dir / "timestamp.json", ts)
            return True

    # -- internals ----------------------------------------------------------------------

    def _now(self) -> str:
        return self.clock.now().isoformat()

    def _next_release(self) -> int:
        return max((r.release for r in self.history()), default=0) + 1

    def _blob(self, kind: str, prefix: str, stage: str, sha256: str) -> Path:
        return self.targets_dir / kind / prefix / f"{sha256}.release.{stage}"

    def _apply(
        self, record: ReleaseRecord, data: bytes, signer: Signer, *, drop: Sequence[str]
    ) -> None:
        self._check_signer(signer)
        targets = self._targets()
        path = record.path
        blob = self._blob(record.kind, record.prefix, record.stage, record.sha256)
        blob.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(blob, data)
        info = TargetFile.from_data(path, data, ["sha256"])
        info.unrecognized_fields["custom"] = record.target().custom()
        parse_custom(info.custom)  # what gateways will read must parse
        targets.signed.targets[path] = info
        for gone in drop:
            targets.signed.targets.pop(gone, None)
        self._commit_targets(targets, record, signer)

    def _commit_targets(
        self,
        targets: Metadata[Targets],
        record: ReleaseRecord | None,
        targets_signer: Signer,
        *,
        online_signer: Signer | None = None,
        first: bool = False,
    ) -> None:
        """Sign and write targets, snapshot, timestamp (in that order: a reader between two
        writes still sees a consistent set), then the history."""
        now, expiry = self.clock.now(), self.expiry
        online = online_signer or load_signer(self.online_key_path)
        self._check_signer(targets_signer)
        snapshot = Metadata(Snapshot(expires=now)) if first else self._snapshot()
        timestamp = Metadata(Timestamp(expires=now)) if first else self._timestamp()
        _resign(targets, now + timedelta(days=expiry.targets_days), targets_signer, bump=not first)
        snapshot.signed.meta["targets.json"] = MetaFile(targets.signed.version)
        _resign(snapshot, now + timedelta(days=expiry.snapshot_days), online, bump=not first)
        timestamp.signed.snapshot_meta = MetaFile(snapshot.signed.version)
        _resign(timestamp, now + timedelta(seconds=expiry.timestamp_s), online, bump=not first)
        md = self.metadata_dir
        self._write(md / f"{targets.signed.version}.targets.json", targets)
        self._write(md / f"{snapshot.signed.version}.snapshot.json", snapshot)
        self._write(md / "timestamp.json", timestamp)
        if record is not None:
            rows = [asdict(r) for r in self.history()] + [asdict(record)]
            write_atomic(self.history_path, (json.dumps(rows, indent=1) + "\n").encode())

    def _check_signer(self, signer: Signer) -> None:
        if signer.public_key.keyid not in self._root().signed.roles[Targets.type].keyids:
            raise ReleaseRefusedError(
                "this key is not one of the repository's release signers (idmz release signers)"
            )

    @staticmethod
    def _write(
        path: Path, md: Metadata[Targets] | Metadata[Snapshot] | Metadata[Timestamp]
    ) -> None:
        write_atomic(path, md.to_bytes(JSONSerializer(compact=False)))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time across processes (publish, promote, serve's timestamp); the
        lock goes with the file descriptor."""
        with (self.root / "lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield


def _resign(
    md: Metadata[Targets] | Metadata[Snapshot] | Metadata[Timestamp],
    expires: datetime,
    signer: Signer,
    *,
    bump: bool,
) -> None:
    """A new version (unless it is the first), its expiry, and only this signature."""
    if bump:
        md.signed.version += 1
    md.signed.expires = expires
    md.signatures.clear()
    md.sign(signer)


def _write_root(metadata_dir: Path, root: Metadata[Root]) -> None:
    data = root.to_bytes(JSONSerializer(compact=False))
    write_atomic(metadata_dir / f"{root.signed.version}.root.json", data)
    write_atomic(metadata_dir / "root.json", data)
