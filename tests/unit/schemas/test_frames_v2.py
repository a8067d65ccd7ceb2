"""Contract v2: what a frame is, what parses and what is refused, rule by rule (accept and
reject), and that a bad frame costs only itself."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from schemas.frame import Frame, Share
from schemas.validation import MAX_REASON_CHARS, ParsedRecord, parse_record
from tests.unit.schemas.v2docs import GIB, NOW, frame, raw, record, with_second

MAX_TS = 4_102_444_799  # 2099-12-31T23:59:59Z, as published


def parse(doc: Any, now: float = NOW) -> ParsedRecord:
    parsed = parse_record(raw(doc), now=now)
    for r in parsed.rejections:
        assert len(r.reason) <= MAX_REASON_CHARS and "\n" not in r.reason
    return parsed


def accepted(f: dict[str, Any], now: float = NOW) -> Frame:
    parsed = parse(record([f]), now)
    assert parsed.rejections == [], [r.reason for r in parsed.rejections]
    assert len(parsed.frames) == 1
    return parsed.frames[0]


def refused(f: Any) -> str:
    """The reason the record's only frame is refused (alone: the envelope stands)."""
    parsed = parse(record([f]))
    assert parsed.node_id == "node-a", "a bad frame must not cost the envelope"
    assert parsed.frames == []
    assert [(r.code, r.sample_index) for r in parsed.rejections] == [("invalid_frame", 0)]
    return parsed.rejections[0].reason


# -- accepted, as sent -----------------------------------------------------------------------------


def test_a_shared_gpu_frame_parses_with_every_value_as_sent() -> None:
    f = frame(
        6,
        flags=[{"index": 4, "flags": ["nvml_error"]}, {"index": 1, "flags": ["clock_jump"]}],
        temp_c=[60.0, None, 61.0, 62.0, 63.0, 64.0],
    )
    f["allocations"][1]["sm_util"] = [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    got = accepted(f)
    assert (got.gpu_uuid, got.mig_uuid, got.gpu_model, got.start) == (
        "GPU-0001",
        None,
        "H100-SXM5-80GB",
        NOW - 16,
    )
    assert (got.n, got.end, got.idle_milli) == (6, NOW - 10, 250)
    assert got.allocations == (
        Share("acme", "train-1", 500, "spot", None),
        Share("beta", "infer-2", 250, None, (5.0, 6.0, 7.0, 8.0, 9.0, 10.0)),
    )
    for column in ("sm_util", "mem_util", "mem_used", "power_w", "energy_j", "temp_c"):
        assert list(getattr(got, column)) == f[column], column
    assert got.mem_total == 80 * GIB
    assert got.flags == {4: ("nvml_error",), 1: ("clock_jump",)}


@pytest.mark.parametrize(
    ("allocations", "idle"),
    [
        ([], 1000),  # an idle device
        ([{"tenant": "acme", "job": "j", "share_milli": 1000}], 0),  # a whole GPU
        (
            [{"tenant": "a", "job": "j", "share_milli": 500}] * 1
            + [{"tenant": "b", "job": "j", "share_milli": 500}],
            0,
        ),
        ([{"tenant": "acme", "job": f"j{k}", "share_milli": 1} for k in range(1000)], 0),
        ([{"tenant": "acme", "job": "j", "share_milli": 1}], 999),
    ],
)
def test_shares_up_to_a_whole_device_are_accepted_and_the_rest_is_idle(
    allocations: list[dict[str, Any]], idle: int
) -> None:
    assert accepted(frame(allocations=allocations)).idle_milli == idle


def test_a_mig_slice_frame_and_optional_fields_absent_are_accepted() -> None:
    f = frame(mig_uuid="MIG-1")
    del f["temp_c"]
    got = accepted(f)
    assert got.mig_uuid == "MIG-1" and got.temp_c is None and got.flags == {}


def test_integral_floats_are_integers_and_integers_are_numbers() -> None:
    f = frame(4, start=float(NOW - 14), mem_total=float(80 * GIB))
    f["mem_used"] = [float(v) for v in f["mem_used"]]
    f["sm_util"] = [50, 51, 52, 53]
    f["allocations"][0]["share_milli"] = 500.0
    got = accepted(f)
    assert type(got.start) is int and type(got.mem_total) is int
    assert all(type(v) is int for v in got.mem_used)
    assert got.allocations[0].milli == 500 and type(got.allocations[0].milli) is int


def test_frame_length_bounds() -> None:
    assert accepted(frame(1)).n == 1
    assert accepted(frame(3600, start=NOW - 3600)).n == 3600
    assert "sm_util" in refused(frame(3601, start=NOW - 4000))
    assert "sm_util" in refused(frame(0))


# -- refused: bounds, types, no coercion -----------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "ok"),
    [
        ("sm_util", 100.0, True),
        ("sm_util", 0, True),
        ("sm_util", 100.0001, False),
        ("sm_util", -0.5, False),
        ("mem_util", 101, False),
        ("power_w", 3000.01, False),
        ("energy_j", -1.0, False),
        ("mem_used", -1, False),
        ("mem_used", 1.5, False),
        ("temp_c", None, True),
        ("temp_c", -40, True),
        ("temp_c", 150.5, False),
        ("sm_util", "50", False),
        ("sm_util", True, False),
        ("power_w", False, False),
        ("sm_util", None, False),
        ("mem_used", True, False),
        ("sm_util", [50.0], False),
        ("energy_j", {"j": 1}, False),
    ],
)
def test_each_second_is_checked_without_coercion(column: str, value: Any, ok: bool) -> None:
    f = with_second(frame(), column, 2, value)
    if column == "power_w" and value is False:
        f["energy_j"][2] = 0.0
    if ok:
        accepted(f)
    else:
        reason = refused(f)
        assert reason.startswith(f"frames[0].{column}[2]: "), reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gpu_uuid", ""),
        ("gpu_uuid", "GPU\n1"),
        ("gpu_uuid", "x" * 129),
        ("gpu_uuid", 7),
        ("gpu_model", None),
        ("mig_uuid", ""),
        ("start", 1_420_070_399),  # before 2015
        ("start", NOW * 1000),  # milliseconds
        ("start", "1700000000"),
        ("start", 1.7e9 + 0.5),
        ("start", True),
        ("mem_total", -1),
        ("mem_total", 2 * 1024**4 + 1),
        ("allocations", None),
        ("allocations", {}),
        ("sm_util", 50.0),
        ("flags", {}),
    ],
)
def test_a_bad_field_refuses_the_frame_naming_the_field(field: str, value: Any) -> None:
    assert refused(frame(**{field: value})).startswith(f"frames[0].{field}")


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"tenant": "__idle__"}, "tenant"),
        ({"tenant": ""}, "tenant"),
        ({"job": None}, "job"),
        ({"share_milli": 0}, "share_milli"),
        ({"share_milli": 1001}, "share_milli"),
        ({"share_milli": 250.5}, "share_milli"),
        ({"share_milli": "250"}, "share_milli"),
        ({"share_milli": True}, "share_milli"),
        ({"billing_class": "gold"}, "billing_class"),
        ({"sm_util": [1.0, 2.0, 3.0, 101.0]}, "sm_util[3]"),
        ({"color": "red"}, "color"),
    ],
)
def test_a_bad_allocation_refuses_the_frame_naming_it(change: dict[str, Any], where: str) -> None:
    f = frame()
    f["allocations"][1].update(change)
    assert refused(f).startswith(f"frames[0].allocations[1].{where}")


def test_unknown_and_missing_fields_refuse_the_frame() -> None:
    assert "unknown field" in refused(frame(colour="red"))
    f = frame()
    del f["energy_j"]
    assert refused(f).startswith("frames[0].energy_j: required field missing")
    f = frame()
    del f["allocations"]  # required: an idle device says []
    assert refused(f).startswith("frames[0].allocations: required")
    assert refused(frame(flags=[{"index": 0, "flags": [], "x": 1}])).startswith("frames[0].flags")
    assert refused(frame(flags=[{"index": 0, "flags": ["hot"]}])).startswith("frames[0].flags")
    assert refused("not a frame").startswith("frames[0]: must be an object")


# -- refused: the rules of x-gpumeter-rules, each cited by id -------------------------------------


def rule_of(reason: str) -> str:
    return reason.split("(rule ", 1)[1].split(")", 1)[0]


def test_rule_frame_columns_aligned() -> None:
    f = frame(4)
    f["mem_util"] = f["mem_util"][:3]
    assert rule_of(refused(f)) == "frame-columns-aligned"
    f = frame(4, temp_c=[60.0] * 5)
    assert rule_of(refused(f)) == "frame-columns-aligned"
    f = frame(4)
    f["allocations"][0]["sm_util"] = [1.0, 2.0]
    assert rule_of(refused(f)) == "frame-columns-aligned"


def test_rule_frame_ends_in_range() -> None:
    assert accepted(frame(4, start=MAX_TS - 3), now=MAX_TS).end - 1 == MAX_TS
    assert rule_of(refused(frame(4, start=MAX_TS - 2))) == "frame-ends-in-range"


def test_rule_shares_within_device() -> None:
    f = frame()
    f["allocations"][1]["share_milli"] = 501  # 500 + 501
    assert rule_of(refused(f)) == "shares-within-device"
    f["allocations"][1]["share_milli"] = 500
    assert accepted(f).idle_milli == 0


def test_rule_allocation_unique() -> None:
    f = frame()
    f["allocations"][1].update(tenant="acme", job="train-1", share_milli=100)
    assert rule_of(refused(f)) == "allocation-unique"
    f["allocations"][1]["job"] = "train-2"  # the same tenant, another job: two allocations
    assert len(accepted(f).allocations) == 2


def test_rule_flags_index_in_frame() -> None:
    assert accepted(frame(4, flags=[{"index": 3, "flags": ["nvml_error"]}])).flags == {
        3: ("nvml_error",)
    }
    assert rule_of(refused(frame(4, flags=[{"index": 4, "flags": []}]))) == "flags-index-in-frame"
    twice = [{"index": 1, "flags": ["nvml_error"]}, {"index": 1, "flags": ["clock_jump"]}]
    assert rule_of(refused(frame(4, flags=twice))) == "flags-index-in-frame"


def test_rule_mem_used_within_total() -> None:
    f = with_second(frame(), "mem_used", 3, 80 * GIB)  # equal: accepted
    accepted(f)
    reason = refused(with_second(frame(), "mem_used", 3, 80 * GIB + 1))
    assert rule_of(reason) == "mem-used-within-total" and "mem_used[3]" in reason


def test_rule_energy_matches_power_per_second_unless_that_second_is_exempt() -> None:
    f = with_second(frame(), "energy_j", 2, 5000.0)  # power 302 W: at most 956 J
    reason = refused(f)
    assert rule_of(reason) == "energy-matches-power" and "energy_j[2]" in reason
    assert "allowed 51..956 J" in reason
    f["flags"] = [{"index": 1, "flags": ["energy_estimated"]}]  # another second: still refused
    refused(f)
    f["flags"] = [{"index": 2, "flags": ["counter_reset"]}]
    accepted(f)
    # the bounds themselves are inclusive: power 300 W allows 50 .. 950 J
    accepted(with_second(with_second(frame(), "power_w", 0, 300.0), "energy_j", 0, 950.0))
    accepted(with_second(with_second(frame(), "power_w", 0, 300.0), "energy_j", 0, 50.0))
    refused(with_second(with_second(frame(), "power_w", 0, 300.0), "energy_j", 0, 950.001))
    refused(with_second(with_second(frame(), "power_w", 0, 300.0), "energy_j", 0, 49.999))


# -- the cost of a defect is one frame --------------------------------------------------------------


def test_one_bad_frame_costs_only_itself_and_its_exact_bytes_are_kept() -> None:
    good_a, good_b = frame(gpu_uuid="GPU-A"), frame(gpu_uuid="GPU-B")
    bad = with_second(frame(gpu_uuid="GPU-X"), "power_w", 1, 4000.0)
    doc = record([good_a, bad, good_b])
    parsed = parse(doc)
    assert [f.gpu_uuid for f in parsed.frames] == ["GPU-A", "GPU-B"]
    assert [(r.code, r.sample_index) for r in parsed.rejections] == [("invalid_frame", 1)]
    assert parsed.rejections[0].raw == raw(bad)  # the frame's bytes as they were in the record
    assert parsed.rejections[0].reason.startswith("frames[1].power_w[1]: ")
    assert parsed.seconds == 8


def test_the_verdicts_do_not_depend_on_a_boolean_elsewhere_in_the_record() -> None:
    # "true" in the bytes (here in a node name) switches the columns to element-wise type
    # checks: the verdicts and reasons are the same
    frames = [
        frame(),
        with_second(frame(), "sm_util", 0, "7"),
        with_second(frame(), "sm_util", 1, 101),
        with_second(frame(), "mem_used", 1, 2.0 * GIB),
        with_second(frame(), "temp_c", 1, None),
        with_second(frame(), "energy_j", 3, 0.0),
    ]
    plain = parse(record(copy.deepcopy(frames)))
    flagged = parse(record(copy.deepcopy(frames), node_id="true-node"))
    assert plain.frames == flagged.frames and len(plain.frames) == 3
    assert [(r.sample_index, r.reason) for r in plain.rejections] == [
        (r.sample_index, r.reason) for r in flagged.rejections
    ]
