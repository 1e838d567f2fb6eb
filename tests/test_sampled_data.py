"""SampledData strings: vector F08 (SampledDataProcessorTests) plus our own edge cases."""

import pytest

from conftest import load_json, vector_dir
from transforms.mapping.sampled_data import (build_sampled_data, merge_data, period_ticks,
                                             sampled_data_to_time_values)
from transforms.mapping.timeutil import TICKS_PER_HOUR, TICKS_PER_MS, TICKS_PER_SECOND, parse_datetime

T0 = parse_datetime("2019-01-01T00:00:00Z")
S = TICKS_PER_SECOND


def tv(pairs):
    return [(parse_datetime(t), v) for t, v in pairs]


def f08_cases(op):
    return [c for c in load_json(vector_dir("F08") / "cases.json")["cases"] if c["op"] == op]


# ---------------------------------------------------------------- vector F08
def test_f08_build_sampled_data():
    cases = f08_cases("BuildSampledData")
    assert len(cases) == 5
    for c in cases:
        got = build_sampled_data(tv(c["values"]), parse_datetime(c["start"]), parse_datetime(c["end"]),
                                 c["period_ms"])
        assert got == c["result"], c["source"]


def test_f08_sampled_data_to_time_values():
    (c,) = f08_cases("SampledDataToTimeValues")
    got = sampled_data_to_time_values(c["stream"], parse_datetime(c["start"]), c["period_ms"])
    assert got == tv(c["result"])


def test_f08_merge_data_without_collisions():
    cases = [c for c in f08_cases("MergeData") if "collision" not in c.get("note", "")]
    assert len(cases) == 2
    for c in cases:
        assert merge_data(tv(c["existing"]), tv(c["new"])) == tv(c["result"])


def test_f08_merge_data_collision_keeps_first_series():
    """The vector says "collision -> new value wins" (result "2"), but it is marked as
    transcribed from ``SampledDataProcessorTests.GivenCollisions_WhenMergeData_ThenData1ValueUsed``
    whose assertion is the data1 value ("1"); ``SampledDataProcessor.MergeData`` does
    ``output.Add(data1[data1Pos++]); data2Pos++`` on equal times. So MergeData keeps
    the FIRST argument's value. Which value wins in an Observation merge then
    depends only on the argument order (see test_merge.py)."""
    (c,) = [c for c in f08_cases("MergeData") if "collision" in c.get("note", "")]
    existing, new = tv(c["existing"]), tv(c["new"])
    assert merge_data(existing, new) == existing  # the reference unit test's assertion
    assert merge_data(new, existing) == tv(c["result"])  # the vector's result = new first


# ---------------------------------------------------------------- own cases
def test_period_ticks_integral_and_fractional():
    assert period_ticks(1000) == 1000 * TICKS_PER_MS
    assert period_ticks(0.5) == 5000
    assert period_ticks(1.23456) == 12345  # fractional ticks truncated (.NET 7+ AddMilliseconds)
    assert period_ticks(3600000) == TICKS_PER_HOUR


def test_slot_takes_last_value_and_empty_slots_are_E():
    values = [(T0, "1"), (T0 + S // 2, "2"), (T0 + 3 * S, "3")]
    assert build_sampled_data(values, T0, T0 + 4 * S, 1000) == "2 E E 3 E"


def test_values_after_end_discarded_and_end_inclusive_slot_start():
    values = [(T0, "a"), (T0 + 2 * S, "b"), (T0 + 3 * S, "c")]
    # slots start at 0,1,2 (2 <= end=2s), value at 3s is after end
    assert build_sampled_data(values, T0, T0 + 2 * S, 1000) == "a E b"


def test_value_before_start_blocks_the_cursor_like_the_reference():
    # The reference's inner loop never advances past a value earlier than the slot.
    values = [(T0 - S, "x"), (T0 + S, "y")]
    assert build_sampled_data(values, T0, T0 + 2 * S, 1000) == "E E E"


def test_start_after_end_gives_empty_string():
    assert build_sampled_data([(T0, "1")], T0 + 1, T0, 1000) == ""


def test_non_positive_or_missing_period_rejected():
    with pytest.raises(ValueError):
        build_sampled_data([], T0, T0 + S, 0)
    with pytest.raises(ValueError):
        build_sampled_data([], T0, T0 + S, None)


def test_to_time_values_preserve_errors_and_blank_stream():
    assert sampled_data_to_time_values("1 E", T0, 500, preserve_errors=True) == [
        (T0, "1"), (T0 + 5000 * 1000, "E")]
    with pytest.raises(ValueError):
        sampled_data_to_time_values("  ", T0, 1000)


def test_merge_data_tails():
    a = [(1, "a"), (5, "b")]
    b = [(2, "x"), (6, "y"), (7, "z")]
    assert merge_data(a, b) == [(1, "a"), (2, "x"), (5, "b"), (6, "y"), (7, "z")]
    assert merge_data([], b) == b
    assert merge_data(a, []) == a


def test_hour_at_1000ms_is_3600_tokens():
    end = T0 + TICKS_PER_HOUR - 1
    values = [(T0 + k * 7 * S, str(k)) for k in range(500)]
    out = build_sampled_data(values, T0, end, 1000)
    tokens = out.split(" ")
    assert len(tokens) == 3600
    assert tokens[0] == "0" and tokens[7] == "1" and tokens[1] == "E"
    assert tokens[3493] == "499"  # speed (linear in slots): scripts/bench_sampled_data
