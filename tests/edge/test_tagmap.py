"""Tag map rules: self-describing values, Modbus block planning."""

from __future__ import annotations

import pytest

from edge.errors import ConfigError
from edge.tagmap import Quality, Reading, TagSpec, describe, plan_register_blocks

PATH = "acme/plant1/press/line1/cell2/press01"


def reg(name: str, address: int, dtype: str = "float32") -> TagSpec:
    return TagSpec(name, "drive", str(address), "A", "press01", PATH, data_type=dtype)


def test_contiguous_registers_are_read_in_one_request_and_gaps_split_blocks() -> None:
    blocks = plan_register_blocks((reg("a", 0), reg("b", 2), reg("c", 4, "uint16"), reg("d", 10)))
    assert [(b.start, b.count, [t.name for t in b.tags]) for b in blocks] == [
        (0, 5, ["a", "b", "c"]),
        (10, 2, ["d"]),
    ]


def test_a_block_never_exceeds_the_modbus_limit_of_125_registers() -> None:
    tags = tuple(reg(f"t{i}", 2 * i) for i in range(100))  # 200 contiguous registers
    blocks = plan_register_blocks(tags)
    assert [b.count for b in blocks] == [124, 76]
    assert sum(len(b.tags) for b in blocks) == 100


def test_two_tags_claiming_the_same_register_are_refused() -> None:
    with pytest.raises(ConfigError, match="overlaps"):
        plan_register_blocks((reg("a", 0), reg("b", 1)))


def test_published_value_carries_unit_asset_path_quality_and_safe_range() -> None:
    spec = TagSpec("p", "plc", "ns=2;s=p", "bar", "press01", PATH, safe_min=150, safe_max=220)
    out = describe(spec, Reading("p", 235.0, Quality.GOOD, 1_700_000_000.0))
    assert out == {
        "name": "p",
        "value": 235.0,
        "unit": "bar",
        "quality": "good",
        "asset": "press01",
        "path": PATH,
        "source_ts": "2023-11-14T22:13:20.000Z",
        "safe_range": [150, 220],
        "in_safe_range": False,
    }


def test_a_missing_value_is_published_bad_with_its_reason() -> None:
    spec = TagSpec("p", "plc", "ns=2;s=p", "bar", "press01", PATH)
    out = describe(spec, Reading("p", None, Quality.BAD, 0.0, "device drive unreachable"))
    assert out["quality"] == "bad" and out["value"] is None
    assert out["reason"] == "device drive unreachable"


def test_tag_names_that_would_break_topics_are_refused() -> None:
    with pytest.raises(ConfigError):
        TagSpec("a/b", "plc", "x", "", "a", PATH)
