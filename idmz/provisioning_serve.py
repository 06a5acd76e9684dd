"""`idmz provisioning serve`: the service's processes.

The parent prepares what must exist once (the CA, the service's TLS certificate) and binds the
listening socket; then it serves itself (``--workers 1``) or forks ``--workers`` processes that
accept on the same socket, each with its own CA, registry and audit log handles (all safe across
processes). SIGTERM/SIGINT to the parent is forwarded to the workers.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provisioning.errors import UsageError

_log = logging.getLogger("idmz.provisioning")
OpenRuntime = Callable[..., Any]
MakeNotifier = Callable[[argparse.Namespace], Any]


def renewal_policy(superseded_grace: str) -> Any:
    """``--superseded-grace`` (``15m``, ``90s``; ``0``/``0s`` = revoke at once) as a
    `provisioning.config.RenewalPolicy`; a malformed or too long value is a `ConfigError`."""
    from provisioning.config import RenewalPolicy, parse_duration

    text = superseded_grace.strip().lower()
    seconds = 0 if text in ("0", "0s") else int(parse_duration(text).total_seconds())
    return RenewalPolicy(superseded_grace_s=seconds)


def serve(args: argparse.Namespace, *, open_runtime: OpenRuntime, notifier: MakeNotifier) -> int:
    """Run ``idmz provisioning serve``: prepare once, then one or ``--workers`` processes."""
    import os
    import signal
    import socket

    from bedrock.clock import utc_now as now_utc
    from idmz.operator import operator_actor
    from provisioning.server import default_server_names, ensure_server_certificate

    if args.workers < 1:
        raise UsageError("--workers must be >= 1")
    renewal_policy(args.superseded_grace)  # a bad value stops here, not in every worker
    # Once, in the parent: the CA (created if missing), the service's TLS certificate.
    rt = open_runtime(args)
    try:
        cert, key = ensure_server_certificate(
            rt.ca,
            rt.home.provisioning_dir,
            names=default_server_names(args.server_names),
            now=now_utc(),
        )
        banner = (
            f"idmz provisioning: https://{args.host}:{args.port}  ca-fingerprint {rt.ca.root_fingerprint}"
            f"  registry {rt.registry.dialect}  workers {args.workers}  started by {operator_actor()}"
        )
    finally:
        rt.close()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    print(banner, flush=True)
    if args.workers == 1:
        _serve_worker(
            args, sock, cert, key, index=0, open_runtime=open_runtime, make_notifier=notifier
        )
        return 0
    # Several processes accept on one socket: TLS, JSON and signing use both cores. Each opens
    # its own CA, registry and audit log (all safe across processes: flock + group commit).
    children: list[int] = []
    for index in range(args.workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                _serve_worker(
                    args,
                    sock,
                    cert,
                    key,
                    index=index,
                    open_runtime=open_runtime,
                    make_notifier=notifier,
                )
            except BaseException:  # noqa: BLE001 - report, then leave without running the parent's cleanup
                _log.exception("worker %d failed", index)
                code = 1
            os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or (1 if code else 0)
    return status


def _serve_worker(
    args: argparse.Namespace,
    sock: Any,
    cert: Path,
    key: Path,
    *,
    index: int,
    open_runtime: OpenRuntime,
    make_notifier: MakeNotifier,
) -> None:
    from bedrock.clock import utc_now as now_utc
    from idmz.crl_publisher import crl_published_event, republish_crl
    from idmz.provisioning_runtime import client_ca_file
    from provisioning.config import RateLimits, ServiceLimits, SheddingLimits, parse_duration
    from provisioning.expiry import alert_expiring, scan_expiry
    from provisioning.http.app import create_app, wrap
    from provisioning.retirement import withdraw_stale_pending
    from provisioning.server import ServeOptions, build_server

    notifier = make_notifier(args)
    limits = ServiceLimits(
        rates=RateLimits(per_client_per_s=args.client_rate, per_client_burst=args.client_burst),
        renewal=renewal_policy(args.superseded_grace),
        shedding=SheddingLimits(max_in_flight=args.max_in_flight),
    )
    rt = open_runtime(args, listeners=(notifier.revoked,) if notifier else (), limits=limits)
    interval_s = parse_duration(args.expiry_interval).total_seconds()
    stop = threading.Event()
    try:
        service = rt.services.enrollment
        app = wrap(create_app(rt.services, clock=now_utc), service.limits)
        options = ServeOptions(
            args.host,
            args.port,
            cert,
            key,
            client_ca_file(rt.home),
            log_level=args.log_level,
            http=service.limits.http,
        )
        server = build_server(app, options)

        def expiry_loop() -> None:
            while not stop.wait(interval_s):
                try:
                    report = scan_expiry(
                        rt.registry,
                        now=now_utc(),
                        alert_days=service.policy.expiry_alert_days,
                        issuing_not_after=service.issuing.not_valid_after_utc,
                        device_validity=service.max_device_validity,
                    )
                    alert_expiring(
                        report,
                        registry=rt.registry,
                        audit=rt.audit,
                        actor="service:provisioning",
                        notifiers=(notifier,) if notifier else (),
                    )
                    withdraw_stale_pending(rt.ca, rt.registry, rt.audit, now=now_utc())
                except Exception:  # noqa: BLE001 - keep serving; the next scan retries
                    _log.exception("expiry scan failed")

        # Superseded certificates are revoked soon after their grace (ADR 0047), not only at
        # the next hourly scan: a quarter of the grace, at least every 30 s.
        sweep_s = max(30.0, service.limits.renewal.superseded_grace_s / 4)

        def supersession_loop() -> None:
            while not stop.wait(sweep_s):
                try:
                    service.revoke_superseded(now=now_utc())
                except Exception:  # noqa: BLE001 - keep serving; the next sweep retries
                    _log.exception("revoking superseded certificates failed")

        def crl_loop() -> None:
            # Republish the CRL well before nextUpdate even when nothing renews or revokes for
            # days (review M6, ADR 0016): at start, then every --expiry-interval.
            while True:
                try:
                    bundle = republish_crl(rt.ca, now=now_utc())
                    if bundle is not None:
                        rt.audit.record(crl_published_event(bundle, actor="service:provisioning"))
                except Exception:  # noqa: BLE001 - keep serving; logged, the next round retries
                    _log.exception("republishing the CRL failed")
                if stop.wait(interval_s):
                    return

        if index == 0 and getattr(args, "ca", "local") == "vault":  # issue 13, ADR 0019
            from idmz.vault_settings import republish_crl_until

            threading.Thread(
                target=republish_crl_until,
                args=(rt.ca, stop),
                kwargs={"clock": now_utc},
                name="vault-crl",
                daemon=True,
            ).start()
        if index == 0:  # one scanner per service; alerts are deduplicated in the registry anyway
            threading.Thread(target=expiry_loop, name="expiry", daemon=True).start()
            threading.Thread(target=supersession_loop, name="supersession", daemon=True).start()
            threading.Thread(target=crl_loop, name="crl", daemon=True).start()
        server.run(sockets=[sock])
    finally:
        stop.set()
        rt.close()
