"""The native Mosquitto plugin of the managed brokers: session binding, ACLs, eviction, reports.

Mosquitto 2.0.11 does not disconnect a connected client whose certificate a new CRL revokes
(ADR 0051, ADR 0057), and does not tie a client id to the certificate (ADR 0058).
``relay/native/idmz_revoke.c`` is a small plugin (plugin API version 5): on the bound-id
listener it admits only client ids that belong to the certificate's identity; it decides the
ACLs from the rules `policies.broker_config` renders (without a rules file it defers to the
``acl_file``); it reads a file of revoked identities (certificate CN = MQTT username) at start,
on SIGHUP and when it sees the file changed, kicks those usernames and refuses them; and it
reports every refusal to a file the appliance audits (`relay.broker_refusals`).

This module compiles it with gcc against the ``mosquitto-dev``/``libmosquitto-dev``/
``libssl-dev`` headers, once per source version, into a git-ignored cache
(``relay/native/build/``):

>>> path = build_plugin()          # doctest: +SKIP
>>> path.name                      # doctest: +SKIP
'idmz_revoke-3f2a...so'

A missing compiler or missing headers raise `RevokePluginUnavailableError` saying what to
install; the appliance then falls back to the rendered acl_file, a client id forced to the
certificate CN (one worker only), and restarting the OT broker on revocation.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from relay.errors import RevokePluginUnavailableError

SOURCE = Path(__file__).resolve().parent / "native" / "idmz_revoke.c"
BUILD_DIR = Path(__file__).resolve().parent / "native" / "build"
COMPILER = "gcc"
CFLAGS = ("-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror")
LIBS = ("-lcrypto",)  # the certificate CN (OpenSSL, which Mosquitto links anyway)
BUILD_TIMEOUT_S = 120.0
HEADERS_HINT = (
    "install the Debian packages mosquitto-dev and libmosquitto-dev, and libssl-dev "
    "(scripts/bootstrap)"
)


def build_plugin(
    build_dir: Path = BUILD_DIR, *, source: Path = SOURCE, compiler: str = COMPILER
) -> Path:
    """Return the compiled plugin, compiling it first if this source has not been built yet.

    Idempotent and cheap when built: the file name carries a hash of the source and flags, so a
    changed source builds a new file and an unchanged one is never rebuilt. Concurrent callers
    each compile to a private temporary file and rename it into place.
    """
    try:
        text = source.read_bytes()
    except OSError as exc:
        raise RevokePluginUnavailableError(f"plugin source {source} is unreadable: {exc}") from exc
    digest = hashlib.sha256(text + "\0".join((*CFLAGS, *LIBS)).encode()).hexdigest()[:16]
    target = build_dir / f"idmz_revoke-{digest}.so"
    if target.is_file():
        return target
    cc = shutil.which(compiler)
    if cc is None:
        raise RevokePluginUnavailableError(
            f"no C compiler {compiler!r} on PATH to build {source.name}; install gcc"
        )
    tmp = build_dir / f".{target.name}.{os.getpid()}.tmp"
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [cc, *CFLAGS, "-o", str(tmp), str(source), *LIBS],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            missing = any(
                h in done.stderr for h in ("mosquitto_broker.h", "mosquitto.h", "openssl/")
            )
            hint = HEADERS_HINT if missing else "see the compiler output"
            raise RevokePluginUnavailableError(
                f"building {source.name} failed ({hint}); {compiler} said:\n{done.stderr[-2000:]}"
            )
        os.replace(tmp, target)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RevokePluginUnavailableError(f"building {source.name} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


if __name__ == "__main__":  # `python -m relay.revoke_plugin`: scripts/bootstrap builds it
    import sys

    try:
        print(build_plugin())
    except RevokePluginUnavailableError as exc:
        sys.exit(f"revoke plugin: {exc}")
