"""jsonpath-ng as an independent oracle for the JSONPath shapes where its semantics and
Newtonsoft's agree (key chains, bracketed names, indexes, wildcards over arrays).

Why only an oracle: for the rest (``$..`` order and root inclusion, ``@name`` existence
filters, ``[*]`` on objects, negative indexes, filter grammar) jsonpath-ng differs from
Newtonsoft, which the reference uses, so the runtime uses our Newtonsoft port
(``jsonpath_newtonsoft``) and its precompiled fast paths.
"""
import jsonpath_ng
import pytest

from transforms.mapping.expressions import compile_expression

DOCS = [
    {"Body": {"deviceId": "d1", "hr": 61, "items": [{"v": 1}, {"v": 2}, {"v": None}]},
     "Properties": {"a-b": "x"}, "SystemProperties": {"iothub-connection-device-id": "dev"}},
    {"Body": [{"deviceId": "d2"}], "Properties": {}, "SystemProperties": {}},
    {"Body": {"items": []}, "Properties": {"a-b": {"deep": True}}},
]

EXPRESSIONS = [
    "$.Body.deviceId",
    "$.Body.hr",
    "$.Body.items[0].v",
    "$.Body.items[2].v",
    "$.Body.items[*].v",
    "$['Properties']['a-b']",
    "$.Properties['a-b'].deep",
    "$.SystemProperties['iothub-connection-device-id']",
    "$.Body.missing",
    "$.Body[0].deviceId",
]


@pytest.mark.parametrize("expr", EXPRESSIONS)
@pytest.mark.parametrize("doc", range(len(DOCS)))
def test_agrees_with_jsonpath_ng_on_common_shapes(expr, doc):
    ours = compile_expression(expr).select_tokens(DOCS[doc])
    oracle = [m.value for m in jsonpath_ng.parse(expr).find(DOCS[doc])]
    assert ours == oracle


def test_where_newtonsoft_differs_we_follow_newtonsoft():
    doc = {"heartRate": 60, "nested": {"heartRate": 61}}
    ours = compile_expression("$..[?(@heartRate)]").select_tokens(doc)
    assert ours == [doc, doc["nested"]]  # the scan filter tests the root too (reference quirk)
