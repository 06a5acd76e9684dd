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
