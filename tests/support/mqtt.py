"""Real, independent MQTT clients for tests, over mutual TLS: `mosquitto_pub` (`publish`),
`mosquitto_sub` writing one line per message to a file (`Subscriber`), and a paho MQTT 5 client
(`paho_client`). Waiting is on events (a probe arriving, a SUBACK), never on fixed sleeps.
"""

from __future__ import annotations

import itertools
import json
import ssl
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.ca import ClientCredentials
from tests.support.net import stop_process, wait_for

# `mosquitto_sub -F`: topic, user properties ("key:value" separated by spaces), payload.
WITH_PROPERTIES = "%t\t%P\t%p"
_probe_ids = itertools.count()


@dataclass(frozen=True)
class Endpoint:
    """A broker's TLS listener on 127.0.0.1 and the CA file a client verifies it with."""

    port: int
    cafile: Path

    def args(self, creds: ClientCredentials | None) -> list[str]:
        """The mosquitto client options that reach it, as ``creds`` when given."""
        base = ["-h", "127.0.0.1", "-p", str(self.port), "--cafile", str(self.cafile)]
        if creds is not None:
            base += ["--cert", str(creds.cert), "--key", str(creds.key)]
        return base


def publish(
    endpoint: Endpoint,
    creds: ClientCredentials | None,
    topic: str,
    message: str | None,
    *,
    v5: bool = False,
    client_id: str | None = None,
    retain: bool = False,
    user_properties: Sequence[tuple[str, str]] = (),
    file: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """One QoS 1 publish of ``message`` (or of ``file``'s bytes; an empty message when both are
    None); returns once the broker has acknowledged it (or refused)."""
    argv = [*_pub_argv(endpoint, creds, topic, v5=v5, client_id=client_id), "-q", "1"]
    argv += ["-r"] if retain else []
    for key, value in user_properties:
        argv += ["-D", "publish", "user-property", key, value]
    if file is not None:
        argv += ["-f", str(file)]
    else:
        argv += ["-m", message] if message is not None else ["-n"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def publish_lines(
    endpoint: Endpoint, creds: ClientCredentials, topic: str, lines: str, *, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Every line of ``lines`` as one QoS 1 MQTT 5 message, over one connection, as fast as the
    broker acknowledges them (``mosquitto_pub -l``): a flood."""
    argv = [*_pub_argv(endpoint, creds, topic, v5=True), "-q", "1", "-l"]
    return subprocess.run(
        argv, input=lines, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def _pub_argv(
    endpoint: Endpoint,
    creds: ClientCredentials | None,
    topic: str,
    *,
    v5: bool,
    client_id: str | None = None,
) -> list[str]:
    argv = ["mosquitto_pub", *endpoint.args(creds), *(["-V", "mqttv5"] if v5 else [])]
    argv += ["-i", client_id] if client_id is not None else []
    return [*argv, "-t", topic]


class Record(NamedTuple):
    """One message a `WITH_PROPERTIES` subscriber received, its payload parsed as JSON."""

    topic: str
    properties: dict[str, str]
    body: Any


class Subscriber:
    """A `mosquitto_sub` (MQTT 5, QoS 1) writing one line per message to ``out``: "topic
    payload" (``-v``), or ``line_format`` (``-F``, e.g. `WITH_PROPERTIES`).

    ``persistent``: clean start 0 and a session that outlives the connection, so `stop()` then
    `start()` receives what the broker queued meanwhile (the file is appended to). Each process
    started is appended to ``track`` when given (for a fixture that stops stragglers)."""

    def __init__(
        self,
        endpoint: Endpoint,
        creds: ClientCredentials,
        topic_filter: str,
        out: Path,
        *,
        client_id: str | None = None,
        persistent: bool = False,
        debug: bool = False,
        line_format: str | None = None,
        track: list[subprocess.Popen[bytes]] | None = None,
    ) -> None:
        self.out = out
        self._track = track
        self._argv = ["mosquitto_sub", *endpoint.args(creds), "-V", "mqttv5", "-q", "1"]
        self._argv += ["-F", line_format] if line_format is not None else ["-v"]
        if client_id is not None:
            self._argv += ["-i", client_id]
        if persistent:
            self._argv += ["-c", "-x", "3600"]
        if debug:  # -d prints the SUBACK; stdbuf makes those lines reach the file at once.
            self._argv = ["stdbuf", "-oL", *self._argv, "-d"]
        self._argv += ["-t", topic_filter]
        out.write_bytes(b"")
        self.start()

    def start(self) -> subprocess.Popen[bytes]:
        """Connect (again); returns the new process."""
        self._file = self.out.open("ab")
        self.process = subprocess.Popen(self._argv, stdout=self._file, stderr=subprocess.STDOUT)
        if self._track is not None:
            self._track.append(self.process)
        return self.process

    def lines(self) -> list[str]:
        return self.out.read_text(errors="replace").splitlines()

    def lines_with(self, marker: str) -> list[str]:
        return [line for line in self.lines() if marker in line]

    def records(self) -> list[Record]:
        """With `WITH_PROPERTIES`: every whole message so far (a line still being written, or
        one that is not JSON, is left out)."""
        records = []
        for line in self.lines():
            if line.count("\t") < 2:
                continue
            topic, props, payload = line.split("\t", 2)
            try:
                body = json.loads(payload)
            except ValueError:
                continue
            kv = dict(p.split(":", 1) for p in props.split(" ") if ":" in p)
            records.append(Record(topic, kv, body))
        return records

    def wait_subscribed(self) -> None:
        """With ``debug=True``: wait for the broker's SUBACK, for a subscriber that may never
        receive anything (one the ACL starves)."""
        wait_for(
            lambda: any("SUBACK" in line for line in self.lines()), timeout_s=60, what="SUBACK"
        )

    def wait_until_live(self, publish_probe: Callable[[str], object]) -> None:
        """Publish probes (``publish_probe(message)``) until one arrives: then the
        subscription is certainly in place."""

        def probe_arrived() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"mosquitto_sub exited: {self.lines()}")
            message = f"probe-{next(_probe_ids)}"
            publish_probe(message)
            return wait_until(lambda: any(line.endswith(message) for line in self.lines()), 2.0)

        wait_for(probe_arrived, timeout_s=60, what="subscriber to receive a probe")

    def stop(self) -> None:
        """Disconnect (a persistent session stays on the broker and queues for it)."""
        stop_process(self.process)
        self._file.close()


def wait_until(condition: Callable[[], object], timeout_s: float) -> bool:
    """Whether ``condition`` held within ``timeout_s`` (`wait_for` without the failure)."""
    try:
        wait_for(condition, timeout_s=timeout_s, what="condition")
    except TimeoutError:
        return False
    return True


def paho_client(endpoint: Endpoint, creds: ClientCredentials, client_id: str) -> Any:
    """A paho MQTT 5 client (not connected) with mutual TLS to ``endpoint`` as ``creds``."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    ctx = ssl.create_default_context(cafile=str(endpoint.cafile))
    ctx.load_cert_chain(str(creds.cert), str(creds.key))
    client.tls_set_context(ctx)
    return client
