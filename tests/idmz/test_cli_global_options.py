"""Global options work where people type them: before the command or after it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from idmz.cli import build_parser


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["ca", "fingerprint"], (None, "warning", "text")),
        (["--home", "/a", "ca", "fingerprint"], ("/a", "warning", "text")),
        (["ca", "fingerprint", "--home", "/b"], ("/b", "warning", "text")),
        (["audit", "verify", "--log-level", "debug", "--log-format", "json"], (None, "debug", "json")),
        (["--home", "/a", "--log-level", "error", "ca", "fingerprint", "--home", "/c"],
         ("/c", "error", "text")),
    ],
)  # fmt: skip
def test_global_options_are_accepted_before_and_after_the_command(
    argv: list[str], expected: tuple[str | None, str, str]
) -> None:
    args = build_parser().parse_args(argv)
    assert (args.home, args.log_level, args.log_format) == expected


def test_every_subcommand_accepts_the_global_options() -> None:
    parser = build_parser()
    leaves: list[list[str]] = []

    def walk(p: object, path: list[str]) -> None:
        subs = [a for a in p._actions if hasattr(a, "choices") and isinstance(a.choices, dict)]  # type: ignore[attr-defined]
        if not subs:
            leaves.append(path)
        for action in subs:
            for name, child in action.choices.items():
                walk(child, [*path, name])

    walk(parser, [])
    assert len(leaves) > 20
    for path in leaves:
        p: object = parser
        for name in path:
            p = next(
                a.choices[name]
                for a in p._actions  # type: ignore[attr-defined]
                if hasattr(a, "choices") and isinstance(a.choices, dict) and name in a.choices
            )
        options = {o for a in p._actions for o in a.option_strings}  # type: ignore[attr-defined]
        assert {"--home", "--log-level", "--log-format"} <= options, path


def test_ca_init_with_home_after_the_command_creates_the_ca_there(tmp_path: Path) -> None:
    home = tmp_path / "plant"
    env = {"IDMZ_CA_PASSPHRASE": "global-options-test-passphrase", "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-m", "idmz", "ca", "init", "--home", str(home)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (home / "ca").is_dir()
