"""The bottom floor: what every part of idmz shares and that imports nothing of ours (ADR 0004).

Four modules and nothing else:

* ``bedrock.errors``  the error categories (what the caller does next), with the exit code
  and HTTP status each one means, chosen by ``isinstance``;
* ``bedrock.files``   one atomic file write (``write_atomic``) and ``fsync_dir``;
* ``bedrock.clock``   the clock as an input (``Clock``, ``SystemClock``, ``FixedClock``, ``utc_now``);
* ``bedrock.tables``  the strict configuration reader (``Table``, ``type_mismatch``).

Example::

    >>> from bedrock.errors import ConfigError, exit_code_for
    >>> class RelayConfigError(ConfigError): ...
    >>> exit_code_for(RelayConfigError("relay.toml: [tls] ca is required"))
    2
"""
