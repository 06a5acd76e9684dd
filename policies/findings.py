"""One problem a deployment check found, and the list that collects them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"  # the deployment must not run like this
    WARNING = "warning"  # review: the check cannot prove it safe


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    severity: Severity
    file: str
    line: int | None
    message: str
    fix: str


class Findings:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def error(self, rule: str, file: str, line: int | None, message: str, fix: str) -> None:
        self.findings.append(Finding(rule, Severity.ERROR, file, line, message, fix))

    def warn(self, rule: str, file: str, line: int | None, message: str, fix: str) -> None:
        self.findings.append(Finding(rule, Severity.WARNING, file, line, message, fix))
