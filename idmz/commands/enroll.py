"""`idmz enroll` and `idmz renew`: the gateway side of enrollment.

    idmz enroll --server URL --token T --ca-fingerprint SHA256 --out DIR
    idmz enroll --offline-request FILE --identity PATH --out DIR      (air-gapped, step 1)
    idmz enroll --import RESPONSE --ca-fingerprint SHA256 --out DIR   (air-gapped, step 3)
    idmz renew --out DIR [--force] [--daemon]

The key is generated on the gateway (``DIR/key.pem``, 0600) and never sent. The CA is pinned by
the root's SHA-256 before anything it says is trusted. Files follow docs/contracts.md section 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import Any

_log = logging.getLogger("idmz.enroll")


def register(sub: argparse._SubParsersAction[Any], summary: str) -> None:
    """Add the `enroll` and `renew` commands to the top-level parser."""
    p = sub.add_parser(
        "enroll",
        help=summary,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, help="credential directory")
    p.add_argument("--server", help="provisioning service URL, e.g. https://idmz.plant1:8443")
    p.add_argument(
        "--token",
        help="one-time enrollment token (visible in the process list: prefer --token-file or "
        "IDMZ_ENROLL_TOKEN on shared hosts)",
    )
    p.add_argument("--token-file", type=Path, help="read the enrollment token from this file")
    p.add_argument("--ca-fingerprint", help="SHA-256 of the root CA (from the operator)")
    p.add_argument(
        "--identity", help="expected identity path (checked against the token's binding)"
    )
    p.add_argument("--key-type", default="ec-p256", choices=["ec-p256", "ec-p384", "rsa-3072"])
    p.add_argument(
        "--max-wait",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="while the service is busy (429/503 with Retry-After, connection refused) keep "
        "coming back, as told and with jitter, for at most this long in all (default 600)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--offline-request",
        type=Path,
        metavar="FILE",
        help="air-gapped: write a request file (key stays in DIR) instead of calling a server",
    )
    mode.add_argument(
        "--import",
        dest="import_file",
        type=Path,
        metavar="RESPONSE",
        help="air-gapped: install the response signed by `idmz provisioning sign-request`",
    )
    p.set_defaults(func=cmd_enroll)

    r = sub.add_parser(
        "renew", help="renew the gateway certificate over mutual TLS (at ~2/3 of its lifetime)"
    )
    r.add_argument("--out", type=Path, required=True, help="credential directory")
    r.add_argument("--server", help="service URL (default: the one enrolled with, DIR/server)")
    r.add_argument("--force", action="store_true", help="renew now, even if not due")
    r.add_argument(
        "--daemon", action="store_true", help="keep running; renew when due, with jitter"
    )
    r.add_argument(
        "--fraction", type=float, default=2 / 3, help="renew after this fraction of the lifetime"
    )
    r.set_defaults(func=cmd_renew)


def _usage(message: str) -> Exception:
    from provisioning.errors import UsageError

    return UsageError(message)


def cmd_enroll(args: argparse.Namespace) -> int:
    from provisioning import client
    from provisioning.patience import Patience

    if args.offline_request:
        if not args.identity:
            raise _usage(
                "--offline-request needs --identity PATH (the identity the operator registered)"
            )
        client.offline_request(
            args.out, args.identity, args.offline_request, key_type=args.key_type
        )
        print(
            f"request for {args.identity} written to {args.offline_request}; the key stays in {args.out}"
        )
        return 0
    if args.import_file:
        if not args.ca_fingerprint:
            raise _usage("--import needs --ca-fingerprint")
        creds = client.offline_import(args.import_file, args.out, args.ca_fingerprint)
        print(f"installed {creds.identity.read_text().strip()} in {args.out}")
        return 0
    args.token = enrollment_token(args)
    missing = [
        f"--{n.replace('_', '-')}"
        for n in ("server", "token", "ca_fingerprint")
        if not getattr(args, n)
    ]
    if missing:
        raise _usage(f"enroll needs {', '.join(missing)}")
    creds = client.enroll(
        args.server,
        args.token,
        args.ca_fingerprint,
        args.out,
        identity=args.identity,
        key_type=args.key_type,
        patience=Patience(total_s=args.max_wait),
    )
    cert = creds.load_certificate()
    print(
        f"enrolled {creds.identity.read_text().strip()}: serial {cert.serial_number:x}, "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}; credentials in {args.out}"
    )
    return 0


def enrollment_token(args: argparse.Namespace) -> str | None:
    """``--token``, else ``--token-file``, else ``IDMZ_ENROLL_TOKEN``."""
    import os

    if args.token:
        return str(args.token)
    if args.token_file is not None:
        return str(args.token_file.read_text(encoding="utf-8").strip())
    return os.environ.get("IDMZ_ENROLL_TOKEN") or None


def cmd_renew(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from pki.credentials import CredentialDir
    from provisioning import client

    if args.daemon:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        client.renewal_daemon(
            args.out,
            fraction=args.fraction,
            clock=lambda: datetime.now(UTC),
            stop=stop,
            server=args.server,
        )
        return 0
    cert = client.renew_if_due(
        args.out,
        now=datetime.now(UTC),
        fraction=args.fraction,
        force=args.force,
        server=args.server,
    )
    if cert is None:
        current = CredentialDir(args.out).load_certificate()
        due = client.renewal_due(
            not_before=current.not_valid_before_utc,
            not_after=current.not_valid_after_utc,
            fraction=args.fraction,
        )
        print(f"not due: renews after {due:%Y-%m-%dT%H:%M:%SZ} (use --force to renew now)")
        return 0
    print(
        f"renewed: serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    )
    return 0
