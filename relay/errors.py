"""What went wrong in the relay, named for what the caller does next.

``RelayConfigError``     a relay setting is missing or unsafe: fix relay.toml and start again.
``UpstreamError``        a broker the relay talks to failed; the relay retries on its own and
                         reports it here only when a caller must decide (start-up, shutdown).
``OTBrokerUpstreamError`` / ``ITBrokerUpstreamError``  which side failed.
``MQTTProtocolError``     a broker sent bytes MQTT 5 forbids, or more than we allowed: the
                         relay drops that connection and reconnects.
``BrokerStartUpstreamError``  a managed Mosquitto did not start (its log tail is in the message).
``RevokePluginUnavailableError``  the OT broker's revoke plugin cannot be built here (no gcc, no
                         Mosquitto headers): install what it names; until then a revocation
                         restarts the OT broker (ADR 0057).
``SpoolFullError``       the spool reached ``spool_max_bytes``: the relay stops acknowledging the
                         OT side (the OT broker and the gateways keep the data) and alarms.
``SpoolCorruptedError``  a spool file failed its checksum: data on disk is damaged; the relay
                         stops rather than forward or skip it silently.
"""

from __future__ import annotations

import bedrock.errors as category


class RelayError(category.IdmzError):
    """Base class for every error raised by the relay package."""


class RelayConfigError(RelayError, category.ConfigError):
    """A relay setting is missing, malformed or unsafe. Fix the configuration and start again."""


class UpstreamError(RelayError, category.UpstreamError):
    """A broker the relay depends on failed (connect, TLS, refused, lost)."""


class OTBrokerUpstreamError(UpstreamError):
    """The OT-facing broker could not be reached or refused the relay."""


class ITBrokerUpstreamError(UpstreamError):
    """The IT-facing broker could not be reached or refused the relay."""


class MQTTProtocolError(UpstreamError):
    """A broker sent a malformed packet, one we did not allow (QoS 2, a Topic Alias), or one
    larger than the Maximum Packet Size we announced. The connection is dropped and retried."""


class BrokerStartUpstreamError(UpstreamError):
    """A managed Mosquitto process did not start or keep running."""


class RevokePluginUnavailableError(RelayError, category.UpstreamError):
    """The revoke plugin cannot be built here (no compiler, no Mosquitto headers, unwritable
    cache). The appliance falls back to restarting the OT broker on revocation; install what the
    message names to get live eviction."""


class SpoolFullError(RelayError, category.CapacityError):
    """The spool is at its byte limit; stop acknowledging the OT side until it drains."""


class SpoolCorruptedError(RelayError, category.VerificationError):
    """A spool record failed its checksum or framing; refuse to guess what it said."""


class PipelineError(RelayError, category.OperationError):
    """A state transition `relay.pipeline.NEXT` does not have: a bug, never a message's fault
    (the commit cycle fails, is logged and retried; nothing is acknowledged by it)."""
