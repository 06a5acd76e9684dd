"""Vault's CA chain and CRL, republished as the CA files idmz's readers use (docs/contracts.md
section 5): ``chain.pem``, ``root.pem``, ``issuing.pem``, ``crl.pem`` and ``crl.der`` under
``<home>/ca``. Brokers, the relay and the provisioning service's mutual TLS read these files the
same way with either backend.

The CRL reaching this module has been checked by `pki.vault.VaultCA.current_crl` (signed by the
issuing CA in ``ca_chain``, not expired). Here it must also be newer than the one published:
a CRL number that goes back (a restored or foreign mount) is refused, never written over a newer
list (RFC 5280 section 5.2.3: CRL numbers increase).
"""

from __future__ import annotations

from cryptography import x509

from bedrock.files import write_atomic
from pki.authority import CRLBundle, pem
from pki.errors import KeyStoreError
from pki.files import CAPaths


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return -1


class VaultMirror:
    """Writes what changed, atomically (`pki.files.write_atomic`)."""

    def __init__(self, paths: CAPaths) -> None:
        self.paths = paths
        self._published_number: int | None = None

    def publish_chain(self, chain: tuple[x509.Certificate, ...]) -> None:
        """Issuing CA first, root last, as Vault's ``ca_chain``."""
        files = {
            self.paths.chain: b"".join(pem(c) for c in chain),
            self.paths.issuing_cert: pem(chain[0]),
            self.paths.root_cert: pem(chain[-1]),
        }
        for path, data in files.items():
            if not path.exists() or path.read_bytes() != data:
                write_atomic(path, data)

    def publish_crl(self, bundle: CRLBundle) -> bool:
        """Replace ``crl.der``/``crl.pem`` if ``bundle`` is newer; True if it was written."""
        number = crl_number(bundle.crl)
        current = self._current_number()
        if current is not None and number < current:
            raise KeyStoreError(
                f"Vault's CRL #{number} is older than the published CRL #{current}; "
                "refusing to roll the CRL back"
            )
        if current is not None and number == current:
            return False
        write_atomic(self.paths.crl_der, bundle.der)
        write_atomic(self.paths.crl_pem, bundle.pem)
        self._published_number = number
        return True

    def _current_number(self) -> int | None:
        if self._published_number is not None:
            return self._published_number
        try:
            crl = x509.load_der_x509_crl(self.paths.crl_der.read_bytes())
        except (OSError, ValueError):
            return None
        self._published_number = crl_number(crl)
        return self._published_number
