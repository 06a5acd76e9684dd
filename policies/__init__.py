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

from policies.decision import Action, Decision, ReasonCode
from policies.document import AuditFailureMode, CertificatePolicy, Policy, Zone
from policies.engine import evaluate
from policies.errors import AccessDeniedError, PolicyConfigError, PolicyError
from policies.loader import load_policy
from policies.payload import check_payload
from policies.ratelimit import RateLimiter
from policies.topic import split_device_topic

__all__ = [
    "AccessDeniedError",
    "Action",
    "AuditFailureMode",
    "CertificatePolicy",
    "Decision",
    "Policy",
    "PolicyConfigError",
    "PolicyError",
    "RateLimiter",
    "ReasonCode",
    "Zone",
    "check_payload",
    "evaluate",
    "load_policy",
    "split_device_topic",
]
