"""Strict JSON: parse a device's message text into values every IT consumer reads the same way.

RFC 8259 leaves room that a relay and a consumer can fill differently; the relay forwards the
raw bytes, so whatever it lets through reaches parsers stricter or laxer than Python's. Refused
here, before any schema runs, each with its own `StrictJSONRefusal` code:

* ``PAYLOAD_NOT_JSON``: not JSON text; duplicate object keys (a relay reading the first value
  and a consumer reading the last would disagree, RFC 8259 section 4); the literals ``NaN``,
  ``Infinity``, ``-Infinity`` (not JSON at all, section 6).
* ``PAYLOAD_NUMBER_OUT_OF_RANGE``: a number whose magnitude rounds to infinity as an IEEE 754
  double (``1e400``, ``-1e400``, a 400-digit integer): Python reads ``inf``, Go and others
  report "out of range" (section 6 on interoperable numbers).
* ``PAYLOAD_LONE_SURROGATE``: a string, object key or value, holding an unpaired UTF-16
  surrogate escape such as ``"\\ud800"``. It is no Unicode text (section 8.2), strict decoders
  reject it, and libraries that re-encode it (``jsonschema_rs`` on ``pattern``/``enum``)
  raise (security review H2).
* ``PAYLOAD_TOO_DEEP``: arrays and objects nested deeper than ``max_depth`` (section 9 lets a
  parser limit nesting). Measured on the bytes before parsing, so a nesting bomb never reaches
  the recursive parser.

Strings and arrays need no limit of their own: each is bounded by the topic class's
``max_message_bytes`` (itself at most 16 MiB), checked before this module runs.

The common message (no surrogate escape, no long number, shallow) costs a few byte counts and
searches on top of the C parser; the slower checks run only when one of those finds a reason
to look.

>>> parse_strict(b'{"v": 1e400}', max_depth=8).code
<ReasonCode.PAYLOAD_NUMBER_OUT_OF_RANGE: 'payload_number_out_of_range'>
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from policies.decision import ReasonCode


@dataclass(frozen=True, slots=True)
class StrictJSONRefusal:
    """Why a text is not strict JSON. ``reason`` names a location, never a payload value."""

    code: ReasonCode
    reason: str


class _RefusedError(ValueError):
    def __init__(self, code: ReasonCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _RefusedError(ReasonCode.PAYLOAD_NOT_JSON, "duplicate object key")
    return obj


def _constant(name: str) -> Any:
    raise _RefusedError(ReasonCode.PAYLOAD_NOT_JSON, f"{name} is not JSON")


def _out_of_range() -> _RefusedError:
    return _RefusedError(
        ReasonCode.PAYLOAD_NUMBER_OUT_OF_RANGE, "a number beyond the IEEE 754 double range"
    )


def _finite_float(text: str) -> float:
    value = float(text)  # the JSON grammar already held: only overflow can go wrong
    if math.isinf(value):
        raise _out_of_range()
    return value


def _finite_int(text: str) -> int:
    if math.isinf(float(text)):  # also before int(): no 4300-digit conversion limit error
        raise _out_of_range()
    return int(text)


# One decoder each for every message: json.loads with hooks builds a new JSONDecoder per call
# (~6 % of a busy relay worker). The checked one calls Python per number, so it runs only when
# the text holds a number that could overflow (see _MAYBE_HUGE_NUMBER).
_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant)
_CHECKED_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs,
    parse_constant=_constant,
    parse_float=_finite_float,
    parse_int=_finite_int,
)
# A JSON number reaches 1.8e308 only with an exponent of three digits or more, or one hundred
# digits or more in a row (1e99 times a 99-digit integer part is still below 1e198). Looked
# for in a copy of the bytes with digits as "0", "e"/"E" as "e", signs dropped and the rest as
# spaces: two substring searches, ~20x cheaper than a regular expression over the text.
_NUMBER_SHAPE = bytes(
    ord("0") if chr(b).isdigit() and b < 128 else ord("e") if b in b"eE" else ord(" ")
    for b in range(256)
)
_HUGE_EXPONENT, _HUGE_DIGITS = b"e000", b"0" * 100
# A surrogate can enter a Python string only through a \uD800-\uDFFF escape: the text itself
# came from valid UTF-8. A match may be a valid pair or an escaped backslash; the walk decides.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # what is left after decoding is unpaired
# Nesting is measured on a skeleton of the bytes: brackets, quotes and backslashes kept, every
# other byte as "a" (so each escape keeps its second byte), then escapes and strings dropped.
# All of it is bytes.translate/replace/split, linear and in C (a regular expression over the
# text cost ~300 us on a 6 KB message).
_KEPT = b'[]{}"\\'
_SKELETON = bytes(b if b in _KEPT else ord("a") for b in range(256))
_NOT_KEPT = bytes(b for b in range(256) if b not in _KEPT)
_PAIR = re.compile(rb"\[\]|\{\}")  # on brackets only: one level per pass
_MAX_LABEL_CHARS = 40
_MAX_WHERE_CHARS = 160


def _nesting_refusal(data: bytes, max_depth: int) -> _RefusedError | None:
    """Refuse nesting deeper than ``max_depth`` without parsing: reduce the text to the
    brackets outside strings, then remove innermost ``[]``/``{}`` pairs one level per pass,
    ``max_depth`` times; any bracket left is a level too many (or unbalanced: not JSON)."""
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return None
    if b"\\" in data:
        # Left to right, an escaped backslash first, then an escaped quote (RFC 8259 section
        # 7); a backslash left over began another escape (\n, \u...), dropped with the rest.
        skeleton = data.translate(_SKELETON).replace(b"\\\\", b"").replace(b'\\"', b"")
        skeleton = skeleton.translate(None, b"a\\")
    else:
        skeleton = data.translate(None, _NOT_KEPT)
    # Strings without brackets are now "" (two adjacent quotes can also be one string's end and
    # the next one's start, with nothing kept between them: dropping them is as right). Of the
    # rest, every other piece between quotes lies inside a string.
    rest = skeleton.replace(b'""', b"")
    if b'"' in rest:
        rest = b"".join(rest.split(b'"')[::2])
    for _ in range(max_depth):
        rest, removed = _PAIR.subn(b"", rest)
        if not rest:
            return None
        if not removed:
            return _RefusedError(ReasonCode.PAYLOAD_NOT_JSON, "unbalanced brackets")
    if _PAIR.search(rest):
        return _RefusedError(ReasonCode.PAYLOAD_TOO_DEEP, f"nested deeper than {max_depth} levels")
    return _RefusedError(ReasonCode.PAYLOAD_NOT_JSON, "unbalanced brackets")


def _label(key: str) -> str:
    """An object key as a printable ASCII path segment (escaped, cut short)."""
    text = key.encode("ascii", "backslashreplace").decode("ascii")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return text if len(text) <= _MAX_LABEL_CHARS else text[:_MAX_LABEL_CHARS] + "..."


def _lone_surrogate_at(document: Any) -> str | None:
    """The JSON Pointer-like location of the first string (key or value) holding a lone
    surrogate, or None. Iterative: the depth is already bounded, but no recursion is needed."""
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return where or "/"
        elif isinstance(value, dict):
            for key, item in value.items():
                here = f"{where}/{_label(key)}"
                if _SURROGATE.search(key):
                    return here + " (key)"
                stack.append((item, here))
        elif isinstance(value, list):
            stack.extend((item, f"{where}/{i}") for i, item in enumerate(value))
    return None


def _might_overflow(data: bytes) -> bool:
    shape = data.translate(_NUMBER_SHAPE, b"+-")
    return _HUGE_EXPONENT in shape or _HUGE_DIGITS in shape


def parse_strict(data: bytes, *, max_depth: int) -> Any | StrictJSONRefusal:
    """The document the UTF-8 JSON text ``data`` holds (RFC 8259 section 8.1: UTF-8 only),
    or why it is not strict JSON. Never raises, whatever the bytes."""
    data = bytes(data)  # the same object when it already is bytes
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return StrictJSONRefusal(ReasonCode.PAYLOAD_NOT_UTF8, f"not UTF-8 at byte {exc.start}")
    nested = _nesting_refusal(data, max_depth)
    if nested is not None:
        return StrictJSONRefusal(nested.code, f"not strict JSON: {nested}")
    decoder = _CHECKED_DECODER if _might_overflow(data) else _DECODER
    try:
        document = decoder.decode(text)
    except _RefusedError as exc:
        return StrictJSONRefusal(exc.code, f"not strict JSON: {exc}")
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        return StrictJSONRefusal(ReasonCode.PAYLOAD_NOT_JSON, f"not strict JSON: {where}")
    except (ValueError, RecursionError) as exc:  # RecursionError: unreachable past the check
        return StrictJSONRefusal(
            ReasonCode.PAYLOAD_NOT_JSON, f"not strict JSON: {type(exc).__name__}"
        )
    if _SURROGATE_ESCAPE.search(data):
        found = _lone_surrogate_at(document)
        if found is not None:
            where = found if len(found) <= _MAX_WHERE_CHARS else found[:_MAX_WHERE_CHARS] + "..."
            return StrictJSONRefusal(
                ReasonCode.PAYLOAD_LONE_SURROGATE,
                f"not strict JSON: a lone UTF-16 surrogate escape at {where}",
            )
    return document
