"""A small Vault-API-compatible HTTP server: the endpoints idmz uses, Vault's JSON shapes.

The Vault backend's tests run against a real OpenBao (`tests.support.openbao`). This double
stays only for a fault a real server does not produce on demand: the mount's issuer rotated
between two requests of one client (`FakeVault.rotate_issuer`,
``tests/pki/test_vault.py::test_a_rotated_vault_issuer_is_picked_up_not_mistaken_for_a_forgery``).

Implemented (Vault 1.x HTTP API, documented request/response bodies):

* ``POST /v1/auth/<approle>/login`` ``{"role_id", "secret_id"}`` -> ``{"auth": {"client_token", ...}}``
* ``POST /v1/<mount>/sign/<role>`` ``{"csr", "common_name", "alt_names", "ip_sans", "uri_sans",
  "ttl", "format", "exclude_cn_from_sans"}`` -> ``{"data": {"certificate", "issuing_ca",
  "ca_chain", "serial_number", "expiration"}}``
* ``POST /v1/<mount>/revoke`` ``{"serial_number"}`` or ``{"certificate"}`` ->
  ``{"data": {"revocation_time", ...}}``
* ``GET /v1/<mount>/cert/<serial>`` -> ``{"data": {"certificate", "revocation_time", ...}}``
* ``GET /v1/<mount>/ca_chain``, ``/ca/pem``, ``/crl/pem`` (PEM text) and ``/crl`` (DER),
  unauthenticated as in Vault.

Errors use Vault's envelope ``{"errors": [...]}``: 403 ``permission denied`` for a missing or
unknown ``X-Vault-Token``, 400 for requests a role does not allow. Role semantics follow Vault's
defaults where it matters for idmz: ``use_csr_common_name`` and ``use_csr_sans`` (both default
true in Vault), ``allowed_uri_sans`` globs, ``allowed_domains``, ``max_ttl`` silently capping the
TTL, and ``client_flag``/``server_flag``/``code_signing_flag`` choosing the EKUs.

It signs with its own CA built directly with ``cryptography`` (not with ``pki``), so the tests
exercise ``VaultCA`` against an independent issuer.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Role:
    """A subset of Vault's PKI role parameters, with Vault's defaults."""

    allowed_uri_sans: list[str] = field(default_factory=list)
    allowed_domains: list[str] = field(default_factory=list)
    allow_subdomains: bool = False
    allow_ip_sans: bool = True
    allow_any_name: bool = False
    enforce_hostnames: bool = False
    use_csr_common_name: bool = True
    use_csr_sans: bool = True
    client_flag: bool = True
    server_flag: bool = True
    code_signing_flag: bool = False
    max_ttl_s: int = 32 * 24 * 3600  # the system default mount max lease TTL


@dataclass
class _Issued:
    cert: x509.Certificate
    revoked_at: datetime | None = None


def _vault_serial(serial: int) -> str:
    raw = serial.to_bytes((serial.bit_length() + 7) // 8 or 1, "big")
    return ":".join(f"{b:02x}" for b in raw)


def _parse_ttl(value: object) -> int:
    text = str(value).strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


class FakeVault:
    """State of the test server: credentials, roles, a root and an issuing CA, issued certs."""

    def __init__(self, *, mount: str = "pki", approle_mount: str = "approle") -> None:
        self.mount = mount
        self.approle_mount = approle_mount
        self.role_id = secrets.token_hex(8)
        self.secret_id = secrets.token_hex(16)
        self.tokens: set[str] = set()
        self.roles: dict[str, Role] = {}
        self.issued: dict[int, _Issued] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) for assertions
        self.lock = threading.Lock()
        now = datetime.now(UTC)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake vault root")])
        self.root = self._ca_cert(root_name, root_name, self.root_key, self.root_key, now, 3650)
        self.issuing_key = ec.generate_private_key(ec.SECP256R1())
        issuing_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake vault issuing")])
        self.issuing = self._ca_cert(
            issuing_name, root_name, self.issuing_key, self.root_key, now, 1825
        )
        self.crl_lifetime = timedelta(hours=72)
        self.crl_pem = b""
        self.crl_der = b""
        self._rebuild_crl()

    @staticmethod
    def _ca_cert(
        name: x509.Name,
        issuer: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        signer: ec.EllipticCurvePrivateKey,
        now: datetime,
        days: int,
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(signer, hashes.SHA256())
        )

    def rotate_issuer(self) -> None:
        """A new issuing key and certificate under the same root (``pki/root/rotate``-style)."""
        now = datetime.now(UTC)
        self.issuing_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake vault issuing 2")])
        self.issuing = self._ca_cert(
            name, self.root.subject, self.issuing_key, self.root_key, now, 1825
        )
        self._rebuild_crl()

    def pem(self, cert: x509.Certificate) -> str:
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    def _rebuild_crl(self) -> None:
        now = datetime.now(UTC)
        revoked = [
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(entry.revoked_at)
            .build()
            for serial, entry in self.issued.items()
            if entry.revoked_at is not None
        ]
        crl = x509.CertificateRevocationListBuilder(
            issuer_name=self.issuing.subject,
            last_update=now,
            next_update=now + self.crl_lifetime,
            revoked_certificates=revoked,
        ).sign(self.issuing_key, hashes.SHA256())
        self.crl_pem = crl.public_bytes(serialization.Encoding.PEM)
        self.crl_der = crl.public_bytes(serialization.Encoding.DER)

    # -- endpoints --------------------------------------------------------------------------

    def login(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("role_id") != self.role_id or body.get("secret_id") != self.secret_id:
            return 400, {"errors": ["invalid role or secret ID"]}
        token = "hvs." + secrets.token_urlsafe(24)
        self.tokens.add(token)
        return 200, {
            "request_id": secrets.token_hex(8),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": None,
            "wrap_info": None,
            "warnings": None,
            "auth": {
                "client_token": token,
                "accessor": secrets.token_hex(8),
                "policies": ["default", "idmz-pki"],
                "token_policies": ["default", "idmz-pki"],
                "metadata": {"role_name": "idmz"},
                "lease_duration": 1200,
                "renewable": True,
                "entity_id": "",
                "token_type": "service",
                "orphan": True,
            },
        }

    def sign(self, role_name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        role = self.roles.get(role_name)
        if role is None:
            return 400, {"errors": [f"unknown role: {role_name}"]}
        try:
            csr = x509.load_pem_x509_csr(str(body.get("csr", "")).encode())
        except ValueError:
            return 400, {"errors": ["certificate request could not be parsed"]}
        if not csr.is_signature_valid:
            return 400, {"errors": ["request signature invalid"]}
        cn = str(body.get("common_name", ""))
        csr_cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if role.use_csr_common_name and csr_cns:
            cn = str(csr_cns[0].value)
        uris = [u for u in str(body.get("uri_sans", "")).split(",") if u]
        dns = [d for d in str(body.get("alt_names", "")).split(",") if d]
        ips = [i for i in str(body.get("ip_sans", "")).split(",") if i]
        if role.use_csr_sans:
            try:
                san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                uris = san.get_values_for_type(x509.UniformResourceIdentifier)
                dns = san.get_values_for_type(x509.DNSName)
                ips = [str(i) for i in san.get_values_for_type(x509.IPAddress)]
            except x509.ExtensionNotFound:
                pass
        for uri in uris:
            if not any(fnmatch.fnmatchcase(uri, g) for g in role.allowed_uri_sans):
                return 400, {
                    "errors": [f"URI Subject Alternative Names {uri} not allowed by this role"]
                }
        if not role.allow_any_name:
            for name in [cn, *dns] if cn else dns:
                ok = name in role.allowed_domains or (
                    role.allow_subdomains
                    and any(name.endswith("." + d) for d in role.allowed_domains)
                )
                if not ok:
                    return 400, {
                        "errors": [f"subject alternate name {name} not allowed by this role"]
                    }
        if ips and not role.allow_ip_sans:
            return 400, {"errors": ["IP Subject Alternative Names are not allowed in this role"]}
        if not body.get("exclude_cn_from_sans") and cn and "/" not in cn:
            dns = [cn, *[d for d in dns if d != cn]]
        ttl = min(_parse_ttl(body.get("ttl", role.max_ttl_s)), role.max_ttl_s)  # silent cap
        now = datetime.now(UTC)
        not_after = min(now + timedelta(seconds=ttl), self.issuing.not_valid_after_utc)
        ekus = [
            oid
            for flag, oid in (
                (role.server_flag, ExtendedKeyUsageOID.SERVER_AUTH),
                (role.client_flag, ExtendedKeyUsageOID.CLIENT_AUTH),
                (role.code_signing_flag, ExtendedKeyUsageOID.CODE_SIGNING),
            )
            if flag
        ]
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        names += [x509.UniformResourceIdentifier(u) for u in uris]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.issuing.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(seconds=30))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, True, False, False, False, False),
                critical=True,
            )
        )
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(csr.public_key()),  # type: ignore[arg-type]
            critical=False,
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self.issuing_key.public_key()),
            critical=False,
        )
        if ekus:
            builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.issuing_key, hashes.SHA256())
        with self.lock:
            self.issued[cert.serial_number] = _Issued(cert)
        return 200, {
            "request_id": secrets.token_hex(8),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": {
                "certificate": self.pem(cert),
                "issuing_ca": self.pem(self.issuing),
                "ca_chain": [self.pem(self.issuing), self.pem(self.root)],
                "serial_number": _vault_serial(cert.serial_number),
                "expiration": int(not_after.timestamp()),
            },
            "wrap_info": None,
            "warnings": None,
            "auth": None,
        }

    def revoke(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("certificate"):  # Vault also revokes by certificate (no_store roles)
            try:
                cert = x509.load_pem_x509_certificate(str(body["certificate"]).encode())
            except ValueError:
                return 400, {"errors": ["certificate is not PEM"]}
            body = {"serial_number": _vault_serial(cert.serial_number)}
        text = str(body.get("serial_number", ""))
        try:
            serial = int(text.replace(":", "").replace("-", ""), 16)
        except ValueError:
            return 400, {"errors": [f"invalid serial number {text}"]}
        with self.lock:
            entry = self.issued.get(serial)
            if entry is None:
                return 400, {"errors": [f"certificate with serial {text} not found"]}
            # Like Vault: a second revocation answers with the first one's time, no marker.
            if entry.revoked_at is None:
                entry.revoked_at = datetime.now(UTC).replace(microsecond=0)
                self._rebuild_crl()
        stamp = int(entry.revoked_at.timestamp())
        return 200, {
            "request_id": secrets.token_hex(8),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": {
                "revocation_time": stamp,
                "revocation_time_rfc3339": entry.revoked_at.isoformat().replace("+00:00", "Z"),
                "state": "revoked",
            },
            "wrap_info": None,
            "warnings": None,
            "auth": None,
        }

    def read_cert(self, text: str) -> tuple[int, dict[str, Any]]:
        """``GET <mount>/cert/<serial>`` (unauthenticated, as in Vault)."""
        try:
            serial = int(text.replace(":", "").replace("-", ""), 16)
        except ValueError:
            return 400, {"errors": [f"invalid serial number {text}"]}
        entry = self.issued.get(serial)
        if entry is None:
            return 404, {"errors": []}
        revoked = entry.revoked_at
        return 200, {
            "request_id": secrets.token_hex(8),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": {
                "certificate": self.pem(entry.cert),
                "revocation_time": int(revoked.timestamp()) if revoked else 0,
                "revocation_time_rfc3339": revoked.isoformat().replace("+00:00", "Z")
                if revoked
                else "",
            },
            "wrap_info": None,
            "warnings": None,
            "auth": None,
        }


def _handler(vault: FakeVault) -> type[BaseHTTPRequestHandler]:
    prefix = f"/v1/{vault.mount}/"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return  # keep test output clean

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: dict[str, Any]) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            value = json.loads(raw or b"{}")
            return value if isinstance(value, dict) else {}

        def _authorized(self) -> bool:
            return self.headers.get("X-Vault-Token") in vault.tokens

        def do_GET(self) -> None:
            vault.requests.append(("GET", self.path))
            path = unquote(self.path.split("?")[0])
            if path == prefix + "ca_chain":
                text = (vault.pem(vault.issuing) + vault.pem(vault.root)).encode()
                self._send(200, text, "application/pem-certificate-chain")
            elif path == prefix + "ca/pem":
                self._send(
                    200, vault.pem(vault.issuing).encode(), "application/pem-certificate-chain"
                )
            elif path == prefix + "crl/pem":
                self._send(200, vault.crl_pem, "application/pem-certificate-chain")
            elif path == prefix + "crl":
                self._send(200, vault.crl_der, "application/pkix-crl")
            elif path.startswith(prefix + "cert/"):
                self._json(*vault.read_cert(path[len(prefix + "cert/") :]))
            else:
                self._json(404, {"errors": []})

        def do_POST(self) -> None:
            vault.requests.append(("POST", self.path))
            path = unquote(self.path.split("?")[0])
            try:
                body = self._body()
            except ValueError:
                self._json(400, {"errors": ["failed to parse JSON input"]})
                return
            if path == f"/v1/auth/{vault.approle_mount}/login":
                self._json(*vault.login(body))
                return
            if not self._authorized():
                self._json(403, {"errors": ["permission denied"]})
                return
            if path.startswith(prefix + "sign/"):
                self._json(*vault.sign(path[len(prefix + "sign/") :], body))
            elif path == prefix + "revoke":
                self._json(*vault.revoke(body))
            else:
                self._json(404, {"errors": []})

    return Handler


class VaultTestServer:
    """Run a `FakeVault` on ``http://127.0.0.1:<ephemeral>`` in a daemon thread."""

    def __init__(self, vault: FakeVault | None = None) -> None:
        self.vault = vault or FakeVault()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.vault))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> VaultTestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def idmz_roles(vault: FakeVault) -> None:
    """The roles docs/pki.md tells operators to create for idmz (strict, CSR names ignored)."""
    strict = {"use_csr_common_name": False, "use_csr_sans": False, "allow_any_name": True}
    vault.roles["idmz-device"] = Role(
        allowed_uri_sans=["spiffe://*"], client_flag=True, server_flag=False,
        max_ttl_s=397 * 86400, **strict,
    )  # fmt: skip
    vault.roles["idmz-server"] = Role(
        allowed_uri_sans=[], client_flag=False, server_flag=True, max_ttl_s=397 * 86400, **strict
    )
