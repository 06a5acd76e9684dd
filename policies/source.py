"""Parsing TOML and YAML policy text, and finding the line a key is on for error messages.

``tomllib`` reports lines only for syntax errors, so for a key that parses but is invalid the
line comes from `toml_key_line`, a small scanner over table headers and ``key =`` lines (good
for the documents people write; None when it cannot tell). YAML keeps node positions, so
`yaml_key_line` is exact. YAML mappings with a duplicate key are refused: PyYAML would silently
keep the last value, and a reviewer reading the first one would approve a different policy.
`PolicyText` reads the parsed document key by key and points every refusal at its line.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import yaml

from bedrock.tables import type_mismatch, unknown_keys
from policies.errors import PolicyConfigError
from policies.topic import LEVEL

KeyPath = Sequence[str | int]
T = TypeVar("T")

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*="""
)
_DOTTED_PART = re.compile(r"""\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*(?:\.|$)""")
_TOML_ERROR_LINE = re.compile(r"at line (\d+)")


def _dotted(s: str) -> tuple[str, ...]:
    return tuple(m.group(1).strip("\"'") for m in _DOTTED_PART.finditer(s))


def toml_key_line(text: str, path: KeyPath) -> int | None:
    """The line that defines the longest prefix of ``path`` (ints index ``[[arrays]]``)."""
    want = tuple(str(p) for p in path)
    best_line, best_len = None, 0
    table: tuple[str, ...] = ()
    array_counts: dict[tuple[str, ...], int] = {}
    in_multiline = False
    for number, line in enumerate(text.splitlines(), 1):
        quotes = line.count("'''") + line.count('"""')
        if in_multiline:
            in_multiline = quotes % 2 == 0
            continue
        if quotes % 2 == 1:
            in_multiline = True
        header = _HEADER.match(line)
        if header:
            name = _dotted(header.group(2))
            if header.group(1) == "[[":
                index = array_counts.get(name, 0)
                array_counts[name] = index + 1
                name = (*name, str(index))
            table = full = name
        else:
            key = _KEY.match(line)
            if not key:
                continue
            full = table + _dotted(key.group(1))
        if len(full) > best_len and want[: len(full)] == full:
            best_line, best_len = number, len(full)
    return best_line


def yaml_key_line(text: str, path: KeyPath) -> int | None:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise PolicyConfigError(
                "duplicate key (YAML would silently keep the last one)",
                key=str(key),
                line=key_node.start_mark.line + 1,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def parse_text(text: str, fmt: str, source: str) -> dict[str, Any]:
    """Parse ``text`` as ``toml`` or ``yaml`` into a dict; syntax errors carry the line."""
    if fmt == "toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = _TOML_ERROR_LINE.search(str(exc))
            raise PolicyConfigError(
                f"not valid TOML: {exc}", line=int(m.group(1)) if m else None, source=source
            ) from exc
    if fmt == "yaml":
        try:
            data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        except PolicyConfigError as exc:
            raise PolicyConfigError(exc.message, key=exc.key, line=exc.line, source=source) from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise PolicyConfigError(
                f"not valid YAML: {exc}",
                line=mark.line + 1 if mark is not None else None,
                source=source,
            ) from exc
        if not isinstance(data, dict):
            raise PolicyConfigError("the document must be a mapping of keys", source=source)
        return data
    raise PolicyConfigError(f"unknown policy format {fmt!r}; expected toml or yaml", source=source)


def key_line(text: str, fmt: str, path: KeyPath) -> int | None:
    return toml_key_line(text, path) if fmt == "toml" else yaml_key_line(text, path)


class PolicyText:
    """A policy's text read key by key: each accessor checks the type and refuses with a
    `PolicyConfigError` naming the dotted key, its line and the source file."""

    def __init__(self, text: str, fmt: str, source: str) -> None:
        self.text, self.fmt, self.source = text, fmt, source

    def fail(self, path: KeyPath, message: str) -> NoReturn:
        raise PolicyConfigError(
            message,
            key=".".join(str(p) for p in path),
            line=key_line(self.text, self.fmt, path),
            source=self.source,
        )

    def get(self, table: Mapping[str, Any], path: KeyPath, key: str, kind: type[T]) -> T:
        if key not in table:
            self.fail([*path, key], f"required key is missing (expected {kind.__name__})")
        return self.typed(table[key], [*path, key], kind)

    def opt(
        self, table: Mapping[str, Any], path: KeyPath, key: str, kind: type[T], default: T
    ) -> T:
        return self.typed(table[key], [*path, key], kind) if key in table else default

    def typed(self, value: Any, path: KeyPath, kind: type[T]) -> T:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)  # type: ignore[return-value]
        wrong = type_mismatch(value, (kind,))  # the strict rule every config reader shares
        if wrong is not None:
            self.fail(path, wrong)
        return value  # type: ignore[no-any-return]

    def table(self, parent: Mapping[str, Any], path: KeyPath, key: str) -> dict[str, Any]:
        return self.opt(parent, path, key, dict, {})

    def only(self, table: Mapping[str, Any], path: KeyPath, allowed: set[str]) -> None:
        for key in unknown_keys(table, allowed):
            self.fail([*path, key], f"unknown key; expected one of {', '.join(sorted(allowed))}")

    def label(self, value: Any, path: KeyPath) -> str:
        text = self.typed(value, path, str)
        if not LEVEL.fullmatch(text):
            self.fail(path, f"must match [a-z0-9][a-z0-9_-]{{0,62}}; found {text!r}")
        return text

    def str_list(self, table: Mapping[str, Any], path: KeyPath, key: str) -> list[str]:
        items = self.opt(table, path, key, list, [])
        return [self.typed(v, [*path, key, i], str) for i, v in enumerate(items)]

    def positive(self, table: Mapping[str, Any], path: KeyPath, key: str, kind: type[T]) -> T:
        value = self.get(table, path, key, kind)
        if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
            self.fail([*path, key], f"must be a positive number; found {value!r}")
        return value
