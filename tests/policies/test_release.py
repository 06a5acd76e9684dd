"""The release contract (`policies.release`): what a target says, and whom it is for."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.decision import ReasonCode
from policies.errors import PolicyConfigError
from policies.release import (
    ReleaseKind,
    ReleaseStage,
    ReleaseTarget,
    StageRequest,
    offered_to,
    parse_custom,
    pick_canary,
    select_release,
    target_path,
)

GW = "acme/plant1/press/line1/cell1/gw-a"


def target(prefix: str, stage: ReleaseStage = ReleaseStage.ALL, canary: tuple[str, ...] = (),
           release: int = 1) -> ReleaseTarget:  # fmt: skip
    return ReleaseTarget(ReleaseKind.MODEL, prefix, stage, canary, release, "", "r")


def test_a_target_for_another_line_is_refused_with_its_reason() -> None:
    d = offered_to(GW, target("acme/plant1/press/line2"))
    assert not d.allowed and d.reason_code is ReasonCode.RELEASE_OTHER_PREFIX


def test_a_prefix_is_a_whole_level_not_a_string_prefix() -> None:
    assert not offered_to(
        "acme/plant1/press/line10/c/gw", target("acme/plant1/press/line1")
    ).allowed


def test_a_canary_without_this_gateway_is_refused() -> None:
    d = offered_to(GW, target("acme/plant1/press/line1", ReleaseStage.CANARY, ("acme/x/y/z/c/d",)))
    assert d.reason_code is ReasonCode.RELEASE_NOT_IN_CANARY


def test_the_most_specific_prefix_wins_and_a_canary_beats_all() -> None:
    offered = {
        target_path(ReleaseKind.MODEL, "acme/plant1", ReleaseStage.ALL): target("acme/plant1", release=9),
        target_path(ReleaseKind.MODEL, "acme/plant1/press/line1", ReleaseStage.ALL): target(
            "acme/plant1/press/line1", release=3),
        target_path(ReleaseKind.MODEL, "acme/plant1/press/line1", ReleaseStage.CANARY): target(
            "acme/plant1/press/line1", ReleaseStage.CANARY, (GW,), release=4),
    }  # fmt: skip
    chosen = select_release(GW, ReleaseKind.MODEL, offered.get)
    assert chosen is not None and chosen.release == 4
    other = "acme/plant1/press/line1/cell2/gw-b"
    chosen = select_release(other, ReleaseKind.MODEL, offered.get)
    assert chosen is not None and chosen.release == 3


def test_a_target_filed_under_a_path_it_does_not_name_is_skipped() -> None:
    # Signed, but what it says (line 2) is not where it is filed (line 1).
    path = target_path(ReleaseKind.MODEL, "acme/plant1/press/line1", ReleaseStage.ALL)
    assert (
        select_release(GW, ReleaseKind.MODEL, {path: target("acme/plant1/press/line2")}.get) is None
    )


@pytest.mark.parametrize(
    "text", ["canary", "canary:0", "canary:-1", "canary:x", "some", "canary:1001"]
)
def test_a_stage_is_all_or_canary_n(text: str) -> None:
    with pytest.raises(PolicyConfigError):
        StageRequest.parse(text)


@pytest.mark.parametrize(
    "change",
    [{"release": 0}, {"release": True}, {"release": 2**53 + 1}, {"kind": "firmware"},
     {"prefix": "Acme/plant1"}, {"prefix": "acme/../x"}, {"stage": "canary", "canary": []},
     {"canary": ["not a path!"]}, {"signature": 7}, {"reason": "x" * 501}],
)  # fmt: skip
def test_malformed_custom_metadata_is_refused(change: dict[str, Any]) -> None:
    doc = target("acme/plant1").custom()
    doc["idmz"].update(change)
    with pytest.raises(PolicyConfigError):
        parse_custom(doc)


def test_custom_metadata_round_trips() -> None:
    t = target("acme/plant1", ReleaseStage.CANARY, (GW,), release=7)
    assert parse_custom(t.custom()) == t


def test_the_canary_is_the_first_n_gateways_under_the_prefix_in_name_order() -> None:
    fleet = [f"acme/plant1/press/line1/c/gw-{c}" for c in "dbca"] + [
        "acme/plant1/press/line2/c/gw-0"
    ]
    assert pick_canary(fleet, "acme/plant1/press/line1", 2) == (
        "acme/plant1/press/line1/c/gw-a", "acme/plant1/press/line1/c/gw-b")  # fmt: skip


label = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,5}", fullmatch=True)
paths = st.lists(label, min_size=6, max_size=6).map("/".join)


@given(identity=paths, prefix_levels=st.lists(label, min_size=1, max_size=6),
       canary=st.lists(paths, max_size=3), stage=st.sampled_from(list(ReleaseStage)))  # fmt: skip
def test_a_gateway_is_only_ever_given_a_release_under_its_path_that_names_it(
    identity: str, prefix_levels: list[str], canary: list[str], stage: ReleaseStage
) -> None:
    prefix = "/".join(prefix_levels)
    if stage is ReleaseStage.CANARY and not canary:
        canary = [identity]
    t = target(prefix, stage, tuple(canary))
    chosen = select_release(
        identity, ReleaseKind.MODEL, {target_path(ReleaseKind.MODEL, prefix, stage): t}.get
    )
    if chosen is not None:
        assert (identity + "/").startswith(prefix + "/")
        assert stage is ReleaseStage.ALL or identity in canary
