"""`idmz audit`: record operator actions, verify the log, export proofs, run a witness, report.

The log lives in ``<home>/audit`` unless ``--dir`` says otherwise. Verification fails with exit
code 1 and names the first bad index.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

from idmz.home import resolve_home


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir else resolve_home(args.home).audit_dir


def _pinned_key(args: argparse.Namespace, directory: Path) -> Any:
    """The log verifier key: pinned with --key, else (with a warning) the one in the dir."""
    from audit.keys import VKEY_FILE, read_vkey
    from audit.note import VerifierKey

    if getattr(args, "key", None):
        return VerifierKey.parse(args.key)
    print(
        f"idmz: warning: log key not pinned (--key); trusting {directory / VKEY_FILE}, which "
        "anyone who can change the log can change too",
        file=sys.stderr,
    )
    return read_vkey(directory / VKEY_FILE)


def _open_log(args: argparse.Namespace) -> Any:
    from idmz.audit_log import open_audit_log

    return open_audit_log(
        resolve_home(args.home),
        directory=_dir(args),
        origin=getattr(args, "origin", None),
        background_checkpoints=False,
    )


def _emit(args: argparse.Namespace, data: dict[str, Any], human: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else human)


def cmd_append(args: argparse.Namespace) -> int:
    from audit.errors import AuditConfigError
    from audit.events import AuditEvent, Outcome
    from idmz.operator import operator_actor

    if not args.action.startswith("operator."):
        raise AuditConfigError("manual actions are recorded as operator.<what> actions")
    details: dict[str, str | int | float | bool | None] = {}
    for item in args.detail:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise AuditConfigError(f"--detail takes NAME=VALUE, got {item!r}")
        details[name] = value
    event = AuditEvent(
        actor=args.actor or operator_actor(),
        action=args.action,
        resource=args.resource,
        outcome=Outcome(args.outcome),
        reason=args.reason,
        zone=args.zone,
        details=details,
    )
    with _open_log(args) as log:
        receipt = log.record(event)
    _emit(
        args,
        {"index": receipt.index, "leaf_hash": receipt.leaf_hash.hex()},
        f"recorded entry {receipt.index} (leaf {receipt.leaf_hash.hex()})",
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from audit.errors import LogCorruptedError
    from audit.note import VerifierKey
    from audit.verify import verify_log

    directory = _dir(args)
    key = _pinned_key(args, directory)
    witnesses = [VerifierKey.parse(v) for v in args.witness_key]
    try:
        result = verify_log(
            directory, key, witness_keys=witnesses, min_cosigners=args.min_cosigners
        )
    except LogCorruptedError as exc:
        if not args.json:
            raise
        _emit(args, {"ok": False, "first_bad_index": exc.index, "error": str(exc)}, "")
        return 1
    cp = result.checkpoint.checkpoint
    data = {
        "ok": True,
        "size": result.size,
        "root_hash": result.root_hash.hex(),
        "checkpoint": {"origin": cp.origin, "size": cp.size, "root_hash": cp.root_hash.hex()},
        "unsigned_entries": result.unsigned_entries,
        "witnessed": (
            {
                "size": result.witnessed.checkpoint.size,
                "cosigners": [n for n, _ in result.witnessed.cosigners],
            }
            if result.witnessed
            else None
        ),
        "torn_tail_bytes": result.torn_tail_bytes,
    }
    human = (
        f"ok: {result.size} entries verified; checkpoint {cp.origin} size {cp.size} "
        f"root {cp.root_hash.hex()} matches the log"
    )
    if result.witnessed is not None:
        names = ", ".join(n for n, _ in result.witnessed.cosigners) or "no witness key given"
        human += f"\nwitnessed checkpoint size {result.witnessed.checkpoint.size} ({names})"
    if result.unsigned_entries:
        human += f"\nnote: {result.unsigned_entries} newer entries are not yet in a checkpoint"
    if result.torn_tail_bytes:
        human += f"\nnote: {result.torn_tail_bytes} bytes of an unacknowledged write (crash)"
    _emit(args, data, human)
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    from audit.keys import VKEY_FILE, read_vkey

    vkey = read_vkey(_dir(args) / VKEY_FILE).vkey
    _emit(args, {"verifier_key": vkey}, vkey)
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    with _open_log(args) as log:
        note = log.checkpoint()
    print(note, end="")
    return 0


def cmd_proof(args: argparse.Namespace) -> int:
    from audit.keys import KEY_FILE, existing_origin, load_private_key
    from audit.note import NoteSigner
    from audit.proof import build_proof
    from audit.storage import LogPaths

    paths = LogPaths(_dir(args))
    paths.check_format()
    source = paths.cosigned if args.witnessed else paths.checkpoint
    signer = None
    if args.size is not None:
        signer = NoteSigner(
            existing_origin(paths.directory) or "", load_private_key(paths.directory / KEY_FILE)
        )
    text = build_proof(
        paths, args.index, checkpoint_note=source.read_text(), size=args.size, signer=signer
    )
    Path(args.out).write_text(text)
    print(f"wrote proof of entry {args.index} to {args.out}")
    return 0


def cmd_verify_proof(args: argparse.Namespace) -> int:
    from audit.note import VerifierKey
    from audit.proof import verify_proof

    entry = Path(args.entry).read_bytes().rstrip(b"\n") if args.entry else None
    verified = verify_proof(
        Path(args.file).read_text(),
        VerifierKey.parse(args.key),
        entry=entry,
        witness_keys=[VerifierKey.parse(v) for v in args.witness_key],
        min_cosigners=args.min_cosigners,
    )
    cp = verified.checkpoint.checkpoint
    data = {
        "ok": True,
        "index": verified.index,
        "entry": json.loads(verified.entry),
        "checkpoint": {"origin": cp.origin, "size": cp.size, "root_hash": cp.root_hash.hex()},
        "cosigners": [name for name, _ in verified.checkpoint.cosigners],
    }
    _emit(args, data, f"ok: entry {verified.index} is in {cp.origin} at size {cp.size}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from audit.keys import KEY_FILE
    from audit.note import VerifierKey
    from audit.report import build_report, parse_time
    from audit.report_html import render_html

    directory, out = _dir(args), Path(args.out)
    if not args.no_checkpoint and (directory / KEY_FILE).exists():
        # On the log's own host, sign a checkpoint first so the report is anchored to every
        # entry it summarizes; an auditor's copy without the key reports on the last checkpoint.
        with _open_log(args) as log:
            log.checkpoint()
    report = build_report(
        directory,
        _pinned_key(args, directory),
        start=parse_time(args.start) if args.start else None,
        end=parse_time(args.end) if args.end else None,
        now=datetime.now(UTC),
        csv_out=out if args.format == "csv" else None,
        witness_keys=[VerifierKey.parse(v) for v in args.witness_key],
    )
    if args.format == "html":
        out.write_text(render_html(report))
    elif args.format == "json":
        out.write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.format} report of {report.total} events to {out}")
    return 0


def cmd_witness_serve(args: argparse.Namespace) -> int:
    from audit.keys import witness_cosigner
    from audit.note import VerifierKey
    from audit.witness import Witness
    from audit.witness_http import make_server
    from bedrock.clock import SystemClock

    state = Path(args.state)
    cosigner = witness_cosigner(state, args.name)
    witness = Witness(
        state, cosigner, [VerifierKey.parse(v) for v in args.log_key], clock=SystemClock()
    )
    server = make_server(witness, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"witness {cosigner.verifier.vkey} listening on http://{host!s}:{port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        witness.close()
    return 0


def cmd_witness_key(args: argparse.Namespace) -> int:
    from audit.keys import witness_cosigner

    print(witness_cosigner(Path(args.state), args.name).verifier.vkey)
    return 0


def cmd_witness_submit(args: argparse.Namespace) -> int:
    from audit.note import VerifierKey
    from audit.storage import LogPaths
    from audit.witness_http import submit_checkpoint

    directory = _dir(args)
    witness_key = VerifierKey.parse(args.witness_key) if args.witness_key else None
    signed = submit_checkpoint(
        args.url,
        LogPaths(directory),
        _pinned_key(args, directory),
        witness_key,
        timeout_s=args.timeout,
    )
    names = ", ".join(n for n, _ in signed.cosigners) or "(cosignature not checked: no key)"
    print(f"cosigned size {signed.checkpoint.size} by {names}")
    return 0


def register(sub: argparse._SubParsersAction[Any], summary: str) -> None:
    """Add the `audit` command group to the top-level parser."""
    group = sub.add_parser("audit", help=summary, description=summary)
    cmds = group.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    def add(name: str, help_: str, func: Any, *, json_flag: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = cmds.add_parser(name, help=help_, description=help_)
        p.add_argument("--dir", metavar="DIR", help="audit log directory (default: <home>/audit)")
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
        return p

    p = add("append", "record a manual operator action (reason required)", cmd_append)
    p.add_argument(
        "--actor", default=None, help="who (default: operator:<IDMZ_OPERATOR or your login>)"
    )
    p.add_argument("--action", required=True, help="operator.<what>, e.g. operator.ca.rotated")
    p.add_argument("--resource", required=True, help="what was acted on")
    p.add_argument("--reason", required=True, help="why (21 CFR Part 11 wants the reason)")
    p.add_argument("--outcome", default="success", choices=["success", "denied", "failure"])
    p.add_argument("--zone", default="idmz")
    p.add_argument("--detail", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--origin", help="log origin when creating a new log")

    p = add("verify", "re-verify every entry, the Merkle root and the checkpoint", cmd_verify)
    p.add_argument("--key", metavar="VKEY", help="pinned log verifier key (recommended)")
    p.add_argument("--witness-key", action="append", default=[], metavar="VKEY")
    p.add_argument("--min-cosigners", type=int, default=0)

    add("key", "print the log's verifier key (for auditors to pin)", cmd_key)
    p = add("checkpoint", "sign and write a checkpoint now", cmd_checkpoint, json_flag=False)
    p.add_argument("--origin", help="log origin when creating a new log")

    p = add("proof", "write an offline-verifiable tlog-proof for one entry", cmd_proof)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--size", type=int, help="prove under a new checkpoint of this size")
    p.add_argument("--witnessed", action="store_true", help="use checkpoint.cosigned")
    p.add_argument("--out", required=True, metavar="FILE")

    p = add("verify-proof", "check a tlog-proof without the log", cmd_verify_proof)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--key", required=True, metavar="VKEY", help="the log's verifier key")
    p.add_argument("--entry", metavar="FILE", help="the entry's JSON (default: in the proof)")
    p.add_argument("--witness-key", action="append", default=[], metavar="VKEY")
    p.add_argument("--min-cosigners", type=int, default=0)

    p = add("report", "compliance report (SR 2.8 categories, refusals, certs)", cmd_report)
    p.add_argument(
        "--from", dest="start", metavar="TIME", help="ISO 8601 (default: the first entry)"
    )
    p.add_argument(
        "--to", dest="end", metavar="TIME", help="ISO 8601, exclusive (default: after the last)"
    )
    p.add_argument("--format", choices=["html", "json", "csv"], default="html")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--key", metavar="VKEY", help="pinned log verifier key")
    p.add_argument("--witness-key", action="append", default=[], metavar="VKEY")
    p.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="do not sign a fresh checkpoint first (default: sign one when the log key is here)",
    )

    witness = cmds.add_parser("witness", help="independent witness: serve, key, submit")
    wcmds = witness.add_subparsers(dest="witness_command", metavar="ACTION", required=True)
    p = wcmds.add_parser("serve", help="serve tlog-witness POST /add-checkpoint")
    p.add_argument("--state", required=True, metavar="DIR", help="witness state and key")
    p.add_argument("--name", default=f"{socket.gethostname()}/idmz-witness", help="key name")
    p.add_argument("--log-key", action="append", required=True, metavar="VKEY")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7380)
    p.set_defaults(func=cmd_witness_serve)
    p = wcmds.add_parser("key", help="print the witness's cosigner verifier key")
    p.add_argument("--state", required=True, metavar="DIR")
    p.add_argument("--name", default=f"{socket.gethostname()}/idmz-witness")
    p.set_defaults(func=cmd_witness_key)
    p = wcmds.add_parser("submit", help="send the log's checkpoint to a witness, keep its cosig")
    p.add_argument("--dir", metavar="DIR", help="audit log directory (default: <home>/audit)")
    p.add_argument("--url", required=True, help="witness submission prefix, e.g. http://it:7380")
    p.add_argument("--key", metavar="VKEY", help="pinned log verifier key")
    p.add_argument("--witness-key", metavar="VKEY", help="require a cosignature by this key")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    p.set_defaults(func=cmd_witness_submit)
