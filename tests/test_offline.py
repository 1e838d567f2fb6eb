"""End-to-end vectors E01 and E02 through ``normalize`` -> ``transform``, offline identity and
Create-mode ids; N15's invalid FHIR mapping through ``validate()``; ``offline`` units."""
import json

import pytest
from conftest import load_json, vector_dir

from pipelines.cli import main
from transforms.mapping import timeutil
from transforms.mapping.errors import InvalidQuantityFhirValueException, TemplateNotFoundException
from transforms.mapping.fhir_templates import load_fhir_mapping
from transforms.mapping.grouping import measurement_groups
from transforms.mapping.identifiers import (SERVICE_SYSTEM, ResolvedIds, device_resource_id,
                                            observation_id, patient_resource_id)
from transforms.mapping.measurement import Measurement
from transforms.mapping.offline import observations_for, observations_of_group, offline_ids
from transforms.mapping.validation import validate


def cli(capsys, *args):
    """Run ``iomt-fhir`` in-process; returns (exit code, stdout lines as JSON, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def one_line(tmp_path, name, value) -> str:
    p = tmp_path / name
    p.write_text(json.dumps(value) + "\n", encoding="utf-8")
    return str(p)


def same_measurements(got, expected):
    """Measurements equal, times compared as instants, IngestionTimeUtc (pipeline-set) ignored."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        g, e = dict(g), dict(e)
        assert g.pop("IngestionTimeUtc") is None
        e.pop("IngestionTimeUtc", None)
        assert timeutil.parse_iso(g.pop("OccurrenceTimeUtc")) == \
            timeutil.parse_iso(e.pop("OccurrenceTimeUtc"))
        assert g == e


def without_issued(obs: dict) -> dict:
    out = dict(obs)
    out.pop("issued")
    return out


def normalize_transform(capsys, tmp_path, d, line, input_format="body"):
    src = one_line(tmp_path, "in.jsonl", line)
    code, measurements, err = cli(capsys, "normalize", "--device-mapping", d / "devicecontent.json",
                                  "--input", src, "--input-format", input_format)
    assert (code, err) == (0, "")
    mpath = tmp_path / "m.jsonl"
    mpath.write_text("".join(json.dumps(m) + "\n" for m in measurements), encoding="utf-8")
    code, observations, err = cli(capsys, "transform", "--fhir-mapping", d / "fhirmapping.json",
                                  "--input", mpath)
    assert (code, err) == (0, "")
    return measurements, observations


# --------------------------------------------------------------------------------------------
# E01: MedTech docs example, CalculatedContent + Quantity instance, timestamp without offset
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("input_format", ["body", "envelope"])
def test_e01_normalize_then_transform_offline(capsys, tmp_path, input_format):
    d = vector_dir("E01")
    expected = load_json(d / "expected.json")
    line = load_json(d / ("device_message_body.json" if input_format == "body" else "event_envelope.json"))
    measurements, observations = normalize_transform(capsys, tmp_path, d, line, input_format)
    same_measurements(measurements, expected["normalized"])

    # Offline identity: the measurement's ids stand for the logical ids. E01 has no patient
    # id, so there is no subject and the identifier's patient segment is empty.
    want = without_issued(expected["observations"][0])
    identifier = ".device01.heartrate.20230313224601Z.20230313224601Z"
    want["id"] = observation_id(identifier)
    want["identifier"] = [{"system": SERVICE_SYSTEM, "value": identifier}]
    del want["subject"]
    want["device"] = {"reference": "Device/device01"}
    assert [without_issued(o) for o in observations] == [want]
    assert timeutil.parse_iso(observations[0]["issued"]) is not None


def test_e01_with_resolved_ids_matches_the_vector():
    d = vector_dir("E01")
    expected = load_json(d / "expected.json")
    ids_json = load_json(d / "resolved_ids.json")
    mapping = load_fhir_mapping(str(d / "fhirmapping.json")).ensure_valid()
    (group,) = measurement_groups([Measurement.from_json(m) for m in expected["normalized"]])
    ids = ResolvedIds(patient=ids_json["Patient"], device=ids_json["Device"])
    got = observations_of_group(mapping, group, ids)
    assert [without_issued(o) for o in got] == [without_issued(o) for o in expected["observations"]]


# --------------------------------------------------------------------------------------------
# E02: README basic sample, JsonPathContent + hourly SampledData, Create mode
# --------------------------------------------------------------------------------------------
def test_e02_normalize_envelope(capsys, tmp_path):
    d = vector_dir("E02")
    expected = load_json(d / "expected.json")
    src = one_line(tmp_path, "in.jsonl", load_json(d / "event_envelope.json"))
    code, measurements, err = cli(capsys, "normalize", "--device-mapping", d / "devicecontent.json",
                                  "--input", src, "--input-format", "envelope")
    assert (code, err) == (0, "")
    same_measurements(measurements, expected["normalized"])
    assert measurements[0]["Properties"] == [{"Name": "hr", "Value": "65"}]  # JSON 65 -> "65"


def test_e02_create_mode_ids_give_the_vector_observation():
    d = vector_dir("E02")
    expected = load_json(d / "expected.json")
    mapping = load_fhir_mapping(str(d / "fhirmapping.json")).ensure_valid()
    (group,) = measurement_groups([Measurement.from_json(m) for m in expected["normalized"]])
    ids = ResolvedIds(patient=patient_resource_id("patient1"), device=device_resource_id("device1"))
    # The ids are those the vector's server calls PUT the shell resources to.
    assert f"PUT Patient/{ids.patient}" in " ".join(expected["fhir_calls_on_empty_server"])
    assert f"PUT Device/{ids.device}" in " ".join(expected["fhir_calls_on_empty_server"])
    got = observations_of_group(mapping, group, ids)
    assert [without_issued(o) for o in got] == [without_issued(o) for o in expected["observations"]]
    assert got[0]["valueSampledData"]["data"].split(" ")[1103] == "65"


def test_e02_transform_offline_identity(capsys, tmp_path):
    d = vector_dir("E02")
    expected = load_json(d / "expected.json")
    _, observations = normalize_transform(capsys, tmp_path, d, load_json(d / "event_envelope.json"),
                                          "envelope")
    (want,) = [without_issued(o) for o in expected["observations"]]
    identifier = "patient1.device1.heartrate.20231009190000Z.20231009195959Z"
    want["id"] = observation_id(identifier)
    want["identifier"] = [{"system": SERVICE_SYSTEM, "value": identifier}]
    want["subject"] = {"reference": "Patient/patient1"}
    want["device"] = {"reference": "Device/device1"}
    assert [without_issued(o) for o in observations] == [want]


# --------------------------------------------------------------------------------------------
# N15: invalid FHIR mapping through validate()
# --------------------------------------------------------------------------------------------
def test_n15_fhirmapping_invalid():
    d = vector_dir("N15")
    expected = load_json(d / "expected.json")["fhirmapping_invalid.json"]
    fm = str(d / "fhirmapping_invalid.json")
    problems = validate(str(d / "devicecontent_empty_ok.json"), fm)
    assert problems and not expected["valid"]
    assert {p.file for p in problems} == {fm}
    assert all(p.error.severity == "error" for p in problems)  # and no cross-check warnings
    for wanted in expected["errors_contain"]:
        assert any(wanted in p.error.message for p in problems), (wanted, problems)
    by_message = {p.error.message: p.error.line for p in problems}
    assert by_message["Required property 'TypeName' not found in JSON."] == 6
    assert by_message["Duplicate template defined for type name: 'steps'"] == 75
    lines = [p.error.line for p in problems]
    assert lines == sorted(lines)


# --------------------------------------------------------------------------------------------
# offline units
# --------------------------------------------------------------------------------------------
FHIR = {"templateType": "CollectionFhir", "template": [
    {"templateType": "CodeValueFhir", "template": {
        "typeName": "bp", "codes": [], "periodInterval": 60,
        "value": {"valueType": "Quantity", "valueName": "sys"}}}]}


def m(type_, minute, device="d", patient="p", encounter=None, value="1"):
    return Measurement(type=type_, occurrence_time=timeutil.parse_iso(f"2024-01-01T08:{minute:02d}:00Z"),
                       device_id=device, properties=(("sys", value),), patient_id=patient,
                       encounter_id=encounter)


def test_offline_ids_are_the_measurement_ids():
    (g,) = measurement_groups([m("bp", 0, "dev", "pat", "enc")])
    assert offline_ids(g) == ResolvedIds(patient="pat", device="dev", encounter="enc")
    (g,) = measurement_groups([m("bp", 0, "dev", None)])
    assert offline_ids(g) == ResolvedIds(patient="", device="dev", encounter=None)


def test_observations_for_reports_failed_groups_at_their_first_line():
    mapping = load_fhir_mapping(FHIR).ensure_valid()
    numbered = [(3, m("bp", 0, "a")), (4, m("xx", 0, "a")), (5, m("bp", 0, "b")),
                (9, m("bp", 5, "a"))]  # a: two Quantity values in one hour
    out = list(observations_for(mapping, numbered))
    failures = [f for o, f in out if f is not None]
    observations = [o for o, f in out if o is not None]
    assert [(line, type(e)) for line, e in failures] == [
        (3, InvalidQuantityFhirValueException), (4, TemplateNotFoundException)]
    assert str(failures[1][1]) == "No Fhir Template exists with the type name [xx]."
    assert [o["device"]["reference"] for o in observations] == ["Device/b"]


def test_observations_of_group_issued_is_fixed_when_given():
    mapping = load_fhir_mapping(FHIR).ensure_valid()
    (g,) = measurement_groups([m("bp", 0, encounter="e")])
    ticks = timeutil.parse_iso("2024-02-03T04:05:06.5Z")
    (obs,) = observations_of_group(mapping, g, offline_ids(g), ticks)
    assert obs["issued"] == "2024-02-03T04:05:06.5000000Z"
    assert obs["encounter"] == {"reference": "Encounter/e"}
    assert obs["identifier"][0]["value"] == "p.d.bp.20240101080000Z.20240101085959Z"
