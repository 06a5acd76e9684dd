"""The one place that builds a paho client (mutual TLS, MQTT 5), for the IT side
(`relay.it_sink`). The OT side has its own reader (`relay.ot_source`, ADR 0055); no other module
imports paho, and no generic client object leaves the IT adapter."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from relay.config import BrokerEndpoint
from relay.tls_channel import client_context


def new_client(
    endpoint: BrokerEndpoint, client_id: str, *, manual_ack: bool, auto_reconnect: bool
) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
        reconnect_on_failure=auto_reconnect,
    )
    client.tls_set_context(client_context(endpoint))
    # The broker certificate must name the host we dial (DNS or IP SAN), even on loopback.
    client.tls_insecure_set(False)
    client.max_queued_messages_set(0)
    return client
