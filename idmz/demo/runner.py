"""Run a story of steps, one clear line each, with a tick or a cross and the time it took.

An action returns its detail: the first line goes on the step's line, any further lines are
evidence (what an independent client printed, a file written) shown indented under it. An action
that raises is a cross with the reason; the story stops there and the remaining steps are listed
as not run, so a reader sees exactly how far the chain got.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import bedrock.errors as category


class StepFailedError(category.OperationError):
    """A demo step did not reach its expected outcome."""


@dataclass(frozen=True, slots=True)
class Step:
    title: str
    action: Callable[[], str]  # returns a one-line detail (+ evidence lines); raises on failure
    logs: tuple[str, ...] = ()  # process logs worth reading when this step fails


Act = tuple[str, Sequence[Step]]  # a heading and its steps


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

    def _dim(self, text: str) -> str:
        return f"\033[2m{text}\033[0m" if self.color else text

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
            detail = (
                str(exc) if isinstance(exc, StepFailedError) else f"{type(exc).__name__}: {exc}"
            )
            ok = False
        seconds = time.monotonic() - started
        first, *evidence = (detail or "").splitlines() or [""]
        self.outcomes.append(StepOutcome(step.title, ok, detail, seconds))
        line = f"  {self._mark(ok)} {step.title}"
        if first:
            line += f" — {first}"
        if self.color:
            line += "\033[K"  # clear what is left of the "…" line
        self.say(f"{line}  {self._dim(f'({seconds:.1f}s)')}")
        for text in evidence:
            self.say(self._dim(f"      │ {text}"))
        return ok

    def skip(self, step: Step) -> None:
        self.say(self._dim(f"  – {step.title} (not run)"))

    def tell(self, acts: Sequence[Act], on_failure: Callable[[Step], None]) -> bool:
        """Run the acts in order. At the first failed step call ``on_failure`` (to show the
        logs that explain it) and list every remaining step as not run. True if all passed."""
        for n, (heading, steps) in enumerate(acts):
            self.heading(heading)
            for i, step in enumerate(steps):
                if self.run(step):
                    continue
                on_failure(step)
                for rest in steps[i + 1 :]:
                    self.skip(rest)
                for later_heading, later_steps in acts[n + 1 :]:
                    self.heading(later_heading)
                    for rest in later_steps:
                        self.skip(rest)
                return False
        return True

    @property
    def all_ok(self) -> bool:
        return bool(self.outcomes) and all(o.ok for o in self.outcomes)
