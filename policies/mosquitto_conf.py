"""Read Mosquitto 2.0 configuration and ACL text into plain records, keeping line numbers.

Only what the deployment checks need (mosquitto.conf(5), Mosquitto 2.0):

* Options before the first ``listener``/``connection`` are global, or settings of the default
  listener (opened by ``port``, or on 1883 loopback when no listener is configured at all).
* ``listener <port> [<bind address>]`` starts a listener section; ``connection <name>`` a bridge.
* With ``per_listener_settings false`` (the default) the security options (``allow_anonymous``,
  ``acl_file``, ``password_file``, ``plugin``...) are global wherever they are written.
* ACL files: ``user <name>`` starts a user block; ``topic [read|write|readwrite|deny] <topic>``
  (no access word means readwrite); ``pattern ...`` lines apply to every client. Lines before
  the first ``user`` apply to anonymous clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SECURITY_OPTIONS = frozenset(
    {"allow_anonymous", "acl_file", "password_file", "psk_file", "plugin", "auth_plugin",
     "auth_opt_", "allow_zero_length_clientid", "auto_id_prefix"}
)  # fmt: skip


@dataclass
class Option:
    value: str
    line: int


@dataclass
class Section:
    """A listener (``kind="listener"``), a bridge (``"bridge"``) or the global/default part."""

    kind: str
    name: str  # listener port, bridge name, or "global"
    line: int
    bind: str = ""
    options: dict[str, Option] = field(default_factory=dict)
    multi: dict[str, list[Option]] = field(default_factory=dict)  # repeated options (topic, ...)

    def get(self, key: str) -> Option | None:
        return self.options.get(key)


@dataclass
class MosquittoConfig:
    global_section: Section
    listeners: list[Section]
    bridges: list[Section]
    per_listener_settings: bool
    includes: list[Option]

    def security(self, listener: Section, key: str) -> Option | None:
        """A security option as it applies to ``listener``."""
        if self.per_listener_settings:
            return listener.get(key) or (
                self.global_section.get(key) if listener.kind == "default" else None
            )
        found = [s.get(key) for s in (self.global_section, *self.listeners, *self.bridges)]
        present = [o for o in found if o is not None]
        return max(present, key=lambda o: o.line) if present else None  # the last one wins


def parse_config(text: str) -> MosquittoConfig:
    glob = Section("global", "global", 0)
    current = glob
    listeners: list[Section] = []
    bridges: list[Section] = []
    includes: list[Option] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "listener":
            port, _, bind = value.partition(" ")
            current = Section("listener", port, number, bind.strip())
            listeners.append(current)
            continue
        if key == "connection":
            current = Section("bridge", value, number)
            bridges.append(current)
            continue
        if key == "include_dir":
            includes.append(Option(value, number))
        option = Option(value, number)
        current.multi.setdefault(key, []).append(option)
        current.options[key] = option
    per_listener = (glob.get("per_listener_settings") or Option("false", 0)).value == "true"
    if "port" in glob.options or not listeners:
        # The default listener takes the listener options written before any `listener`.
        port_opt = glob.get("port")
        default = Section(
            "default", port_opt.value if port_opt else "1883", port_opt.line if port_opt else 0
        )
        default.bind = "" if port_opt else "127.0.0.1"
        default.options = glob.options
        default.multi = glob.multi
        listeners.insert(0, default)
    return MosquittoConfig(glob, listeners, bridges, per_listener, includes)


@dataclass(frozen=True)
class AclEntry:
    user: str | None  # None: anonymous clients (before the first user line) or a pattern
    kind: str  # "topic" or "pattern"
    access: str  # read | write | readwrite | deny
    topic: str
    line: int

    @property
    def writes(self) -> bool:
        return self.access in ("write", "readwrite")


def parse_acl(text: str) -> list[AclEntry]:
    entries = []
    user: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        rest = rest.strip()
        if key == "user":
            user = rest
        elif key in ("topic", "pattern"):
            access, _, topic = rest.partition(" ")
            if access not in ("read", "write", "readwrite", "deny") or not topic.strip():
                access, topic = "readwrite", rest
            entries.append(
                AclEntry(user if key == "topic" else None, key, access, topic.strip(), number)
            )
    return entries
