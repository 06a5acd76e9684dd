"""The one place that builds a paho client (mutual TLS, MQTT 5). Private to the two adapters,
`relay.ot_source` and `relay.it_sink`; no other module imports paho, and no generic client
object leaves this package's adapters."""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from relay.config import BrokerEndpoint
from relay.errors import UpstreamError


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
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(endpoint.tls.cafile))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(endpoint.tls.certfile), str(endpoint.tls.keyfile))
    except (OSError, ssl.SSLError) as exc:
        raise UpstreamError(
            f"cannot load the relay's client certificate {endpoint.tls.certfile}: {exc}"
        ) from exc
    client.tls_set_context(context)
    # The broker certificate must name the host we dial (DNS or IP SAN), even on loopback.
    client.tls_insecure_set(False)
    client.max_queued_messages_set(0)
    return client
