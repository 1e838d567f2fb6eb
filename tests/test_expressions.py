"""Expression layer: Newtonsoft JSONPath, JMESPath token rules, fast vs general paths."""
import json
import pickle

import pytest

from conftest import load_json, vector_dir
from transforms.mapping import expressions as ex
from transforms.mapping.errors import ExpressionEvaluationException, TemplateExpressionException
from transforms.mapping.expressions import NOT_FOUND, compile_expression, compile_general
from transforms.mapping.timeutil import DateToken

DOC = json.loads("""{
  "Body": {"heartrate": 78, "device": "d1", "nested": {"heartrate": null}},
  "Properties": {"iothub-creation-time-utc": "2019-02-01T22:46:01.8750000Z"},
  "SystemProperties": {"iothub-connection-device-id": "dev-1", "iothub-enqueuedtime": "2019-02-01T22:46:02Z"},
  "My Property": "spaced",
  "items": [
    {"name": "a", "value": 1, "ok": true, "telemetry": {"BloodPressure": {"Systolic": 120, "Diastolic": 80}}},
    {"name": "b", "value": 2.5, "ok": false, "telemetry": {"BloodPressure": {"Systolic": 110}}},
    {"name": "c", "value": "3", "ok": null}
  ],
  "name": "root"
}""")


def tokens(text, data=DOC):
    return compile_expression(text).select_tokens(data)


def token(text, data=DOC):
    return compile_expression(text).select_token(data)


# --- JSONPath forms ----------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("$.Body.heartrate", 78),
    ("$['Body']['device']", "d1"),
    ("$['Body'].device", "d1"),
    ("$.['My Property']", "spaced"),
    ("$['My Property']", "spaced"),
    ("$.SystemProperties.iothub-connection-device-id", "dev-1"),
    ("$.Properties.iothub-creation-time-utc", "2019-02-01T22:46:01.8750000Z"),
    ("$.items[0].name", "a"),
    ("$.items[2]['name']", "c"),
    ("$.items[1].telemetry.BloodPressure.Systolic", 110),
    ("Body.heartrate", 78),  # "$." is optional in Newtonsoft
    ("$.Body.nested.heartrate", None),  # a JSON null is a token
    ("$.items[0].ok", True),
])
def test_single_token(text, expected):
    value = token(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text", [
    "$.missing", "$.Body.missing", "$.Body.heartrate.deeper", "$.items[3]", "$.items.name",
    "$.name[0]", "$.Body[0]", "$.items[0].telemetry.BloodPressure.Systolic.x",
    "$.items[?(@.name == 'zz')]",
])
def test_not_found(text):
    assert token(text) is NOT_FOUND
    assert tokens(text) == []


def test_root_alone_is_the_document():
    assert token("$") is DOC
    assert tokens("$") == [DOC]


@pytest.mark.parametrize("text,expected", [
    ("$.items[*].name", ["a", "b", "c"]),
    ("$.items[0,2].name", ["a", "c"]),
    ("$.items[1:].name", ["b", "c"]),
    ("$.items[-2:].name", ["b", "c"]),
    ("$.items[::-1].name", ["c", "b", "a"]),
    ("$.Body.*", [78, "d1", {"heartrate": None}]),
    ("$['Body','name']", [DOC["Body"], "root"]),
    ("$..heartrate", [78, None]),
    ("$..name", ["a", "b", "c", "root"]),  # pre-order: items come before the root's own "name"
    ("$..Systolic", [120, 110]),
    ("$..['Systolic','Diastolic']", [120, 80, 110]),
    ("$.items[*]", DOC["items"]),
    ("$.Body[*]", []),  # [*] enumerates arrays only
    ("$.items.*", []),  # .* enumerates objects only
])
def test_multiple_tokens(text, expected):
    assert tokens(text) == expected


def test_scan_all_includes_the_start_token():
    found = tokens("$.Body..*")
    assert found == [DOC["Body"], 78, "d1", {"heartrate": None}, None]


def test_select_token_with_several_matches_raises():
    for text in ("$.items[*].name", "$..heartrate", "$..[?(@.name)]"):
        with pytest.raises(TemplateExpressionException, match="^Path returned multiple tokens.$"):
            token(text)


def test_negative_index_is_an_error_like_jarray():
    with pytest.raises(ExpressionEvaluationException, match="Index was out of range"):
        token("$.items[-1]")


# --- filters ------------------------------------------------------------------------------------
def test_scan_filter_tests_the_root_itself():
    data = {"heartrate": "60", "device": "abc"}
    assert tokens("$..[?(@heartrate)]", data) == [data]
    assert token("$..[?(@heartrate)]", data) is data


def test_scan_filter_document_order_and_nesting():
    data = {"a": [{"hr": 1, "inner": {"hr": 2}}, {"x": {"hr": 3}}], "hr": 0}
    assert tokens("$..[?(@hr)]", data) == [data, data["a"][0], data["a"][0]["inner"], data["a"][1]["x"]]


def test_existence_is_true_for_null_values():
    assert tokens("$..[?(@heartrate)]", {"heartrate": None}) == [{"heartrate": None}]
    assert tokens("$..[?(@.heartrate)]", DOC) == [DOC["Body"], DOC["Body"]["nested"]]


def test_nested_existence_needs_the_whole_path():
    assert tokens("$..[?(@telemetry.BloodPressure.Systolic)]") == DOC["items"][:2]
    assert tokens("$..[?(@telemetry.BloodPressure.Systolic && @telemetry.BloodPressure.Diastolic)]") \
        == DOC["items"][:1]
    assert tokens("$..[?(@Body.heartrate)]") == [DOC]
    assert tokens("$..[?(@Body.nested.heartrate)]") == [DOC]  # null at the end still exists
    assert tokens("$..[?(@Body.heartrate.x)]") == []


def test_and_or():
    assert tokens("$..[?(@Systolic && @Diastolic)]") == [DOC["items"][0]["telemetry"]["BloodPressure"]]
    assert tokens("$..[?(@Diastolic || @device)]") == [DOC["Body"], DOC["items"][0]["telemetry"]["BloodPressure"]]


def test_and_or_have_no_precedence_each_switch_nests_the_rest():
    data = [{"a": 1}, {"b": 1, "c": 1}, {"a": 1, "c": 1}]
    # Newtonsoft: a && (b || c)  (not (a && b) || c)
    assert tokens("$[?(@.a && @.b || @.c)]", data) == [data[2]]
    # a || (b && c)
    assert tokens("$[?(@.a || @.b && @.c)]", data) == data


def test_grouping_parentheses_are_rejected_like_newtonsoft():
    with pytest.raises(TemplateExpressionException):
        compile_expression("$[?((@.a || @.b) && @.c)]")


@pytest.mark.parametrize("text,expected_names", [
    ("$.items[?(@.name == 'b')]", ["b"]),
    ("$.items[?(@.name != 'b')]", ["a", "c"]),
    ("$.items[?(@.value > 1)]", ["b", "c"]),  # "3" is compared as a number (string coercion)
    ("$.items[?(@.value >= 2.5)]", ["b", "c"]),
    ("$.items[?(@.value < 2)]", ["a"]),
    ("$.items[?(@.value <= 1.0)]", ["a"]),
    ("$.items[?(@.value == 1.0)]", ["a"]),  # integer 1 equals float 1.0
    ("$.items[?(@.value == '3')]", ["c"]),
    ("$.items[?(@.value == 3)]", []),  # no coercion of a string to a number for ==
    ("$.items[?(@.ok == true)]", ["a"]),
    ("$.items[?(@.ok == false)]", ["b"]),
    ("$.items[?(@.ok == null)]", ["c"]),
    ("$.items[?(@.ok != null)]", ["a", "b"]),
    ("$.items[?(@.missing != 1)]", []),  # no left token: never true
    ("$.items[?(@.telemetry != 1)]", ["a", "b"]),  # container vs value: "not equals" holds
    ("$.items[?(@.name=='a'||@.name=='c')]", ["a", "c"]),
    ("$.items[?(@.name == 'a' && @.value == 1)]", ["a"]),
    ("$.items[?(@['name'] == 'b')]", ["b"]),
    ("$.items[?(@.name == $.name)]", []),
    ("$.items[?(@.name =~ /^[ab]$/)]", ["a", "b"]),
    ("$.items[?(@.name =~ /^A$/i)]", ["a"]),
])
def test_filter_comparisons(text, expected_names):
    assert [t["name"] for t in tokens(text)] == expected_names


def test_null_compares_below_everything():
    data = [{"v": None}, {"v": 1}]
    assert tokens("$[?(@.v < 0)]", data) == [data[0]]


def test_filter_on_an_object_tests_nothing():
    # an object's children are JProperty tokens in Newtonsoft: no element matches
    assert tokens("$.Body[?(@.heartrate)]") == []


def test_filter_comparison_conversion_failure_is_an_evaluation_error():
    with pytest.raises(ExpressionEvaluationException, match="correct format"):
        tokens("$.items[?(@.name > 1)]")


def test_date_tokens_in_filters_and_values():
    data = {"t": DateToken(15490611618750000), "n": 1}
    assert tokens("$[?(@ == '2019-02-01T22:46:01.875Z')]", [data["t"]]) == [data["t"]]
    assert token("$.t", data) == DateToken(15490611618750000)


def test_property_names_with_dollar_and_spaces_in_brackets():
    data = {"$x": 1, "a b": {"c": 2}, "it's": 3}
    assert token("$x", data) == 1
    assert token("$['a b'].c", data) == 2
    assert token("$['it\\'s']", data) == 3


@pytest.mark.parametrize("text", [
    "$.", "$.a.", "$[", "$['a'", "$[?(@.a", "$[?(@.a == 'x)]", "$[?(@.a ~ 1)]", "$.a[x]",
    "$.a[1:2:0]", "$[?(@.a == 1 &| @.b)]", "$.a]", "$[0]x",
])
def test_bad_jsonpath_fails_at_compile(text):
    with pytest.raises(TemplateExpressionException, match="could not be parsed"):
        compile_expression(text)


# --- N17 and the iomt-fhir shapes ---------------------------------------------------------------
def test_n17_property_with_space():
    data = load_json(vector_dir("N17") / "token.json")
    match = compile_expression("$..[?(@['My Property'])]").select_tokens(data)
    assert match == [data]
    assert compile_expression("$.['My Property']").select_token(match[0]) == "data"
    assert compile_expression("$.Time").select_token(match[0]) == "2019-01-01T00:00:00Z"


def test_n07_jsonpath_and_jmespath_type_match_agree():
    cases = load_json(vector_dir("N07") / "cases.json")["cases"]
    for case in cases:
        data = case["token"]
        for field in ("heartrate", "steps"):
            by_path = compile_expression(f"$..[?(@{field})]").select_tokens(data)
            by_jmes = compile_expression(f"to_array(@)[?{field}]", "JmesPath").select_tokens(data)
            assert by_path == by_jmes == ([data] if field in data else [])


def test_iothub_envelope_with_matched_token_wrapper():
    envelope = {"Body": {"heartrate": "78", "deviceId": "dev"}, "Properties": {},
                "SystemProperties": {"iothub-connection-device-id": "dev-1"}}
    match = token("$..[?(@Body.heartrate)]", envelope)
    assert match is envelope
    wrapped = dict(envelope, matchedToken=envelope["Body"])
    assert token("$.matchedToken.heartrate", wrapped) == "78"
    assert token("$.Body.deviceId", wrapped) == "dev"


# --- JMESPath token rules --------------------------------------------------------------------------
def jm(text):
    return compile_expression(text, "JmesPath")


def test_jmespath_field_chain_and_null():
    data = {"matchedToken": {"device": "d", "nothing": None}, "arr": [1, 2]}
    assert jm("matchedToken.device").select_token(data) == "d"
    assert jm("matchedToken.nothing").select_token(data) is NOT_FOUND
    assert jm("matchedToken.nothing").select_tokens(data) == []
    assert jm("matchedToken.missing").select_token(data) is NOT_FOUND
    assert jm("arr.x").select_token(data) is NOT_FOUND
    assert jm('"matchedToken"."device"').select_token(data) == "d"


def test_jmespath_array_that_is_not_a_projection_is_one_token():
    data = {"Body": [{"hr": 1}, {"hr": 2}]}
    assert jm("Body").select_token(data) == data["Body"]
    assert jm("Body").select_tokens(data) == [data["Body"]]
    assert jm("[Body, Body]").select_tokens(data) == [[data["Body"], data["Body"]]]
    assert jm("sort_by(Body, &hr)").select_tokens(data) == [data["Body"]]


@pytest.mark.parametrize("text", [
    "Body[*]", "Body[?hr]", "Body[]", "Body[0:2]", "Body[*].hr", "x | Body[*]", "x.Body[*]", "*.hr",
])
def test_jmespath_projections_are_several_tokens(text):
    data = {"Body": [{"hr": 1}, {"hr": 2}], "x": {"Body": [{"hr": 1}, {"hr": 2}]},
            "y": {"hr": 3}, "z": {"hr": 4}}
    expr = jm(text)
    assert len(expr.select_tokens(data)) >= 2
    with pytest.raises(TemplateExpressionException) as info:
        expr.select_token(data)
    assert str(info.value) == f"Multiple tokens were returned using expression {text}"


def test_jmespath_projection_with_one_or_no_element():
    data = {"Body": [{"hr": 1}, {"x": 2}]}
    assert jm("Body[?hr]").select_token(data) == {"hr": 1}
    assert jm("Body[?hr]").select_tokens(data) == [{"hr": 1}]
    assert jm("Body[?zz]").select_token(data) is NOT_FOUND
    assert jm("Body[?zz]").select_tokens(data) == []
    assert jm("nothing[*]").select_token(data) is NOT_FOUND  # projection of null
    assert jm("[Body][?contains(keys(@[0]), `hr`)] | @[0]").select_token(data) == data["Body"]


def test_jmespath_medtech_docs_match_expression():
    data = {"Body": {"heartRate": "78"}}
    expr = jm("[Body][?contains(keys(@), `heartRate`)] | @[0]")
    assert expr.select_tokens(data) == [data["Body"]]
    assert expr.select_token({"Body": {"x": 1}}) is NOT_FOUND


def test_jmespath_multiple_tokens_message_names_the_expression():
    with pytest.raises(TemplateExpressionException) as info:
        jm("a[*]").select_token({"a": [1, 2]})
    assert str(info.value) == "Multiple tokens were returned using expression a[*]"


def test_jmespath_false_and_empty_results_are_tokens():
    assert jm("a").select_tokens({"a": False}) == [False]
    assert jm("a").select_token({"a": []}) == []


def test_bad_jmespath_message():
    with pytest.raises(TemplateExpressionException) as info:
        compile_expression("a[", "JmesPath")
    assert str(info.value) == "The following JmesPath expression could not be parsed: a["


def test_builtin_type_error_is_an_evaluation_error():
    with pytest.raises(ExpressionEvaluationException):
        jm("length(a)").select_token({"a": 1})


# --- API details ----------------------------------------------------------------------------------
@pytest.mark.parametrize("language,expected", [
    ("JsonPath", "JsonPath"), ("jsonpath", "JsonPath"), ("JSONPATH", "JsonPath"), (None, "JsonPath"),
    ("JmesPath", "JmesPath"), ("jmespath", "JmesPath"), ("JMESPath", "JmesPath"),
])
def test_language_is_case_insensitive(language, expected):
    expr = compile_expression("a", language)
    assert expr.language == expected and expr.text == "a"


def test_unknown_language_is_rejected():
    with pytest.raises(TemplateExpressionException):
        compile_expression("a", "XPath")


def test_default_language_is_jsonpath():
    assert compile_expression("$.a").language == "JsonPath"


def test_expressions_pickle_and_are_cached():
    expr = compile_expression("$..[?(@heartrate)]")
    assert compile_expression("$..[?(@heartrate)]") is expr
    clone = pickle.loads(pickle.dumps(expr))
    assert clone.select_tokens({"heartrate": 1}) == [{"heartrate": 1}]
    assert pickle.loads(pickle.dumps(NOT_FOUND)) is NOT_FOUND


def test_not_found_is_distinct_from_null_and_falsy():
    assert NOT_FOUND is not None and not NOT_FOUND and repr(NOT_FOUND) == "NOT_FOUND"


# --- fast paths -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,language,kind", [
    ("$.matchedToken.heartRate", "JsonPath", "_JsonPathStrChain"),
    ("$.Body.deviceId", "JsonPath", "_JsonPathStrChain"),
    ("$['x'].y", "JsonPath", "_JsonPathStrChain"),
    ("$.SystemProperties.iothub-connection-device-id", "JsonPath", "_JsonPathStrChain"),
    ("$.a[0].b", "JsonPath", "_JsonPathMixedChain"),
    ("$..[?(@heartrate)]", "JsonPath", "_JsonPathScanExists"),
    ("$..[?(@systolic && @diastolic)]", "JsonPath", "_JsonPathScanExists"),
    ("$..[?(@telemetry.BloodPressure.Systolic && @telemetry.BloodPressure.Diastolic)]", "JsonPath",
     "_JsonPathScanExists"),
    ("$..[?(@['My Property'])]", "JsonPath", "_JsonPathScanExists"),
    ("$..[?(@.a == 1)]", "JsonPath", "_JsonPathScanExists"),
    ("$..[?(@event == 'worn' && @deviceId)]", "JsonPath", "_JsonPathScanExists"),
    ("$..[?(@.a == @.b)]", "JsonPath", "_JsonPathGeneral"),
    ("$..[?(@.a.b == 1)]", "JsonPath", "_JsonPathGeneral"),
    ("matchedToken.device", "JmesPath", "_JmesPathFieldChain"),
    ("Body", "JmesPath", "_JmesPathFieldChain"),
    ("to_array(@)[?heartrate]", "JmesPath", "_JmesPathGeneral"),
])
def test_fast_path_selection(text, language, kind):
    assert type(compile_expression(text, language)).__name__ == kind
    assert type(compile_general(text, language)).__name__ in ("_JsonPathGeneral", "_JmesPathGeneral")


EQUIVALENCE_DOCS = [
    DOC,
    {"heartrate": None},
    {"a": [{"b": [{"c": 1}]}, "x", 3, None, True], "b": {"c": {"d": None}}},
    [{"heartrate": 1}, [{"heartrate": 2, "steps": 3}], "s", 4],
    "just a string",
    None,
    42,
    {"matchedToken": {"heartRate": "70", "device": ["x"]}, "Body": {"deviceId": 5}, "x": {"y": 1}},
    {"telemetry": {"BloodPressure": {"Systolic": 1, "Diastolic": None}}, "systolic": 1, "diastolic": 2},
    {"My Property": "data", "Time": "2019-01-01T00:00:00Z", "t": DateToken(0)},
    {"event": "worn", "a": 1, "x": [{"event": "worn", "a": "1"}, {"event": None, "a": 1.0}],
     "y": {"event": {"k": "worn"}, "a": [1]}, "z": {"event": "Worn", "a": True, "deviceId": "d"},
     "w": [[{"event": "worn", "deviceId": 3, "a": 2}]], "v": {"event": DateToken(0), "a": "x"}},
]

EQUIVALENCE_EXPRESSIONS = [
    ("$.matchedToken.heartRate", "JsonPath"), ("$.Body.deviceId", "JsonPath"), ("$['x'].y", "JsonPath"),
    ("$.a[0].b[0].c", "JsonPath"), ("$.a[1]", "JsonPath"), ("$.a[4]", "JsonPath"), ("$[1][0].steps", "JsonPath"),
    ("$.heartrate", "JsonPath"), ("$.['My Property']", "JsonPath"), ("$.t", "JsonPath"),
    ("$.b.c.d", "JsonPath"), ("$.b.c.d.e", "JsonPath"), ("$.items[0].name", "JsonPath"),
    ("$..[?(@heartrate)]", "JsonPath"), ("$..[?(@heartrate && @steps)]", "JsonPath"),
    ("$..[?(@heartrate || @c)]", "JsonPath"), ("$..[?(@b.c)]", "JsonPath"), ("$..[?(@b.c.d)]", "JsonPath"),
    ("$..[?(@telemetry.BloodPressure.Systolic && @telemetry.BloodPressure.Diastolic)]", "JsonPath"),
    ("$..[?(@systolic && @diastolic)]", "JsonPath"), ("$..[?(@['My Property'])]", "JsonPath"),
    ("$..[?(@a && @b || @heartrate)]", "JsonPath"),
    ("$..[?(@event == 'worn')]", "JsonPath"), ("$..[?(@.a == 1)]", "JsonPath"), ("$..[?(@a != 1)]", "JsonPath"),
    ("$..[?(@a > 0)]", "JsonPath"), ("$..[?(@a <= '1')]", "JsonPath"), ("$..[?(@a === 1)]", "JsonPath"),
    ("$..[?(@a !== 1)]", "JsonPath"), ("$..[?(@event =~ /^w.*$/)]", "JsonPath"),
    ("$..[?(@event == 'worn' && @deviceId)]", "JsonPath"), ("$..[?(@event == null)]", "JsonPath"),
    ("$..[?(@a == true || @event == 'Worn')]", "JsonPath"),
    ("matchedToken.device", "JmesPath"), ("matchedToken.heartRate", "JmesPath"), ("Body", "JmesPath"),
    ("Body.deviceId", "JmesPath"), ("b.c.d", "JmesPath"), ("a.b", "JmesPath"), ('"My Property"', "JmesPath"),
]


def _outcome(select, doc):
    """The tokens, or the error a comparison Newtonsoft refuses raises (type and message)."""
    try:
        return select(doc)
    except Exception as e:
        return type(e).__name__, str(e)


@pytest.mark.parametrize("text,language", EQUIVALENCE_EXPRESSIONS)
def test_fast_and_general_paths_agree(text, language):
    fast, general = compile_expression(text, language), compile_general(text, language)
    assert type(fast) is not type(general)
    for doc in EQUIVALENCE_DOCS:
        assert _outcome(fast.select_tokens, doc) == _outcome(general.select_tokens, doc), doc
        try:
            expected = general.select_token(doc)
        except (TemplateExpressionException, ExpressionEvaluationException) as e:
            with pytest.raises(type(e)):
                fast.select_token(doc)
        else:
            got = fast.select_token(doc)
            assert got is expected or got == expected, doc
            assert type(got) is type(expected)


def test_fast_path_does_not_index_into_strings():
    assert compile_expression("$.s[0]").select_token({"s": "abc"}) is NOT_FOUND
    assert compile_expression("$.d[0]").select_token({"d": {"0": 1}}) is NOT_FOUND


def test_module_exports():
    assert set(ex.__all__) >= {"NOT_FOUND", "Expression", "compile_expression"}
    assert isinstance(compile_expression("$.a"), ex.Expression)
    assert isinstance(compile_expression("a", "JmesPath"), ex.Expression)


def test_token_selector_is_select_token():
    """``token_selector``'s two-key closure selects what ``select_token`` selects."""
    from transforms.mapping.expressions import token_selector

    datas = [{"matchedToken": {"deviceId": "d", "x": 1}}, {"matchedToken": {"x": 1}}, {"matchedToken": None},
             {"matchedToken": "text"}, {"matchedToken": [1, 2]}, {"matchedToken": 5}, {"other": {}}, {}, [], "s",
             None, 3, {"matchedToken": {"deviceId": None}}, {"matchedToken": {"deviceId": {"a": [1]}}},
             {"matchedToken": DateToken(0)}, {"a": {"b": {"c": 0}}}]
    for text in ("$.matchedToken.deviceId", "$.a.b", "$.a.b.c", "$.matchedToken", "$.a[0].b", "$..deviceId"):
        expression = compile_expression(text)
        select = token_selector(expression)
        for data in datas:
            try:
                expected = expression.select_token(data)
            except Exception as e:  # the selector must fail the same way
                expected = type(e)
            try:
                got = select(data)
            except Exception as e:
                got = type(e)
            assert got is expected or got == expected, (text, data)
    assert token_selector(compile_expression("$.a.b"))({"a": {}}) is NOT_FOUND
