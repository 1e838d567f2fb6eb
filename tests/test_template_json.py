import pytest

from transforms.mapping import template_json as tj
from transforms.mapping.errors import InvalidTemplateException

TEXT = '{\n  "a": 1,\n  "obj": {\n    "Name": "x",\n    "extra": true\n  },\n  "arr": [1.5, -2e3, "s\\u00e9", null, false]\n}'


def test_parse_values_and_positions():
    doc = tj.parse(TEXT)
    assert doc.value == {"a": 1, "obj": {"Name": "x", "extra": True}, "arr": [1.5, -2000.0, "s\u00e9", None, False]}
    obj = doc.value["obj"]
    assert doc.pos(obj) == (3, 10)
    assert doc.key_pos(obj, "extra") == (5, 5)
    assert doc.pos(doc.value["arr"]) == (7, 10)
    assert doc.pos(doc.value) == (1, 1)


def test_bom_is_ignored():
    assert tj.parse("\ufeff{}").value == {}


@pytest.mark.parametrize("bad,line", [('{\n  "templateType":\n}', 3), ("{\"a\": 1,}", 1), ("[1 2]", 1), ("{} x", 1), ("", 1)])
def test_syntax_errors_have_line_numbers(bad, line):
    with pytest.raises(InvalidTemplateException) as e:
        tj.parse(bad)
    assert f"Line {line}," in str(e.value)


def test_strict_object_collects_problems():
    doc = tj.parse(TEXT)
    errors = []
    r = tj.StrictObject(doc, doc.value["obj"], "Thing", errors)
    assert r.get("name", tj.as_string) == "x"  # case-insensitive
    assert r.get("missing", tj.as_string, required=True) is None
    r.finish()
    assert [e.message for e in errors] == [
        "Required property 'Missing' not found in JSON.",
        "Could not find member 'extra' on object of type 'Thing'.",
    ]
    assert errors[0].line == 3 and errors[1].line == 5
    assert not r.ok


@pytest.mark.parametrize("raw,value", [(True, True), ("true", True), ("False", False), (" TRUE ", True)])
def test_as_bool_accepts_strings(raw, value):
    assert tj.as_bool(raw) is value


def test_as_bool_rejects():
    with pytest.raises(ValueError):
        tj.as_bool("yes")


def test_conversion_error_reported_at_key():
    doc = tj.parse('{\n "required": "maybe"\n}')
    errors = []
    r = tj.StrictObject(doc, doc.value, "V", errors)
    assert r.get("required", tj.as_bool, default=False) is False
    assert errors[0].line == 2 and "required" in errors[0].message
