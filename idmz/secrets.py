"""The CA passphrase: one rule for every part of the composition root that opens or creates
the local CA (`idmz ca ...` and the provisioning service).

``IDMZ_CA_PASSPHRASE_FILE`` (a 0600 file), else ``IDMZ_CA_PASSPHRASE``, else the generated
``<home>/ca/passphrase`` (0600). Creating a CA without one generates that file and says so
through ``announce`` (the CLI prints it, the service logs it); opening a CA without one is a
`SettingsError` (exit code 2). The passphrase itself is never logged.
"""

from __future__ import annotations

from collections.abc import Callable

from idmz.home import Home, SettingsError, generate_secret_file, load_secret

PASSPHRASE_VAR = "IDMZ_CA_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
PASSPHRASE_FILE = "passphrase"  # noqa: S105 - a file name


def ca_passphrase(
    home: Home, *, create: bool, announce: Callable[[str], None] | None = None
) -> bytes:
    default = home.ca_dir / PASSPHRASE_FILE
    value = load_secret(PASSPHRASE_VAR, default_file=default)
    if value is not None:
        return value
    if not create:
        raise SettingsError(
            f"no CA passphrase: set {PASSPHRASE_VAR}_FILE (a 0600 file) or {PASSPHRASE_VAR}, "
            f"or keep the generated {default}"
        )
    value = generate_secret_file(default)
    if announce is not None:
        announce(
            f"generated a random CA passphrase into {default} (mode 0600); back it up "
            f"separately from the CA keys, or set {PASSPHRASE_VAR}_FILE next time"
        )
    return value
