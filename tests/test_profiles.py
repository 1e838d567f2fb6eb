"""The ``profiles`` extension of CodeValueFhir: load-time check, meta.profile, effectiveDateTime,
subject required, merge, and the MedTech export (transforms.mapping.profiles)."""
import copy
import json

import pytest

from transforms.mapping.errors import FhirDataMappingException
from transforms.mapping.fhir_templates import (ResolvedIds, build_observation, load_fhir_mapping,
                                               observation_groups)
from transforms.mapping.measurement import Measurement
from transforms.mapping.merge import merge_observation
from transforms.mapping.profiles import BASE, strip_profiles
from transforms.mapping.timeutil import parse_datetime

CAT = [{"text": "Vital Signs", "codes": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                         "code": "vital-signs"}]}]
UCUM = "http://unitsofmeasure.org"


def heartrate(**changes):
    t = {"typeName": "hr", "periodInterval": 0, "category": CAT,
         "codes": [{"code": "8867-4", "system": "http://loinc.org", "display": "Heart rate"}],
         "value": {"valueType": "Quantity", "valueName": "hr", "unit": "beats/minute", "system": UCUM, "code": "/min"},
         "profiles": [BASE + "heartrate"]}
    t.update(changes)
    return {k: v for k, v in t.items() if v is not None}


def bp(**changes):
    comp = lambda code, name: {"codes": [{"code": code, "system": "http://loinc.org"}],
                               "value": {"valueType": "Quantity", "valueName": name, "unit": "mmHg",
                                         "system": UCUM, "code": "mm[Hg]"}}
    t = {"typeName": "bp", "category": CAT, "codes": [{"code": "85354-9", "system": "http://loinc.org"}],
         "components": [comp("8480-6", "sys"), comp("8462-4", "dia")], "profiles": [BASE + "bp"]}
    t.update(changes)
    return {k: v for k, v in t.items() if v is not None}


def load(*templates):
    return load_fhir_mapping(json.dumps({"templateType": "CollectionFhir", "template": [
        {"templateType": "CodeValueFhir", "template": t} for t in templates]}))


def messages(mapping):
    return [e.message for e in mapping.errors]


def test_templates_that_can_satisfy_their_profiles_load():
    m = load(heartrate(), bp())
    assert m.valid, m.errors
    assert m.template_for("hr").profiles == (BASE + "heartrate",)


@pytest.mark.parametrize("changes, expected", [
    ({"category": None}, "needs a category coding"),
    ({"codes": [{"code": "8867-4", "system": "urn:other"}]}, "needs the code http://loinc.org|8867-4"),
    ({"value": {"valueType": "Quantity", "valueName": "hr", "unit": "bpm", "system": UCUM, "code": "bpm"}},
     "needs a UCUM unit code among /min (got 'bpm')"),
    ({"value": {"valueType": "Quantity", "valueName": "hr", "unit": "bpm", "code": "/min"}}, "needs the UCUM system"),
    ({"value": {"valueType": "SampledData", "valueName": "hr", "defaultPeriod": 1000, "unit": "/min"}},
     "needs a Quantity value"),
    ({"periodInterval": 60}, "needs periodInterval 0"),
    ({"profiles": ["http://example.org/StructureDefinition/mine"]}, "Unknown profile"),
    ({"profiles": "heartrate"}, "expected an array of profile URLs"),
])
def test_a_template_that_cannot_satisfy_its_profile_is_refused_at_load(changes, expected):
    m = load(heartrate(**changes))
    assert not m.valid and not m.has_template("hr")
    assert any(expected in msg for msg in messages(m)), messages(m)
    assert m.errors[0].line > 0


def test_blood_pressure_needs_both_components_in_mm_hg_and_no_value():
    comps = bp()["components"]
    assert any("component with the code http://loinc.org|8462-4" in msg
               for msg in messages(load(bp(components=comps[:1]))))
    wrong = copy.deepcopy(comps)
    wrong[0]["value"]["code"] = "mmHg"
    assert any("component 8480-6, needs a UCUM unit code among mm[Hg]" in msg
               for msg in messages(load(bp(components=wrong))))
    value = {"valueType": "Quantity", "valueName": "x", "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}
    assert any("allows no value" in msg for msg in messages(load(bp(value=value))))


def _group(template, t="2026-03-02T07:15:00Z", value="62"):
    (g,) = observation_groups(template, [Measurement("hr", parse_datetime(t), "dev", (("hr", value),))])
    return g


def test_profiled_observation_has_meta_profile_and_a_date_time():
    template = load(heartrate()).template_for("hr")
    obs = build_observation(template, _group(template), ResolvedIds("p", "d"))
    assert obs["meta"] == {"profile": [BASE + "heartrate"]}
    assert obs["effectiveDateTime"] == "2026-03-02T07:15:00.0000000Z" and "effectivePeriod" not in obs
    plain = load(heartrate(profiles=None)).template_for("hr")
    obs = build_observation(plain, _group(plain), ResolvedIds("p", "d"))
    assert "meta" not in obs and obs["effectivePeriod"]["start"] == "2026-03-02T07:15:00.0000000Z"


def test_a_profiled_observation_without_a_patient_is_refused():
    template = load(heartrate()).template_for("hr")
    with pytest.raises(FhirDataMappingException, match="declares profiles, which require a subject"):
        build_observation(template, _group(template), ResolvedIds("", "d"))


def test_merge_keeps_the_date_time_and_adds_the_profile_to_the_server_meta():
    template = load(heartrate()).template_for("hr")
    existing = build_observation(template, _group(template), ResolvedIds("p", "d"))
    existing["meta"] = {"versionId": "3", "lastUpdated": "2026-03-02T07:16:00Z"}  # as the server returns it
    merged, changed = merge_observation(template, _group(template, value="64"), existing)
    assert changed and merged["valueQuantity"]["value"] == 64
    assert merged["effectiveDateTime"] == existing["effectiveDateTime"] and "effectivePeriod" not in merged
    assert merged["meta"] == {"versionId": "3", "lastUpdated": "2026-03-02T07:16:00Z",
                              "profile": [BASE + "heartrate"]}
    again, changed = merge_observation(template, _group(template, value="64"), merged)
    assert changed is False


def test_strip_profiles_leaves_the_rest_untouched():
    mapping = {"templateType": "CollectionFhir", "template": [
        {"templateType": "CodeValueFhir", "template": heartrate()}]}
    stripped = strip_profiles(mapping)
    expected = heartrate()
    del expected["profiles"]
    assert stripped["template"][0]["template"] == expected
    assert mapping["template"][0]["template"]["profiles"]  # input not modified
