import pytest

from transforms.mapping import timeutil as tu

T0 = 1546300800 * tu.TICKS_PER_SECOND  # 2019-01-01T00:00:00Z


@pytest.mark.parametrize("text,ticks", [
    ("2019-01-01T00:00:00Z", T0),
    ("2019-01-01T00:00:00", T0),  # no offset: read as UTC
    ("2019-01-01T02:00:00+02:00", T0),
    ("2019-01-01T02:00:00+0200", T0),
    ("2018-12-31T23:00:00-01", T0),
    ("2019-01-01T00:00:00.5Z", T0 + 5_000_000),
    ("2019-01-01T00:00:00.0000001Z", T0 + 1),
    ("2019-01-01T00:00:00.1234567Z", T0 + 1_234_567),
])
def test_parse_iso(text, ticks):
    assert tu.parse_iso(text) == ticks
    assert tu.parse_datetime(text) == ticks


@pytest.mark.parametrize("text", [
    "2019-01-01T24:00:00Z",  # hour 24: the reference fails on it too
    "2019-02-30T00:00:00Z",
    "2019-01-01T00:00:00.12345678Z",  # more than 7 fraction digits: not a Newtonsoft date
    "2019-01-01",
    "hello",
])
def test_parse_iso_rejects(text):
    assert tu.parse_iso(text) is None


@pytest.mark.parametrize("text,ticks", [
    ("2019-01-01", T0),
    ("2019-01-01 00:00:00", T0),
    ("01/01/2019 00:00:00", T0),
    ("1/1/2019 12:00:00 AM", T0),
    ("01/01/2019 01:00:00 PM", T0 + 13 * tu.TICKS_PER_HOUR),
])
def test_parse_datetime_loose_forms(text, ticks):
    assert tu.parse_datetime(text) == ticks


def test_parse_datetime_rejects_garbage():
    assert tu.parse_datetime("not-a-date") is None
    assert tu.parse_datetime("13/45/2019") is None


def test_formats():
    t = tu.parse_iso("2019-01-30T22:45:02.6073744Z")
    assert tu.format_o(t) == "2019-01-30T22:45:02.6073744Z"
    assert tu.format_trimmed(t) == "2019-01-30T22:45:02.6073744Z"
    assert tu.format_o(T0) == "2019-01-01T00:00:00.0000000Z"
    assert tu.format_trimmed(T0) == "2019-01-01T00:00:00Z"
    assert tu.format_trimmed(T0 + 8_750_000) == "2019-01-01T00:00:00.875Z"
    assert tu.format_id_segment(T0 + tu.TICKS_PER_HOUR - 1) == "20190101005959Z"
    assert tu.format_o(T0 + tu.TICKS_PER_HOUR - 1) == "2019-01-01T00:59:59.9999999Z"
    assert tu.format_invariant(T0 + 13 * tu.TICKS_PER_HOUR) == "01/01/2019 13:00:00"


def test_before_epoch_and_floors():
    t = tu.from_unix_seconds(-1)
    assert tu.format_trimmed(t) == "1969-12-31T23:59:59Z"
    assert tu.floor_hour(T0 + 3599 * tu.TICKS_PER_SECOND) == T0
    assert tu.floor_day(T0 + 86399 * tu.TICKS_PER_SECOND) == T0
    assert tu.floor_hour(t) == tu.from_unix_seconds(-3600)


def test_looks_like_iso_date():
    assert tu.looks_like_iso_date("2019-01-01T00:00:00Z")
    assert not tu.looks_like_iso_date("device-2019")
    assert not tu.looks_like_iso_date("2019-01-01 00:00:00")


def test_cached_minute_path_agrees_with_full_parse():
    # First call fills the minute cache, the rest take the fast path: same answers.
    assert tu.parse_iso("2031-05-06T07:08:00Z") == tu.parse_iso("2031-05-06T07:08:00.0000000Z")
    base = tu.parse_iso("2031-05-06T07:08:00Z")
    assert tu.parse_iso("2031-05-06T07:08:59.1234567Z") == base + 59 * tu.TICKS_PER_SECOND + 1_234_567
    assert tu.parse_iso("2031-05-06T07:08:30+01:30") == base + 30 * tu.TICKS_PER_SECOND - 90 * tu.TICKS_PER_MINUTE
    assert tu.parse_iso("2031-05-06T07:08:30") == base + 30 * tu.TICKS_PER_SECOND
    for bad in ("2031-05-06T07:08:60Z", "2031-05-06T07:08:1Z", "2031-05-06T07:08:30.Z",
                "2031-05-06T07:08:30+15:00", "2031-05-06T07:08:30Zjunk", "2031-05-06T07:08:30.12345678Z"):
        assert tu.parse_iso(bad) is None, bad


def test_calculated_content_leaves_the_message_as_it_was():
    from transforms.mapping.device_templates import envelope, load_device_mapping
    import json
    mapping = load_device_mapping(json.dumps({"templateType": "CollectionContent", "template": [
        {"templateType": "CalculatedContent", "template": {
            "typeName": "t", "typeMatchExpression": "$..[?(@v)]", "deviceIdExpression": "$.matchedToken.d",
            "timestampExpression": "$.matchedToken.t", "values": []}}]})).ensure_valid()
    msg = envelope([{"v": 1, "d": "a", "t": "2020-01-01T00:00:00Z"}, {"v": 2, "d": "b", "t": "2020-01-01T00:00:01Z"}])
    before = json.dumps(msg)
    assert [m.device_id for m in mapping.get_measurements(msg)] == ["a", "b"]
    assert json.dumps(msg) == before
