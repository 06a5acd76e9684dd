"""The revoke plugin (relay/native/idmz_revoke.c) in a real Mosquitto 2.0 with mutual TLS, the
rendered rules and `mosquitto_pub` as the client: it refuses exactly the identities in its
file, decides every other publish from the rendered rules exactly as the acl_file would (ADR
0058), survives a malformed or missing file, and builds once. Skipped, with the reason, where it cannot be built (no gcc or Mosquitto headers)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pki.ledger import Ledger
from policies import load_policy
from relay.brokers import REVOKED_FILE, MosquittoProcess, registry_from_ledger, render_files
from relay.config import ManagedBroker
from relay.errors import RevokePluginUnavailableError
from relay.revoke_plugin import build_plugin
from tests.relay.conftest import POLICY_PATH, envelope
from tests.support.ca import ClientCredentials, PKIFixture, make_test_pki
from tests.support.mqtt import Endpoint, publish
from tests.support.net import free_port, wait_for

pytestmark = pytest.mark.integration
KEPT = "acme/plant1/stamping/line1/cell1/press-01"
LISTED = "acme/plant1/stamping/line1/cell1/press-02"
OTHER = "acme/plant1/stamping/line1/cell1/press-03"


@dataclass
class PluginBroker:
    """One OT broker rendered by the relay with the plugin loaded, and its device credentials."""

    process: MosquittoProcess
    endpoint: Endpoint
    directory: Path
    creds: dict[str, ClientCredentials]

    @property
    def revoked_file(self) -> Path:
        return self.directory / REVOKED_FILE

    def log(self) -> str:
        return (self.directory / "ot.log").read_text(errors="replace")

    def publish_own(self, who: str, topic_owner: str | None = None, sub: str = "telemetry") -> str:
        """Publish as ``who`` under ``topic_owner``'s path; return "ok" or what the client said."""
        owner = topic_owner or who
        result = publish(self.endpoint, self.creds[who], f"{owner}/{sub}",
                         envelope(owner, "m"), v5=True)  # fmt: skip
        text = (result.stdout + result.stderr).strip()
        assert result.returncode == 0, text
        return text or "ok"

    def change_and_wait(
        self, change: Callable[[Path], None], marker: str, *, sighup: bool = True
    ) -> None:
        """Apply ``change`` to the revoked file, SIGHUP (or not: the plugin also notices a
        changed file by itself), and wait until the plugin has logged ``marker`` once more."""
        before = self.log().count(marker)
        change(self.revoked_file)
        if sighup:
            self.process.reload()
        wait_for(lambda: self.log().count(marker) > before, timeout_s=30, what=marker)


def replace_with(content: bytes) -> Callable[[Path], None]:
    """Atomically (as the appliance writes it): the plugin never sees half a file."""

    def change(path: Path) -> None:
        tmp = path.with_name(f".{path.name}.new")
        tmp.write_bytes(content)
        tmp.replace(path)

    return change


def unreadable(path: Path) -> None:
    """Atomically replace the file with a symlink to a directory: open works, read fails."""
    directory = path.with_name("revoked.d")
    directory.mkdir()
    link = path.with_name(".revoked.lnk")
    link.symlink_to(directory)
    link.replace(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PKIFixture, dict[str, ClientCredentials]]]:  # fmt: skip
    pki = make_test_pki(tmp_path_factory.mktemp("plugin-pki"))
    creds = {d: pki.device(d) for d in (KEPT, LISTED, OTHER)}
    try:
        yield pki, creds
    finally:
        pki.ca.close()


@pytest.fixture
def broker(
    revoke_plugin: Path, pki: tuple[PKIFixture, dict[str, ClientCredentials]], tmp_path: Path
) -> Iterator[PluginBroker]:
    """All three devices are in the acl_file; LISTED is in the plugin's revoked file."""
    fixture, creds = pki
    server = fixture.server()
    ledger = Ledger(fixture.dir / "ca" / "ledger.sqlite")
    try:
        registry = registry_from_ledger(ledger.entries(), frozenset())
    finally:
        ledger.close()
    ot, it = free_port(), free_port()

    def managed(port: int) -> ManagedBroker:
        return ManagedBroker("127.0.0.1", port, fixture.cafile, server.cert, server.key)

    files, _, _ = render_files(
        load_policy(POLICY_PATH.read_text(), source=str(POLICY_PATH)),
        registry,
        ot=managed(ot),
        it=managed(it),
        crl_path=fixture.dir / "ca" / "crl.pem",
        directory=tmp_path / "brokers",
        audit_denials=True,  # debug log: the plugin's notices and every denial are visible
        run_as_user="root" if os.geteuid() == 0 else None,
        revoke_plugin=revoke_plugin,
        revoked_devices=frozenset({LISTED}),
    )
    process = MosquittoProcess("ot", files.ot_config, "127.0.0.1", ot, "mosquitto")
    process.start()
    try:
        yield PluginBroker(process, Endpoint(ot, fixture.cafile), tmp_path / "brokers", creds)
    finally:
        process.stop()


def test_plugin_is_rendered_into_both_brokers_with_only_ot_revocations(
    broker: PluginBroker, revoke_plugin: Path
) -> None:
    # Both brokers bind sessions and decide ACLs with the plugin (ADR 0058); only the OT broker
    # has devices to revoke, the IT broker's revoked file stays empty.
    plugin = revoke_plugin
    ot_conf = (broker.directory / "ot.conf").read_text()
    assert f"plugin {plugin}\n" in ot_conf
    assert f"plugin_opt_revoked_file {broker.revoked_file}\n" in ot_conf
    assert f"plugin_opt_rules_file {broker.directory / 'ot.rules'}\n" in ot_conf
    assert "acl_file " in ot_conf
    it_conf = (broker.directory / "it.conf").read_text()
    assert f"plugin {plugin}\n" in it_conf
    assert f"plugin_opt_revoked_file {broker.directory / 'it-revoked.txt'}\n" in it_conf
    assert (broker.directory / "it-revoked.txt").read_text() == ""
    assert broker.revoked_file.read_text() == f"{LISTED}\n"
    assert f"Loading plugin: {plugin}" in broker.log()


def test_device_still_cannot_publish_outside_its_path_with_the_plugin_loaded(
    broker: PluginBroker,
) -> None:
    # The plugin decides from the rendered rules, the same grants as the acl_file (its "allow"
    # overrides acl_file in Mosquitto 2.0.11, so the rules must never grant more; ADR 0058).
    assert broker.publish_own(KEPT) == "ok"
    assert "not authori" in broker.publish_own(KEPT, topic_owner=OTHER).lower()
    assert "not authori" in broker.publish_own(KEPT, sub="command").lower()  # not in its class
    result = publish(broker.endpoint, broker.creds[KEPT], "$SYS/broker/fake", "x", v5=True)
    assert "not authori" in (result.stdout + result.stderr).lower()
    assert broker.process.running()


def test_listed_identity_is_refused_even_where_the_acl_file_allows_it(
    broker: PluginBroker,
) -> None:
    # LISTED is still in the acl_file (its own path is allowed there): only the plugin refuses.
    assert "not authori" in broker.publish_own(LISTED).lower()
    assert broker.publish_own(OTHER) == "ok"


def test_malformed_missing_or_unreadable_revoked_file_never_crashes_the_broker(
    broker: PluginBroker,
) -> None:
    marker = "idmz_revoke: "
    junk = (
        b"# a comment, then blank lines and junk\n\n   \n"
        + b"x" * 5000 + b"\n"  # over-long: skipped and logged
        + b"nul\x00byte\n"  # skipped and logged; the next line still counts
        + f"  {OTHER}\t\r\n".encode()  # whitespace and CRLF stripped
        + b"\xff\xfe not an identity \x01\n"
        + f"#{KEPT}\n".encode()  # commented out
        + f"{LISTED}\n{LISTED}\n".encode()  # duplicate
        + b"y" * 3000  # over-long last line without a newline
    )  # fmt: skip
    # OTHER, LISTED and the junk line:
    broker.change_and_wait(replace_with(junk), marker + "3 revoked identities")
    assert "is longer than 1024 bytes; ignored" in broker.log()
    assert "contains a NUL byte; ignored" in broker.log()
    assert "not authori" in broker.publish_own(OTHER).lower()
    assert "not authori" in broker.publish_own(LISTED).lower()
    assert broker.publish_own(KEPT) == "ok"

    # Missing: nobody is revoked.
    broker.change_and_wait(Path.unlink, marker + "0 revoked identities")
    assert broker.publish_own(LISTED) == "ok"

    # Without a SIGHUP (Mosquitto 2.0.11 drops one that arrives while it is still reloading),
    # the change is noticed on the broker's next tick.
    change = replace_with(f"{LISTED}\n".encode())
    broker.change_and_wait(change, marker + "1 revoked identities", sighup=False)
    assert "not authori" in broker.publish_own(LISTED).lower()

    # Unreadable: the previous list stays in force.
    broker.change_and_wait(unreadable, "keeping the previous 1 revoked identities")
    assert "error reading" in broker.log()
    assert broker.process.running()
    assert "not authori" in broker.publish_own(LISTED).lower()
    assert broker.publish_own(KEPT) == "ok"


def test_build_is_cached_by_source_hash(revoke_plugin: Path) -> None:
    before = revoke_plugin.stat()
    assert build_plugin() == revoke_plugin
    after = revoke_plugin.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rebuilt


def test_missing_compiler_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RevokePluginUnavailableError, match="no C compiler 'idmz-no-such-cc'"):
        build_plugin(tmp_path, compiler="idmz-no-such-cc")


def test_missing_mosquitto_headers_name_the_packages_to_install(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc on PATH")
    # A compiler that sees no system headers stands for a machine without mosquitto-dev.
    blind = tmp_path / "blind-gcc"
    blind.write_text(f'#!/bin/sh\nexec {gcc} -nostdinc "$@"\n')
    blind.chmod(0o755)
    source = tmp_path / "needs_headers.c"
    source.write_text("#include <mosquitto_broker.h>\n")
    with pytest.raises(RevokePluginUnavailableError, match="mosquitto-dev and libmosquitto-dev"):
        build_plugin(tmp_path / "build", source=source, compiler=str(blind))
    assert not list((tmp_path / "build").glob("*.so"))


def _install_rules(broker: PluginBroker, text: str, marker: str) -> None:
    """Replace the OT rules atomically and wait until the plugin has logged ``marker`` once
    more (it notices the changed file on its next tick)."""
    before = broker.log().count(marker)
    replace_with(text.encode())(broker.directory / "ot.rules")
    wait_for(lambda: broker.log().count(marker) > before, timeout_s=30, what=marker)


def test_a_malformed_rate_cap_grants_nothing_and_a_capped_rule_refuses_past_its_burst(
    broker: PluginBroker,
) -> None:
    # ADR 0141: "write <identity> <filter> <rate> <burst>". A cap the plugin cannot read
    # exactly skips the whole rule (denied, never an open ACL); a capped rule grants its burst,
    # then refuses and reports rate_limited; a reload does not refill the bucket.
    malformed = {
        "exp": "1e3 10", "neg": "-1 10", "zero": "0 10", "zerofrac": "0.000 10", "nan": "nan 10",
        "hex": "0x10 10", "fracburst": "5 1.5", "zeroburst": "5 0", "four": "5",
        "six": "5 10 x", "huge": "1000001 10", "hugeburst": "5 1000000001", "dot": "5. 10",
        "long": "0" * 32 + "1 10", "double": "5  10", "tab": "5\t10",
    }  # fmt: skip
    rules = [f"write {KEPT} {KEPT}/{sub} {cap}" for sub, cap in malformed.items()]
    rules += [f"read {KEPT} {KEPT}/read 5 10", f"write {KEPT} {KEPT}/capped 0.001 3",
              f"write {KEPT} {KEPT}/open"]  # fmt: skip
    _install_rules(broker, "\n".join(rules) + "\n",
                   f"2 rules from {broker.directory / 'ot.rules'} ({len(malformed) + 1} malformed")  # fmt: skip
    for sub in malformed:
        assert "not authori" in broker.publish_own(KEPT, sub=sub).lower(), sub
    assert [broker.publish_own(KEPT, sub="capped") for _ in range(3)] == ["ok"] * 3
    assert "not authori" in broker.publish_own(KEPT, sub="capped").lower()
    assert broker.publish_own(KEPT, sub="open") == "ok"  # no cap on a rule without one
    report = (broker.directory / "ot-refusals.log").read_text()
    assert f"v1 rate_limited write 1 0 {KEPT} {KEPT} {KEPT}/capped\n" in report
    assert f"v1 acl_denied write 1 0 {KEPT} {KEPT} {KEPT}/exp\n" in report

    # Reloaded with a larger burst: the empty bucket stays empty (a reload is no refill).
    rules[-2] = f"write {KEPT} {KEPT}/capped 0.001 50"
    _install_rules(broker, "\n".join(rules) + "\n", "2 rules from")
    assert "not authori" in broker.publish_own(KEPT, sub="capped").lower()
    assert broker.process.running()
