"""The gateway's concurrent work: long-running services and periodic jobs on one event loop.

Services (readers, the uplink) run until the stop event is set; a periodic job runs at once and
then every ``interval_s`` until then. A job that fails with an `EdgeError` is logged and runs
again at its next turn: one bad tick never stops the telemetry or the status. On stop, every
task is awaited before `run` returns.

>>> schedule = Schedule([Service("uplink", uplink.run)],                      # doctest: +SKIP
...                     [Periodic("status", 10.0, publish_status)])
>>> await schedule.run(stop_event)                                            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from edge.errors import EdgeError

_log = logging.getLogger("idmz.edge.gateway")


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class Periodic:
    name: str
    interval_s: float
    job: Callable[[], None]
    every: Callable[[], float] | None = None  # the interval read at each turn (live config)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.job()
            except EdgeError:
                _log.exception("periodic task %s failed", self.name)
            interval = self.every() if self.every is not None else self.interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)


class Schedule:
    def __init__(self, services: Sequence[Service], periodic: Sequence[Periodic]) -> None:
        self.services = tuple(services)
        self.periodic = tuple(periodic)

    async def run(self, stop: asyncio.Event) -> None:
        """Run everything until ``stop`` is set (or this task is cancelled), then wait for all."""
        tasks = [asyncio.create_task(s.run(stop), name=s.name) for s in self.services]
        tasks += [asyncio.create_task(p.run(stop), name=p.name) for p in self.periodic]
        for task in tasks:
            task.add_done_callback(_report_death)
        try:
            await stop.wait()
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)


def _report_death(task: asyncio.Task[None]) -> None:
    """A service that ends with an exception is logged at once, not found at shutdown."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        _log.error("%s stopped: %r", task.get_name(), exc, exc_info=exc)
