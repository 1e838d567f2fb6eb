"""Newtonsoft Value<string>() / Value<DateTime?>() conversions."""
import math

import pytest

from transforms.mapping import timeutil
from transforms.mapping.dotnet_values import format_double, to_dotnet_string, to_ticks
from transforms.mapping.timeutil import DateToken


@pytest.mark.parametrize("value,expected", [
    (None, None),
    ("78", "78"),
    ("", ""),
    ("  ", "  "),
    ("not a date", "not a date"),
    # the JSON reader would have made these Date tokens: invariant DateTime.ToString()
    ("2019-02-01T22:46:01.8750000Z", "02/01/2019 22:46:01"),
    ("2019-02-01T22:46:01Z", "02/01/2019 22:46:01"),
    ("2019-02-01T22:46:01+02:00", "02/01/2019 20:46:01"),  # converted to the (UTC) host zone
    ("2019-02-01T00:30:00-01:30", "02/01/2019 02:00:00"),
    ("2019-02-01T22:46:01", "02/01/2019 22:46:01"),
    ("2019-02-30T22:46:01Z", "2019-02-30T22:46:01Z"),  # not a valid date: stays a string
    ("2019-02-01 22:46:01", "2019-02-01 22:46:01"),  # not ISO-shaped: stays a string
    (True, "True"),
    (False, "False"),
    (0, "0"),
    (75, "75"),
    (-12, "-12"),
    (9223372036854775807, "9223372036854775807"),
    (37.0, "37"),
    (37.5, "37.5"),
    (78 * 0.0254, "1.9811999999999999"),
    (0.1 + 0.2, "0.30000000000000004"),
    (1e15, "1E+15"),
    (1e14, "100000000000000"),
    (123456789012345.6, "123456789012345.6"),
    (1234567890123456.7, "1.2345678901234568E+15"),
    (1.5e17, "1.5E+17"),
    (1e-05, "1E-05"),
    (1.25e-05, "1.25E-05"),
    (0.0001, "0.0001"),
    (0.00012, "0.00012"),
    (-0.5, "-0.5"),
    (0.0, "0"),
    (-0.0, "-0"),
    (5e-324, "5E-324"),
    (1.7976931348623157e308, "1.7976931348623157E+308"),
    (math.nan, "NaN"),
    (math.inf, "Infinity"),
    (-math.inf, "-Infinity"),
    (DateToken(16256772000000000), "07/07/2021 17:00:00"),
    (DateToken(16256772001234567), "07/07/2021 17:00:00"),
])
def test_to_dotnet_string(value, expected):
    assert to_dotnet_string(value) == expected


@pytest.mark.parametrize("value", [{"a": 1}, [1, 2], {}, []])
def test_to_dotnet_string_rejects_containers(value):
    with pytest.raises(TypeError):
        to_dotnet_string(value)


def test_format_double_matches_dotnet_round_trip_layout():
    assert format_double(100.0) == "100"
    assert format_double(-1e16) == "-1E+16"
    assert format_double(999999999999999.9) == "999999999999999.9"


@pytest.mark.parametrize("value,expected", [
    (None, None),
    (DateToken(123), 123),
    ("2019-02-01T22:46:01.8750000Z", timeutil.parse_iso("2019-02-01T22:46:01.875Z")),
    ("2019-02-01T22:46:01.8750000+02:00", timeutil.parse_iso("2019-02-01T20:46:01.875Z")),
    ("2019-02-01T22:46:01", timeutil.parse_iso("2019-02-01T22:46:01Z")),
    ("2019-02-01T22:46:01.1234567Z", timeutil.parse_iso("2019-02-01T22:46:01Z") + 1234567),
    ("2019-02-01", timeutil.parse_iso("2019-02-01T00:00:00Z")),
    ("02/01/2019 10:46:01 PM", timeutil.parse_iso("2019-02-01T22:46:01Z")),
])
def test_to_ticks(value, expected):
    assert to_ticks(value) == expected


def test_to_ticks_reference_instant():
    assert to_ticks("2019-02-01T22:46:01.8750000Z") == 15490611618750000


@pytest.mark.parametrize("value", ["", "abc", "2019-01-01T24:00:00Z", "2019-13-01T00:00:00Z"])
def test_to_ticks_rejects_unparseable_strings(value):
    with pytest.raises(ValueError):
        to_ticks(value)


@pytest.mark.parametrize("value", [1549061161, 1.5, True, {"a": 1}, [1]])
def test_to_ticks_rejects_non_dates(value):
    with pytest.raises(TypeError):
        to_ticks(value)
