"""Bad values never reach the server: NaN / infinities / 1e309 readings, year 0001,
deeply nested bodies and absurdly long ids, through the pure core, the CLI and the
Beam pipeline (FnApiRunner, file outputs and dead letters)."""
import json
import pathlib

import pytest

from pipelines import cli
from pipelines.run import launch
from transforms.mapping.fhir_templates import load_fhir_mapping
from transforms.mapping.fhir_values import is_fhir_decimal, screen_values
from transforms.mapping.grouping import measurement_groups
from transforms.mapping.measurement import Measurement

TEMPLATES = pathlib.Path(__file__).resolve().parent.parent / "templates"
DM, FM = str(TEMPLATES / "devicecontent.json"), str(TEMPLATES / "fhirmapping.json")


def hr(minute, value, dev="d1"):
    """Raw JSON text, so NaN and 1e309 can be written as JSON numbers (Python reads them)."""
    return ('{"heartRate":%s,"endDate":"2026-01-05T08:%02d:00Z","deviceId":"%s","patientId":"p1"}'
            % (value, minute, dev))


def weight(minute, lbs):
    return json.dumps({"weightLbs": lbs, "endDate": f"2026-01-05T09:{minute:02d}:00Z",
                       "deviceId": "d1", "patientId": "p1"})


LINES = [
    hr(0, 71), hr(1, "NaN"), hr(2, "1e309"), hr(3, '"Infinity"'), hr(4, '"1e309"'), hr(5, 73),
    weight(0, "NaN"), weight(1, "37.5"),
    json.dumps({"systolic": "120", "diastolic": "NaN", "endDate": "2026-01-05T10:00:00Z",
                "deviceId": "d1", "patientId": "p1"}),
    hr(0, 72).replace("2026-01-05T08:00:00Z", "0001-01-01T00:00:00Z"),
    '{"a":' * 5000 + "1" + "}" * 5000,
    json.dumps({"heartRate": 70, "endDate": "2026-01-05T08:00:00Z", "deviceId": "x" * 300}),
]


@pytest.mark.parametrize("text,ok", [
    ("71", True), ("-0.5", True), ("1E+20", True), ("1e-400", True), ("0", True),
    ("NaN", False), ("Infinity", False), ("-Infinity", False), ("1e309", False),
    ("9" * 400, False), ("", False), ("+5", False), ("5.", False), (".5", False), ("071", False),
    ("1,000", False), (" 5", False)])
def test_fhir_decimal(text, ok):
    assert is_fhir_decimal(text) is ok


def test_screen_keeps_good_readings_and_returns_bad_ones_whole():
    mapping = load_fhir_mapping(FM)
    ms = [Measurement("bloodpressure", t, "d1", props, "p1")
          for t, props in ((1, (("systolic", "120"), ("diastolic", "NaN"))),
                           (2, (("systolic", "Infinity"), ("diastolic", "-1e999"))),
                           (3, (("systolic", "121"), ("diastolic", "80"))))]
    (group,) = measurement_groups(ms)
    kept, rejected = screen_values(mapping.template_for("bloodpressure"), group)
    assert [m.properties for m in kept.measurements] == [(("systolic", "120"),),
                                                          (("systolic", "121"), ("diastolic", "80"))]
    assert [(m, type(e).__name__) for m, e in rejected] == [
        (ms[0], "InvalidQuantityFhirValueException"), (ms[1], "InvalidQuantityFhirValueException")]
    clean = measurement_groups(ms[2:])[0]
    assert screen_values(mapping.template_for("bloodpressure"), clean) == (clean, [])


def _cli(capsys, argv):
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    return ([json.loads(l) for l in out.splitlines() if l.strip()],
            [json.loads(l) for l in err.splitlines() if l.strip()])


def test_cli_bad_values_cost_only_themselves(tmp_path, capsys):
    """Failed before: NaN / 1e309 / Infinity in SampledData data, the Quantity NaN took
    the 37.5 of the next minute with it, the year-0001 measurement printed as
    ``1-01-01`` and then rejected, RecursionError, a 300-character id normalized."""
    (tmp_path / "in.jsonl").write_text("\n".join(LINES) + "\n")
    measurements, norm_errors = _cli(capsys, ["normalize", "--device-mapping", DM,
                                              "--input", str(tmp_path / "in.jsonl")])
    assert [(e["line"], e["error"]) for e in norm_errors] == [
        (11, "InvalidDataFormatException"), (12, "IncompatibleDataException")]
    assert "nested too deeply" in norm_errors[0]["message"]
    assert "longer than 256 characters" in norm_errors[1]["message"]
    assert "x" * 10 not in json.dumps(norm_errors)  # the reason, never the id
    assert measurements[-1]["OccurrenceTimeUtc"] == "0001-01-01T00:00:00Z"

    (tmp_path / "m.jsonl").write_text("".join(json.dumps(m) + "\n" for m in measurements))
    observations, errors = _cli(capsys, ["transform", "--fhir-mapping", FM,
                                         "--input", str(tmp_path / "m.jsonl")])
    assert [(e["line"], e["error"]) for e in errors] == [
        (2, "FhirDataMappingException"), (3, "FhirDataMappingException"),
        (4, "FhirDataMappingException"), (5, "FhirDataMappingException"),
        (7, "InvalidQuantityFhirValueException"), (9, "InvalidQuantityFhirValueException")]
    _check_observations(observations)


def _check_observations(observations):
    by_type = {}
    for o in observations:
        by_type.setdefault(o["code"]["text"], []).append(o)
    data = sorted(o["valueSampledData"]["data"] for o in by_type["heartrate"])
    assert [d.split(" ")[:6] for d in data] == [["71", "E", "E", "E", "E", "73"], ["72", "E", "E", "E", "E", "E"]]
    assert not any(bad in json.dumps(observations) for bad in ("NaN", "Infinity", "1e309"))
    assert sorted(o["effectivePeriod"]["start"] for o in by_type["heartrate"])[0] \
        == "0001-01-01T00:00:00.0000000Z"
    (w,) = by_type["bodyweight"]
    assert w["valueQuantity"]["value"] == 17.009713875  # 37.5 lb, no longer lost with the NaN
    (bp,) = by_type["bloodpressure"]
    assert [(c["code"]["text"], c["valueQuantity"]["value"]) for c in bp["component"]] == [("systolic", 120)]


def test_pipeline_bad_values_cost_only_themselves(tmp_path):
    """The same input through the Beam pipeline: dead letters with stage and type, and
    Observations without the bad readings (failed before the change like the CLI test)."""
    (tmp_path / "in.jsonl").write_text("\n".join(LINES) + "\n")
    rc = launch.main([
        "--runner=FnApiRunner", f"--device-mapping={DM}", f"--fhir-mapping={FM}",
        f"--input={tmp_path / 'in.jsonl'}", f"--output={tmp_path / 'obs'}",
        f"--dead-letter={tmp_path / 'dead'}", "--single-file-outputs"])
    assert rc == 0
    read = lambda p: [json.loads(l) for l in p.read_text().splitlines() if l.strip()]  # noqa: E731
    dead = read(tmp_path / "dead.jsonl")
    assert sorted((r["stage"], r["error_type"]) for r in dead) == sorted(
        [("fhir_conversion", "FhirDataMappingException")] * 4
        + [("fhir_conversion", "InvalidQuantityFhirValueException")] * 2
        + [("normalization", "InvalidDataFormatException"), ("normalization", "IncompatibleDataException")])
    # each conversion dead letter holds exactly the one measurement it is about, whole
    assert all(len(r["payload"]) == 1 for r in dead if r["stage"] == "fhir_conversion")
    _check_observations(read(tmp_path / "obs.jsonl"))
