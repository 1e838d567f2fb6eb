"""Device mappings: the reference's N vectors, then our own cases for every template type,
field, error and quirk (data written here, so a user's clone tests the same behaviour)."""
import json

import pytest

from conftest import load_json, vector_dir
from transforms.mapping.device_templates import envelope, load_device_mapping
from transforms.mapping.errors import IncompatibleDataException, TemplateExpressionException
from transforms.mapping.timeutil import parse_datetime


def comparable(m_json):
    """Measurement JSON with times as instants and no IngestionTimeUtc (not in the vectors)."""
    d = {k: v for k, v in m_json.items() if k != "IngestionTimeUtc"}
    d["OccurrenceTimeUtc"] = parse_datetime(d["OccurrenceTimeUtc"])
    return d


def run(mapping, token):
    return [comparable(m.to_json()) for m in mapping.get_measurements(token)]


def expected_of(items):
    return [comparable(m) for m in items]


# ---------------------------------------------------------------- reference vectors
@pytest.mark.parametrize("name", ["N01", "N02", "N03", "N04", "N05", "N06", "N10", "N12", "N14", "N17"])
def test_vector_single_collection(name):
    d = vector_dir(name)
    mapping = load_device_mapping(str(d / "devicecontent.json"))
    assert mapping.valid, mapping.errors
    assert run(mapping, load_json(d / "token.json")) == expected_of(load_json(d / "expected.json")["measurements"])


@pytest.mark.parametrize("name", ["N08", "N09"])
def test_vector_iot_single_template(name):
    d = vector_dir(name)
    wrapped = {"templateType": "CollectionContent", "template": [load_json(d / "template.json")]}
    mapping = load_device_mapping(json.dumps(wrapped))
    assert mapping.valid, mapping.errors
    assert run(mapping, load_json(d / "token.json")) == expected_of(load_json(d / "expected.json")["measurements"])


def test_vector_n11_iot_central_raw_export():
    d = vector_dir("N11")
    mapping = load_device_mapping(str(d / "devicecontent.json"))
    assert mapping.valid, mapping.errors
    assert run(mapping, load_json(d / "token.json")) == expected_of(load_json(d / "expected.json")["measurements"])


def test_vector_n07_jsonpath_and_jmespath_agree():
    d = vector_dir("N07")
    cases = load_json(d / "cases.json")
    for file in cases["applies_to"]:
        mapping = load_device_mapping(str(d / file))
        assert mapping.valid, (file, mapping.errors)
        for case in cases["cases"]:
            assert run(mapping, case["token"]) == expected_of(case["expected"]), (file, case["name"])


def test_vector_n13_required_values_and_correlation():
    d = vector_dir("N13")
    for case in load_json(d / "cases.json")["cases"]:
        mapping = load_device_mapping(str(d / case["template"]))
        assert mapping.valid, mapping.errors
        if "expected_error" in case:
            with pytest.raises(IncompatibleDataException) as e:
                mapping.get_measurements(case["token"])
            assert e.value.error_type == case["expected_error"]["type"]
            if "message_contains" in case["expected_error"]:
                assert case["expected_error"]["message_contains"] in str(e.value)
        else:
            assert run(mapping, case["token"]) == expected_of(case["expected"])


def test_vector_n15_validation_errors():
    d = vector_dir("N15")
    exp = load_json(d / "expected.json")
    for file, want in exp.items():
        if not file.startswith("devicecontent"):
            continue
        mapping = load_device_mapping(str(d / file))
        assert mapping.valid is want["valid"], (file, mapping.errors)
        messages = [e.message for e in mapping.errors]
        for needle in want.get("errors_contain", []):
            assert any(needle in m for m in messages), (file, needle, messages)
        lines = want.get("error_lines (MappingValidatorTests)")
        if lines:
            assert sorted(e.line for e in mapping.errors) == sorted(lines)
        if want["valid"]:
            assert mapping.get_measurements({"anything": 1}) == []


def test_vector_n16_mixed_validity():
    d = vector_dir("N16")
    exp = load_json(d / "expected.json")
    mapping = load_device_mapping(str(d / "devicecontent.json"))
    assert mapping.valid is exp["valid"]
    assert len(mapping.templates) == exp["registered_templates"]
    assert run(mapping, load_json(d / "token.json")) == expected_of(exp["measurements"])


# ---------------------------------------------------------------- our own cases
def collection(*templates):
    return json.dumps({"templateType": "CollectionContent",
                       "template": [{"templateType": t, "template": body} for t, body in templates]}, indent=1)


HR_CALC = {
    "typeName": "hr",
    "typeMatchExpression": "$..[?(@pulse)]",
    "deviceIdExpression": "$.matchedToken.dev",
    "timestampExpression": "$.matchedToken.at",
    "patientIdExpression": "$.Properties.patient",
    "values": [{"valueName": "pulse", "valueExpression": "$.matchedToken.pulse", "required": True},
               {"valueName": "note", "valueExpression": "$.matchedToken.note"}],
}


def test_calculated_reads_match_and_message_scope():
    m = load_device_mapping(collection(("CalculatedContent", HR_CALC))).ensure_valid()
    msg = envelope({"readings": [{"pulse": 61, "dev": "d1", "at": "2020-01-01T00:00:00Z"},
                                 {"pulse": 62.0, "dev": "d1", "at": "2020-01-01T00:01:00+01:00", "note": ""}]},
                   {"patient": "p9"})
    out = [x.to_json() for x in m.get_measurements(msg, ingestion_time=7)]
    assert [(o["PatientId"], o["OccurrenceTimeUtc"], o["Properties"]) for o in out] == [
        ("p9", "2020-01-01T00:00:00Z", [{"Name": "pulse", "Value": "61"}]),
        ("p9", "2019-12-31T23:01:00Z", [{"Name": "pulse", "Value": "62"}, {"Name": "note", "Value": ""}]),
    ]
    assert out[0]["IngestionTimeUtc"] == "1970-01-01T00:00:00.0000007Z"


def test_value_string_conversions_follow_dotnet():
    m = load_device_mapping(collection(("CalculatedContent", HR_CALC))).ensure_valid()
    msg = envelope({"pulse": True, "dev": 12345, "at": "2020-01-01T00:00:00Z", "note": 1.5e-7})
    (out,) = m.get_measurements(msg)
    assert out.device_id == "12345"
    assert out.properties == (("pulse", "True"), ("note", "1.5E-07"))


def test_required_value_null_empty_and_missing():
    m = load_device_mapping(collection(("CalculatedContent", HR_CALC))).ensure_valid()
    for pulse in (None, "", "  "):
        with pytest.raises(IncompatibleDataException, match=r"required value for \[pulse\]"):
            m.get_measurements(envelope({"pulse": pulse, "dev": "d", "at": "2020-01-01T00:00:00Z"}))
    with pytest.raises(IncompatibleDataException, match=r"DeviceIdExpression\] using \$\.matchedToken\.dev"):
        m.get_measurements(envelope({"pulse": 1, "at": "2020-01-01T00:00:00Z"}))


def test_bad_timestamp_is_incompatible_data_without_the_value_in_the_message():
    m = load_device_mapping(collection(("CalculatedContent", HR_CALC))).ensure_valid()
    with pytest.raises(IncompatibleDataException) as e:
        m.get_measurements(envelope({"pulse": 1, "dev": "d", "at": "secret-garbage"}))
    assert "TimestampExpression" in str(e.value) and "secret-garbage" not in str(e.value)
    with pytest.raises(IncompatibleDataException):
        m.get_measurements(envelope({"pulse": 1, "dev": "d", "at": 1577836800}))  # epoch needs fromUnixTimestamp


def test_object_value_optional_is_dropped_required_fails():
    m = load_device_mapping(collection(("CalculatedContent", HR_CALC))).ensure_valid()
    (out,) = m.get_measurements(envelope({"pulse": 1, "dev": "d", "at": "2020-01-01T00:00:00Z", "note": {"a": 1}}))
    assert out.properties == (("pulse", "1"),)
    with pytest.raises(IncompatibleDataException, match="Encountered an error"):
        m.get_measurements(envelope({"pulse": [1], "dev": "d", "at": "2020-01-01T00:00:00Z"}))


def test_one_failing_match_fails_the_whole_message():
    m = load_device_mapping(collection(("CalculatedContent", HR_CALC))).ensure_valid()
    msg = envelope([{"pulse": 1, "dev": "d", "at": "2020-01-01T00:00:00Z"}, {"pulse": 2, "at": "2020-01-01T00:00:00Z"}])
    with pytest.raises(IncompatibleDataException):
        m.get_measurements(msg)


def test_jmespath_default_language_and_functions():
    t = {"typeName": "steps", "defaultExpressionLanguage": "JmesPath",
         "typeMatchExpression": "Body[?steps]",
         "deviceIdExpression": "insertString(matchedToken.dev, 'dev-', `0`)",
         "timestampExpression": "fromUnixTimestampMs(matchedToken.ms)",
         "correlationIdExpression": {"value": "$.matchedToken.session", "language": "JsonPath"},
         "values": [{"valueName": "steps", "valueExpression": "matchedToken.steps", "required": "true"}]}
    m = load_device_mapping(collection(("CalculatedContent", t))).ensure_valid()
    (out,) = m.get_measurements(envelope([{"steps": 7, "dev": "1", "ms": 1000, "session": "s1"}, {"x": 1}]))
    assert (out.device_id, out.occurrence_time, out.correlation_id, out.properties) == \
        ("dev-1", 10_000_000, "s1", (("steps", "7"),))
    with pytest.raises(IncompatibleDataException, match="CorrelationIdExpression"):
        m.get_measurements(envelope([{"steps": 7, "dev": "1", "ms": 1000}]))


def test_single_token_expression_matching_several_is_an_error():
    t = dict(HR_CALC, deviceIdExpression="$.matchedToken.devs[*]")
    m = load_device_mapping(collection(("CalculatedContent", t))).ensure_valid()
    with pytest.raises(TemplateExpressionException):
        m.get_measurements(envelope({"pulse": 1, "devs": ["a", "b"], "at": "2020-01-01T00:00:00Z"}))


def test_jsonpath_content_evaluates_against_match_and_iot_ignores_device_fields():
    jp = {"typeName": "t", "typeMatchExpression": "$.Body.items[*]", "deviceIdExpression": "$.d",
          "timestampExpression": "$.t", "values": [{"valueName": "v", "valueExpression": "$.v"}]}
    iot = {"typeName": "u", "typeMatchExpression": "$..[?(@Body.v)]", "deviceIdExpression": "$.ignored",
           "values": [{"valueName": "v", "valueExpression": "$.Body.v"}]}
    m = load_device_mapping(collection(("JsonPathContentTemplate", jp), ("iotjsonpathcontent", iot))).ensure_valid()
    msg = envelope({"v": "9", "items": [{"d": "x", "t": "2020-01-01T00:00:00Z", "v": 3}]},
                   {}, {"iothub-connection-device-id": "hub-dev", "iothub-enqueuedtime": "2020-01-02T00:00:00Z"})
    a, b = m.get_measurements(msg)
    assert (a.type, a.device_id, a.properties) == ("t", "x", (("v", "3"),))
    assert (b.type, b.device_id, b.occurrence_time) == ("u", "hub-dev", parse_datetime("2020-01-02T00:00:00Z"))


def test_template_type_spellings():
    for ok in ("JsonPathContent", "jsonpathcontenttemplate", "IotJsonPathContentTemplate", "CalculatedContent"):
        assert load_device_mapping(collection((ok, dict(HR_CALC)))).templates or ok.startswith("Iot")
    for bad in ("CalculatedContentTemplate", "IotCentralJsonPathContentTemplate", "Nope"):
        mapping = load_device_mapping(collection((bad, HR_CALC)))
        assert not mapping.valid
        assert mapping.errors[0].message == f"No match found for template type {bad}."


def test_every_problem_reported_at_once_with_lines():
    bad = {"typeName": "x", "typeMatchExpression": "$..[?(@a)]", "deviceIdExpression": "$.d",
           "timestampExpression": {"value": "not a [valid", "language": "JmesPath"},
           "surprise": 1, "values": [{"valueName": "v", "valueExpression": "$.v", "required": "perhaps"}]}
    text = collection(("CalculatedContent", bad), ("CalculatedContent", {"typeName": "y"}))
    mapping = load_device_mapping(text)
    msgs = sorted(e.message for e in mapping.errors)
    assert any("JmesPath expression could not be parsed" in m for m in msgs), msgs
    assert any("Could not find member 'surprise'" in m for m in msgs)
    assert any("'required'" in m for m in msgs)
    for field in ("TypeMatchExpression", "DeviceIdExpression", "TimestampExpression", "Values"):
        assert f"Required property '{field}' not found in JSON." in msgs
    assert all(e.line > 0 for e in mapping.errors)
    assert mapping.templates == []


def test_bad_json_mapping_is_reported_not_raised():
    mapping = load_device_mapping('{\n "templateType": \n')
    assert not mapping.valid and "Line 3" in str(mapping.errors[0])
