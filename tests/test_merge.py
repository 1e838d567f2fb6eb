"""Merging an observation group into an existing Observation (vector F09 + own cases)."""
import copy
import json

import pytest
from fhir.resources.R4B.observation import Observation

from conftest import load_json, vector_dir
from transforms.mapping.errors import NotSupportedException
from transforms.mapping.fhir_templates import (ResolvedIds, build_observation, load_fhir_mapping,
                                               observation_groups)
from transforms.mapping.measurement import Measurement
from transforms.mapping.merge import merge_observation, observation_period
from transforms.mapping.timeutil import parse_datetime

IDS = ResolvedIds("p", "d")
SS = "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/"


def f09():
    d = vector_dir("F09")
    template = load_fhir_mapping(str(d / "fhirmapping.json")).template_for("heartrate")
    ms = [Measurement.from_json(x) for x in load_json(d / "measurement_group.json")["Data"]]
    (group,) = observation_groups(template, ms)
    return template, group, load_json(d / "existing_observation.json"), load_json(d / "expected.json")


def test_f09_reference_collision_policy_keeps_existing_value():
    """F09 (derived) expects "60 61 70 E E E": the new 00:20 value 70 replacing the
    existing 62. The reference merges with ``MergeData(existingTimeValues, newValues)``
    (SampledDataFhirValueProcessor.MergeValueImpl) and MergeData keeps data1 on equal
    times (see test_sampled_data.test_f08_merge_data_collision_keeps_first_series), so
    iomt-fhir writes "60 61 62 E E E". Everything else in the vector holds."""
    template, group, existing, expected = f09()
    before = copy.deepcopy(existing)
    merged, changed = merge_observation(template, group, existing)
    assert changed is True
    assert existing == before  # pure: input untouched
    body = copy.deepcopy(expected["http"][1]["body"])
    body["valueSampledData"]["data"] = "60 61 62 E E E"
    assert merged == body
    Observation.model_validate(merged)


def test_f09_vector_policy_new_value_wins():
    template, group, existing, expected = f09()
    merged, changed = merge_observation(template, group, existing, new_value_wins=True)
    assert changed is True
    assert merged == expected["http"][1]["body"]
    assert merged["valueSampledData"]["data"] == expected["merged_data"]
    assert list(merged) == list(expected["http"][1]["body"])


def _mapping(template_json):
    m = load_fhir_mapping(json.dumps({"templateType": "CollectionFhir", "template": [
        {"templateType": "CodeValueFhir", "template": template_json}]}))
    assert m.valid, m.errors
    return m.template_for(template_json["typeName"])


HOURLY_SD = {"typeName": "hr", "periodInterval": 60, "codes": [{"code": "8867-4", "system": "http://loinc.org"}],
             "value": {"valueType": "SampledData", "valueName": "hr", "defaultPeriod": 600000, "unit": "bpm"}}


def _group(template, *readings, type_="hr"):
    ms = [Measurement(type_, parse_datetime(t), "dev", tuple(props)) for t, props in readings]
    return observation_groups(template, ms)


def test_no_change_when_already_amended():
    template = _mapping(HOURLY_SD)
    (g,) = _group(template, ("2019-01-01T00:00:00Z", [("hr", "60")]))
    existing = build_observation(template, g, IDS)
    existing["status"] = "amended"
    merged, changed = merge_observation(template, g, existing)
    assert changed is False
    assert merged == existing and merged is not existing


def test_replaying_the_same_data_into_a_final_observation_is_a_no_op():
    # The reference (HEAD) deep-copies, merges, then AmendIfChanged: status becomes
    # "amended" only when the merged resource differs. An older version set "amended"
    # first, which made every replay a write; replays must not write.
    template = _mapping(HOURLY_SD)
    (g,) = _group(template, ("2019-01-01T00:00:00Z", [("hr", "60")]))
    existing = build_observation(template, g, IDS)
    merged, changed = merge_observation(template, g, existing)
    assert changed is False
    assert merged == existing and merged["status"] == "final"
    (g2,) = _group(template, ("2019-01-01T00:10:00Z", [("hr", "61")]))
    merged, changed = merge_observation(template, g2, existing)
    assert changed is True and merged["status"] == "amended"


def test_new_slot_added():
    template = _mapping(HOURLY_SD)
    (g1,) = _group(template, ("2019-01-01T00:00:00Z", [("hr", "60")]))
    existing = dict(build_observation(template, g1, IDS), status="amended")
    (g2,) = _group(template, ("2019-01-01T00:35:00Z", [("hr", "77")]))
    merged, changed = merge_observation(template, g2, existing)
    assert changed is True
    assert merged["valueSampledData"]["data"] == "60 E E 77 E E"
    assert merged["effectivePeriod"] == existing["effectivePeriod"]


def test_period_widened_and_data_rebuilt_over_union():
    template = _mapping(HOURLY_SD)
    existing = {
        "resourceType": "Observation", "id": "x", "status": "final",
        "code": {"text": "hr"},
        "effectivePeriod": {"start": "2019-01-01T00:30:00Z", "end": "2019-01-01T00:50:00+00:00"},
        "valueSampledData": {"origin": {"value": 0}, "period": 600000, "dimensions": 1, "data": "1 2 3"},
        "category": [{"text": "old"}],
    }
    (g,) = _group(template, ("2019-01-01T00:05:00Z", [("hr", "9")]))
    merged, changed = merge_observation(template, g, existing)
    assert changed is True
    assert merged["effectivePeriod"] == {"start": "2019-01-01T00:00:00.0000000Z",
                                         "end": "2019-01-01T00:59:59.9999999Z"}
    # existing tokens at 00:30, 00:40, 00:50; new 9 at 00:05 -> slot 0 of the union [00:00, 00:59:59]
    assert merged["valueSampledData"]["data"] == "9 E E 1 2 3"
    assert "category" not in merged  # template has none -> removed
    assert merged["status"] == "amended"


def test_effective_datetime_existing_becomes_period():
    template = _mapping(dict(HOURLY_SD, periodInterval=0,
                             value={"valueType": "Quantity", "valueName": "hr", "unit": "bpm"}))
    existing = {"resourceType": "Observation", "status": "final", "code": {"text": "hr"},
                "effectiveDateTime": "2019-01-01T00:00:00Z", "valueQuantity": {"value": 60, "unit": "bpm"}}
    (g,) = _group(template, ("2019-01-01T00:00:00Z", [("hr", "61.5")]))
    merged, changed = merge_observation(template, g, existing)
    assert changed is True
    assert merged == {"resourceType": "Observation", "status": "amended", "code": {"text": "hr"},
                      "effectivePeriod": {"start": "2019-01-01T00:00:00.0000000Z",
                                          "end": "2019-01-01T00:00:00.0000000Z"},
                      "valueQuantity": {"value": 61.5, "unit": "bpm"}}
    assert list(merged) == ["resourceType", "status", "code", "effectivePeriod", "valueQuantity"]


BP = {"typeName": "bp", "periodInterval": 0, "codes": [{"code": "85354-9"}],
      "category": [{"text": "vitals", "codes": [{"code": "vital-signs"}]}],
      "components": [
          {"codes": [{"code": "8462-4"}], "value": {"valueType": "Quantity", "valueName": "dia", "unit": "mmHg"}},
          {"codes": [{"code": "8480-6"}], "value": {"valueType": "Quantity", "valueName": "sys", "unit": "mmHg"}},
          {"codes": [], "value": {"valueType": "String", "valueName": "note"}},
          {"codes": [], "value": {"valueType": "CodeableConcept", "valueName": "alarm", "text": "Alarm"}}]}


def test_quantity_replaced_component_added_category_replaced():
    template = _mapping(BP)
    (g1,) = _group(template, ("2019-01-01T00:00:00Z", [("sys", "120")]), type_="bp")
    existing = dict(build_observation(template, g1, IDS), status="amended", category=[{"text": "old"}])
    (g2,) = _group(template, ("2019-01-01T00:00:00Z",
                              [("sys", "121"), ("dia", "80"), ("note", "n"), ("alarm", "1")]), type_="bp")
    merged, changed = merge_observation(template, g2, existing)
    assert changed is True
    assert merged["category"] == [{"coding": [{"code": "vital-signs"}], "text": "vitals"}]
    comps = merged["component"]
    assert [c["code"]["text"] for c in comps] == ["sys", "dia", "note", "alarm"]  # existing first, new appended
    assert comps[0]["valueQuantity"] == {"value": 121, "unit": "mmHg"}
    assert comps[1] == {"code": {"coding": [{"code": "8462-4"}, {"system": SS, "code": "dia", "display": "dia"}],
                                 "text": "dia"},
                        "valueQuantity": {"value": 80, "unit": "mmHg"}}
    assert comps[2]["valueString"] == "n"
    assert comps[3]["valueCodeableConcept"] == {"text": "Alarm"}
    Observation.model_validate(merged)
    # merging the same again changes nothing
    again, changed2 = merge_observation(template, g2, merged)
    assert changed2 is False and again == merged


def test_sampled_data_component_added_over_existing_period():
    t = {"typeName": "bp", "periodInterval": 60, "codes": [],
         "components": [{"codes": [], "value": {"valueType": "SampledData", "valueName": "sys",
                                                "defaultPeriod": 900000}}]}
    template = _mapping(t)
    existing = {"resourceType": "Observation", "status": "amended", "code": {"text": "bp"},
                "effectivePeriod": {"start": "2019-01-01T00:00:00.0000000Z", "end": "2019-01-01T00:59:59.9999999Z"}}
    (g,) = _group(template, ("2019-01-01T00:31:00Z", [("sys", "5")]), type_="bp")
    merged, changed = merge_observation(template, g, existing)
    assert changed is True
    assert merged["component"][0]["valueSampledData"] == {"origin": {"value": 0}, "period": 900000,
                                                          "dimensions": 1, "data": "E E 5 E"}


@pytest.mark.parametrize("existing_value,message", [
    ({"valueQuantity": {"value": 1}},
     "Element existingValue expected to be of type SampledData. Actual type is Quantity."),
    ({}, "Element existingValue expected to be of type SampledData. Actual type is null."),
    ({"valueSampledData": {"origin": {"value": 0}, "period": 1, "dimensions": 2, "data": "1 2"}},
     "Existing SampledData value has more than 1 dimension."),
])
def test_unmergeable_shapes(existing_value, message):
    template = _mapping(HOURLY_SD)
    existing = dict({"resourceType": "Observation", "status": "final", "code": {"text": "hr"},
                     "effectivePeriod": {"start": "2019-01-01T00:00:00Z", "end": "2019-01-01T00:59:59Z"}},
                    **existing_value)
    (g,) = _group(template, ("2019-01-01T00:00:00Z", [("hr", "60")]))
    with pytest.raises(NotSupportedException) as e:
        merge_observation(template, g, existing)
    assert str(e.value) == message


def test_unsupported_effective_type():
    with pytest.raises(NotSupportedException) as e:
        observation_period({"effectiveInstant": "2019-01-01T00:00:00Z"})
    assert str(e.value) == "Observation effective type of Instant is not supported."
    with pytest.raises(NotSupportedException):
        observation_period({})
    assert observation_period({"effectiveDateTime": "2019-01-01T01:00:00+01:00"}) == (
        parse_datetime("2019-01-01T00:00:00Z"), parse_datetime("2019-01-01T00:00:00Z"))
