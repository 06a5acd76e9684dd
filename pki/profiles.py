"""Certificate profiles as data: what each kind of certificate may say.

=============  ==================================  ====================  ===============
profile        names (written by the CA)           extendedKeyUsage      default validity
=============  ==================================  ====================  ===============
device         one URI SAN spiffe://<path>;        clientAuth            90 days
               CN=<path>  (X.509-SVID)
server         DNS/IP SANs; CN=<first DNS name>    serverAuth            365 days
consumer       one URI SAN spiffe://<ent>/it/<n>   clientAuth            365 days
model-signer   one URI SAN spiffe://<ent>/signer/  codeSigning           730 days
               <name>
=============  ==================================  ====================  ===============

Every profile is CA:false with keyUsage digitalSignature (plus keyEncipherment for RSA server
keys, which TLS 1.2 RSA key exchange needs). The CN mirrors the URI SAN so that Mosquitto's
``use_identity_as_username`` (which reads the CN) binds an MQTT connection to the identity
(docs/contracts.md section 1, ADR 0011).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from pki.errors import MalformedIdentityError
from pki.identity import SPIFFE_SCHEME, ConsumerIdentity, DeviceIdentity, _check_label


class ProfileName(StrEnum):
    DEVICE = "device"
    SERVER = "server"
    CONSUMER = "consumer"
    MODEL_SIGNER = "model-signer"


@dataclass(frozen=True, slots=True)
class Profile:
    name: ProfileName
    extended_key_usage: ObjectIdentifier
    default_validity: timedelta
    max_validity: timedelta


PROFILES: dict[ProfileName, Profile] = {
    ProfileName.DEVICE: Profile(
        ProfileName.DEVICE, ExtendedKeyUsageOID.CLIENT_AUTH, timedelta(days=90), timedelta(days=397)
    ),
    ProfileName.SERVER: Profile(
        ProfileName.SERVER,
        ExtendedKeyUsageOID.SERVER_AUTH,
        timedelta(days=365),
        timedelta(days=397),
    ),
    ProfileName.CONSUMER: Profile(
        ProfileName.CONSUMER,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        timedelta(days=365),
        timedelta(days=397),
    ),
    ProfileName.MODEL_SIGNER: Profile(
        ProfileName.MODEL_SIGNER,
        ExtendedKeyUsageOID.CODE_SIGNING,
        timedelta(days=730),
        timedelta(days=1095),
    ),
}

_DNS = re.compile(
    r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)


@dataclass(frozen=True, slots=True)
class ServerName:
    """A server's names: DNS names and IP addresses (at least one in all)."""

    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()

    def __post_init__(self) -> None:
        if not self.dns_names and not self.ip_addresses:
            raise MalformedIdentityError("a server certificate needs at least one DNS name or IP")
        for name in self.dns_names:
            if not isinstance(name, str) or not _DNS.fullmatch(name):
                raise MalformedIdentityError(f"expected a lower-case DNS name; found {name!r}")

    @classmethod
    def parse(cls, names: str) -> ServerName:
        """Parse ``"relay.plant1.example,127.0.0.1,localhost"``."""
        dns: list[str] = []
        ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
        for raw in (n.strip() for n in names.split(",")):
            if not raw:
                continue
            try:
                ips.append(ipaddress.ip_address(raw))
            except ValueError:
                dns.append(raw)
        return cls(tuple(dns), tuple(ips))

    @property
    def path(self) -> str:
        first = self.dns_names[0] if self.dns_names else str(self.ip_addresses[0])
        return first

    def __str__(self) -> str:
        return ",".join([*self.dns_names, *(str(i) for i in self.ip_addresses)])


@dataclass(frozen=True, slots=True)
class SignerName:
    """A model signer: ``spiffe://<enterprise>/signer/<name>``."""

    enterprise: str
    name: str

    def __post_init__(self) -> None:
        _check_label("enterprise", self.enterprise)
        _check_label("signer name", self.name)

    @classmethod
    def parse(cls, path: str) -> SignerName:
        parts = path.split("/") if isinstance(path, str) else []
        if len(parts) != 3 or parts[1] != "signer":
            raise MalformedIdentityError(
                f"signer path must be '<enterprise>/signer/<name>'; found {path!r}"
            )
        return cls(parts[0], parts[2])

    @classmethod
    def from_spiffe(cls, uri: str) -> SignerName:
        if not isinstance(uri, str) or not uri.startswith(SPIFFE_SCHEME):
            raise MalformedIdentityError(f"expected a spiffe:// URI; found {uri!r}")
        return cls.parse(uri[len(SPIFFE_SCHEME) :])

    @property
    def path(self) -> str:
        return f"{self.enterprise}/signer/{self.name}"

    @property
    def spiffe_id(self) -> str:
        return SPIFFE_SCHEME + self.path

    def __str__(self) -> str:
        return self.path


Subject = DeviceIdentity | ConsumerIdentity | ServerName | SignerName

_SUBJECT_TYPES: dict[ProfileName, type] = {
    ProfileName.DEVICE: DeviceIdentity,
    ProfileName.SERVER: ServerName,
    ProfileName.CONSUMER: ConsumerIdentity,
    ProfileName.MODEL_SIGNER: SignerName,
}


def parse_subject(profile: ProfileName, text: str) -> Subject:
    """Parse the operator's ``--identity`` for ``profile`` into the right subject type."""
    parsed: Subject
    if profile is ProfileName.DEVICE:
        parsed = DeviceIdentity.parse(text)
    elif profile is ProfileName.CONSUMER:
        parsed = ConsumerIdentity.parse(text)
    elif profile is ProfileName.SERVER:
        parsed = ServerName.parse(text)
    else:
        parsed = SignerName.parse(text)
    return parsed


def check_subject_matches(profile: ProfileName, subject: Subject) -> None:
    expected = _SUBJECT_TYPES[profile]
    if not isinstance(subject, expected):
        raise MalformedIdentityError(
            f"profile {profile} needs a {expected.__name__}; found {type(subject).__name__}"
        )
