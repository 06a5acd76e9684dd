"""An independent Sparkplug B implementation as the peer: pysparkplug 0.6.1 (PyPI) as the edge
node on OT and as the host application on IT (ADR 0110).

pysparkplug's `Client.__init__` calls paho 1.x's ``message_retry_set`` (a no-op already in paho
1.6, removed in paho 2, which idmz uses). `PeerClient` therefore builds the paho client itself,
with paho 2's version-1 callbacks, exactly as pysparkplug configures it otherwise (clean
session, MQTT 3.1.1, TLS with the client certificate); everything Sparkplug (the EdgeNode, its
bdSeq/seq, births, will, payload encoding and decoding, alias resolution) is pysparkplug's.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import pysparkplug as spb
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.ca import ClientCredentials
from tests.support.mqtt import Endpoint


class PeerClient(spb.Client):
    def __init__(self, endpoint: Endpoint, creds: ClientCredentials, client_id: str) -> None:
        # Not super().__init__: see the module docstring. The attributes it sets, the same way.
        with warnings.catch_warnings():  # version 1 is what pysparkplug's callbacks expect
            warnings.simplefilter("ignore", DeprecationWarning)
            self._client = paho.Client(
                CallbackAPIVersion.VERSION1,
                client_id=client_id,
                clean_session=True,
                protocol=paho.MQTTv311,
            )
        self._client.tls_set(
            ca_certs=str(endpoint.cafile), certfile=str(creds.cert), keyfile=str(creds.key)
        )
        self._births = {}
        self._subscriptions = {}
        self.port = endpoint.port

    def start(self) -> None:
        self.connect("127.0.0.1", port=self.port)

    def crash(self) -> None:
        """Drop the connection without DISCONNECT: the broker publishes the will (NDEATH)."""
        sock = self._client.socket()
        self._client.loop_stop()
        if sock is not None:
            sock.close()


def edge_node(
    endpoint: Endpoint,
    creds: ClientCredentials,
    *,
    group: str,
    node: str,
    metrics: tuple[spb.Metric, ...],
    on_command: Callable[[spb.EdgeNode, spb.Message], None] | None = None,
) -> tuple[spb.EdgeNode, PeerClient]:
    client = PeerClient(endpoint, creds, client_id=creds.name)
    kwargs = {} if on_command is None else {"cmd_callback": on_command}
    return spb.EdgeNode(group, node, metrics, client=client, **kwargs), client


def metric(name: str, value: float, datatype: spb.DataType = spb.DataType.DOUBLE) -> spb.Metric:
    return spb.Metric(
        timestamp=spb.get_current_timestamp(), name=name, datatype=datatype, value=value
    )


@dataclass
class HostApp:
    """pysparkplug as a host application on the IT broker: everything it decodes, in order."""

    endpoint: Endpoint
    creds: ClientCredentials
    messages: list[spb.Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = PeerClient(self.endpoint, self.creds, client_id=self.creds.name)
        self.subscribed = threading.Event()  # its SUBACK came
        self.client._client.on_subscribe = lambda *_: self.subscribed.set()

    def start(self, group: str) -> None:
        def on_message(_client: spb.Client, message: spb.Message) -> None:
            with self.lock:
                self.messages.append(message)

        self.client.start()
        topic = spb.Topic(group_id=group, message_type=spb.MULTI_LEVEL_WILDCARD)
        self.client.subscribe(topic, spb.QoS.AT_LEAST_ONCE, on_message)

    def of(self, mtype: spb.MessageType) -> list[spb.Message]:
        with self.lock:
            return [m for m in self.messages if m.topic.message_type == mtype]

    def stop(self) -> None:
        self.client.disconnect()
