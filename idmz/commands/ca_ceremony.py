"""`idmz ca init` and the offline-root ceremony: `intermediate-request` on the online host,
`sign-intermediate` on the root's host, `install-intermediate` back on the online host
(docs/pki.md). The rest of `idmz ca` is `idmz.commands.ca`, which registers these."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from audit.events import Outcome
from bedrock.clock import utc_now
from idmz import events
from idmz.commands import ca_context as ctx

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")


def _cmd_init(args: argparse.Namespace) -> int:
    from pki.ceremony import init_local_ca

    home = ctx.home_of(args).ensure()
    passphrase = ctx.passphrase(home, create=True)
    paths = init_local_ca(
        home.ca_dir,
        passphrase=passphrase,
        organization=args.organization,
        now=utc_now(),
        key_type=args.key_type,
        root_validity=timedelta(days=args.root_days),
        issuing_validity=timedelta(days=args.issuing_days),
        root_only=args.root_only,
    )
    events.record(
        home,
        [
            events.ca_created_event(
                paths.root_cert,
                organization=args.organization,
                key_type=args.key_type,
                root_only=args.root_only,
            )
        ],
    )
    print(f"created root CA {paths.root_cert}")
    if args.root_only:
        print(
            "root only: sign an issuing CA with `idmz ca sign-intermediate --csr FILE --out FILE`"
        )
    else:
        print(f"created issuing CA {paths.issuing_cert}; chain {paths.chain}; CRL {paths.crl_pem}")
    print(f"root fingerprint (sha256) {ctx.fingerprint_file(paths.root_cert)}")
    return 0


def _cmd_intermediate_request(args: argparse.Namespace) -> int:
    from pki.ceremony import create_intermediate_request

    home = ctx.home_of(args).ensure()
    data = create_intermediate_request(
        home.ca_dir,
        passphrase=ctx.passphrase(home, create=True),
        organization=args.organization,
        key_type=args.key_type,
    )
    if args.out:
        Path(args.out).write_bytes(data)
    print(f"wrote issuing CA request {args.out or home.ca_dir / 'issuing.csr.pem'}")
    print("carry it to the offline root host: idmz ca sign-intermediate --csr FILE --out FILE")
    return 0


def _cmd_sign_intermediate(args: argparse.Namespace) -> int:
    from pki.ceremony import sign_intermediate

    home = ctx.home_of(args)
    cert = sign_intermediate(
        home.ca_dir,
        passphrase=ctx.passphrase(home, create=False),
        unverified_csr=ctx.read_input(args.csr),
        now=utc_now(),
        validity=timedelta(days=args.days),
    )
    from cryptography import x509

    signed = x509.load_pem_x509_certificate(cert)
    events.audit(
        home,
        "pki.cert.issued",
        format(signed.serial_number, "x"),
        Outcome.SUCCESS,
        profile="issuing-ca",
        subject=signed.subject.rfc4514_string(),
        not_after=signed.not_valid_after_utc.isoformat(),
    )
    ctx.write_public(Path(args.out), cert)
    print(f"wrote issuing CA certificate {args.out}")
    print(f"carry it and {home.ca_dir / 'root.pem'} back: idmz ca install-intermediate")
    return 0


def _cmd_install_intermediate(args: argparse.Namespace) -> int:
    from pki.ceremony import install_intermediate

    home = ctx.home_of(args)
    install_intermediate(
        home.ca_dir,
        passphrase=ctx.passphrase(home, create=False),
        cert_pem=ctx.read_input(args.cert),
        root_pem=ctx.read_input(args.root),
        now=utc_now(),
    )
    print(f"installed issuing CA in {home.ca_dir}")
    print(f"root fingerprint (sha256) {ctx.fingerprint_file(home.ca_dir / 'root.pem')}")
    return 0


def add_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the CA's creation and ceremony subcommands through `idmz ca`'s ``add``."""
    p = add("init", _cmd_init, "create a root CA and an issuing CA under <home>/ca")
    p.add_argument("--organization", default="idmz", help="O= in the CA names (default: idmz)")
    p.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
    p.add_argument("--root-only", action="store_true", help="create only the root (offline root)")
    p.add_argument("--root-days", type=ctx.days, default=3650)
    p.add_argument("--issuing-days", type=ctx.days, default=1825)

    p = add(
        "intermediate-request",
        _cmd_intermediate_request,
        "make an issuing CA key and CSR for an offline root",
    )
    p.add_argument("--organization", default="idmz")
    p.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
    p.add_argument("--out", help="also write the CSR here")

    p = add(
        "sign-intermediate", _cmd_sign_intermediate, "on the root host: sign an issuing CA request"
    )
    p.add_argument("--csr", required=True, help="the issuing CA's CSR (PEM), or - for stdin")
    p.add_argument("--out", required=True, help="where to write the issuing CA certificate")
    p.add_argument("--days", type=ctx.days, default=1825)

    p = add(
        "install-intermediate",
        _cmd_install_intermediate,
        "install the signed issuing CA and the root",
    )
    p.add_argument("--cert", required=True, help="the signed issuing CA certificate (PEM)")
    p.add_argument("--root", required=True, help="the root CA certificate (PEM)")
