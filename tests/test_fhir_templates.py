"""FHIR mappings: loading rules (with line numbers) and Observations for vectors F01-F06, F12, E01, E02
plus our own cases for every value type."""
import json

import pytest
from fhir.resources.R4B.observation import Observation

from conftest import load_json, vector_dir
from transforms.mapping.errors import (FhirDataMappingException, InvalidQuantityFhirValueException,
                                       InvalidTemplateException, TemplateNotFoundException)
from transforms.mapping.fhir_templates import (ResolvedIds, build_observation, load_fhir_mapping,
                                               measurement_groups, observation_groups,
                                               parse_quantity_value)
from transforms.mapping.measurement import Measurement
from transforms.mapping.template_json import parse
from transforms.mapping.timeutil import parse_datetime

IDS = ResolvedIds("pat-logical-1", "dev-logical-1")
ISSUED = parse_datetime("2024-05-06T07:08:09.1234567Z")


def validate(obs):
    """R4B model validation (tests only, never on the hot path)."""
    Observation.model_validate(obs)
    return obs


def without_issued(obs):
    return {k: v for k, v in obs.items() if k != "issued"}


def ids_of(d):
    r = load_json(d / "resolved_ids.json")
    return ResolvedIds(r["Patient"], r["Device"], r.get("Encounter"))


def observations_for(mapping, measurement_group_json, ids):
    ms = [Measurement.from_json(x) for x in measurement_group_json["Data"]]
    out = []
    for mg in measurement_groups(ms):
        template = mapping.template_for(mg.measure_type)
        for og in observation_groups(template, mg):
            out.append(validate(build_observation(template, og, ids, ISSUED)))
    return out


# ---------------------------------------------------------------- vectors F01-F06
@pytest.mark.parametrize("name", ["F01", "F02", "F03", "F04", "F05"])
def test_vector_observations(name):
    d = vector_dir(name)
    mapping = load_fhir_mapping(str(d / "fhirmapping.json"))
    assert mapping.valid, mapping.errors
    got = observations_for(mapping, load_json(d / "measurement_group.json"), ids_of(d))
    expected = load_json(d / "expected_observations.json")["observations"]
    assert [without_issued(o) for o in got] == [without_issued(o) for o in expected]
    assert all(o["issued"] == "2024-05-06T07:08:09.1234567Z" for o in got)


def test_f01_single_template_file_is_not_a_collection():
    d = vector_dir("F01")
    mapping = load_fhir_mapping(str(d / "fhirmapping_single.json"))
    assert not mapping.valid
    assert mapping.errors[0].message == (
        "Expected TemplateType value CollectionFhirTemplate, actual CodeValueFhir.")
    wrapped = {"templateType": "CollectionFhir", "template": [load_json(d / "fhirmapping_single.json")]}
    assert load_fhir_mapping(json.dumps(wrapped)).type_names() == ["heartrate"]


def test_f06_correlation_and_daily():
    d = vector_dir("F06")
    mapping = load_fhir_mapping(str(d / "fhirmapping.json"))
    got = []
    for mg in load_json(d / "measurement_groups.json"):
        got += observations_for(mapping, mg, ids_of(d))
    expected = load_json(d / "expected_observations.json")["observations"]
    assert [without_issued(o) for o in got] == [without_issued(o) for o in expected]


def test_f02_hourly_quantity_with_two_readings_fails():
    d = vector_dir("F02")
    case = load_json(d / "error_case.json")
    # fhirmapping_hourly.json is a single CodeValueFhir; wrap it in a collection to load it.
    single = load_json(d / "fhirmapping_hourly.json")
    mapping = load_fhir_mapping(json.dumps({"templateType": "CollectionFhir", "template": [single]}))
    template = mapping.template_for("bloodpressure")
    ms = [Measurement.from_json(x) for x in case["measurements"]]
    (group,) = observation_groups(template, ms)
    with pytest.raises(InvalidQuantityFhirValueException) as e:
        build_observation(template, group, IDS)
    assert f"{e.value.error_type}: {e.value}" == case["expected_error"]


def test_f03_string_with_two_values_fails_clearly():
    d = vector_dir("F03")
    template = load_fhir_mapping(str(d / "fhirmapping.json")).template_for("stringDetail")
    ms = [Measurement("stringDetail", parse_datetime("2020-08-10T00:15:00Z"), "d", (("reasonText", "a"),)),
          Measurement("stringDetail", parse_datetime("2020-08-10T00:15:01Z"), "d", (("reasonText", "b"),))]
    groups = observation_groups_for_interval(template, ms, 60)
    with pytest.raises(FhirDataMappingException) as e:
        build_observation(template, groups[0], IDS)
    assert str(e.value) == "Expected 1 value for String value 'reasonText'. Received 2."


def observation_groups_for_interval(template, ms, interval):
    from transforms.mapping.grouping import observation_groups_for
    return observation_groups_for(interval, ms)


# ---------------------------------------------------------------- F12 / E01 / E02
def test_f12_type_and_value_names():
    d = vector_dir("F12")
    ok = load_fhir_mapping(str(d / "fhirmapping.json"))
    assert ok.type_names() == ["heartrate", "bloodpressure"]
    assert ok.value_names("heartrate") == {"hr"}
    assert ok.value_names("BloodPressure") == {"diastolic", "systolic"}
    missing = load_fhir_mapping(str(d / "fhirmapping_missing_type.json"))
    assert missing.type_names() == ["heartrate", "bloodpressureBadTypeName"]
    with pytest.raises(TemplateNotFoundException):
        missing.template_for("bloodpressure")
    wrong = load_fhir_mapping(str(d / "fhirmapping_wrong_valuename.json"))
    assert wrong.value_names("bloodpressure") == {"diastolic", "systolicBadValueName"}


def test_f12_observation_components():
    d = vector_dir("F12")
    case = load_json(d / "expected.json")["cases"][0]
    m = Measurement.from_json(case["measurements"][0])
    for fhir, names in (("fhirmapping.json", ["diastolic", "systolic"]),
                        ("fhirmapping_wrong_valuename.json", ["diastolic"])):
        template = load_fhir_mapping(str(d / fhir)).template_for(m.type)
        (group,) = observation_groups(template, [m])
        obs = validate(build_observation(template, group, IDS))
        assert obs["code"]["text"] == "bloodpressure"
        assert [c["code"]["text"] for c in obs["component"]] == names
        data = [c["valueSampledData"]["data"].split(" ") for c in obs["component"]]
        assert data[0][0] == "80" and len(data[0]) == 3600
        if len(data) > 1:
            assert data[1][0] == "60"


@pytest.mark.parametrize("name", ["E01", "E02"])
def test_end_to_end_observation_part(name):
    d = vector_dir(name)
    expected = load_json(d / "expected.json")
    m = Measurement.from_json(expected["normalized"][0])
    if (d / "resolved_ids.json").exists():
        ids = ids_of(d)
    else:  # E02 is Create mode: ids are the hashes of the message's identifiers
        from transforms.mapping.identifiers import device_resource_id, patient_resource_id
        ids = ResolvedIds(patient_resource_id(m.patient_id), device_resource_id(m.device_id))
    mapping = load_fhir_mapping(str(d / "fhirmapping.json"))
    template = mapping.template_for(m.type)
    got = [validate(build_observation(template, g, ids)) for g in observation_groups(template, [m])]
    assert [without_issued(o) for o in got] == [without_issued(o) for o in expected["observations"]]


def test_e02_sampled_data_slot():
    d = vector_dir("E02")
    obs = load_json(d / "expected.json")["observations"][0]
    tokens = obs["valueSampledData"]["data"].split(" ")
    assert len(tokens) == 3600 and tokens[1103] == "65" and tokens.count("E") == 3599


# ---------------------------------------------------------------- loading errors
def test_n15_invalid_fhir_mapping_collects_all_errors_with_lines():
    d = vector_dir("N15")
    mapping = load_fhir_mapping(str(d / "fhirmapping_invalid.json"))
    assert not mapping.valid
    assert [(e.message, e.line) for e in mapping.errors] == [
        ("Required property 'TypeName' not found in JSON.", 6),
        ("Required property 'ValueType' not found in JSON.", 32),
        ("SampledData value 'steps' requires a defaultPeriod (milliseconds).", 48),
        ("Empty type name is not allowed", 40),
        ("Duplicate template defined for type name: 'steps'", 75),
    ]
    assert mapping.type_names() == ["steps"]
    with pytest.raises(InvalidTemplateException) as e:
        mapping.ensure_valid()
    assert str(e.value).startswith("Validation errors:\nline 6, position 19: Required property 'TypeName'")


def _load(text):
    return load_fhir_mapping(text)


def _msgs(mapping):
    return [(e.message, e.line) for e in mapping.errors]


VALID_TEMPLATE = """{
  "templateType": "collectionfhirtemplate",
  "template": [
    {
      "templateType": "CODEVALUEFHIR",
      "template": {
        "TypeName": "hr",
        "periodInterval": "Hourly",
        "Codes": [{"Code": "8867-4", "system": "http://loinc.org"}],
        "category": [{"text": "Vital", "codes": [{"code": "vital-signs", "system": "s", "display": "Vital Signs"}]}],
        "value": {"valueType": "sampleddata", "valueName": "hr", "defaultPeriod": "1000",
                  "unit": "bpm", "whatever": 1}
      }
    },
    {
      "templateType": "CodeValueFhirTemplate",
      "template": {"typeName": "x", "codes": []}
    }
  ]
}"""


def test_accepted_spellings_case_insensitive_fields_and_lenient_value_objects():
    mapping = _load(VALID_TEMPLATE)
    assert mapping.valid, mapping.errors
    t = mapping.template_for("HR")
    assert (t.type_name, t.period_interval, t.value.default_period, t.line) == ("hr", 60, 1000, 6)
    assert mapping.template_for("x").value is None
    assert mapping.value_names("x") == set()


def test_root_errors():
    assert _msgs(_load('{"templateType": "CollectionContent", "template": []}')) == [
        ("Expected TemplateType value CollectionFhirTemplate, actual CollectionContent.", 1)]
    assert _msgs(_load('{"templateType": "CollectionFhir", "template": {}}')) == [
        ("Expected an array for the template property value for template type "
         "CollectionFhirTemplate.", 1)]
    assert _msgs(_load('{"templateType": "CollectionFhir"}')) == [
        ("Expected an array for the template property value for template type "
         "CollectionFhirTemplate.", 1)]
    bad = _load('{"templateType": "CollectionFhir",\n "template": [}')
    assert not bad.valid and bad.errors[0].line == 2
    empty = _load('{"templateType": "CollectionFhir", "template": []}')
    assert empty.valid and empty.type_names() == []


def test_child_errors_with_lines():
    text = """{"templateType": "CollectionFhir", "template": [
  {"templateType": "JsonPathContent", "template": {}},
  {"templateType": "CodeValueFhir", "template": []},
  {"templateType": "CodeValueFhir",
   "template": {
     "typeName": "a", "codes": [{"code": "c", "color": "red"}], "extra": true,
     "value": {"valueName": "v", "valueType": "Blob"}
   }},
  {"templateType": "CodeValueFhir",
   "template": {
     "typeName": "b", "periodInterval": "weekly",
     "components": [{"codes": [], "value": {"valueType": "Quantity"}},
                    {"value": {"valueType": "String", "valueName": "s"}}]
   }},
  {"templateType": "CodeValueFhir", "template": {"typeName": "ok", "codes": []}},
  {"templateType": "CodeValueFhir", "template": {"typeName": "OK", "codes": []}}
]}"""
    mapping = _load(text)
    assert _msgs(mapping) == [
        ("No match found for template type JsonPathContent.", 2),
        ("Expected an object for the template property value for template type "
         "CodeValueFhirTemplate.", 3),
        ("Could not find member 'extra' on object of type 'CodeValueFhirTemplate'.", 6),
        ("Could not find member 'color' on object of type 'FhirCode'.", 6),
        ("Unsupported valueType 'Blob'. Expected SampledData, Quantity, String or CodeableConcept.", 7),
        ("Error converting value for 'periodInterval': Requested value 'weekly' was not found "
         "for ObservationPeriodInterval.", 11),
        ("Required property 'Codes' not found in JSON.", 10),
        ("A component value requires a valueName.", 12),
        ("Required property 'Codes' not found in JSON.", 13),
        ("Duplicate template defined for type name: 'OK'", 16),
    ]
    assert mapping.type_names() == ["ok"]


def test_sampled_data_period_must_be_positive_number():
    base = ('{"templateType":"CollectionFhir","template":[{"templateType":"CodeValueFhir","template":'
            '{"typeName":"a","codes":[],"value":{"valueType":"SampledData","valueName":"v",'
            '"defaultPeriod":%s}}}]}')
    assert _load(base % "0").errors[0].message == (
        "Error converting value for 'defaultPeriod': defaultPeriod must be positive, got 0")
    assert _load(base % '"abc"').errors[0].message == (
        "Error converting value for 'defaultPeriod': could not convert 'abc' to decimal")
    assert _load(base % "0.5").template_for("a").value.step_ticks == 5000


def test_loading_from_jsondoc_and_parsed_value():
    doc = parse(VALID_TEMPLATE)
    assert load_fhir_mapping(doc).type_names() == ["hr", "x"]
    assert load_fhir_mapping(json.loads(VALID_TEMPLATE)).type_names() == ["hr", "x"]


# ---------------------------------------------------------------- building: every value type
def _template(value=None, components=None, interval=0, category=None):
    t = {"typeName": "Vitals", "periodInterval": interval,
         "codes": [{"code": "c1", "system": "s1", "display": "d1"}, {"code": "c2"}]}
    if value is not None:
        t["value"] = value
    if components is not None:
        t["components"] = components
    if category is not None:
        t["category"] = category
    mapping = load_fhir_mapping(json.dumps(
        {"templateType": "CollectionFhir", "template": [{"templateType": "CodeValueFhir", "template": t}]}))
    assert mapping.valid, mapping.errors
    return mapping.template_for("vitals")


def _group(template, props, t="2021-06-01T12:34:56.789Z", type_="VITALS"):
    m = Measurement(type_, parse_datetime(t), "dev", tuple(props))
    (g,) = observation_groups(template, [m])
    return g


def test_quantity_value_category_encounter_and_type_as_received():
    template = _template({"valueType": "Quantity", "valueName": "q", "unit": "kg"},
                         category=[{"text": "Vital", "codes": [{"code": "vital-signs", "system": "cat"}]},
                                   {"text": "No codes"}])
    g = _group(template, [("q", " 1,234.50 ")])
    obs = validate(build_observation(template, g, ResolvedIds("p", "d", "e"), ISSUED))
    assert obs == {
        "resourceType": "Observation",
        "id": obs["id"],
        "identifier": [{"system": "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/",
                        "value": "p.d.VITALS.20210601123456Z.20210601123456Z"}],
        "status": "final",
        "code": {"coding": [{"system": "s1", "code": "c1", "display": "d1"}, {"code": "c2"},
                            {"system": "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/",
                             "code": "VITALS", "display": "VITALS"}],
                 "text": "VITALS"},
        "category": [{"coding": [{"system": "cat", "code": "vital-signs"}], "text": "Vital"},
                     {"text": "No codes"}],
        "subject": {"reference": "Patient/p"},
        "effectivePeriod": {"start": "2021-06-01T12:34:56.7890000Z", "end": "2021-06-01T12:34:56.7890000Z"},
        "issued": "2024-05-06T07:08:09.1234567Z",
        "device": {"reference": "Device/d"},
        "encounter": {"reference": "Encounter/e"},
        "valueQuantity": {"value": 1234.5, "unit": "kg"},
    }
    from transforms.mapping.identifiers import observation_id
    assert obs["id"] == observation_id("p.d.VITALS.20210601123456Z.20210601123456Z")
    assert list(obs) == ["resourceType", "id", "identifier", "status", "code", "category", "subject",
                         "effectivePeriod", "issued", "device", "encounter", "valueQuantity"]


def test_quantity_bad_value():
    template = _template({"valueType": "Quantity", "valueName": "q"})
    with pytest.raises(InvalidQuantityFhirValueException) as e:
        build_observation(template, _group(template, [("q", "1e5")]), IDS)
    assert str(e.value) == "Error encountered processing value: 1e5."


@pytest.mark.parametrize("text,value", [
    ("78", 78), ("-5", -5), ("5-", -5), ("+7", 7), ("1,000", 1000), ("5.", 5), (".5", 0.5),
    ("78.0", 78.0), ("  12.25\t", 12.25), ("0007", 7), ("-0", 0)])
def test_parse_quantity_value_accepts_number_style(text, value):
    got = parse_quantity_value(text)
    assert got == value and type(got) is type(value)
    assert json.dumps(got) == json.dumps(value)


@pytest.mark.parametrize("text", ["", " ", "1e3", "abc", ",5", "+5-", "1.2.3", "(5)", "$5", "0x10",
                                  "1 000", "99999999999999999999999999999"])
def test_parse_quantity_value_rejects(text):
    with pytest.raises(ValueError):
        parse_quantity_value(text)


def test_string_and_codeable_concept_and_missing_value_name():
    template = _template({"valueType": "CodeableConcept", "valueName": "evt", "text": "Event",
                          "codes": [{"code": "e1", "system": "es"}]},
                         components=[{"codes": [{"code": "r"}], "value": {"valueType": "String", "valueName": "why"}},
                                     {"codes": [], "value": {"valueType": "Quantity", "valueName": "absent"}}])
    g = _group(template, [("why", "lead off"), ("evt", "ignored")])
    obs = validate(build_observation(template, g, IDS, ISSUED))
    assert obs["valueCodeableConcept"] == {"coding": [{"system": "es", "code": "e1"}], "text": "Event"}
    assert obs["component"] == [{
        "code": {"coding": [{"code": "r"}, {"system": "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/",
                                             "code": "why", "display": "why"}], "text": "why"},
        "valueString": "lead off"}]
    # no property for the value: no value[x]; no component properties: no component key
    g2 = _group(template, [("other", "1")])
    obs2 = validate(build_observation(template, g2, IDS, ISSUED))
    assert "valueCodeableConcept" not in obs2 and "component" not in obs2


def test_value_name_match_is_case_sensitive():
    template = _template({"valueType": "String", "valueName": "Note"})
    obs = build_observation(template, _group(template, [("note", "x")]), IDS, ISSUED)
    assert "valueString" not in obs


@pytest.mark.parametrize("interval,start,end,slots", [
    (0, "2021-06-01T12:34:56.7890000Z", "2021-06-01T12:34:56.7890000Z", 1),
    (60, "2021-06-01T12:00:00.0000000Z", "2021-06-01T12:59:59.9999999Z", 60),
    (1440, "2021-06-01T00:00:00.0000000Z", "2021-06-01T23:59:59.9999999Z", 1440),
])
def test_sampled_data_for_each_time_interval(interval, start, end, slots):
    template = _template({"valueType": "SampledData", "valueName": "v", "defaultPeriod": 60000, "unit": "u"},
                         interval=interval)
    obs = validate(build_observation(template, _group(template, [("v", "7")]), IDS, ISSUED))
    assert obs["effectivePeriod"] == {"start": start, "end": end}
    sd = obs["valueSampledData"]
    assert (sd["origin"], sd["period"], sd["dimensions"]) == ({"value": 0, "unit": "u"}, 60000, 1)
    tokens = sd["data"].split(" ")
    assert len(tokens) == slots and tokens.count("7") == 1


def test_sampled_data_correlation_interval():
    template = _template({"valueType": "SampledData", "valueName": "v", "defaultPeriod": 500}, interval=-1)
    ms = [Measurement("VITALS", parse_datetime("2021-06-01T00:00:00Z"), "dev", (("v", "1"),), correlation_id="c"),
          Measurement("VITALS", parse_datetime("2021-06-01T00:00:01.2Z"), "dev", (("v", "2"),), correlation_id="c")]
    (g,) = observation_groups(template, ms)
    obs = validate(build_observation(template, g, IDS, ISSUED))
    assert obs["identifier"][0]["value"] == "pat-logical-1.dev-logical-1.VITALS.c"
    assert obs["valueSampledData"] == {"origin": {"value": 0}, "period": 500, "dimensions": 1, "data": "1 E 2"}


def test_issued_defaults_to_now():
    template = _template({"valueType": "String", "valueName": "s"})
    obs = build_observation(template, _group(template, [("s", "x")]), IDS)
    assert len(obs["issued"]) == 28 and obs["issued"].endswith("Z")


def test_built_observations_do_not_share_template_state():
    template = _template({"valueType": "CodeableConcept", "valueName": "e", "codes": [{"code": "x"}]})
    g = _group(template, [("e", "1")])
    a = build_observation(template, g, IDS, ISSUED)
    a["code"]["coding"][0]["code"] = "mutated"
    a["valueCodeableConcept"]["coding"][0]["code"] = "mutated"
    b = build_observation(template, g, IDS, ISSUED)
    assert b["code"]["coding"][0]["code"] == "c1"
    assert b["valueCodeableConcept"]["coding"][0]["code"] == "x"
