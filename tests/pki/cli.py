"""Helpers for the `idmz ca` CLI tests: run the CLI in-process, make CSRs with openssl."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from idmz.cli import main

SECRET = "cli-passphrase-77e0b2"


def idmz(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def issue(
    capsys: pytest.CaptureFixture[str],
    home: Path,
    csr: Path,
    identity: str,
    out: Path,
    *extra: str,
) -> tuple[int, str, str]:
    """`idmz ca issue --csr CSR --identity ID [extra...] --out OUT`."""
    return idmz(
        capsys, home, "ca", "issue", "--csr", str(csr), "--identity", identity, *extra,
        "--out", str(out),
    )  # fmt: skip


def openssl_csr(
    tmp_path: Path,
    name: str = "dev",
    newkey: tuple[str, ...] = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
) -> tuple[Path, Path]:
    key, csr = tmp_path / f"{name}.key", tmp_path / f"{name}.csr"
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            *newkey,
            "-nodes",
            "-keyout",
            str(key),
            "-subj",
            "/CN=press-07",
            "-out",
            str(csr),
        ],
        check=True,
        capture_output=True,
    )
    return key, csr


def issued_count(capsys: pytest.CaptureFixture[str], home: Path) -> int:
    code, out, _ = idmz(capsys, home, "ca", "list", "--json")
    assert code == 0
    return len(json.loads(out))


def audit_actions(home: Path) -> list[tuple[str, str]]:
    path = home / "audit" / "entries.jsonl"
    if not path.exists():
        return []
    return [(e["action"], e["outcome"]) for e in map(json.loads, path.read_text().splitlines())]
