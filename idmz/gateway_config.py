"""Read ``gateway.toml`` into the edge gateway's frozen configuration (`edge.gateway.GatewayConfig`).

The only place the gateway's configuration file is read. Strict: an unknown key, a wrong type
or a missing required key is an `edge.errors.ConfigError` that names the key, so a typo never
silently falls back to a default. Relative paths are relative to the file's directory. The
reference is docs/edge.md; deploy/gateway.toml is a complete example.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bedrock.tables import Table
from edge.bearing import BEARINGS, BearingGeometry
from edge.config import GatewayConfig, VibrationChannel
from edge.credentials import load_credentials
from edge.errors import ConfigError
from edge.featurizer import FeaturizerSettings, IsoZones
from edge.model_signing import ModelTrust, load_trust
from edge.outbox import OutboxLimits
from edge.sources import Backoff, ModbusSource, OpcUaSecurity, OpcUaSource
from edge.tagmap import TagSpec
from edge.updates import UpdateSettings
from edge.uplink import SparkplugUplink, UplinkSettings
from pki.errors import MalformedIdentityError
from pki.identity import DeviceIdentity
from policies.release import ReleaseKind
from policies.sparkplug import SPARKPLUG_ID


@dataclass(frozen=True, slots=True)
class ModelFiles:
    model: Path
    signature: Path
    trust: ModelTrust


@dataclass(frozen=True, slots=True)
class LoadedGatewayConfig:
    gateway: GatewayConfig
    model: ModelFiles | None
    source: Path
    release: UpdateSettings | None = None  # [release]: pull signed releases (ADR 0100)


def _table(data: Mapping[str, Any], where: str) -> Table:
    return Table(data, where, error=ConfigError)


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _path(base: Path, value: str | None) -> Path | None:
    return None if value is None else _resolve(base, value)


def _backoff(t: Table) -> Backoff:
    return Backoff(
        initial_s=t.number("backoff_initial_s", 0.5), max_s=t.number("backoff_max_s", 30.0)
    )


def _bearing(t: Table) -> BearingGeometry:
    raw = t.raw("bearing", "skf-6205")
    if isinstance(raw, str):
        if raw not in BEARINGS:
            raise ConfigError(
                f"{t.where}.bearing: unknown bearing {raw!r}; known: {list(BEARINGS)}"
            )
        return BEARINGS[raw]
    b = _table(raw, f"{t.where}.bearing")
    geometry = BearingGeometry(
        name=b.text("name", "custom"),
        n_elements=b.integer("n_elements", required=True),
        ball_diameter_mm=b.number("ball_diameter_mm", required=True),
        pitch_diameter_mm=b.number("pitch_diameter_mm", required=True),
        contact_angle_deg=b.number("contact_angle_deg", 0.0),
    )
    b.done()
    return geometry


def _pair(t: Table, key: str, default: tuple[float, float]) -> tuple[float, float]:
    raw = t.array(key) if key in t.data else list(default)
    if len(raw) != 2 or not all(isinstance(v, int | float) for v in raw):
        raise ConfigError(f"{t.where}.{key}: expected [low, high]")
    return (float(raw[0]), float(raw[1]))


def _release(
    t: Table | None, base: Path, cred_dir: Path | None, state_dir: Path, model: ModelFiles | None
) -> UpdateSettings | None:
    """``[release]``: where the gateway pulls signed models and configuration from."""
    if t is None:
        return None
    if cred_dir is None:
        raise ConfigError("[release] needs gateway.credential_dir: the repository asks for mTLS")
    try:
        kinds = tuple(ReleaseKind(str(k)) for k in t.array("kinds") or ["model", "config"])
    except ValueError as exc:
        raise ConfigError(f"release.kinds: {exc}; known: model, config") from exc
    if ReleaseKind.MODEL in kinds and model is None:
        raise ConfigError("release.kinds has model: [model] (its trust roots) is required")
    settings = UpdateSettings(
        url=t.text("url", required=True),
        trusted_root=_resolve(base, t.text("trusted_root", required=True)),
        credential_dir=cred_dir,
        state_dir=state_dir / "release",
        interval_s=t.number("interval_s", 300.0),
        jitter_s=t.number("jitter_s", 60.0),
        timeout_s=t.number("timeout_s", 30.0),
        kinds=kinds,
    )
    t.done()
    return settings


def _sparkplug(u: Table, state_dir: Path) -> SparkplugUplink | None:
    """``format = "envelope"`` (the default) or ``"sparkplug"`` with ``sparkplug_group`` and
    ``sparkplug_node`` (ADR 0110); bdSeq lives in ``<state_dir>/sparkplug-bdseq``."""
    fmt = u.text("format", "envelope")
    if fmt not in ("envelope", "sparkplug"):
        raise ConfigError(f'[uplink] format must be "envelope" or "sparkplug"; found {fmt!r}')
    if fmt == "envelope":
        return None
    ids = [u.text(k, required=True) for k in ("sparkplug_group", "sparkplug_node")]
    for value in ids:
        if not SPARKPLUG_ID.fullmatch(value):
            raise ConfigError(f"[uplink] Sparkplug ids are [A-Za-z0-9][A-Za-z0-9_-]*; {value!r}")
    return SparkplugUplink(ids[0], ids[1], state_dir / "sparkplug-bdseq")


def parse_gateway_config(
    doc: Mapping[str, Any], base: Path, *, source: Path
) -> LoadedGatewayConfig:
    root = _table(doc, "gateway.toml")
    g = root.sub("gateway") or _table({}, "gateway")
    cred_dir = _path(base, g.text("credential_dir"))
    state_dir = _resolve(base, g.text("state_dir", "edge-state"))
    identity_text = g.text("identity")
    identity: DeviceIdentity | None = None
    if identity_text is not None:
        try:
            identity = DeviceIdentity.parse(identity_text)
        except MalformedIdentityError as exc:
            raise ConfigError(f"gateway.identity: {exc}") from exc
    if cred_dir is not None:
        creds = load_credentials(cred_dir)
        if identity is not None and identity != creds.identity:
            raise ConfigError(
                f"gateway.identity {identity.path} differs from {cred_dir}/identity "
                f"({creds.identity.path}); the certificate decides"
            )
        identity = creds.identity
    if identity is None:
        raise ConfigError("gateway.identity or gateway.credential_dir is required")
    telemetry_interval_s = g.number("telemetry_interval_s", 1.0)
    status_interval_s = g.number("status_interval_s", 10.0)
    stale_after_s = g.number("stale_after_s", 10.0)
    alarm_log = _path(state_dir, g.text("alarm_log", "alarms.jsonl"))
    g.done()

    m = root.sub("metrics")
    metrics_port = metrics_host = None
    if m is not None:
        metrics_port = m.integer("port", required=True)
        metrics_host = m.text("host", "127.0.0.1")
        m.done()

    o = root.sub("outbox") or _table({}, "outbox")
    outbox = OutboxLimits(
        max_outbox_bytes=o.integer("max_outbox_bytes", 256 * 1024 * 1024),
        ttl_s=o.number("ttl_s", 7 * 24 * 3600.0),
        overflow=o.text("overflow", "drop-oldest"),
        max_message_bytes=o.integer("max_message_bytes", 256 * 1024),
    )
    outbox_path = _resolve(state_dir, o.text("path", "outbox.db"))
    o.done()

    uplink: UplinkSettings | None = None
    u = root.sub("uplink")
    if u is not None:
        if cred_dir is None:
            raise ConfigError("[uplink] needs gateway.credential_dir (the device certificate)")
        uplink = UplinkSettings(
            host=u.text("host", required=True),
            port=u.integer("port", 8883),
            credential_dir=cred_dir,
            keepalive_s=u.integer("keepalive_s", 30),
            connect_timeout_s=u.number("connect_timeout_s", 10.0),
            max_inflight=u.integer("max_inflight", 32),
            backfill_messages_per_s=u.number("backfill_messages_per_s", 200.0),
            credential_check_interval_s=u.number("credential_check_interval_s", 2.0),
            backoff=_backoff(u),
            sparkplug=_sparkplug(u, state_dir),
        )
        u.done()

    model: ModelFiles | None = None
    mt = root.sub("model")
    if mt is not None:
        model_path = _resolve(base, mt.text("path", required=True))
        sig = _path(base, mt.text("signature")) or model_path.with_name(model_path.name + ".sig")
        roots = [p for p in (_path(base, x) for x in mt.array("trust_roots")) if p]
        crls = [p for p in (_path(base, x) for x in mt.array("crls")) if p]
        if not roots:
            raise ConfigError(
                "model.trust_roots: list the root certificate(s) model signers chain to"
            )
        trust = load_trust(
            roots,
            crls,
            allowed_signers=[str(s) for s in mt.array("allowed_signers")],
            unsafe_skip_revocation=mt.flag("unsafe_skip_revocation"),
            rollback_signers=[str(s) for s in mt.array("rollback_signers")],
        )
        model = ModelFiles(model_path, sig, trust)
        mt.done()

    release = _release(root.sub("release"), base, cred_dir, state_dir, model)

    opcua = []
    for i, raw in enumerate(root.array("opcua")):
        t = _table(raw, f"opcua[{i}]")
        security = None
        policy = t.text("security_policy", "None")
        if policy != "None":
            cert, key, server_cert = (
                _resolve(base, t.text(k, required=True))
                for k in ("certificate", "private_key", "server_certificate")
            )
            security = OpcUaSecurity(
                policy=policy,
                mode=t.text("security_mode", "SignAndEncrypt"),
                certificate=cert,
                private_key=key,
                server_certificate=server_cert,
            )
        opcua.append(
            OpcUaSource(
                name=t.text("name", required=True),
                endpoint=t.text("endpoint", required=True),
                publishing_interval_ms=t.number("publishing_interval_ms", 100.0),
                queue_size=t.integer("queue_size", 50),
                connect_timeout_s=t.number("connect_timeout_s", 5.0),
                request_timeout_s=t.number("request_timeout_s", 4.0),
                watchdog_interval_s=t.number("watchdog_interval_s", 1.0),
                backoff=_backoff(t),
                security=security,
            )
        )
        t.done()
    modbus = []
    for i, raw in enumerate(root.array("modbus")):
        t = _table(raw, f"modbus[{i}]")
        modbus.append(
            ModbusSource(
                name=t.text("name", required=True),
                host=t.text("host", required=True),
                port=t.integer("port", 502),
                unit_id=t.integer("unit_id", 1),
                poll_interval_s=t.number("poll_interval_s", 1.0),
                timeout_s=t.number("timeout_s", 2.0),
                backoff=_backoff(t),
            )
        )
        t.done()
    tags = []
    for i, raw in enumerate(root.array("tag")):
        t = _table(raw, f"tag[{i}]")
        address = t.raw("address")
        if not isinstance(address, str | int) or isinstance(address, bool):
            raise ConfigError(f"tag[{i}].address: a node id string or a register number")
        tags.append(
            TagSpec(
                name=t.text("name", required=True),
                source=t.text("source", required=True),
                address=str(address),
                unit=t.text("unit", ""),
                asset=t.text("asset", required=True),
                asset_path=t.text("asset_path", identity.path),
                kind=t.text("kind", "scalar"),
                safe_min=t.number("safe_min"),
                safe_max=t.number("safe_max"),
                data_type=t.text("data_type", "float32"),
                scale=t.number("scale", 1.0),
            )
        )
        t.done()
    vibration = []
    for i, raw in enumerate(root.array("vibration")):
        t = _table(raw, f"vibration[{i}]")
        zones_t = t.sub("zones")
        zones = IsoZones()
        if zones_t is not None:
            zones = IsoZones(
                zones_t.number("ab_mm_s", 1.4),
                zones_t.number("bc_mm_s", 2.8),
                zones_t.number("cd_mm_s", 4.5),
            )
            zones_t.done()
        fz = FeaturizerSettings(
            sample_rate_hz=t.number("sample_rate_hz", required=True),
            bearing=_bearing(t),
            acceleration_unit=t.text("acceleration_unit", "g"),
            envelope_band_hz=_pair(t, "envelope_band_hz", (2000.0, 5000.0)),
            zones=zones,
        )
        vibration.append(
            VibrationChannel(
                tag=t.text("tag", required=True),
                featurizer=fz,
                window_s=t.number("window_s", 1.0),
                shaft_speed_tag=t.text("shaft_speed_tag"),
                shaft_rpm=t.number("shaft_rpm"),
                temperature_tag=t.text("temperature_tag"),
                realarm_interval_s=t.number("realarm_interval_s", 60.0),
                load_n=t.number("load_n"),
            )
        )
        t.done()
    root.done()
    config = GatewayConfig(
        identity=identity,
        tags=tuple(tags),
        outbox_path=outbox_path,
        opcua=tuple(opcua),
        modbus=tuple(modbus),
        vibration=tuple(vibration),
        outbox=outbox,
        uplink=uplink,
        telemetry_interval_s=telemetry_interval_s,
        status_interval_s=status_interval_s,
        stale_after_s=stale_after_s,
        alarm_log=alarm_log,
        state_dir=state_dir,
        metrics_port=metrics_port,
        metrics_host=metrics_host or "127.0.0.1",
    )
    return LoadedGatewayConfig(config, model, source, release)


def load_gateway_config(path: Path) -> LoadedGatewayConfig:
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"gateway config {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return parse_gateway_config(doc, path.resolve().parent, source=path)
