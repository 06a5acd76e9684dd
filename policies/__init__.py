"""May it? Segmentation policy: documents, a pure decision engine, broker config rendering and
deployment checks. No I/O here: callers read files and pass text, bytes and objects.

>>> from pki.identity import DeviceIdentity
>>> from policies import Action, evaluate, load_policy
>>> policy = load_policy(POLICY_TOML, source="plant.toml")  # doctest: +SKIP
>>> press = DeviceIdentity.parse("acme/plant1/stamping/line1/cell1/press-01")
>>> evaluate(policy, press, Action.PUBLISH, press.path + "/telemetry").allowed  # doctest: +SKIP
True
>>> evaluate(policy, press, Action.PUBLISH, "$SYS/broker/x").reason_code  # doctest: +SKIP
<ReasonCode.TOPIC_RESERVED: 'topic_reserved'>
"""

from bedrock.surface import lazy_surface

# The public surface (docs/architecture.md, "Public surface"): what the other packages and the CLI
# may import from this one, from here or from the home module. The package is pure and light, so
# it imports its surface up front; tests/test_public_surface.py holds every import to __all__.
from policies.broker_config import (
    MIN_SHARE_SECRET_BYTES,
    PACKET_OVERHEAD_BYTES,
    SYS_DROPPED_TOPIC,
    BrokerPlugin,
    BrokerSettings,
    Registry,
    TlsFiles,
    max_packet_bytes,
    relay_client_id,
    relay_subscription,
    render_brokers,
)
from policies.decision import Action, Decision, ReasonCode
from policies.deployment import BrokerConfigFile, Deployment, check_deployment, referenced_paths
from policies.document import AuditFailureMode, CertificatePolicy, Policy, StaleCrlMode, Zone
from policies.engine import evaluate
from policies.envelope import (
    CERT_SHA256_PROPERTY,
    DEVICE_PROPERTY,
    MSG_ID_PROPERTY,
    POLICY_SHA256_PROPERTY,
    SPARKPLUG_BIRTH_PROPERTY,
    Envelope,
    claims,
)
from policies.errors import (
    AccessDeniedError,
    MalformedPayloadError,
    PolicyConfigError,
    PolicyError,
)
from policies.loader import load_policy
from policies.payload import check_allowed_payload, check_payload, check_payload_claims
from policies.ratelimit import RateLimiter
from policies.release import (
    STATUS_SECTION,
    ReleaseKind,
    ReleaseStage,
    ReleaseTarget,
    StageRequest,
    check_prefix,
    offered_to,
    parse_custom,
    pick_canary,
    select_release,
    target_path,
)
from policies.release_deployment import FILE_NAME as RELEASE_DEPLOYMENT_FILE
from policies.release_deployment import (
    ReleaseDeployment,
    check_release_deployment,
    parse_release_deployment,
)
from policies.sparkplug import (
    BIRTH_CACHE_PREFIX,
    SPARKPLUG_ID,
    SPARKPLUG_PREFIX,
    MessageType,
    SparkplugNode,
    SparkplugPolicy,
    SparkplugTopic,
    birth_cache_topic,
    edge_topic,
    parse_topic,
    route_sparkplug,
    state_payload,
    state_topic,
)
from policies.topic import MAX_TOPIC_CHARS, split_device_topic

# The Sparkplug B payload codec and checks pull in protobuf (40 ms): resolved on first use
# (PEP 562), so `import policies` stays light for everyone who never sees a Sparkplug payload.
_LAZY: dict[str, tuple[str, ...]] = {
    "sparkplug_checks": (
        "BirthDefs",
        "Checked",
        "check_metric_refs",
        "check_sparkplug_payload",
    ),
    "sparkplug_codec": (
        "BOOLEAN",
        "DOUBLE",
        "STRING",
        "UINT64",
        "decode_sparkplug",
        "encode_sparkplug",
    ),
}
_lazy_names, __getattr__ = lazy_surface(__name__, _LAZY)

__all__ = [
    "CERT_SHA256_PROPERTY",
    "DEVICE_PROPERTY",
    "MAX_TOPIC_CHARS",
    "MIN_SHARE_SECRET_BYTES",
    "MSG_ID_PROPERTY",
    "PACKET_OVERHEAD_BYTES",
    "POLICY_SHA256_PROPERTY",
    "RELEASE_DEPLOYMENT_FILE",
    "STATUS_SECTION",
    "SYS_DROPPED_TOPIC",
    "AccessDeniedError",
    "Action",
    "AuditFailureMode",
    "BrokerConfigFile",
    "BrokerPlugin",
    "BrokerSettings",
    "CertificatePolicy",
    "Decision",
    "Deployment",
    "Envelope",
    "Policy",
    "PolicyConfigError",
    "MalformedPayloadError",
    "PolicyError",
    "RateLimiter",
    "ReasonCode",
    "Registry",
    "ReleaseDeployment",
    "ReleaseKind",
    "ReleaseStage",
    "ReleaseTarget",
    "StageRequest",
    "StaleCrlMode",
    "TlsFiles",
    "Zone",
    "check_deployment",
    "check_payload",
    "check_allowed_payload",
    "check_payload_claims",
    "check_prefix",
    "check_release_deployment",
    "claims",
    "evaluate",
    "load_policy",
    "max_packet_bytes",
    "offered_to",
    "parse_custom",
    "parse_release_deployment",
    "pick_canary",
    "referenced_paths",
    "relay_client_id",
    "relay_subscription",
    "render_brokers",
    "select_release",
    "split_device_topic",
    "target_path",
    "BIRTH_CACHE_PREFIX",
    "SPARKPLUG_BIRTH_PROPERTY",
    "SPARKPLUG_ID",
    "SPARKPLUG_PREFIX",
    "MessageType",
    "SparkplugNode",
    "SparkplugPolicy",
    "SparkplugTopic",
    "birth_cache_topic",
    "edge_topic",
    "parse_topic",
    "route_sparkplug",
    "state_payload",
    "state_topic",
    *_lazy_names,
]
