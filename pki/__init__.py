"""pki: who is this? Per-device X.509 identity.

Identity names (`pki.identity`), certificate profiles, issuance from CSRs by a local CA or Vault,
revocation and CRLs, and chain verification that returns a trusted identity or raises.

>>> from pki.identity import DeviceIdentity
>>> DeviceIdentity.parse("acme/plant1/press/line1/cell2/press-07").spiffe_id
'spiffe://acme/plant1/press/line1/cell2/press-07'
"""
