"""``DeviceEvent.to_message``'s inlined JSON decoding (``_loads``) against what it replaced,
``json.loads(text) if text.strip() else None``: same value or the same failure class."""
import json

import pytest

from transforms.mapping.errors import InvalidDataFormatException
from transforms.records import device_event
from transforms.records.device_event import DeviceEvent

BODIES = [
    '{"a":1}', ' {"a":1} ', '\n\t{"a": [1, 2.5, "x", null, true]}\r\n', '[1,2]', '"s"', "3", "-0.5e3",
    "null", "true", "", " ", "\t\r\n", "\x0b", "\x0b{}", "\u00a0", "\u00a0{}", "{}\u00a0", "\ufeff{}",
    '{"a":1} x', '{"a":1}{"b":2}', '{"a":', "{", "}", "[1,]", "NaN", "Infinity", "-Infinity",
    '{"a":NaN}', "1 2", "'x'", '{"a":"\\u00e9\\ud83d\\ude00"}', '{"a":1,"a":2}', "01", "1.", ".5",
    '{"deviceId":"d","endDate":"2026-01-05T00:00:00.000Z","heartRate":"75"}', "nul", "truex",
]


def _old(text):
    return json.loads(text) if text.strip() else None


def _outcome(f, text):
    try:
        return ("value", repr(f(text)))
    except ValueError:
        return ("ValueError", None)


@pytest.mark.parametrize("text", BODIES)
def test_loads_is_json_loads_or_none(text):
    assert _outcome(device_event._loads, text) == _outcome(_old, text)


@pytest.mark.parametrize("text", BODIES)
def test_to_message_bytes_and_str_agree(text):
    def message(body):
        try:
            return ("message", repr(DeviceEvent(body).to_message()))
        except InvalidDataFormatException as e:
            return ("error", str(e))

    expected = ("error", "The message body is not valid UTF-8 JSON.") if _outcome(_old, text)[0] == "ValueError" \
        else ("message", repr({"Body": _old(text), "Properties": {}, "SystemProperties": {}}))
    assert message(text) == expected
    if not text.startswith("\ufeff"):  # bytes: one leading BOM is dropped before decoding
        assert message(text.encode("utf-8")) == expected
