"""Sparkplug B in the policy (ADR 0110): the node map, the topic grammar, the rendered grants,
and the payload codec against an independent implementation (pysparkplug) and arbitrary bytes."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pysparkplug as spb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pki.identity import DeviceIdentity
from policies import PolicyConfigError, ReasonCode, Registry, load_policy
from policies.broker_config import BrokerSettings, TlsFiles, render_brokers
from policies.sparkplug import MessageType, SparkplugPolicy, parse_topic, route_sparkplug
from policies.sparkplug_checks import Checked, check_sparkplug_payload
from policies.sparkplug_codec import (
    DOUBLE,
    UINT64,
    MalformedPayloadError,
    decode_sparkplug,
    encode_sparkplug,
)
from policies.sparkplug_grants import sparkplug_grants
from tests.support.sparkplug_policy import GROUP, HOST_ID, NODE_1, NODE_2, sparkplug_policy_text


def sp_policy() -> SparkplugPolicy:
    sp = load_policy(sparkplug_policy_text()).sparkplug
    assert sp is not None
    return sp


def test_a_policy_without_sparkplug_keeps_its_canonical_form() -> None:
    from tests.support.sparkplug_policy import REPO

    plain = load_policy((REPO / "deploy" / "policy" / "plant.toml").read_text())
    assert plain.sparkplug is None and "sparkplug" not in plain.canonical()
    assert "sparkplug" in load_policy(sparkplug_policy_text()).canonical()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (('group = "plant1"\nnode = "press-02"', 'group = "plant1"\nnode = "press-01"'),
         f"sparkplug.nodes.{NODE_2}"),
        (('group = "plant1"\nnode = "press-02"', 'group = "STATE"\nnode = "press-02"'),
         f"sparkplug.nodes.{NODE_2}.group"),
        (('node = "press-02"', 'node = "press/02"'), f"sparkplug.nodes.{NODE_2}.node"),
        (('devices = ["plc"]', 'devices = ["plc", "plc"]'), f"sparkplug.nodes.{NODE_2}.devices"),
        (('[sparkplug.nodes."acme/plant1/stamping/line1/cell4/spb-gw-01"]',
          '[sparkplug.nodes."acme/plant1/stamping/line1/cell1/press-01"]'),
         "sparkplug.nodes.acme/plant1/stamping/line1/cell1/press-01"),
        (("max_metrics = 500", "max_metrics = 0"), "sparkplug.max_metrics"),
        (("max_metrics = 500", "max_metric = 500"), "sparkplug.max_metric"),
    ],
)  # fmt: skip
def test_a_wrong_node_map_is_refused_by_key(change: tuple[str, str], key: str) -> None:
    text = sparkplug_policy_text()
    assert change[0] in text
    text = text.replace(change[0], change[1])
    with pytest.raises(PolicyConfigError) as exc:
        load_policy(text)
    assert exc.value.key == key


def test_topics_are_parsed_strictly() -> None:
    assert parse_topic(f"spBv1.0/{GROUP}/NDATA/press-01") is not None
    for bad in (
        f"spBv1.0/{GROUP}/NDATA/press-01/plc",  # a node message with a device level
        f"spBv1.0/{GROUP}/DDATA/press-01",  # a device message without one
        f"spBv1.0/{GROUP}/ndata/press-01",
        f"spBv1.0/{GROUP}/NDATA/press+01",
        f"spBv1.0/{GROUP}/NDATA/press-01/plc/x",
        "spBv1.0/STATE/scada",
        f"spAv1.0/{GROUP}/NDATA/press-01",
    ):
        assert parse_topic(bad) is None, bad


@pytest.mark.parametrize(
    ("topic", "code"),
    [
        (f"spBv1.0/{GROUP}/NCMD/press-01", ReasonCode.SPARKPLUG_COMMAND_FROM_OT),
        (f"spBv1.0/{GROUP}/DCMD/press-01/plc", ReasonCode.SPARKPLUG_COMMAND_FROM_OT),
        (f"spBv1.0/{GROUP}/NDATA/press-77", ReasonCode.SPARKPLUG_NODE_UNKNOWN),
        (f"spBv1.0/{GROUP}/DDATA/press-02/drive", ReasonCode.SPARKPLUG_DEVICE_NOT_ALLOWED),
        (f"spBv1.0/STATE/{HOST_ID}", ReasonCode.SPARKPLUG_TOPIC_INVALID),
    ],
)
def test_route_refuses_what_no_edge_node_may_send(topic: str, code: ReasonCode) -> None:
    assert route_sparkplug(sp_policy(), topic)[2].reason_code is code


def _render() -> tuple[str, str]:
    policy = load_policy(sparkplug_policy_text())
    tls = TlsFiles("/ca", "/cert", "/key", "/crl")
    devices = (DeviceIdentity.parse(NODE_1), DeviceIdentity.parse(NODE_2))
    out = render_brokers(policy, Registry(devices=devices), ot=BrokerSettings(1, tls, "/a"),
                         it=BrokerSettings(2, tls, "/b"))  # fmt: skip
    return out.ot.rules, out.it.rules


def test_an_edge_node_may_write_exactly_its_own_node_and_devices() -> None:
    ot, _ = _render()
    writes = {line.split()[2] for line in ot.splitlines() if line.startswith(f"write {NODE_2} ")}
    assert writes == {
        f"{NODE_2}/status",
        *(f"spBv1.0/{GROUP}/{t}/press-02" for t in ("NBIRTH", "NDEATH", "NDATA")),
        *(f"spBv1.0/{GROUP}/{t}/press-02/plc" for t in ("DBIRTH", "DDEATH", "DDATA")),
    }
    reads = [line for line in ot.splitlines() if line.startswith(f"read {NODE_2} ")]
    assert reads == [f"read {NODE_2} spBv1.0/STATE/{HOST_ID}"]
    assert not [line for line in ot.splitlines() if "CMD" in line]
    # Only the appliance's own identity writes the STATE.
    assert [line.split()[1] for line in ot.splitlines() if line.startswith("write") and "STATE"
            in line] == ["acme/it/idmz-relay"]  # fmt: skip


def test_on_it_the_relay_writes_the_nodes_and_their_birth_cache_and_consumers_only_read() -> None:
    _, it = _render()
    relay = {ln.split()[2] for ln in it.splitlines() if ln.startswith("write acme/it/idmz-relay")}
    assert f"$sparkplug/certificates/spBv1.0/{GROUP}/NBIRTH/press-01" in relay
    assert f"$sparkplug/certificates/spBv1.0/{GROUP}/DBIRTH/press-01/drive" in relay
    assert not [t for t in relay if "CMD" in t or "STATE" in t]
    writers = {ln.split()[1] for ln in it.splitlines() if ln.startswith("write")}
    assert writers == {"acme/it/idmz-relay"}
    assert f"read acme/it/historian $sparkplug/certificates/spBv1.0/{GROUP}/#" in it


def test_unregistered_nodes_get_no_grants() -> None:
    policy = load_policy(sparkplug_policy_text())
    notes: list[str] = []
    grants = sparkplug_grants(policy, [DeviceIdentity.parse(NODE_1)], notes)
    assert NODE_2 not in {user for _zone, user, _g in grants}
    assert any(NODE_2 in n for n in notes)


# -- the codec against an independent implementation and arbitrary bytes -------------------


def test_pysparkplug_payloads_decode_here_and_ours_decode_there() -> None:
    now = spb.get_current_timestamp()
    theirs = spb.NBirth(timestamp=now, seq=0, metrics=(
        spb.Metric(timestamp=now, name="bdSeq", datatype=spb.DataType.INT64, value=5),
        spb.Metric(timestamp=now, name="temp", datatype=spb.DataType.FLOAT, value=21.5, alias=3),
        spb.Metric(timestamp=now, name="on", datatype=spb.DataType.BOOLEAN, value=True),
    )).encode(include_dtypes=True)  # fmt: skip
    decoded = decode_sparkplug(theirs)
    assert [(m.name, m.alias, m.datatype) for m in decoded.metrics] == [
        ("bdSeq", 0, 4), ("temp", 3, 9), ("on", 0, 11)
    ]  # fmt: skip
    checked = check_sparkplug_payload(sp_policy().limits, MessageType.NBIRTH, theirs, now_ms=now)
    assert isinstance(checked, Checked) and checked.bd_seq == 5
    ours = encode_sparkplug(timestamp=now, seq=4, metrics=[
        {"name": "bdSeq", "datatype": UINT64, "long_value": 2},
        {"name": "x", "alias": 9, "datatype": DOUBLE, "double_value": 1.25},
    ])  # fmt: skip
    there = spb.NBirth.decode(ours)
    assert there.seq == 4 and [(m.name, m.value) for m in there.metrics] == [
        ("bdSeq", 2), ("x", 1.25)
    ]  # fmt: skip


def _nested_templates(depth: int) -> bytes:
    """A metric whose template holds a metric whose template ... ``depth`` deep."""
    inner = b""
    for _ in range(depth):
        metric = b"\x92\x01" + _varint(len(inner)) + inner  # Metric.template_value (18)
        inner = b"\x12" + _varint(len(metric)) + metric  # Template.metrics (2)
    metric = b"\x92\x01" + _varint(len(inner)) + inner
    return b"\x12" + _varint(len(metric)) + metric  # Payload.metrics (2)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def test_nesting_beyond_the_parsers_recursion_limit_is_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedPayloadError):
        decode_sparkplug(_nested_templates(500))
    refusal = check_sparkplug_payload(
        sp_policy().limits, MessageType.NDATA, _nested_templates(500), now_ms=0
    )
    assert not isinstance(refusal, Checked)
    assert refusal.reason_code is ReasonCode.SPARKPLUG_MALFORMED


def _field(number: int, data: bytes | int) -> bytes:
    """One protobuf field: a varint, or length-delimited bytes."""
    if isinstance(data, int):
        return _varint(number << 3) + _varint(data)
    return _varint(number << 3 | 2) + _varint(len(data)) + data


_BAD_UTF8 = b"t\xff\xc0\x80"  # not UTF-8: upb hands proto2 strings like this out as bytes
_STRING = 12  # DataType String


@pytest.mark.parametrize(
    "metric",
    [
        _field(1, _BAD_UTF8) + _field(4, _STRING) + _field(15, b"ok"),  # its name
        _field(1, b"t") + _field(4, _STRING) + _field(15, _BAD_UTF8),  # its string value
        _field(1, b"t") + _field(4, _STRING) + _field(9, _field(1, _BAD_UTF8)),  # a property key
        _field(1, b"t") + _field(4, 16) + _field(17, _field(2, _BAD_UTF8)),  # a DataSet column
    ],
    ids=["name", "string_value", "property_key", "dataset_column"],
)
def test_a_string_of_invalid_utf8_is_malformed_not_handed_to_hosts_as_bytes(metric: bytes) -> None:
    """Sparkplug strings are UTF-8 (protobuf ``string``). A proto2 parser that does not check
    gives the IT host application ``bytes`` where its type says ``str`` (pysparkplug does): the
    relay refuses the payload instead of forwarding it."""
    now = 1_000_000
    bd_seq = _field(1, b"bdSeq") + _field(4, UINT64) + _field(11, 1)
    raw = _field(1, now) + _field(2, bd_seq) + _field(2, metric) + _field(3, 0)
    for mtype in (MessageType.NBIRTH, MessageType.DBIRTH, MessageType.NDATA):
        refusal = check_sparkplug_payload(sp_policy().limits, mtype, raw, now_ms=now)
        assert not isinstance(refusal, Checked), mtype
        assert refusal.reason_code is ReasonCode.SPARKPLUG_MALFORMED, mtype
    with pytest.raises(MalformedPayloadError):
        decode_sparkplug(raw)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=512), st.sampled_from(list(MessageType)))
def test_the_checks_are_total_over_arbitrary_bytes(raw: bytes, mtype: MessageType) -> None:
    with contextlib.suppress(MalformedPayloadError):
        decode_sparkplug(raw)
    result = check_sparkplug_payload(sp_policy().limits, mtype, raw, now_ms=0)
    assert isinstance(result, Checked) or not result.allowed


def test_policy_check_passes_a_rendered_sparkplug_deployment_and_refuses_a_foreign_node_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from idmz.cli import main
    from tests.support.ca import make_test_pki

    pki = make_test_pki(tmp_path / "pki")
    try:
        server = pki.server()
        policy = tmp_path / "plant.toml"
        policy.write_text(sparkplug_policy_text())
        devices = tmp_path / "devices.toml"
        devices.write_text(
            f'devices = ["{NODE_1}", "{NODE_2}"]\nconsumers = ["acme/it/historian"]\n'
        )
        out = tmp_path / "deploy"
        args = ["policy", "render", "--policy", str(policy), "--devices", str(devices),
                "--out", str(out), "--cafile", str(pki.cafile), "--crlfile", str(pki.crlfile),
                "--bind", "127.0.0.1"]  # fmt: skip
        for zone in ("ot", "it"):
            args += [f"--{zone}-cert", str(server.cert), f"--{zone}-key", str(server.key)]
        assert main(args) == 0
        capsys.readouterr()

        def check() -> dict[str, object]:
            main(["policy", "check", "--deployment", str(out), "--json"])
            report: dict[str, object] = json.loads(capsys.readouterr().out)
            return report

        assert check()["passed"] is True
        acl = out / "ot-broker.acl"
        acl.write_text(
            acl.read_text() + f"\nuser {NODE_2}\ntopic write spBv1.0/{GROUP}/NDATA/press-01\n"
        )
        report = check()
        assert report["passed"] is False
        assert "acl.write_outside_identity" in {f["rule"] for f in report["findings"]}  # type: ignore[attr-defined]
    finally:
        pki.ca.close()
