"""The type-match index (``transforms.mapping.type_match_index``): which templates may be skipped,
and that skipping them never changes a message's measurements or its error."""
import json
import random

import pytest

from transforms.mapping import type_match_index as idx
from transforms.mapping.device_templates import load_device_mapping
from transforms.mapping.expressions import compile_expression

# Every guarded shape and some unguarded ones, across the four template kinds. Extraction
# fails on some messages (missing device id, several timestamps...), so errors and their
# order across templates are compared too.
TEMPLATES = [
    ("CalculatedContent", {"typeName": "hr", "typeMatchExpression": "$..[?(@heartRate)]",
                           "deviceIdExpression": "$.matchedToken.deviceId",
                           "timestampExpression": "$.matchedToken.endDate",
                           "values": [{"required": True, "valueExpression": "$.matchedToken.heartRate",
                                       "valueName": "hr"}]}),
    ("CalculatedContent", {"typeName": "bp", "typeMatchExpression": "$..[?(@systolic && @diastolic)]",
                           "deviceIdExpression": "$.matchedToken.deviceId",
                           "timestampExpression": "$.matchedToken.endDate",
                           "values": [{"required": False, "valueExpression": "$.matchedToken.systolic",
                                       "valueName": "systolic"}]}),
    ("CalculatedContent", {"typeName": "either", "typeMatchExpression": "$..[?(@spo2 || @pulse.value)]",
                           "deviceIdExpression": "$.matchedToken.deviceId",
                           "timestampExpression": "$.matchedToken.endDate", "values": []}),
    ("CalculatedContent", {"typeName": "worn", "typeMatchExpression": "$..[?(@event == 'worn')]",
                           "deviceIdExpression": "$.matchedToken.deviceId",
                           "timestampExpression": "$.matchedToken.endDate", "values": []}),
    ("CalculatedContent", {"typeName": "big", "typeMatchExpression": "$..[?(@steps > 10)]",
                           "deviceIdExpression": "$.matchedToken.deviceId",
                           "timestampExpression": "$.matchedToken.endDate", "values": []}),
    ("CalculatedContent", {"typeName": "steps", "defaultExpressionLanguage": "JmesPath",
                           "typeMatchExpression": "Body[?steps]",
                           "deviceIdExpression": "matchedToken.deviceId",
                           "timestampExpression": "matchedToken.endDate", "values": []}),
    ("CalculatedContent", {"typeName": "kind", "defaultExpressionLanguage": "JmesPath",
                           "typeMatchExpression": "Body.items[?kind == 'bp' && systolic || spo2]",
                           "deviceIdExpression": "matchedToken.deviceId",
                           "timestampExpression": "matchedToken.endDate", "values": []}),
    ("CalculatedContent", {"typeName": "notworn", "defaultExpressionLanguage": "JmesPath",
                           "typeMatchExpression": "Body[?event != 'worn']",
                           "deviceIdExpression": "matchedToken.deviceId",
                           "timestampExpression": "matchedToken.endDate", "values": []}),
    ("CalculatedContent", {"typeName": "jmeschain", "defaultExpressionLanguage": "JmesPath",
                           "typeMatchExpression": "Body.pulse",
                           "deviceIdExpression": "matchedToken.deviceId",
                           "timestampExpression": "matchedToken.endDate", "values": []}),
    ("JsonPathContent", {"typeName": "chain", "typeMatchExpression": "$.Body.pulse",
                         "deviceIdExpression": "$.deviceId", "timestampExpression": "$.endDate",
                         "values": [{"required": False, "valueExpression": "$.value", "valueName": "v"}]}),
    ("JsonPathContent", {"typeName": "general", "typeMatchExpression": "$.Body.items[*]",
                         "deviceIdExpression": "$.deviceId", "timestampExpression": "$.endDate",
                         "values": []}),
    ("IotJsonPathContent", {"typeName": "iot", "typeMatchExpression": "$..[?(@heartRate)]",
                            "values": [{"required": True, "valueExpression": "$.Body.heartRate",
                                        "valueName": "hr"}]}),
    ("IotCentralJsonPathContent", {"typeName": "central", "typeMatchExpression": "$..[?(@telemetry.hr)]",
                                   "values": []}),
]

KEYS = ["heartRate", "systolic", "diastolic", "spo2", "pulse", "value", "event", "steps", "kind",
        "items", "telemetry", "hr", "deviceId", "endDate", "matchedToken"]


def mapping(use_index: bool):
    doc = {"templateType": "CollectionContent",
           "template": [{"templateType": kind, "template": body} for kind, body in TEMPLATES]}
    m = load_device_mapping(json.dumps(doc)).ensure_valid()
    m.use_index = use_index
    return m


def _value(rng, depth):
    r = rng.random()
    if depth < 4 and r < 0.25:
        return _object(rng, depth + 1)
    if depth < 4 and r < 0.35:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return rng.choice([None, True, False, 0, 7, 12, 3.5, "", "worn", "bp", "x", "12",
                       "2026-01-05T00:00:00Z", "2026-01-05T00:01:00Z", "device-1", {}, []])


def _object(rng, depth=0):
    obj = {k: _value(rng, depth) for k in rng.sample(KEYS, rng.randint(0, 4))}
    if rng.random() < 0.9:  # mostly readings that extract; the rest fail extraction
        obj.update(deviceId=f"device-{rng.randint(0, 3)}", endDate="2026-01-05T00:00:00Z",
                   enqueuedTime="2026-01-05T00:00:00Z")
    return obj


def _message(rng):
    shape = rng.random()
    if shape < 0.6:
        body = _object(rng)
    elif shape < 0.85:
        body = [_object(rng) for _ in range(rng.randint(0, 3))]
    else:
        body = _value(rng, 2)
    system = rng.choice([{}, {"iothub-connection-device-id": "dev", "iothub-enqueuedtime": "2026-01-05T00:00:00Z"},
                         {"nested": [_object(rng)]}])
    return {"Body": body, "Properties": rng.choice([{}, {"heartRate": "70"}]), "SystemProperties": system}


def _outcome(m, message):
    try:
        return "ok", m.get_measurements(message, 5)
    except Exception as e:
        return "error", (type(e).__name__, str(e))


def _deep(levels, leaf):
    node = leaf
    for _ in range(levels):
        node = {"a": [node]}
    return node


EDGE_MESSAGES = [
    {"Body": None, "Properties": {}, "SystemProperties": {}},
    {"Body": "heartRate", "Properties": {}, "SystemProperties": {}},
    {"Body": {"heartRate": None, "deviceId": "d", "endDate": "2026-01-05T00:00:00Z"}},
    {"Body": {"event": "worn", "deviceId": "d", "endDate": "2026-01-05T00:00:00Z"}},
    {"Body": {"steps": "ten", "deviceId": "d", "endDate": "2026-01-05T00:00:00Z"}},  # a comparison error
    {"Body": _deep(100, {"heartRate": 1})},       # too deep for the index: every template runs
    {"Body": _deep(2000, {"x": 1})},              # too deep for the scans themselves
    {"Body": _deep(2000, {"heartRate": 1})},
    [{"heartRate": 1}],                           # not an envelope at all
    "heartRate",
    None,
]


def test_skipping_never_changes_measurements_or_errors():
    rng = random.Random(20)
    fast, slow = mapping(True), mapping(False)
    messages = [_message(rng) for _ in range(4000)] + EDGE_MESSAGES
    outcomes = {"ok": 0, "error": 0}
    for message in messages:
        got = _outcome(fast, message)
        assert got == _outcome(slow, message), json.dumps(message)[:300]
        outcomes[got[0]] += 1
        if got[0] == "ok":
            outcomes.setdefault("measurements", 0)
            outcomes["measurements"] += len(got[1])
    # the generated messages exercise both sides: measurements and errors
    assert outcomes["error"] > 100 and outcomes.get("measurements", 0) > 500, outcomes


def test_the_index_skips_templates_on_the_example_shapes():
    """Not a timing: only that the guards exist for the shapes the example mapping uses
    (without them the index would silently do nothing)."""
    for text, lang, need in [
        ("$..[?(@heartRate)]", "JsonPath", ("all", frozenset({"heartRate"}))),
        ("$..[?(@systolic && @diastolic)]", "JsonPath", ("all", frozenset({"systolic", "diastolic"}))),
        ("$..[?(@event == 'worn')]", "JsonPath", ("all", frozenset({"event"}))),
        ("$.Body.pulse", "JsonPath", ("all", frozenset({"Body", "pulse"}))),
        ("Body[?steps]", "JmesPath", ("all", frozenset({"Body", "steps"}))),
        ("$..[?(@a || @b.c)]", "JsonPath", ("any", (("all", frozenset({"a"})), ("all", frozenset({"b", "c"}))))),
        # a condition a missing field can satisfy constrains nothing but the array's own path
        ("Body[?event != 'worn']", "JmesPath", ("all", frozenset({"Body"}))),
        ("Body[?a == `null`]", "JmesPath", ("all", frozenset({"Body"}))),
        ("Body[?!a]", "JmesPath", ("all", frozenset({"Body"}))),
        ("[?x]", "JmesPath", ("all", frozenset({"x"}))),
    ]:
        assert idx.need_of(compile_expression(text, lang)) == need, text
    for text, lang in [("$.Body.items[*]", "JsonPath"), ("length(Body)", "JmesPath"),
                       ("[?a != 'b']", "JmesPath"), ("$..[?(@a != 1 || $.b)]", "JsonPath")]:
        assert idx.need_of(compile_expression(text, lang)) is None, text


def test_message_keys():
    assert idx.message_keys({"a": 1, "b": [{"c": {"d": None}}, 3, [{"e": 1}]]}) == {"a", "b", "c", "d", "e"}
    assert idx.message_keys("x") == set()
    assert idx.message_keys(_deep(idx.MAX_DEPTH + 5, {"x": 1})) is None


@pytest.mark.parametrize("message", [{"Body": {"deviceId": "d", "endDate": "2026-01-05T00:00:00Z", "spo2": 97}}])
def test_a_skipped_template_is_really_skipped(message, monkeypatch):
    """The index is on the path: with a guard that always refuses, nothing is found."""
    m = mapping(True)
    assert m.get_measurements(message)  # "either" matches
    monkeypatch.setattr(idx, "_compile_need", lambda need: lambda keys: False)
    m = mapping(True)
    assert m.get_measurements(message) == []  # "either" is guarded: skipped


def _walked(message):
    keys = set()
    idx._walk(message, keys, 0)
    return keys


def test_message_keys_envelope_fast_path_is_the_walk():
    """The flat-envelope shortcut of ``message_keys`` gives the recursive walk's key set."""
    flat = {"heartRate": "75", "deviceId": "d", "n": 1, "f": 1.5, "b": True, "z": None}
    for message in (
            {"Body": flat, "Properties": {}, "SystemProperties": {"x-file": "/a"}},
            {"Body": flat, "Properties": {"p": 1}, "SystemProperties": {}},
            {"Body": "text", "Properties": {}, "SystemProperties": {}},
            {"Body": None, "Properties": {"k": "v"}, "SystemProperties": {}},
            {"Body": [flat, {"steps": 3}], "Properties": {}, "SystemProperties": {}},
            {"Body": {"a": {"b": {"c": 1}}}, "Properties": {"q": 2}, "SystemProperties": {}},
            {"Body": {"a": [{"b": 1}]}, "Properties": {}, "SystemProperties": {"s": 1}},
            {"Body": flat, "Properties": {"deep": {"x": 1}}, "SystemProperties": {}},
            {"Body": flat, "Properties": {}, "SystemProperties": {"list": [1, {"y": 2}]}},
            {}, {"a": 1}, {"a": {}}):
        assert idx.message_keys(message) == _walked(message), message
