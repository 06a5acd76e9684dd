"""What the gateway needs from its readers and its uplink: the seams where I/O is injected.

`idmz` builds the real ones (`edge.opcua_reader.OpcUaReader`, `edge.modbus_reader.ModbusReader`,
`edge.uplink.Uplink`); a test gives the gateway anything with the same shape, e.g. a reader
that replays readings from memory, and runs the gateway's logic without a network.

>>> def readers(sink: ReadingSink) -> list[Reader]:                            # doctest: +SKIP
...     return [OpcUaReader(source, tags, sink)]
>>> Gateway(config, outbox=outbox, readers=readers, uplink=Uplink(settings, outbox))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from edge.tagmap import Reading, TagSpec, all_bad

if TYPE_CHECKING:
    from edge.uplink import UplinkStats

ReadingSink = Callable[[Reading], None]


class Reader(Protocol):
    """A southbound source: reports every reading to the sink it was built with."""

    @property
    def name(self) -> str: ...

    @property
    def connected(self) -> bool: ...

    def status(self) -> dict[str, object]:
        """What the status message says about this source (``kind``, ``connected``, ...)."""
        ...

    async def run(self, stop: asyncio.Event) -> None:
        """Read until ``stop`` is set; reconnects are the reader's own business."""
        ...


ReaderFactory = Callable[[ReadingSink], Sequence[Reader]]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_S = TypeVar("_S", bound=_Named)


class SourceReader(Generic[_S]):
    """What every real reader keeps: its source's settings, the tags it reads, the sink it
    reports to and the clock that stamps readings without a source timestamp."""

    def __init__(
        self,
        source: _S,
        tags: tuple[TagSpec, ...],
        sink: ReadingSink,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.tags = tags
        self._sink = sink
        self._clock = clock

    @property
    def name(self) -> str:
        return self.source.name

    def _report_all_bad(self, reason: str) -> None:
        for reading in all_bad(self.tags, reason, self._clock()):
            self._sink(reading)


class UplinkPort(Protocol):
    """The northbound link: drains the outbox and publishes."""

    @property
    def stats(self) -> UplinkStats: ...

    def notify(self) -> None:
        """A message was stored: send soon."""
        ...

    async def run(self, stop: asyncio.Event) -> None: ...
