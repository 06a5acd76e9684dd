"""Telling listeners about revocations and expiring certificates: a webhook (HTTPS POST of a
JSON body) and/or MQTT (paho, TLS) on an IT-side topic. Both are best effort: the CRL file under
``<home>/ca/`` is the authoritative signal (the relay watches its mtime); a notification that
fails is logged and never undoes the action.

Message shapes (JSON)::

    revocation: {"kind": "device-revoked", "device", "serials": [...], "reason", "revoked_at", "crl_number"}
    expiry:     {"kind": "certificate-expiry", "generated_at", "lines": {line: [...]}, "ca_warning"}

MQTT topics are ``<topic_prefix>/revocations`` and ``<topic_prefix>/expiry/<enterprise>/<site>/<area>/<line>``.
"""

from __future__ import annotations

import json
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from provisioning.operations import RevocationNotice

_log = logging.getLogger("provisioning.notify")


@dataclass(frozen=True, slots=True)
class MqttTarget:
    host: str
    port: int = 8883
    topic_prefix: str = "idmz/provisioning"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    connect_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Notifier:
    webhook_url: str | None = None
    webhook_ca_file: Path | None = None
    mqtt: MqttTarget | None = None
    timeout_s: float = 10.0

    def __call__(self, topic: str, message: dict[str, Any]) -> None:
        payload = json.dumps(message, sort_keys=True).encode()
        if self.webhook_url:
            self._webhook(self.webhook_url, topic, payload)
        if self.mqtt is not None:
            self._mqtt(self.mqtt, f"{self.mqtt.topic_prefix}/{topic}", payload)

    def revoked(self, notice: RevocationNotice) -> None:
        self(
            "revocations",
            {
                "kind": "device-revoked",
                "device": notice.device,
                "serials": list(notice.serials),
                "reason": notice.reason,
                "revoked_at": notice.revoked_at.isoformat(),
                "crl_number": notice.crl_number,
            },
        )

    def _webhook(self, url: str, topic: str, payload: bytes) -> None:
        verify: Any = (
            ssl.create_default_context(cafile=str(self.webhook_ca_file))
            if self.webhook_ca_file
            else True
        )
        try:
            with httpx.Client(verify=verify, timeout=self.timeout_s) as http:
                r = http.post(
                    url,
                    content=payload,
                    headers={"Content-Type": "application/json", "X-Idmz-Topic": topic},
                )
            if r.status_code >= 300:
                _log.warning("webhook answered %s for %s", r.status_code, topic)
        except httpx.HTTPError as exc:
            _log.warning("webhook failed for %s: %s", topic, type(exc).__name__)

    def _mqtt(self, target: MqttTarget, topic: str, payload: bytes) -> None:
        import paho.mqtt.client as mqtt  # imported here: only deployments that use MQTT load paho
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        try:
            if target.ca_file is not None:
                client.tls_set(
                    ca_certs=str(target.ca_file),
                    certfile=str(target.cert_file) if target.cert_file else None,
                    keyfile=str(target.key_file) if target.key_file else None,
                )
            client.connect(target.host, target.port, keepalive=30)
            client.loop_start()
            info = client.publish(topic, payload, qos=1)
            info.wait_for_publish(timeout=target.connect_timeout_s)
            if not info.is_published():
                _log.warning("MQTT publish to %s was not acknowledged", topic)
        except (OSError, ValueError, RuntimeError) as exc:
            _log.warning("MQTT notification to %s failed: %s", topic, exc)
        finally:
            client.loop_stop()
            client.disconnect()
