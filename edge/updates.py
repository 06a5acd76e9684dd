"""The gateway's side of the release path: it pulls signed releases from the IDMZ (ADR 0100).

python-tuf's client (`tuf.ngclient.Updater`) lives behind this module. On its own schedule
(``interval_s`` with up to ``jitter_s`` of random spread, so a fleet does not poll in step) the
gateway dials the release repository over mutual TLS with its device certificate, refreshes
the TUF metadata (root rotation, timestamp, snapshot, targets: signatures, versions and expiry
checked by the TUF client against the root the plant pinned), picks the release meant for its
own identity (`policies.release.select_release`) and downloads it (length and SHA-256 checked
by the client). What it got goes to an `Activator` (`edge.activation`); nothing is used here.

Every check ends in one `UpdateResult`: ``current`` (nothing new), ``activated``, ``refused``
(a security check failed: the running version is untouched) or ``failed`` (the repository
could not be reached). The results are kept for the status message (`status()`).

    >>> agent = UpdateAgent(settings, identity, activators={ReleaseKind.MODEL: models})  # doctest: +SKIP
    >>> await agent.run(stop_event)                                               # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import httpx
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater, UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface

from edge.credentials import client_tls_context, fingerprint
from edge.errors import ConfigError, EdgeError
from pki.credentials import Fingerprint
from policies.errors import PolicyConfigError
from policies.release import ReleaseKind, ReleaseTarget, parse_custom, select_release, target_path

_log = logging.getLogger("idmz.edge.updates")
MAX_RESULTS = 20
# The status message is small (the plant policy allows 4 KiB): the last results, reasons cut.
STATUS_RESULTS = 2
STATUS_REASON_CHARS = 160


@dataclass(frozen=True, slots=True)
class UpdateSettings:
    url: str  # https://release.idmz.example:8445 (metadata/ and targets/ below it)
    trusted_root: Path  # the repository's 1.root.json, pinned when the gateway was set up
    credential_dir: Path  # the device's certificate and key (docs/contracts.md section 2)
    state_dir: Path  # TUF metadata cache, downloads, the active release files
    interval_s: float = 300.0
    jitter_s: float = 60.0
    timeout_s: float = 30.0
    kinds: tuple[ReleaseKind, ...] = (ReleaseKind.MODEL, ReleaseKind.CONFIG)
    max_artifact_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if not self.url.startswith("https://"):
            raise ConfigError(f"release.url must be https://; found {self.url!r}")
        if self.interval_s <= 0 or self.jitter_s < 0 or self.timeout_s <= 0:
            raise ConfigError("release.interval_s and timeout_s must be > 0, jitter_s >= 0")


@dataclass(frozen=True, slots=True)
class UpdateResult:
    at: float
    kind: str
    result: str  # current | activated | refused | failed
    release: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Download:
    """A release the TUF client verified (signatures, length, SHA-256) for this gateway."""

    target: ReleaseTarget
    data: bytes
    sha256: str


class Activator(Protocol):
    """Puts a verified download into service, or raises an `EdgeError` saying why not (the
    running version stays untouched)."""

    def running(self) -> int:
        """The release in service (0: none from the repository yet)."""
        ...

    def activate(self, download: Download) -> str:
        """Verify further, stage, self-test, swap; returns a short description."""
        ...


class _MtlsFetcher(FetcherInterface):
    """The TUF client's HTTP, over mutual TLS with the device credentials; the connection
    is kept between checks and rebuilt when renewal rewrote the credential files."""

    def __init__(self, credential_dir: Path, timeout_s: float) -> None:
        self._dir = credential_dir
        self._timeout = timeout_s
        self._client: httpx.Client | None = None
        self._seen: Fingerprint | None = None

    def client(self) -> httpx.Client:
        now = fingerprint(self._dir)
        if self._client is None or now != self._seen:
            if self._client is not None:
                self._client.close()
            ctx = client_tls_context(self._dir)
            self._client = httpx.Client(verify=ctx, timeout=self._timeout, trust_env=False)
            self._seen = now
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _fetch(self, url: str) -> Iterator[bytes]:
        client = self.client()
        try:
            response = client.send(client.build_request("GET", url), stream=True)
        except httpx.TimeoutException as exc:
            raise tuf_errors.SlowRetrievalError(str(exc)) from exc
        except httpx.HTTPError as exc:
            self.close()  # a refused handshake: start clean next time
            raise tuf_errors.DownloadError(f"{url}: {exc}") from exc
        if response.status_code >= 400:
            response.close()
            raise tuf_errors.DownloadHTTPError(
                f"HTTP {response.status_code} for {url}", response.status_code
            )
        return self._chunks(response)

    @staticmethod
    def _chunks(response: httpx.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(64 * 1024)
        except httpx.HTTPError as exc:
            raise tuf_errors.DownloadError(str(exc)) from exc
        finally:
            response.close()


class UpdateClient:
    """One TUF client session per check (ngclient refreshes once per `Updater`)."""

    def __init__(self, settings: UpdateSettings, identity: str) -> None:
        self.settings = settings
        self.identity = identity
        self.metadata_dir = settings.state_dir / "metadata"
        self.download_dir = settings.state_dir / "downloads"
        self.fetcher = _MtlsFetcher(settings.credential_dir, settings.timeout_s)
        self.config = UpdaterConfig(app_user_agent="idmz-gateway")

    def _updater(self) -> Updater:
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        bootstrap: bytes | None = None
        if not (self.metadata_dir / "root.json").exists():
            try:
                bootstrap = self.settings.trusted_root.read_bytes()
            except OSError as exc:
                raise ConfigError(f"release.trusted_root: {exc}") from exc
        base = self.settings.url.rstrip("/")
        return Updater(
            str(self.metadata_dir),
            f"{base}/metadata/",
            str(self.download_dir),
            f"{base}/targets/",
            fetcher=self.fetcher,
            config=self.config,
            bootstrap=bootstrap,
        )

    def check(
        self, kinds: tuple[ReleaseKind, ...], running: Mapping[ReleaseKind, int]
    ) -> dict[ReleaseKind, Download | None]:
        """Refresh the metadata and download what is newer than ``running``, per kind. Raises
        the TUF client's errors (translated by `UpdateAgent`)."""
        updater = self._updater()
        updater.refresh()
        found: dict[ReleaseKind, Download | None] = {}
        infos: dict[str, TargetFile] = {}

        def lookup(path: str) -> ReleaseTarget | None:
            info = updater.get_targetinfo(path)
            if info is None:
                return None
            try:
                target = parse_custom(info.custom)
            except PolicyConfigError as exc:
                _log.warning("signed target %s skipped: %s", path, exc)
                return None
            infos[path] = info
            return target

        for kind in kinds:
            target = select_release(self.identity, kind, lookup)
            if target is None or target.release <= running.get(kind, 0):
                found[kind] = None
                continue
            info = infos[target_path(kind, target.prefix, target.stage)]
            if info.length > self.settings.max_artifact_bytes:
                raise tuf_errors.RepositoryError(
                    f"release {target.release} is {info.length} bytes; the limit is "
                    f"{self.settings.max_artifact_bytes}"
                )
            self.download_dir.mkdir(parents=True, exist_ok=True)
            sha256 = info.hashes.get("sha256")
            if sha256 is None:
                raise tuf_errors.RepositoryError(f"release {target.release} has no SHA-256")
            local = Path(updater.download_target(info, str(self.download_dir / f"{kind}.download")))
            data = local.read_bytes()
            local.unlink()
            found[kind] = Download(target, data, sha256)
        return found


class UpdateAgent:
    def __init__(
        self,
        settings: UpdateSettings,
        identity: str,
        activators: Mapping[ReleaseKind, Activator],
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.client = UpdateClient(settings, identity)
        self.activators = dict(activators)
        self.clock = clock
        self.rng = rng or random.SystemRandom()
        self.results: deque[UpdateResult] = deque(maxlen=MAX_RESULTS)
        self.checks = 0

    def check_once(self) -> list[UpdateResult]:
        """One check, blocking (the network part); activation runs here too. `run` calls the
        network part in a thread and activation on the event loop."""
        return self._activate(self._fetch())

    def _fetch(self) -> dict[ReleaseKind, Download | None] | UpdateResult:
        kinds = tuple(k for k in self.settings.kinds if k in self.activators)
        now = self.clock()
        self.checks += 1
        try:
            running = {k: self.activators[k].running() for k in kinds}
            return self.client.check(kinds, running)
        except (tuf_errors.RepositoryError, tuf_errors.DownloadLengthMismatchError) as exc:
            return UpdateResult(now, "metadata", "refused", reason=_describe(exc))
        except tuf_errors.DownloadError as exc:
            return UpdateResult(now, "metadata", "failed", reason=_describe(exc))
        except (OSError, ValueError, EdgeError) as exc:
            return UpdateResult(now, "metadata", "failed", reason=_describe(exc))

    def _activate(
        self, fetched: dict[ReleaseKind, Download | None] | UpdateResult
    ) -> list[UpdateResult]:
        now = self.clock()
        if isinstance(fetched, UpdateResult):
            results = [fetched]
        else:
            results = []
            for kind, download in fetched.items():
                if download is None:
                    results.append(
                        UpdateResult(now, kind, "current", self.activators[kind].running())
                    )
                    continue
                release = download.target.release
                try:
                    what = self.activators[kind].activate(download)
                    results.append(UpdateResult(now, kind, "activated", release, what))
                except EdgeError as exc:
                    results.append(UpdateResult(now, kind, "refused", release, str(exc)))
                except OSError as exc:  # a full or failing disk while staging
                    results.append(UpdateResult(now, kind, "failed", release, _describe(exc)))
        for r in results:
            if r.result != "current":
                log = _log.warning if r.result in ("refused", "failed") else _log.info
                log("release %s %s: %s %s", r.kind, r.release, r.result, r.reason)
                self.results.append(r)
        return results

    async def run(self, stop: asyncio.Event) -> None:
        """Check at a random point of the first jitter window, then every interval (each
        spread by the jitter) until ``stop``."""
        delay = self.rng.uniform(0, self.settings.jitter_s)
        while not await _stopped(stop, delay):
            try:
                fetched = await asyncio.to_thread(self._fetch)
                self._activate(fetched)  # on the loop: the scorer is swapped between windows
            except Exception as exc:  # noqa: BLE001 - one bad check must not end the updates
                _log.exception("release check failed")
                self.results.append(
                    UpdateResult(self.clock(), "metadata", "failed", 0, _describe(exc))
                )
            delay = self.settings.interval_s + self.rng.uniform(0, self.settings.jitter_s)
        self.client.fetcher.close()

    def status(self) -> dict[str, object]:
        """For the status message: what runs, and the last results that were not 'current'."""
        return {
            "running": {str(k): a.running() for k, a in self.activators.items()},
            "checks": self.checks,
            "last": [
                {**asdict(r), "reason": r.reason[:STATUS_REASON_CHARS]}
                for r in list(self.results)[-STATUS_RESULTS:]
            ],
        }


async def _stopped(stop: asyncio.Event, delay: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay)
    except TimeoutError:
        return False
    return True


def _describe(exc: BaseException) -> str:
    """The error and its cause, in one line (the TUF client's messages name the role)."""
    text = f"{type(exc).__name__}: {exc}"
    if exc.__cause__ is not None:
        text += f" ({type(exc.__cause__).__name__}: {exc.__cause__})"
    return text[:500]
