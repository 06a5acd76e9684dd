"""The CA files other parts may read: the one owner of that contract (docs/contracts.md
section 5). The relay, the brokers and the gateways read these and nothing else of the CA's
directory; the private keys, the passphrase and the intermediate request are not here.

    >>> published = CAPublication(Path("/var/lib/idmz/ca"))
    >>> published.crl_pem.name, published.ledger.name
    ('crl.pem', 'ledger.sqlite')

The ledger (serial → subject, revocations) is published as a read-only view: `read_ledger`
opens it so that it is never created, written or migrated by a reader, and gives the reader
only ``entries()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pki.files import CAPaths
from pki.ledger import Ledger, LedgerEntry


@dataclass(frozen=True, slots=True)
class CAPublication:
    """The published files of the CA directory ``root`` (names from `pki.files.CAPaths`)."""

    root: Path

    @property
    def root_cert(self) -> Path:
        return CAPaths(self.root).root_cert

    @property
    def issuing_cert(self) -> Path:
        return CAPaths(self.root).issuing_cert

    @property
    def chain(self) -> Path:
        return CAPaths(self.root).chain

    @property
    def crl_pem(self) -> Path:
        return CAPaths(self.root).crl_pem

    @property
    def crl_der(self) -> Path:
        return CAPaths(self.root).crl_der

    @property
    def ledger(self) -> Path:
        return CAPaths(self.root).ledger

    @property
    def files(self) -> tuple[Path, ...]:
        return (
            self.root_cert,
            self.issuing_cert,
            self.chain,
            self.crl_pem,
            self.crl_der,
            self.ledger,
        )


class LedgerView:
    """The ledger as a reader sees it: its rows, nothing that writes."""

    def __init__(self, path: Path) -> None:
        self._ledger = Ledger(path, read_only=True)

    def entries(self) -> list[LedgerEntry]:
        return self._ledger.entries()

    def close(self) -> None:
        self._ledger.close()


@contextmanager
def read_ledger(path: Path) -> Iterator[LedgerView]:
    """A read-only view of the ledger at ``path`` for the duration of the block."""
    view = LedgerView(path)
    try:
        yield view
    finally:
        view.close()
