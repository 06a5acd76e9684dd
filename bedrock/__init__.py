"""The bottom floor: what every part of idmz shares and that imports nothing of ours (ADR 0007).

Six modules and nothing else:

* ``bedrock.errors``  the error categories (what the caller does next), with the exit code
  and HTTP status each one means, chosen by ``isinstance``;
* ``bedrock.files``   one atomic file write (``write_atomic``) and ``fsync_dir``;
* ``bedrock.clock``   the clock as an input (``Clock``, ``SystemClock``, ``FixedClock``, ``utc_now``);
* ``bedrock.tables``  the strict configuration reader (``Table``, ``type_mismatch``);
* ``bedrock.surface`` a package's declared names resolved on first use (``lazy_surface``);
* ``bedrock.serving`` a threading HTTP server with a connection cap (``CappedHTTPServer``).

Example::

    >>> from bedrock.errors import ConfigError, exit_code_for
    >>> class RelayConfigError(ConfigError): ...
    >>> exit_code_for(RelayConfigError("relay.toml: [tls] ca is required"))
    2
"""

from bedrock.clock import Clock, FixedClock, SystemClock, utc_now
from bedrock.errors import (
    AccessDeniedError,
    CapacityError,
    ConfigError,
    IdmzError,
    OperationError,
    UpstreamError,
    UsageError,
    VerificationError,
    category_of,
    exit_code_for,
    http_status_for,
)
from bedrock.files import fsync_dir, write_atomic
from bedrock.serving import CappedHTTPServer
from bedrock.surface import lazy_surface
from bedrock.tables import Table, type_mismatch, unknown_keys

# The public surface (ADR 0004): all of it; the floor is small and imports nothing heavy.
__all__ = [
    "AccessDeniedError",
    "CapacityError",
    "CappedHTTPServer",
    "Clock",
    "ConfigError",
    "FixedClock",
    "IdmzError",
    "OperationError",
    "SystemClock",
    "Table",
    "UpstreamError",
    "UsageError",
    "VerificationError",
    "category_of",
    "exit_code_for",
    "fsync_dir",
    "http_status_for",
    "lazy_surface",
    "type_mismatch",
    "unknown_keys",
    "utc_now",
    "write_atomic",
]
