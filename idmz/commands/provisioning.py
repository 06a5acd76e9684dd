"""`idmz provisioning`: the enrollment service and the operator's console on the CA host.

idmz provisioning init                         create the CA (if none) and print its fingerprint
idmz provisioning serve --port 8443            HTTPS API + EST, renewal over mutual TLS
idmz provisioning device add PATH              register a device
idmz provisioning group add PREFIX             an enrollment group (validity, renewal grace)
idmz provisioning token create --device PATH   one-time enrollment token (last line)
idmz provisioning token create --role operator --name NAME    operator/admin/auditor token
idmz provisioning token revoke --id JTI        deny an operator token from now on (or --token-file)
idmz provisioning revoke PATH                  revoke a device's certificates, new CRL, notify
idmz provisioning sign-request FILE --token-file T --out RESPONSE  air-gapped enrollment
idmz provisioning expiry [--json]              certificates about to expire, by line
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from idmz.commands import provisioning_cmds as cmds

READ_FROM_HELP = "read the token from this file, or from standard input with '-'"


def register(sub: argparse._SubParsersAction[Any], summary: str) -> None:
    """Add the `provisioning` command group to the top-level parser."""
    p = sub.add_parser(
        "provisioning",
        help=summary,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_subparsers(dest="provisioning_command", metavar="COMMAND", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--database-url",
            metavar="URL",
            help="registry database (default: sqlite under <home>/provisioning; "
            "postgresql://user@host/db for several instances)",
        )
        parser.add_argument("--organization", default="idmz", help="organization name for a new CA")
        parser.add_argument(
            "--ca",
            choices=("local", "vault"),
            default=None,
            help="issue through the local CA under <home>/ca, or through Vault/OpenBao reached "
            "from VAULT_ADDR, VAULT_ROLE_ID, VAULT_SECRET_ID_FILE, ... (docs/pki.md section 8); "
            "default: the backend the home already uses, else local",
        )

    def notify_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--webhook", metavar="URL", help="POST JSON notifications to this URL")
        parser.add_argument(
            "--mqtt-host", help="publish notifications to this (IT-side) MQTT broker"
        )
        parser.add_argument("--mqtt-port", type=int, default=8883)
        parser.add_argument("--mqtt-topic-prefix", default="idmz/provisioning")
        parser.add_argument("--mqtt-ca", type=Path, help="CA file for the broker's TLS certificate")
        parser.add_argument("--mqtt-cert", type=Path, help="client certificate for the broker")
        parser.add_argument("--mqtt-key", type=Path, help="client key for the broker")

    s = g.add_parser(
        "init", help="create the local CA if there is none; print the root fingerprint"
    )
    common(s)
    s.set_defaults(func=cmds.cmd_init)

    s = g.add_parser("serve", help="run the enrollment service (HTTPS, EST, renewal over mTLS)")
    common(s)
    notify_args(s)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8443)
    s.add_argument(
        "--expiry-interval", default="1h", help="how often to scan for expiring certificates"
    )
    s.add_argument(
        "--superseded-grace",
        default="15m",
        help="how long a renewed gateway's previous certificate stays valid for the switch-over "
        "before it is revoked (reason superseded); 0s revokes it at once (ADR 0047)",
    )
    s.add_argument("--workers", type=int, default=1, help="server processes sharing the port")
    s.add_argument(
        "--server-names",
        default="",
        help="extra DNS names/IPs for the service's TLS certificate, e.g. idmz.plant1,10.0.0.5",
    )
    s.add_argument("--client-rate", type=float, default=50.0, help="requests/s per client address")
    s.add_argument("--client-burst", type=int, default=200, help="burst per client address")
    s.add_argument(
        "--max-in-flight",
        type=int,
        default=128,
        help="enrollments and renewals inside one worker at once; past it 429 with a "
        "Retry-After appointment (ADR 0137)",
    )
    s.set_defaults(func=cmds.cmd_serve)

    dev = g.add_parser("device", help="register and list devices").add_subparsers(
        dest="device_command", metavar="COMMAND", required=True
    )
    s = dev.add_parser("add", help="register a device by its identity path")
    common(s)
    s.add_argument("path", help="enterprise/site/area/line/cell/device")
    s.add_argument("--class", dest="device_class", default="gateway")
    s.add_argument("--asset", default="", help="asset metadata (tag, serial number, location)")
    s.set_defaults(func=cmds.cmd_device_add)
    s = dev.add_parser("list", help="list devices")
    common(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmds.cmd_device_list)

    grp = g.add_parser("group", help="enrollment groups").add_subparsers(
        dest="group_command", metavar="COMMAND", required=True
    )
    s = grp.add_parser("add", help="add an enrollment group for an identity prefix")
    common(s)
    s.add_argument("prefix", help="e.g. acme/plant1/press/line1")
    s.add_argument("--class", dest="device_class", default="gateway")
    s.add_argument("--validity-days", type=int, help="certificate lifetime (<= the policy maximum)")
    s.add_argument(
        "--grace-days", type=int, default=0, help="renewal allowed this long after expiry"
    )
    s.set_defaults(func=cmds.cmd_group_add)

    tok = g.add_parser("token", help="enrollment and operator tokens").add_subparsers(
        dest="token_command", metavar="COMMAND", required=True
    )
    s = tok.add_parser("create", help="mint a token; the token is printed on the last line")
    common(s)
    target = s.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--device", metavar="PATH", help="one-time enrollment token for this device"
    )
    target.add_argument(
        "--group", metavar="PREFIX", help="one-time enrollment token for a new device in this group"
    )
    target.add_argument(
        "--role", choices=["admin", "operator", "auditor"], help="operator API token"
    )
    s.add_argument("--name", default=None, help="operator name for --role (default: your login)")
    s.add_argument(
        "--est-password",
        action="store_true",
        help="print the token's short EST password (token id + MAC) instead of the JWT, for EST "
        "clients whose HTTP Basic header cannot hold a JWT (strongSwan pki --est); same single use",
    )
    s.add_argument(
        "--ttl",
        default=None,
        help="lifetime, e.g. 15m (enrollment default) or 8h (operator default)",
    )
    s.set_defaults(func=cmds.cmd_token_create)

    s = tok.add_parser(
        "revoke",
        help="revoke an operator token: every instance refuses it from now on (audited)",
    )
    common(s)
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", metavar="JTI", help="the token's id, as `token create` printed it")
    which.add_argument("--token-file", metavar="FILE", type=Path, help=READ_FROM_HELP)
    s.set_defaults(func=cmds.cmd_token_revoke)

    s = g.add_parser("revoke", help="revoke all certificates of a device, publish the CRL, notify")
    common(s)
    notify_args(s)
    s.add_argument("path")
    s.add_argument(
        "--reason",
        default="unspecified",
        choices=[
            "unspecified",
            "key-compromise",
            "affiliation-changed",
            "superseded",
            "cessation-of-operation",
            "privilege-withdrawn",
        ],
    )
    s.set_defaults(func=cmds.cmd_revoke)

    s = g.add_parser("sign-request", help="air-gapped: sign a gateway's offline request file")
    common(s)
    s.add_argument("request", type=Path)
    s.add_argument(
        "--token-file",
        metavar="FILE",
        type=Path,
        help=f"the device's one-time enrollment token: {READ_FROM_HELP}; without it, "
        f"${cmds.ENROLLMENT_VAR} (never on the command line, where the process list shows it)",
    )
    # Refused with a clear message rather than unknown, so that argparse does not take
    # `--token T` as an abbreviation of `--token-file T` and echo the token as a file name.
    s.add_argument("--token", dest="token_on_command_line", help=argparse.SUPPRESS)
    s.add_argument("--out", type=Path, required=True, help="response file to carry back")
    s.set_defaults(func=cmds.cmd_sign_request)

    s = g.add_parser("expiry", help="certificates expiring within the alert thresholds, by line")
    common(s)
    notify_args(s)
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--days", default=None, help="thresholds, e.g. 30,14,7,1 (default: certificate policy)"
    )
    s.set_defaults(func=cmds.cmd_expiry)

    s = g.add_parser("fingerprint", help="print the root CA's SHA-256 (what gateways pin)")
    common(s)
    s.set_defaults(func=cmds.cmd_fingerprint)
