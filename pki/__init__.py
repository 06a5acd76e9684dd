"""pki: who is this? Per-device X.509 identity.

Identity names (`pki.identity`), certificate profiles (`pki.profiles`), CSR checks (`pki.csr`),
issuance by the embedded CA (`pki.local`) or Vault (`pki.vault`) behind one protocol
(`pki.authority.CertificateAuthority`), revocation and CRLs (`pki.crl`, `pki.ledger`), CA health
(`pki.health`), and chain verification that returns a trusted identity or raises
(`pki.verifier`). Errors: `pki.errors`. Operator guide: docs/pki.md.

>>> from pki.identity import DeviceIdentity
>>> DeviceIdentity.parse("acme/plant1/press/line1/cell2/press-07").spiffe_id
'spiffe://acme/plant1/press/line1/cell2/press-07'
"""

from bedrock.surface import lazy_surface

# The public surface (docs/architecture.md, "Public surface"): what the other packages and the CLI
# may import from this one, by home module. Import a name from its home module, as the rest of
# the code does; the package also resolves it on first use (PEP 562) instead of importing every
# module up front, so importing one module stays light. tests/test_public_surface.py holds every
# import in the product to this list.
_SURFACE: dict[str, tuple[str, ...]] = {
    "authority": (
        "CRLBundle",
        "CertificateAuthority",
        "IssuedCertificate",
        "RevocationReason",
        "fingerprint_sha256",
        "format_serial",
        "parse_serial",
        "pem",
    ),
    "csr": ("CheckedCSR", "VerifiedCSR", "check_csr", "load_csr", "verify_csr"),
    "errors": (
        "CSRError",
        "CertificateError",
        "ConfigError",
        "IssuanceRefusedError",
        "MalformedIdentityError",
        "PKIError",
        "RevokedCertificateError",
    ),
    "credentials": ("CredentialDir", "DeviceCredentials", "Fingerprint"),
    "files": ("load_ca_certificate",),
    "health": ("ca_health", "crl_number"),
    "identity": ("ConsumerIdentity", "DeviceIdentity", "IdentityPrefix", "LEVELS", "parse_spiffe"),
    "keys": (
        "KeyPolicy",
        "PrivateKey",
        "check_public_key",
        "generate_private_key",
        "load_private_key",
        "private_key_pem",
        "write_private_key",
    ),
    "ledger": ("Ledger", "LedgerEntry"),
    "ceremony": (
        "create_intermediate_request",
        "init_local_ca",
        "install_intermediate",
        "sign_intermediate",
    ),
    "local": ("LocalCA",),
    "profiles": ("ProfileName", "ServerName", "parse_subject"),
    "publication": ("CAPublication", "LedgerView", "read_ledger"),
    "vault": ("VaultCA", "VaultConfig"),
    "vault_config": ("DEFAULT_DEVICE_ROLE",),
    "verifier": ("ChainVerifier", "VerifiedDevice", "load_certificates"),
}

__all__, __getattr__ = lazy_surface(__name__, _SURFACE)
