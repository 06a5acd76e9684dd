"""`idmz audit` as operators and auditors use it: exit codes, first bad index, offline proofs,
a witness in its own process, reports that open offline."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from audit.report import parse_time
from tests.audit.audit_cli import main
from tests.audit.conftest import fill

IDMZ = [sys.executable, "-m", "tests.audit.audit_cli"]
REPO = Path(__file__).resolve().parents[2]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def log(log_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    fill(log_dir, 12)
    code, out, _ = _run(capsys, "audit", "key", "--dir", str(log_dir))
    assert code == 0
    return log_dir, out.strip()


def test_append_records_an_operator_action_with_its_reason(
    log_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys, "audit", "append", "--dir", str(log_dir), "--actor", "alice",
        "--action", "operator.ca.rotated", "--resource", "ca/issuing",
        "--reason", "annual rotation", "--origin", "plant1.example/idmz-audit", "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["index"] == 0
    line = json.loads((log_dir / "entries.jsonl").read_text())
    assert line["reason"] == "annual rotation" and line["actor"] == "alice"


def test_append_without_a_reason_is_a_usage_error(log_dir: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["audit", "append", "--dir", str(log_dir), "--actor", "a",
              "--action", "operator.x", "--resource", "r"])  # fmt: skip
    assert exc.value.code == 2


def test_append_cannot_forge_a_non_operator_action(
    log_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        capsys, "audit", "append", "--dir", str(log_dir), "--actor", "mallory",
        "--action", "pki.cert.revoked", "--resource", "01", "--reason", "cover-up",
    )  # fmt: skip
    assert code == 2 and "operator." in err


def test_verify_passes_with_the_pinned_key(
    log: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    log_dir, key = log
    code, out, _ = _run(capsys, "audit", "verify", "--dir", str(log_dir), "--key", key)
    assert code == 0 and "12 entries verified" in out


def test_verify_fails_nonzero_and_names_the_first_bad_index(
    log: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    log_dir, key = log
    entries = log_dir / "entries.jsonl"
    lines = entries.read_bytes().splitlines(keepends=True)
    lines[4] = lines[4].replace(b"payload", b"PAYLOAD")
    entries.write_bytes(b"".join(lines))
    code, _, err = _run(capsys, "audit", "verify", "--dir", str(log_dir), "--key", key)
    assert code == 1 and "entry 4" in err
    code, out, _ = _run(capsys, "audit", "verify", "--dir", str(log_dir), "--key", key, "--json")
    assert code == 1 and json.loads(out)["first_bad_index"] == 4


def test_proof_verifies_offline_and_fails_under_another_key(
    log: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_dir, key = log
    proof = tmp_path / "entry5.tlog-proof"
    assert _run(capsys, "audit", "proof", "--dir", str(log_dir), "--index", "5",
                "--out", str(proof))[0] == 0  # fmt: skip
    code, out, _ = _run(capsys, "audit", "verify-proof", str(proof), "--key", key, "--json")
    assert code == 0 and json.loads(out)["entry"]["seq"] == 5
    other = "plant1.example/idmz-audit+00000000+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
    code, _, _ = _run(capsys, "audit", "verify-proof", str(proof), "--key", other)
    assert code == 2  # a key whose ID does not match is a configuration error


@pytest.mark.parametrize("fmt", ["html", "json", "csv"])
def test_report_is_written_in_each_format(
    fmt: str, log: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_dir, key = log
    out = tmp_path / f"report.{fmt}"
    code, _, _ = _run(
        capsys, "audit", "report", "--dir", str(log_dir), "--key", key, "--from", "2000-01-01Z",
        "--to", "2100-01-01T00:00:00Z", "--format", fmt, "--out", str(out),
    )  # fmt: skip
    assert code == 0
    text = out.read_text()
    if fmt == "json":
        data = json.loads(text)
        assert data["events"]["total"] == 12 and data["by_category"]["access control"] == 12
        assert data["refusals"][0]["count"] == 12
    elif fmt == "csv":
        assert text.count("\n") == 13 and text.startswith("seq,time,category")
    else:
        assert "<svg" in text and "Verify this report yourself" in text
        # Opens offline: no scripts, no external stylesheets, images or fonts.
        assert "<script" not in text and not re.search(r"(src|href)=", text)


def test_report_without_a_period_covers_the_whole_log(
    log: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_dir, key = log
    out = tmp_path / "report.json"
    code, _, err = _run(
        capsys, "audit", "report", "--dir", str(log_dir), "--key", key, "--format", "json",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["events"]["total"] == 12
    times = [parse_time(json.loads(line)["time"]) for line in (log_dir / "entries.jsonl").open()]
    period = data["period"]
    assert parse_time(period["from"]) <= min(times)
    assert parse_time(period["to"]) > max(times)


def test_report_refuses_a_tampered_log(
    log: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_dir, key = log
    (log_dir / "entries.idx").write_bytes((log_dir / "entries.idx").read_bytes()[:-40])
    (log_dir / "entries.jsonl").write_bytes(
        b"".join((log_dir / "entries.jsonl").read_bytes().splitlines(keepends=True)[:-1])
    )
    code, _, err = _run(
        capsys, "audit", "report", "--dir", str(log_dir), "--key", key, "--from", "2000-01-01Z",
        "--to", "2100-01-01Z", "--out", str(tmp_path / "r.html"),
    )  # fmt: skip
    assert code == 1 and "11" in err and not (tmp_path / "r.html").exists()


def test_witness_process_cosigns_the_logs_checkpoint(log: tuple[Path, str], tmp_path: Path) -> None:
    log_dir, key = log
    state = tmp_path / "witness-state"
    serve = subprocess.Popen(
        [*IDMZ, "audit", "witness", "serve", "--state", str(state), "--name",
         "it.example/witness", "--log-key", key, "--port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        banner = serve.stdout.readline()
        match = re.search(r"^witness (\S+) listening on (http://\S+)$", banner.strip())
        assert match, banner
        witness_key, url = match.groups()
        done = subprocess.run(
            [*IDMZ, "audit", "witness", "submit", "--dir", str(log_dir), "--url", url,
             "--key", key, "--witness-key", witness_key],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "cosigned size 12 by it.example/witness" in done.stdout
        verified = subprocess.run(
            [*IDMZ, "audit", "verify", "--dir", str(log_dir), "--key", key,
             "--witness-key", witness_key, "--min-cosigners", "1"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stderr
    finally:
        serve.terminate()
        serve.wait(timeout=60)
