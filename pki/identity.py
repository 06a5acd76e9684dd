"""One string names a principal everywhere: certificate, topic prefix, audit actor, policy subject.

A device is named by its ISA-95 path ``enterprise/site/area/line/cell/device``; each level is a
lower-case DNS-label-like name (``[a-z0-9][a-z0-9_-]{0,62}``), so a name never contains ``/``
inside a level, ``+``, ``#``, ``$``, NUL, dots or upper case, and is safe without escaping in
SANs, MQTT topics, file names and logs. In a certificate the name is a single URI SAN in SPIFFE
form (X.509-SVID): ``spiffe://<enterprise>/<site>/<area>/<line>/<cell>/<device>``.

IT consumers are named ``spiffe://<enterprise>/it/<name>``; the two forms cannot be confused
because a device always has six levels and a consumer three.

>>> d = DeviceIdentity.parse("acme/plant1/press/line1/cell2/press-07")
>>> d.spiffe_id
'spiffe://acme/plant1/press/line1/cell2/press-07'
>>> DeviceIdentity.from_spiffe(d.spiffe_id) == d
True
>>> d.is_under(IdentityPrefix.parse("acme/plant1/press"))
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from pki.errors import MalformedIdentityError

SPIFFE_SCHEME = "spiffe://"
_LABEL = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
LEVELS = ("enterprise", "site", "area", "line", "cell", "device")


def _check_label(level: str, value: object) -> str:
    # fullmatch on a str only: re's `$` would accept a trailing newline, fullmatch does not.
    if not isinstance(value, str) or not _LABEL.fullmatch(value):
        raise MalformedIdentityError(
            f"{level} must match [a-z0-9][a-z0-9_-]{{0,62}}; found {value!r}"
        )
    return value


@dataclass(frozen=True, slots=True, order=True)
class DeviceIdentity:
    """A device's ISA-95 identity. An object that exists is a valid name."""

    enterprise: str
    site: str
    area: str
    line: str
    cell: str
    device: str

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_label(f.name, getattr(self, f.name))

    @classmethod
    def parse(cls, path: str) -> DeviceIdentity:
        """Parse ``enterprise/site/area/line/cell/device``; raise `MalformedIdentityError`."""
        if not isinstance(path, str):
            raise MalformedIdentityError(f"identity path must be a string; found {type(path)}")
        parts = path.split("/")
        if len(parts) != len(LEVELS):
            raise MalformedIdentityError(
                f"identity path must have {len(LEVELS)} levels "
                f"({'/'.join(LEVELS)}); found {len(parts)} in {path!r}"
            )
        return cls(*parts)

    @classmethod
    def from_spiffe(cls, uri: str) -> DeviceIdentity:
        """Parse ``spiffe://enterprise/site/area/line/cell/device``."""
        if not isinstance(uri, str) or not uri.startswith(SPIFFE_SCHEME):
            raise MalformedIdentityError(f"expected a spiffe:// URI; found {uri!r}")
        return cls.parse(uri[len(SPIFFE_SCHEME) :])

    @property
    def path(self) -> str:
        """The ISA-95 path, which is also the device's MQTT topic prefix and audit actor."""
        # Spelled out (not a join over LEVELS): the relay asks for it on every message.
        return f"{self.enterprise}/{self.site}/{self.area}/{self.line}/{self.cell}/{self.device}"

    @property
    def spiffe_id(self) -> str:
        return SPIFFE_SCHEME + self.path

    @property
    def topic_prefix(self) -> str:
        """Every topic this device may publish starts with this (note the trailing slash)."""
        return self.path + "/"

    def is_under(self, prefix: IdentityPrefix) -> bool:
        """True when this identity lies inside ``prefix`` (whole levels only)."""
        own = self.path.split("/")
        return own[: len(prefix.levels)] == list(prefix.levels)

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True, slots=True)
class IdentityPrefix:
    """The first 1..6 levels of a device path: a site, an area, a line, a cell (or a device).

    Used for enrollment groups ("anything on line1") and IT consumer subscriptions.
    """

    levels: tuple[str, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.levels) <= len(LEVELS):
            raise MalformedIdentityError(
                f"an identity prefix has 1 to {len(LEVELS)} levels; found {len(self.levels)}"
            )
        for name, value in zip(LEVELS, self.levels, strict=False):
            _check_label(name, value)

    @classmethod
    def parse(cls, path: str) -> IdentityPrefix:
        if not isinstance(path, str) or not path:
            raise MalformedIdentityError(
                f"identity prefix must be a non-empty path; found {path!r}"
            )
        return cls(tuple(path.split("/")))

    @property
    def path(self) -> str:
        return "/".join(self.levels)

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True, slots=True, order=True)
class ConsumerIdentity:
    """An IT-side consumer (historian, MES, dashboard): ``spiffe://<enterprise>/it/<name>``."""

    enterprise: str
    name: str

    def __post_init__(self) -> None:
        _check_label("enterprise", self.enterprise)
        _check_label("consumer name", self.name)

    @classmethod
    def parse(cls, path: str) -> ConsumerIdentity:
        """Parse ``enterprise/it/name``."""
        parts = path.split("/") if isinstance(path, str) else []
        if len(parts) != 3 or parts[1] != "it":
            raise MalformedIdentityError(
                f"consumer path must be '<enterprise>/it/<name>'; found {path!r}"
            )
        return cls(parts[0], parts[2])

    @classmethod
    def from_spiffe(cls, uri: str) -> ConsumerIdentity:
        if not isinstance(uri, str) or not uri.startswith(SPIFFE_SCHEME):
            raise MalformedIdentityError(f"expected a spiffe:// URI; found {uri!r}")
        return cls.parse(uri[len(SPIFFE_SCHEME) :])

    @property
    def path(self) -> str:
        return f"{self.enterprise}/it/{self.name}"

    @property
    def spiffe_id(self) -> str:
        return SPIFFE_SCHEME + self.path

    def __str__(self) -> str:
        return self.path


Principal = DeviceIdentity | ConsumerIdentity


def parse_spiffe(uri: str) -> Principal:
    """Parse any idmz SPIFFE ID into the matching identity type, or raise."""
    if not isinstance(uri, str) or not uri.startswith(SPIFFE_SCHEME):
        raise MalformedIdentityError(f"expected a spiffe:// URI; found {uri!r}")
    path = uri[len(SPIFFE_SCHEME) :]
    if path.count("/") == 2:
        return ConsumerIdentity.parse(path)
    return DeviceIdentity.parse(path)
