"""The strict configuration reader: a TOML table (or any parsed mapping) read key by key
(ADR 0007). One rule for every configuration file the product reads:

* a value has the type asked for; a boolean is never a number, an integer is accepted where a
  float is asked for (and converted);
* a missing required key, and any key nobody asked for (a typo), is refused by name;
* the caller's error type is raised, so each package keeps its own error tree.

    >>> t = Table({"port": 8883, "tls": {"ca": "ca.pem"}}, "relay.toml", error=ValueError)
    >>> t.integer("port"), t.sub("tls").text("ca")
    (8883, 'ca.pem')
    >>> t.done()
    >>> Table({"port": True}, "relay.toml", error=ValueError).integer("port")
    Traceback (most recent call last):
    ValueError: relay.toml.port: expected int; found a boolean
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

ErrorFactory = Callable[[str], Exception]


def type_mismatch(value: object, kinds: tuple[type, ...]) -> str | None:
    """Why ``value`` is not one of ``kinds`` under the strict rule, or None when it is."""
    if isinstance(value, bool) and bool not in kinds:
        return f"expected {kinds[0].__name__}; found a boolean"
    if not isinstance(value, kinds):
        return f"expected {kinds[0].__name__}; found {type(value).__name__}"
    return None


def unknown_keys(data: Iterable[str], allowed: Iterable[str]) -> list[str]:
    """The keys of ``data`` outside ``allowed``, sorted."""
    return sorted(set(data) - set(allowed))


class Table:
    """A table read key by key; ``done()`` refuses keys nobody asked for. ``where`` names the
    table in errors (``gateway.toml.uplink``); ``error`` makes the exception to raise."""

    def __init__(self, data: Mapping[str, Any], where: str, *, error: ErrorFactory) -> None:
        if not isinstance(data, Mapping):
            raise error(f"{where} must be a table")
        self.data = data
        self.where = where
        self.used: set[str] = set()
        self._error = error

    def fail(self, message: str) -> Exception:
        """An error about this table, for the caller to raise."""
        return self._error(f"{self.where}: {message}")

    def _get(self, key: str, types: tuple[type, ...], default: Any, required: bool) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self._error(f"{self.where}.{key} is required")
            return default
        value = self.data[key]
        wrong = type_mismatch(value, types)
        if wrong is not None:
            raise self._error(f"{self.where}.{key}: {wrong}")
        return value

    def raw(self, key: str, default: Any = None) -> Any:
        """The value as parsed, for a key the caller checks itself (marked as read)."""
        self.used.add(key)
        return self.data.get(key, default)

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        return self._get(key, (str,), default, required)

    def number(self, key: str, default: float | None = None, *, required: bool = False) -> Any:
        v = self._get(key, (int, float), default, required)
        return float(v) if v is not None else None

    def integer(self, key: str, default: int | None = None, *, required: bool = False) -> Any:
        return self._get(key, (int,), default, required)

    def flag(self, key: str, default: bool = False) -> bool:
        return bool(self._get(key, (bool,), default, False))

    def array(self, key: str) -> list[Any]:
        return list(self._get(key, (list,), [], False))

    def sub(self, key: str) -> Table | None:
        v = self._get(key, (dict,), None, False)
        return Table(v, f"{self.where}.{key}", error=self._error) if v is not None else None

    def sub_or_empty(self, key: str) -> Table:
        return self.sub(key) or Table({}, f"{self.where}.{key}", error=self._error)

    def only(self, allowed: Iterable[str]) -> Mapping[str, Any]:
        """Refuse any key outside ``allowed`` now; the table's data, for a caller that reads
        it whole (e.g. into a frozen dataclass that checks its own fields)."""
        unknown = unknown_keys(self.data, allowed)
        if unknown:
            raise self._error(
                f"{self.where}: unknown key(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(sorted(allowed))}"
            )
        self.used.update(self.data)
        return self.data

    def done(self) -> None:
        unknown = unknown_keys(self.data, self.used)
        if unknown:
            raise self._error(f"{self.where}: unknown key(s) {', '.join(unknown)}")
