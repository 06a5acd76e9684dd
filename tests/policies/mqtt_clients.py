"""Real MQTT clients for broker tests: `mosquitto_pub` and `mosquitto_sub` over mutual TLS."""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.policies.testpki import ClientCredentials
from tests.support.net import wait_for

_probe_ids = itertools.count()


@dataclass(frozen=True)
class Endpoint:
    port: int
    cafile: Path

    def args(self, creds: ClientCredentials | None) -> list[str]:
        base = ["-h", "127.0.0.1", "-p", str(self.port), "--cafile", str(self.cafile)]
        if creds is not None:
            base += ["--cert", str(creds.cert), "--key", str(creds.key)]
        return base


def publish(
    endpoint: Endpoint,
    creds: ClientCredentials | None,
    topic: str,
    message: str,
    *,
    v5: bool = False,
    client_id: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """One QoS 1 publish; returns once the broker has acknowledged it (or refused)."""
    argv = ["mosquitto_pub", *endpoint.args(creds), *(["-V", "mqttv5"] if v5 else [])]
    if client_id is not None:
        argv += ["-i", client_id]
    return subprocess.run(
        [*argv, "-q", "1", "-t", topic, "-m", message],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Subscriber:
    """A `mosquitto_sub -v` process writing "topic payload" lines to a file."""

    def __init__(
        self,
        endpoint: Endpoint,
        creds: ClientCredentials,
        topic_filter: str,
        out: Path,
        *,
        debug: bool = False,
        client_id: str | None = None,
        persistent: bool = False,
    ) -> None:
        self.out = out
        self._file = out.open("w")
        argv = ["mosquitto_sub", *endpoint.args(creds), "-V", "mqttv5", "-q", "1", "-v"]
        if client_id is not None:
            argv += ["-i", client_id]
        if persistent:  # clean start 0 and a session that outlives the connection
            argv += ["-c", "-x", "3600"]
        self.process = subprocess.Popen(
            # -d prints the SUBACK; stdbuf makes those lines reach the file at once.
            [
                *(["stdbuf", "-oL"] if debug else []),
                *argv,
                *(["-d"] if debug else []),
                "-t",
                topic_filter,
            ],
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )

    def lines(self) -> list[str]:
        return self.out.read_text(errors="replace").splitlines()

    def wait_subscribed(self) -> None:
        """With ``debug=True``: wait for the broker's SUBACK, for a subscriber that may never
        receive anything (one the ACL starves)."""
        wait_for(
            lambda: any("SUBACK" in line for line in self.lines()), timeout_s=60, what="SUBACK"
        )

    def wait_until_live(self, publish_probe: object) -> None:
        """Publish probes (via ``publish_probe(message)``) until one arrives: then the
        subscription is certainly in place. No fixed sleeps."""

        def probe_arrived() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"mosquitto_sub exited: {self.lines()}")
            message = f"probe-{next(_probe_ids)}"
            publish_probe(message)  # type: ignore[operator]
            return wait_until(lambda: any(line.endswith(message) for line in self.lines()), 2.0)

        wait_for(probe_arrived, timeout_s=60, what="subscriber to receive a probe")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._file.close()


def wait_until(condition: object, timeout_s: float) -> bool:
    try:
        wait_for(condition, timeout_s=timeout_s, what="condition")  # type: ignore[arg-type]
    except TimeoutError:
        return False
    return True
