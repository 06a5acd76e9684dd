"""MQTT topic names and filters as idmz allows them: a strict subset of MQTT.

MQTT allows almost any UTF-8 in a topic (OASIS MQTT 5.0 section 4.7). idmz allows only what an
identity path can contain: levels of ``[a-z0-9][a-z0-9_-]{0,62}`` separated by single ``/``.
So a topic never holds NUL or other control characters, upper case, non-ASCII (no look-alike
Unicode such as Cyrillic ``а`` for Latin ``a``), ``.``/``..`` levels, empty levels or a
trailing slash, and it is never longer than `MAX_TOPIC_CHARS`. Topics starting with ``$``
(``$SYS/...``, ``$share/...``) are reserved for the broker.

These functions return the *first* problem as a ``(ReasonCode, text)`` pair, or None.
"""

from __future__ import annotations

import re

from pki.errors import MalformedIdentityError
from pki.identity import LEVELS, DeviceIdentity
from policies.decision import ReasonCode

# Six identity levels of up to 63 characters plus a short sub-topic fit easily; MQTT's own
# limit (65,535 bytes) is far too generous for a name that ends up in ACLs and audit records.
MAX_TOPIC_CHARS = 512
LEVEL = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SHARE = "$share/"

Problem = tuple[ReasonCode, str]


def _shown(topic: str) -> str:
    # repr() escapes NUL, control and non-ASCII characters, so a log line shows what was sent.
    return ascii(topic[:80]) + ("..." if len(topic) > 80 else "")


def _common_problem(topic: str, what: str) -> Problem | None:
    if not topic:
        return ReasonCode.TOPIC_EMPTY, f"empty {what}"
    if len(topic) > MAX_TOPIC_CHARS:
        return ReasonCode.TOPIC_TOO_LONG, f"{what} longer than {MAX_TOPIC_CHARS} characters"
    if _CONTROL.search(topic):
        return ReasonCode.TOPIC_CONTROL_CHARACTER, f"{what} {_shown(topic)} has a control character"
    if not topic.isascii():
        return ReasonCode.TOPIC_NOT_ASCII, f"{what} {_shown(topic)} has non-ASCII characters"
    if topic.startswith("$"):
        return ReasonCode.TOPIC_RESERVED, f"{what} {_shown(topic)} is reserved for the broker"
    if topic != topic.lower():
        return ReasonCode.TOPIC_UPPER_CASE, f"{what} {_shown(topic)} has upper case"
    return None


def _level_problem(level: str, topic: str, what: str) -> Problem | None:
    if level == "":
        return ReasonCode.TOPIC_EMPTY_LEVEL, f"{what} {_shown(topic)} has an empty level"
    if level in (".", ".."):
        return ReasonCode.TOPIC_DOT_SEGMENT, f"{what} {_shown(topic)} has a {level!r} level"
    if not LEVEL.fullmatch(level):
        return (
            ReasonCode.TOPIC_INVALID_LEVEL,
            f"{what} {_shown(topic)}: level {level[:70]!a} is not [a-z0-9][a-z0-9_-]*",
        )
    return None


def topic_name_problem(topic: str) -> Problem | None:
    """The first reason ``topic`` is not a topic name a device may publish to, or None."""
    problem = _common_problem(topic, "topic")
    if problem:
        return problem
    if "+" in topic or "#" in topic:
        return ReasonCode.TOPIC_WILDCARD, f"topic {_shown(topic)} has a wildcard"
    for level in topic.split("/"):
        problem = _level_problem(level, topic, "topic")
        if problem:
            return problem
    return None


def topic_filter_problem(topic_filter: str) -> Problem | None:
    """The first reason ``topic_filter`` is not a subscription filter idmz accepts, or None.

    ``+`` may stand for a whole level and ``#`` for the last level (MQTT 5.0 section 4.7.1).
    """
    problem = _common_problem(topic_filter, "filter")
    if problem:
        return problem
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if level == "+" or (level == "#" and i == len(levels) - 1):
            continue
        if "+" in level or "#" in level:
            return ReasonCode.TOPIC_WILDCARD, f"filter {_shown(topic_filter)} misuses a wildcard"
        problem = _level_problem(level, topic_filter, "filter")
        if problem:
            return problem
    return None


def strip_shared_subscription(topic_filter: str) -> tuple[str | None, str]:
    """Split ``$share/<group>/<filter>`` into (group, filter); (None, filter) otherwise.

    A malformed share (no group or no filter) returns (None, original) so that the caller's
    filter check refuses it as reserved.
    """
    if not topic_filter.startswith(_SHARE):
        return None, topic_filter
    group, sep, rest = topic_filter[len(_SHARE) :].partition("/")
    if not sep or not rest or not LEVEL.fullmatch(group):
        return None, topic_filter
    return group, rest


def split_device_topic(topic: str) -> tuple[DeviceIdentity, str] | None:
    """``acme/plant1/press/line1/cell2/press-07/telemetry`` -> (that device, ``telemetry``).

    None when the topic does not start with a valid six-level identity path followed by a
    sub-topic. The relay uses this to name the sender: the OT broker's ACL lets only the
    certificate with that CN publish under that path.
    """
    parts = topic.split("/", len(LEVELS))
    if len(parts) != len(LEVELS) + 1 or not parts[-1]:
        return None
    try:
        return DeviceIdentity(*parts[: len(LEVELS)]), parts[-1]
    except MalformedIdentityError:
        return None
