"""Run a story of steps, one clear line each, with a tick or a cross and the time it took."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO


class StepFailedError(Exception):
    """A demo step did not reach its expected outcome."""


@dataclass(frozen=True, slots=True)
class Step:
    title: str
    action: Callable[[], str]  # returns a one-line detail; raises on failure


@dataclass
class StepOutcome:
    title: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class StoryRunner:
    out: TextIO = field(default_factory=lambda: sys.stdout)
    color: bool = False
    outcomes: list[StepOutcome] = field(default_factory=list)

    def _mark(self, ok: bool) -> str:
        tick, cross = "✔", "✘"
        if not self.color:
            return tick if ok else cross
        return f"\033[32m{tick}\033[0m" if ok else f"\033[31m{cross}\033[0m"

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def heading(self, text: str) -> None:
        self.say("")
        self.say(f"\033[1m{text}\033[0m" if self.color else text)

    def run(self, step: Step) -> bool:
        if self.color:
            print(f"  … {step.title}", end="\r", file=self.out, flush=True)
        started = time.monotonic()
        try:
            detail = step.action()
            ok = True
        except Exception as exc:  # noqa: BLE001 - every failure becomes a cross with its reason
            detail = f"{type(exc).__name__}: {exc}"
            ok = False
        seconds = time.monotonic() - started
        self.outcomes.append(StepOutcome(step.title, ok, detail, seconds))
        line = f"  {self._mark(ok)} {step.title}"
        if detail:
            line += f" — {detail}"
        self.say(f"{line}  ({seconds:.1f}s)")
        return ok

    @property
    def all_ok(self) -> bool:
        return bool(self.outcomes) and all(o.ok for o in self.outcomes)
