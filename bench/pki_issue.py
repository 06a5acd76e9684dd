"""Device certificates per second through the product's issuance path vs raw `cryptography`.

Product path: `LocalCA.issue` (parse the CSR, proof of possession, key/extension/name checks,
validity checks, build and sign the X.509-SVID, ledger row in SQLite).
Reference, same run, same CSRs, same certificate contents: raw `cryptography` doing only the
unavoidable cryptography of issuing from a CSR: parse it, verify its signature (no CA may skip
proof of possession), build and sign (``raw_sign_per_s``, ``ratio``). The sign-only rate (no CSR
verification at all) is reported too (``raw_sign_only_per_s``, ``ratio_sign_only``): against it
the product also pays for proof of possession (~40% of the time) and one SQLite ledger commit.

Also: CRL generation time for 100,000 revoked serials (`LocalCA.publish_crl`, signed, written
as PEM and DER).

    .venv/bin/python bench/pki_issue.py [--n 400] [--crl-entries 100000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.ceremony import init_local_ca
from pki.csr import verify_csr
from pki.identity import DeviceIdentity
from pki.keys import KeyPolicy, load_private_key
from pki.local import LocalCA
from pki.profiles import ProfileName

PASSPHRASE = b"bench-only"


def make_csrs(n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev")]))
            .sign(key, hashes.SHA256())
        )
        out.append(csr.public_bytes(serialization.Encoding.PEM))
    return out


def raw_issue(
    csr_pem: bytes,
    subject: DeviceIdentity,
    issuer: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    now: datetime,
    *,
    verify: bool,
) -> x509.Certificate:
    csr = x509.load_pem_x509_csr(csr_pem)
    if verify and not csr.is_signature_valid:
        raise ValueError("bad CSR")
    public_key = csr.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject.path)]))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(subject.spiffe_id)]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def timed(func, items) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for item in items:
        func(item)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="certificates per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--crl-entries", type=int, default=100_000)
    args = parser.parse_args()

    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        ca_dir = Path(tmp) / "ca"
        init_local_ca(ca_dir, passphrase=PASSPHRASE, organization="bench", now=now)
        ca = LocalCA.open(ca_dir, passphrase=PASSPHRASE)
        issuer = ca.issuing_certificate
        key = load_private_key(ca_dir / "issuing.key.pem", PASSPHRASE)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        csrs = make_csrs(args.n)
        devices = [
            DeviceIdentity("acme", "plant1", "press", "line1", "cell2", f"press-{i:05d}")
            for i in range(args.n * args.rounds)
        ]

        # The machine is shared and noisy: alternate the paths in small chunks so load changes
        # hit all of them alike, and sum each path's time over every chunk.
        chunk = 25
        spent = {"product": 0.0, "raw": 0.0, "sign_only": 0.0}
        done = 0
        for r in range(args.rounds):
            batch = devices[r * args.n : (r + 1) * args.n]
            pairs = list(zip(csrs, batch, strict=True))
            for i in range(0, len(pairs), chunk):
                part = pairs[i : i + chunk]
                spent["raw"] += timed(
                    lambda p: raw_issue(p[0], p[1], issuer, key, now, verify=True), part
                )
                spent["product"] += timed(
                    lambda p: ca.issue(
                        verify_csr(p[0], KeyPolicy()), p[1], profile=ProfileName.DEVICE, now=now
                    ),
                    part,
                )
                spent["sign_only"] += timed(
                    lambda p: raw_issue(p[0], p[1], issuer, key, now, verify=False), part
                )
                done += len(part)
        issued_per_s = done / spent["product"]
        raw_per_s = done / spent["raw"]
        sign_only_per_s = done / spent["sign_only"]
        print(f"product path (LocalCA.issue)           {issued_per_s:9.0f}/s")
        print(f"raw cryptography (CSR verify + sign)   {raw_per_s:9.0f}/s")
        print(
            f"raw cryptography (sign only, no PoP)   {sign_only_per_s:9.0f}/s "
            f"(product/sign-only ratio {issued_per_s / sign_only_per_s:.2f})"
        )

        rows = [
            (0x1000_0000 + i, "acme/plant1/press/line1/cell2/x", now)
            for i in range(args.crl_entries)
        ]
        ca.ledger.bulk_record_revoked(rows)
        start = time.perf_counter()
        bundle = ca.publish_crl(now=now)  # cold: every entry built in this process
        crl_s = time.perf_counter() - start
        start = time.perf_counter()
        ca.publish_crl(now=now)  # warm: what each later revocation costs
        warm_s = time.perf_counter() - start
        print(
            f"CRL with {len(bundle.crl)} entries: {crl_s:.2f} s cold, {warm_s:.2f} s warm, "
            f"{len(bundle.der)} bytes DER"
        )
        ca.close()

    print(
        f"RESULT pki_issue issued_per_s={issued_per_s:.0f} raw_sign_per_s={raw_per_s:.0f} "
        f"ratio={issued_per_s / raw_per_s:.2f} crl_100k_s={crl_s:.2f} "
        f"raw_sign_only_per_s={sign_only_per_s:.0f} "
        f"ratio_sign_only={issued_per_s / sign_only_per_s:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
