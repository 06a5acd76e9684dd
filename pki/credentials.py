"""A gateway's credential directory: the one owner of the contract between enrollment and
renewal (``provisioning.client`` writes it) and the edge uplink (``edge.credentials`` reads it).
docs/contracts.md section 2 describes it; this module is it.

``key.pem`` (0600, PKCS#8, generated on the gateway and never sent), ``cert.pem`` (leaf),
``chain.pem`` (issuing CA(s)), ``ca.pem`` (the pinned root), ``identity`` (one line, the
identity path), and optionally ``server`` (one line, the enrollment URL, so ``idmz renew``
finds the service without flags) and ``pending.key.pem`` (an air-gapped request's key).

Writing: each file goes through ``bedrock.files.write_atomic`` (durable); ``cert.pem`` is renamed
last, so a reader that watches the files sees a certificate only with the key it belongs to.
Reading: ``load()`` refuses a key readable by group or others, a certificate whose URI SAN is not
the identity in ``identity``, and a certificate that does not belong to the key.

    >>> creds = CredentialDir(Path("/var/lib/idmz/gateway"))
    >>> creds.load().identity.path          # doctest: +SKIP
    'acme/plant1/press/line1/cell2/gw-01'
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from bedrock.files import write_atomic
from pki.errors import ConfigError, KeyStoreError, MalformedIdentityError
from pki.identity import DeviceIdentity
from pki.keys import PrivateKey, load_private_key, private_key_pem

Fingerprint = tuple[tuple[str, int, int], ...]  # (file name, mtime_ns, size); size -1: absent


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    """A credential directory that passed ``CredentialDir.load``'s checks."""

    directory: Path
    identity: DeviceIdentity
    not_after_s: float
    fingerprint: Fingerprint  # of the files when they were checked


@dataclass(frozen=True, slots=True)
class CredentialDir:
    root: Path

    @property
    def key(self) -> Path:
        return self.root / "key.pem"

    @property
    def pending_key(self) -> Path:
        return self.root / "pending.key.pem"

    @property
    def cert(self) -> Path:
        return self.root / "cert.pem"

    @property
    def chain(self) -> Path:
        return self.root / "chain.pem"

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    @property
    def identity(self) -> Path:
        return self.root / "identity"

    @property
    def server(self) -> Path:
        return self.root / "server"

    @property
    def required(self) -> tuple[Path, ...]:
        """The files a usable credential set has (``server`` and ``pending.key.pem`` are extra)."""
        return (self.key, self.cert, self.chain, self.ca, self.identity)

    # -- writing (enrollment, renewal, offline import) -----------------------------------------

    def ensure(self) -> CredentialDir:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    def write(
        self,
        *,
        key: PrivateKey,
        cert_pem: bytes,
        chain_pem: bytes,
        root_pem: bytes,
        identity: str,
        server: str | None = None,
    ) -> None:
        """Install a credential set; the key must match the certificate."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        if cert.public_key() != key.public_key():
            raise ConfigError("the certificate does not match the private key generated for it")
        self.ensure()
        write_atomic(self.ca, root_pem)
        write_atomic(self.identity, identity.encode() + b"\n")
        if server is not None:
            write_atomic(self.server, server.encode() + b"\n")
        write_atomic(self.chain, chain_pem)
        write_atomic(self.key, private_key_pem(key, None), 0o600)
        write_atomic(self.cert, cert_pem)  # last: see the module docstring

    # -- reading (the uplink, renewal) ---------------------------------------------------------

    def fingerprint(self) -> Fingerprint:
        """What changes when enrollment or renewal rewrites a file (mtime and size)."""
        out = []
        for path in self.required:
            try:
                st = path.stat()
            except FileNotFoundError:
                out.append((path.name, 0, -1))
                continue
            out.append((path.name, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def load(self) -> DeviceCredentials:
        """Check the directory and return what the uplink needs to know about it."""
        fp = self.fingerprint()
        missing = [name for name, _, size in fp if size < 0]
        if missing:
            raise ConfigError(
                f"credential directory {self.root} lacks {', '.join(missing)}; run `idmz enroll`"
            )
        mode = stat.S_IMODE(self.key.stat().st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{self.key} must be readable by its owner only (0600); found {mode:04o}"
            )
        try:
            identity = DeviceIdentity.parse(self.identity.read_text().strip())
        except MalformedIdentityError as exc:
            raise ConfigError(f"{self.identity}: {exc}") from exc
        try:
            cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
            key = load_private_key(self.key, None)
        except (ValueError, KeyStoreError) as exc:
            raise ConfigError(
                f"{self.root}: cert.pem or key.pem is not a PEM certificate/key"
            ) from exc
        if cert.public_key() != key.public_key():
            raise ConfigError(f"{self.root}: cert.pem does not belong to key.pem")
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        if uris != [identity.spiffe_id]:
            raise ConfigError(
                f"{self.root}: cert.pem names {uris}; expected exactly [{identity.spiffe_id!r}]"
            )
        return DeviceCredentials(self.root, identity, cert.not_valid_after_utc.timestamp(), fp)

    def load_certificate(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.cert.read_bytes())
        except FileNotFoundError as exc:
            raise ConfigError(f"{self.cert} does not exist; enroll first (`idmz enroll`)") from exc
        except ValueError as exc:
            raise ConfigError(f"{self.cert} is not a PEM certificate") from exc

    def server_url(self) -> str | None:
        return self.server.read_text().strip() if self.server.exists() else None
