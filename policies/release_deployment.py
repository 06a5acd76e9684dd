"""The release repository's deployment file, ``release.toml``: what ``idmz release serve
--config`` runs with and what ``idmz policy check`` holds to the zone model (ADR 0100).

The repository is a conduit of its own: the IT publisher writes into the IDMZ, OT gateways
read from the IDMZ, and nothing reaches OT. So it must run in the IDMZ, be written only from IT
(or the IDMZ host itself), be read only by OT gateways over mutual TLS checked against the CRL.
deploy/release.toml is a complete example; docs/release.md the reference.

>>> check_release_deployment(Findings(), "release.toml", 'zone = "ot"').findings[0].rule  # doctest: +SKIP
'release.zone'
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from bedrock.tables import Table
from policies.errors import PolicyConfigError
from policies.findings import Findings

FILE_NAME = "release.toml"


@dataclass(frozen=True, slots=True)
class ReleaseDeployment:
    zone: str
    host: str
    port: int
    cert: str | None
    key: str | None
    client_ca: str | None
    crl: str | None
    readers: tuple[str, ...]
    writers: tuple[str, ...]
    unsafe_skip_revocation: bool


def parse_release_deployment(text: str, source: str = FILE_NAME) -> ReleaseDeployment:
    """The file's settings, strictly (unknown keys and wrong types refused by name)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyConfigError(str(exc), source=source) from exc
    t = Table(doc, source, error=PolicyConfigError)
    parsed = ReleaseDeployment(
        zone=t.text("zone", required=True),
        host=t.text("host", "127.0.0.1"),
        port=t.integer("port", 8445),
        cert=t.text("cert"),
        key=t.text("key"),
        client_ca=t.text("client_ca"),
        crl=t.text("crl"),
        readers=tuple(str(z) for z in t.array("readers")),
        writers=tuple(str(z) for z in t.array("writers")),
        unsafe_skip_revocation=t.flag("unsafe_skip_revocation"),
    )
    t.done()
    return parsed


def check_release_deployment(c: Findings, name: str, text: str) -> Findings:
    """The zone rules of the release conduit (docs/policies.md lists the rule ids)."""
    try:
        d = parse_release_deployment(text, name)
    except PolicyConfigError as exc:
        c.error("release.invalid", name, exc.line, str(exc), "fix the file (docs/release.md)")
        return c
    if d.zone != "idmz":
        c.error("release.zone", name, None,
                f"the release repository is in zone {d.zone!r}: in OT the IT publisher would "
                "write into the plant (IT reaches the gateways); in IT the gateways would dial "
                "into IT", "run it in the IDMZ (zone = \"idmz\")")  # fmt: skip
    if "ot" in d.writers:
        c.error("release.ot_writes", name, None,
                "OT may write to the release repository: a gateway could publish for the fleet",
                "writers = [\"it\"] (the publisher), never \"ot\"")  # fmt: skip
    if any(z != "ot" for z in d.readers) or not d.readers:
        c.error("release.readers", name, None,
                f"readers are {list(d.readers)}: only OT gateways, with device certificates, "
                "pull releases", "readers = [\"ot\"]")  # fmt: skip
    if any(z not in ("it", "idmz") for z in d.writers):
        c.error("release.writers", name, None,
                f"writers are {list(d.writers)}: releases come from IT (or the IDMZ host)",
                "writers = [\"it\"]")  # fmt: skip
    if not d.client_ca:
        c.error("release.no_client_ca", name, None,
                "no client_ca: gateways are not authenticated (mutual TLS)",
                "client_ca = the CA chain the device certificates chain to")  # fmt: skip
    if not d.crl:
        report = c.warn if d.unsafe_skip_revocation else c.error
        report("release.no_crl", name, None,
               "no crl: a revoked gateway still downloads releases",
               "crl = the CA's crl.pem (idmz ca publishes it)")  # fmt: skip
    return c
