"""The ``iomt-fhir`` mapping debugger: the contract of issue 2 / README "Mapping debugger CLI".

Most tests run the real console script in a subprocess (exit codes, stdin, stderr
and the exact line formats are the contract other tools rely on); the mappings and
data are written here, so every expected line is known exactly.
"""
import json
import os
import pathlib
import subprocess
import sys
from collections import Counter

import pytest

from transforms.mapping import timeutil
from transforms.mapping.identifiers import SERVICE_SYSTEM, observation_id

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / ".venv" / "bin" / "iomt-fhir"
DEVICE_EXAMPLE = REPO / "templates" / "devicecontent.json"
FHIR_EXAMPLE = REPO / "templates" / "fhirmapping.json"
SAMPLE_MESSAGES = REPO / "templates" / "sample" / "messages.jsonl"


def command():
    if SCRIPT.exists():
        return [str(SCRIPT)]
    return [sys.executable, "-c", "import sys; from pipelines.cli import main; sys.exit(main())"]


def run(*args, stdin=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(command() + [str(a) for a in args], input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=cwd or REPO)


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text, encoding="utf-8")
    return path


def json_lines(text: str):
    return [json.loads(line) for line in text.splitlines()]


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------
def test_validate_bundled_examples_are_valid_and_fit_together():
    r = run("validate", "--device-mapping", DEVICE_EXAMPLE, "--fhir-mapping", FHIR_EXAMPLE)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "valid\n")


def test_validate_device_mapping_alone():
    r = run("validate", "--device-mapping", DEVICE_EXAMPLE)
    assert (r.returncode, r.stderr) == (0, "valid\n")


# Line numbers matter: every expected problem below names the line it is on.
DEVICE_WITH_ERRORS = """\
{
  "templateType": "CollectionContent",
  "template": [
    {
      "templateType": "JsonPathContent",
      "template": {
        "typeName": "heartrate",
        "typeMatchExpression": "$..[?(@heartRate)]",
        "timestampExpression": "$.endDate",
        "values": [
          {
            "required": true,
            "valueExpression": "$.heartRate",
            "valueName": "hr",
            "unit": "bpm"
          }
        ]
      }
    },
    {
      "templateType": "NoSuchContent",
      "template": {}
    },
    {
      "templateType": "CalculatedContent",
      "template": {
        "typeName": "steps",
        "typeMatchExpression": "$..[?(@steps",
        "deviceIdExpression": "$.matchedToken.deviceId",
        "timestampExpression": "$.matchedToken.endDate",
        "values": [
          {
            "required": "maybe",
            "valueExpression": "$.matchedToken.steps",
            "valueName": "steps"
          }
        ]
      }
    }
  ]
}
"""


def test_validate_reports_every_device_problem_with_its_line(tmp_path):
    dm = write(tmp_path / "dm.json", DEVICE_WITH_ERRORS)
    r = run("validate", "--device-mapping", dm)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 5
    assert lines[0] == f"{dm}:6:19: error: Required property 'DeviceIdExpression' not found in JSON."
    assert lines[1] == (f"{dm}:15:13: error: Could not find member 'unit' on object of type "
                        "'JsonPathValueExpression'.")
    assert lines[2] == f"{dm}:21:7: error: No match found for template type NoSuchContent."
    # The parser's own wording may change; place, severity and field must not.
    assert lines[3].startswith(f"{dm}:28:9: error: typeMatchExpression: ")
    assert "$..[?(@steps" in lines[3]
    assert lines[4] == (f"{dm}:33:13: error: Error converting value for 'required': "
                        "could not convert 'maybe' to boolean")


def test_validate_problem_lines_have_the_documented_shape(tmp_path):
    dm = write(tmp_path / "dm.json", DEVICE_WITH_ERRORS)
    r = run("validate", "--device-mapping", dm)
    import re
    shape = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<pos>\d+): (?P<sev>error|warning): (?P<msg>.+)$")
    for line in r.stderr.splitlines():
        m = shape.match(line)
        assert m, line
        assert m.group("file") == str(dm)
        assert int(m.group("line")) > 0 and int(m.group("pos")) > 0


def test_validate_bad_json_device_mapping(tmp_path):
    dm = write(tmp_path / "bad.json", '{"templateType": "CollectionContent",\n "template": [\n'
                                      '  {"templateType": "JsonPathContent" "template": {}}\n ]\n}\n')
    r = run("validate", "--device-mapping", dm)
    assert r.returncode == 2
    assert r.stderr == f"{dm}:3:38: error: Invalid JSON: expected ',' or '}}'. Line 3, position 38.\n"


def test_validate_bad_json_fhir_mapping_and_no_cross_check_noise(tmp_path):
    fm = write(tmp_path / "fm.json", '{\n  "templateType": "CollectionFhir",\n  "template": [\n}\n')
    r = run("validate", "--device-mapping", DEVICE_EXAMPLE, "--fhir-mapping", fm)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr  # no "No matching Fhir Template" for each device type
    assert lines[0].startswith(f"{fm}:4:1: error: Invalid JSON: ")


def test_validate_missing_file_is_a_problem_not_a_traceback(tmp_path):
    missing = tmp_path / "nope.json"
    r = run("validate", "--device-mapping", missing, "--fhir-mapping", tmp_path / "nope2.json")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"{missing}:0:0: error: Unable to read the device mapping: No such file or directory",
        f"{tmp_path / 'nope2.json'}:0:0: error: Unable to read the FHIR mapping: No such file or directory",
    ]


CROSS_DEVICE = """\
{
  "templateType": "CollectionContent",
  "template": [
    {
      "templateType": "JsonPathContent",
      "template": {
        "typeName": "HeartRate",
        "typeMatchExpression": "$..[?(@hr)]",
        "deviceIdExpression": "$.device",
        "timestampExpression": "$.date",
        "values": [ { "required": true, "valueExpression": "$.hr", "valueName": "hr" } ]
      }
    },
    {
      "templateType": "JsonPathContent",
      "template": {
        "typeName": "spo2",
        "typeMatchExpression": "$..[?(@spo2)]",
        "deviceIdExpression": "$.device",
        "timestampExpression": "$.date",
        "values": [ { "required": true, "valueExpression": "$.spo2", "valueName": "spo2" } ]
      }
    },
    {
      "templateType": "JsonPathContent",
      "template": {
        "typeName": "bloodpressure",
        "typeMatchExpression": "$..[?(@systolic)]",
        "deviceIdExpression": "$.device",
        "timestampExpression": "$.date",
        "values": [
          { "required": true, "valueExpression": "$.systolic", "valueName": "systolic" },
          { "required": true, "valueExpression": "$.diastolic", "valueName": "diastolic" }
        ]
      }
    }
  ]
}
"""

CROSS_FHIR = """\
{
  "templateType": "CollectionFhir",
  "template": [
    {
      "templateType": "CodeValueFhir",
      "template": {
        "typeName": "heartrate",
        "codes": [ { "code": "8867-4", "system": "http://loinc.org" } ],
        "periodInterval": 60,
        "value": { "valueType": "SampledData", "valueName": "hr", "defaultPeriod": 1000 }
      }
    },
    {
      "templateType": "CodeValueFhir",
      "template": {
        "typeName": "bloodpressure",
        "codes": [ { "code": "85354-9", "system": "http://loinc.org" } ],
        "components": [
          {
            "codes": [ { "code": "8462-4", "system": "http://loinc.org" } ],
            "value": { "valueType": "Quantity", "valueName": "diastolic", "unit": "mmHg" }
          }
        ]
      }
    },
    {
      "templateType": "CodeValueFhir",
      "template": {
        "typeName": "temperature",
        "codes": [ { "code": "8310-5", "system": "http://loinc.org" } ],
        "value": { "valueType": "Quantity", "valueName": "temp", "unit": "Cel" }
      }
    }
  ]
}
"""


def test_validate_cross_check_warnings_exit_2(tmp_path):
    dm = write(tmp_path / "dm.json", CROSS_DEVICE)
    fm = write(tmp_path / "fm.json", CROSS_FHIR)
    r = run("validate", "--device-mapping", dm, "--fhir-mapping", fm)
    assert r.returncode == 2
    assert r.stdout == ""
    # Type names match case-insensitively (HeartRate ~ heartrate), as in the reference;
    # value names do not. Wording of the first two as the reference's MappingValidator (F12).
    # Cross-check warnings point at the template's line; position 0 = only the line is known.
    assert r.stderr.splitlines() == [
        f"{dm}:16:0: warning: No matching Fhir Template exists for Device Mapping [spo2]. "
        "Ensure case matches. Available Fhir Templates: [heartrate ,bloodpressure ,temperature].",
        f"{dm}:26:0: warning: The value [systolic] in Device Mapping [bloodpressure] is not "
        "represented within the Fhir Template of type [bloodpressure]. Available values are: "
        "[diastolic]. No value will appear inside of Observations.",
        f"{fm}:28:0: warning: Fhir Template [temperature] has no matching Device Mapping; "
        "it will never be used",
    ]


def test_validate_cross_check_skipped_while_a_mapping_has_errors(tmp_path):
    dm = write(tmp_path / "dm.json", CROSS_DEVICE)
    broken = CROSS_FHIR.replace('"typeName": "heartrate",', '"typeName": "heartrate", "bogus": 1,')
    fm = write(tmp_path / "fm.json", broken)
    r = run("validate", "--device-mapping", dm, "--fhir-mapping", fm)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"{fm}:7:34: error: Could not find member 'bogus' on object of type 'CodeValueFhirTemplate'."]


# --------------------------------------------------------------------------------------------
# normalize
# --------------------------------------------------------------------------------------------
DEVICE = """\
{
  "templateType": "CollectionContent",
  "template": [
    {
      "templateType": "JsonPathContent",
      "template": {
        "typeName": "heartrate",
        "typeMatchExpression": "$..[?(@heartRate)]",
        "deviceIdExpression": "$.deviceId",
        "patientIdExpression": "$.patientId",
        "timestampExpression": "$.time",
        "values": [
          { "required": true, "valueExpression": "$.heartRate", "valueName": "hr" },
          { "required": false, "valueExpression": "$.note", "valueName": "note" }
        ]
      }
    }
  ]
}
"""

BODY_LINES = [
    '{"heartRate": 70, "deviceId": "d1", "patientId": "p1", "time": "2024-01-01T08:00:00Z"}',
    '',
    '{not json',
    '{"heartRate": 71.5, "deviceId": "d2", "time": "2024-01-01T09:00:00+02:00", "note": "ok"}',
    '   ',
    '{"heartRate": null, "deviceId": "d1", "time": "2024-01-01T08:00:00Z"}',
    '[{"heartRate": "72", "deviceId": "d1", "time": "2024-01-01T08:01:00Z"},'
    ' {"heartRate": "73", "deviceId": "d1", "time": "2024-01-01T08:02:00Z"}]',
    '"a JSON string matches nothing"',
]


def measurement(type_, time, device, props, patient=None, encounter=None, correlation=None):
    return {"Type": type_, "OccurrenceTimeUtc": time, "IngestionTimeUtc": None, "DeviceId": device,
            "PatientId": patient, "EncounterId": encounter, "CorrelationId": correlation,
            "Properties": [{"Name": n, "Value": v} for n, v in props]}


EXPECTED_BODY_MEASUREMENTS = [
    measurement("heartrate", "2024-01-01T08:00:00Z", "d1", [("hr", "70")], patient="p1"),
    measurement("heartrate", "2024-01-01T07:00:00Z", "d2", [("hr", "71.5"), ("note", "ok")]),
    measurement("heartrate", "2024-01-01T08:01:00Z", "d1", [("hr", "72")]),
    measurement("heartrate", "2024-01-01T08:02:00Z", "d1", [("hr", "73")]),
]

NOT_JSON_LINE = '{"line": 3, "error": "InvalidDataFormatException", "message": "The message is not valid JSON."}'
MISSING_VALUE_LINE = (
    '{"line": 6, "error": "IncompatibleDataException", "message": "Line Number: 6, Position: 19. '
    'Unable to extract required value for [hr]: A null or empty value was supplied for the '
    'required field [hr]"}')


def test_normalize_stdin_default_errors_on_stderr(tmp_path):
    dm = write(tmp_path / "dm.json", DEVICE)
    r = run("normalize", "--device-mapping", dm, stdin="\n".join(BODY_LINES) + "\n")
    assert r.returncode == 0
    assert json_lines(r.stdout) == EXPECTED_BODY_MEASUREMENTS
    assert r.stderr.splitlines() == [NOT_JSON_LINE, MISSING_VALUE_LINE]


def test_normalize_output_lines_keep_the_reference_key_order_and_string_values(tmp_path):
    dm = write(tmp_path / "dm.json", DEVICE)
    r = run("normalize", "--device-mapping", dm, stdin=BODY_LINES[0] + "\n")
    assert r.stdout == (
        '{"Type":"heartrate","OccurrenceTimeUtc":"2024-01-01T08:00:00Z","IngestionTimeUtc":null,'
        '"DeviceId":"d1","PatientId":"p1","EncounterId":null,"CorrelationId":null,'
        '"Properties":[{"Name":"hr","Value":"70"}]}\n')


def test_normalize_input_file_and_errors_file(tmp_path):
    dm = write(tmp_path / "dm.json", DEVICE)
    src = write(tmp_path / "in.jsonl", "\n".join(BODY_LINES))  # no final newline
    errors = tmp_path / "errors.jsonl"
    r = run("normalize", "--device-mapping", dm, "--input", src, "--errors", errors)
    assert (r.returncode, r.stderr) == (0, "")
    assert json_lines(r.stdout) == EXPECTED_BODY_MEASUREMENTS
    assert errors.read_text().splitlines() == [NOT_JSON_LINE, MISSING_VALUE_LINE]


def test_normalize_all_lines_fail_still_exit_0(tmp_path):
    dm = write(tmp_path / "dm.json", DEVICE)
    r = run("normalize", "--device-mapping", dm, stdin="nope\n[\n")
    assert (r.returncode, r.stdout) == (0, "")
    assert [e["line"] for e in json_lines(r.stderr)] == [1, 2]
    assert {e["error"] for e in json_lines(r.stderr)} == {"InvalidDataFormatException"}


IOT_DEVICE = """\
{"templateType": "CollectionContent", "template": [
  {"templateType": "IotJsonPathContent", "template": {
    "typeName": "heartrate", "typeMatchExpression": "$..[?(@Body.heartRate)]",
    "patientIdExpression": "$.Properties.patient",
    "values": [{"required": true, "valueExpression": "$.Body.heartRate", "valueName": "hr"}]}}]}
"""


def test_normalize_envelope_format(tmp_path):
    dm = write(tmp_path / "dm.json", IOT_DEVICE)
    lines = [
        json.dumps({"Body": {"heartRate": 64},
                    "Properties": {"iothub-creation-time-utc": "2024-01-01T08:00:00Z", "patient": "p9"},
                    "SystemProperties": {"iothub-connection-device-id": "dev-9"}}),
        "[1]",
        json.dumps({"Body": {"heartRate": 65}, "Properties": {},
                    "SystemProperties": {"iothub-connection-device-id": "dev-9",
                                         "iothub-enqueuedtime": "2024-01-01T08:05:00Z"}}),
    ]
    r = run("normalize", "--device-mapping", dm, "--input-format", "envelope",
            stdin="\n".join(lines) + "\n")
    assert r.returncode == 0
    assert json_lines(r.stdout) == [
        measurement("heartrate", "2024-01-01T08:00:00Z", "dev-9", [("hr", "64")], patient="p9"),
        measurement("heartrate", "2024-01-01T08:05:00Z", "dev-9", [("hr", "65")]),
    ]
    assert json_lines(r.stderr) == [{
        "line": 2, "error": "InvalidDataFormatException",
        "message": "An envelope line must be a JSON object with Body, Properties and SystemProperties."}]


CALC_DEVICE = """\
{"templateType": "CollectionContent", "template": [
  {"templateType": "CalculatedContent", "template": {
    "typeName": "heartrate", "typeMatchExpression": "$..[?(@hr)]",
    "deviceIdExpression": "$.matchedToken.device", "timestampExpression": "$.matchedToken.t",
    "patientIdExpression": "$.Properties.patient",
    "values": [{"required": true, "valueExpression": "$.matchedToken.hr", "valueName": "hr"}]}}]}
"""


@pytest.mark.parametrize("fmt, patient", [("body", None), ("envelope", "p7")])
def test_normalize_input_format_decides_what_the_line_is(tmp_path, fmt, patient):
    # body: the line is the Body, Properties {} -> no patient; envelope: the line's own Properties.
    dm = write(tmp_path / "dm.json", CALC_DEVICE)
    body = {"hr": 60, "device": "d7", "t": "2024-01-01T08:00:00Z"}
    line = json.dumps(body if fmt == "body" else
                      {"Body": body, "Properties": {"patient": "p7"}, "SystemProperties": {}})
    args = ["normalize", "--device-mapping", dm] + (["--input-format", fmt] if fmt != "body" else [])
    r = run(*args, stdin=line + "\n")
    assert (r.returncode, r.stderr) == (0, "")
    assert json_lines(r.stdout) == [
        measurement("heartrate", "2024-01-01T08:00:00Z", "d7", [("hr", "60")], patient=patient)]


def test_normalize_invalid_mapping_exit_2_nothing_processed(tmp_path):
    dm = write(tmp_path / "dm.json", DEVICE_WITH_ERRORS)
    r = run("normalize", "--device-mapping", dm, stdin=BODY_LINES[0] + "\n")
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines()[0] == (
        f"{dm}:6:19: error: Required property 'DeviceIdExpression' not found in JSON.")
    assert len(r.stderr.splitlines()) == 5


def test_normalize_missing_input_file(tmp_path):
    dm = write(tmp_path / "dm.json", DEVICE)
    r = run("normalize", "--device-mapping", dm, "--input", tmp_path / "missing.jsonl")
    assert r.returncode == 2
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("iomt-fhir: error: cannot read input ")


def test_normalize_missing_mapping_file(tmp_path):
    r = run("normalize", "--device-mapping", tmp_path / "missing.json", stdin="{}\n")
    assert r.returncode == 2
    assert r.stderr == (f"{tmp_path / 'missing.json'}:0:0: error: Unable to read the device "
                        "mapping: No such file or directory\n")


# --------------------------------------------------------------------------------------------
# transform
# --------------------------------------------------------------------------------------------
FHIR = """\
{
  "templateType": "CollectionFhir",
  "template": [
    {
      "templateType": "CodeValueFhir",
      "template": {
        "typeName": "heartrate",
        "codes": [ { "code": "8867-4", "system": "http://loinc.org", "display": "Heart rate" } ],
        "periodInterval": 60,
        "value": { "valueType": "SampledData", "valueName": "hr", "defaultPeriod": 60000, "unit": "count/min" }
      }
    },
    {
      "templateType": "CodeValueFhir",
      "template": {
        "typeName": "bloodpressure",
        "codes": [ { "code": "85354-9", "system": "http://loinc.org" } ],
        "periodInterval": 60,
        "components": [
          {
            "codes": [ { "code": "8480-6", "system": "http://loinc.org" } ],
            "value": { "valueType": "Quantity", "valueName": "systolic", "unit": "mmHg" }
          }
        ]
      }
    },
    {
      "templateType": "CodeValueFhir",
      "template": {
        "typeName": "temperature",
        "codes": [ { "code": "8310-5", "system": "http://loinc.org" } ],
        "value": { "valueType": "Quantity", "valueName": "temp", "unit": "Cel",
                   "system": "http://unitsofmeasure.org", "code": "Cel" }
      }
    }
  ]
}
"""


def mline(type_, time, device, props, patient=None, encounter=None) -> str:
    return json.dumps(measurement(type_, time, device, props, patient, encounter))


TRANSFORM_LINES = [
    mline("heartrate", "2024-01-01T08:00:00Z", "d1", [("hr", "70")], "p1", "e1"),          # 1
    mline("heartrate", "2024-01-01T08:01:00Z", "d1", [("hr", "72")], "p1", "e1"),          # 2
    "{not json",                                                                           # 3
    mline("bloodpressure", "2024-01-01T08:00:00Z", "d1", [("systolic", "120")], "p1"),     # 4
    mline("bloodpressure", "2024-01-01T08:10:00Z", "d1", [("systolic", "121")], "p1"),     # 5
    "",                                                                                    # 6
    mline("glucose", "2024-01-01T08:00:00Z", "d1", [("mg", "99")], "p1"),                  # 7
    mline("temperature", "2024-01-01T08:30:00.5Z", "d2", [("temp", "36.6")]),              # 8
    json.dumps({"Type": "heartrate", "OccurrenceTimeUtc": "2024-01-01T08:00:00Z",
                "Properties": []}),                                                        # 9
]


def strip_issued(obs: dict) -> dict:
    out = dict(obs)
    issued = out.pop("issued")
    assert timeutil.parse_iso(issued) is not None, issued
    return out


def expected_heartrate() -> dict:
    identifier = "p1.d1.heartrate.20240101080000Z.20240101085959Z"
    return {
        "resourceType": "Observation",
        "id": observation_id(identifier),
        "identifier": [{"system": SERVICE_SYSTEM, "value": identifier}],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
                            {"system": SERVICE_SYSTEM, "code": "heartrate", "display": "heartrate"}],
                 "text": "heartrate"},
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2024-01-01T08:00:00.0000000Z",
                            "end": "2024-01-01T08:59:59.9999999Z"},
        "device": {"reference": "Device/d1"},
        "encounter": {"reference": "Encounter/e1"},
        "valueSampledData": {"origin": {"value": 0, "unit": "count/min"}, "period": 60000,
                             "dimensions": 1, "data": " ".join(["70", "72"] + ["E"] * 58)},
    }


def expected_temperature() -> dict:
    # No PatientId: offline identity has no patient, so no subject and an empty first segment.
    identifier = ".d2.temperature.20240101083000Z.20240101083000Z"
    return {
        "resourceType": "Observation",
        "id": observation_id(identifier),
        "identifier": [{"system": SERVICE_SYSTEM, "value": identifier}],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"},
                            {"system": SERVICE_SYSTEM, "code": "temperature", "display": "temperature"}],
                 "text": "temperature"},
        "effectivePeriod": {"start": "2024-01-01T08:30:00.5000000Z",
                            "end": "2024-01-01T08:30:00.5000000Z"},
        "device": {"reference": "Device/d2"},
        "valueQuantity": {"value": 36.6, "unit": "Cel", "system": "http://unitsofmeasure.org",
                          "code": "Cel"},
    }


def check_transform_errors(errors):
    by_line = {e["line"]: e for e in errors}
    assert sorted(by_line) == [3, 4, 7, 9]
    assert len(errors) == 4
    assert by_line[3] == {"line": 3, "error": "InvalidDataFormatException",
                          "message": "The line is not valid JSON."}
    # Two Quantity values in one hourly group: the whole group fails, at its first line.
    assert by_line[4]["error"] == "InvalidQuantityFhirValueException"
    assert by_line[7] == {"line": 7, "error": "TemplateNotFoundException",
                          "message": "No Fhir Template exists with the type name [glucose]."}
    assert by_line[9] == {"line": 9, "error": "IncompatibleDataException",
                          "message": "Measurement has no DeviceId."}


def test_transform_stdin_observations_and_errors_on_stderr(tmp_path):
    fm = write(tmp_path / "fm.json", FHIR)
    r = run("transform", "--fhir-mapping", fm, stdin="\n".join(TRANSFORM_LINES) + "\n")
    assert r.returncode == 0
    observations = json_lines(r.stdout)
    assert [strip_issued(o) for o in observations] == [expected_heartrate(), expected_temperature()]
    check_transform_errors(json_lines(r.stderr))
    for raw in r.stderr.splitlines():  # exact key order of an error line
        assert list(json.loads(raw)) == ["line", "error", "message"]
        assert raw.startswith('{"line": ')


def test_transform_input_and_errors_files(tmp_path):
    fm = write(tmp_path / "fm.json", FHIR)
    src = write(tmp_path / "m.jsonl", "\n".join(TRANSFORM_LINES))
    errors = tmp_path / "errors.jsonl"
    r = run("transform", "--fhir-mapping", fm, "--input", src, "--errors", errors)
    assert (r.returncode, r.stderr) == (0, "")
    assert [strip_issued(o) for o in json_lines(r.stdout)] == [expected_heartrate(),
                                                               expected_temperature()]
    check_transform_errors(json_lines(errors.read_text()))


def test_transform_reads_the_reference_measurement_shape_without_ingestion_time(tmp_path):
    fm = write(tmp_path / "fm.json", FHIR)
    m = {"Type": "temperature", "OccurrenceTimeUtc": "2024-01-01T08:30:00.5+00:00", "DeviceId": "d2",
         "Properties": [{"Name": "temp", "Value": "36.6"}]}  # .NET shape: no IngestionTimeUtc
    r = run("transform", "--fhir-mapping", fm, stdin=json.dumps(m) + "\n")
    assert (r.returncode, r.stderr) == (0, "")
    assert [strip_issued(o) for o in json_lines(r.stdout)] == [expected_temperature()]


def test_transform_invalid_fhir_mapping_exit_2(tmp_path):
    fm = write(tmp_path / "fm.json", FHIR.replace('"typeName": "temperature",', ""))
    r = run("transform", "--fhir-mapping", fm, stdin=TRANSFORM_LINES[0] + "\n")
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr == f"{fm}:29:19: error: Required property 'TypeName' not found in JSON.\n"


def test_transform_group_failing_with_an_unexpected_error_does_not_stop_others(tmp_path):
    # A null Value is not something normalize produces; whatever it does to the
    # SampledData builder, it must be one error line and the other group still output.
    fm = write(tmp_path / "fm.json", FHIR)
    lines = [json.dumps(measurement("heartrate", "2024-01-01T08:00:00Z", "dx", [("hr", None)], "p1")),
             TRANSFORM_LINES[7]]
    r = run("transform", "--fhir-mapping", fm, stdin="\n".join(lines) + "\n")
    assert r.returncode == 0
    assert [strip_issued(o) for o in json_lines(r.stdout)] == [expected_temperature()]
    errors = json_lines(r.stderr)
    assert [e["line"] for e in errors] == [1]


# --------------------------------------------------------------------------------------------
# normalize | transform on the bundled sample
# --------------------------------------------------------------------------------------------
def test_pipe_normalize_transform_on_sample_validates_as_fhir_r4(tmp_path):
    from fhir.resources.R4B.observation import Observation

    norm = run("normalize", "--device-mapping", DEVICE_EXAMPLE, "--input", SAMPLE_MESSAGES)
    assert norm.returncode == 0
    # The sample deliberately holds one line that is not JSON and one with a bad timestamp.
    errors = json_lines(norm.stderr)
    assert [(e["line"], e["error"]) for e in errors] == [
        (129, "InvalidDataFormatException"), (257, "IncompatibleDataException")]
    measurements = json_lines(norm.stdout)
    assert {m["Type"] for m in measurements} == {"heartrate", "bloodpressure", "steps",
                                                 "bodyweight", "deviceWorn"}
    assert all(isinstance(p["Value"], str) for m in measurements for p in m["Properties"])

    proc = run("transform", "--fhir-mapping", FHIR_EXAMPLE, stdin=norm.stdout)
    assert (proc.returncode, proc.stderr) == (0, "")
    observations = json_lines(proc.stdout)

    # One Observation per (device, patient, type, period): hourly heartrate, daily steps,
    # instance (periodInterval 0) for the rest.
    def period_key(m):
        t = m["OccurrenceTimeUtc"]
        period = {"heartrate": t[:13], "steps": t[:10]}.get(m["Type"], timeutil.parse_iso(t))
        return m["DeviceId"], m["PatientId"], m["Type"], period

    assert len(observations) == len({period_key(m) for m in measurements})
    assert Counter(o["code"]["text"] for o in observations) == Counter(
        k[2] for k in {period_key(m) for m in measurements})
    for o in observations:
        Observation.model_validate(o)
        patient, device = o["identifier"][0]["value"].split(".")[:2]
        assert o["subject"] == {"reference": f"Patient/{patient}"}
        assert o["device"] == {"reference": f"Device/{device}"}
        assert o["id"] == observation_id(o["identifier"][0]["value"])
        assert "encounter" not in o


def test_script_without_arguments_is_a_usage_error():
    r = run()
    assert r.returncode == 2
    assert "usage: iomt-fhir" in r.stderr


@pytest.mark.parametrize("command", ["validate", "normalize", "transform"])
def test_subcommand_help(command):
    r = run(command, "--help")
    assert r.returncode == 0
    assert f"usage: iomt-fhir {command}" in r.stdout


def test_normalize_bytes_bom_crlf_and_invalid_utf8(tmp_path):
    # A BOM on the first line, CRLF line ends and a byte that is not UTF-8 (decoded as U+FFFD,
    # as .NET does for an Event Hub body): every line is still processed, the run never stops.
    dm = write(tmp_path / "dm.json", DEVICE)
    data = (b"\xef\xbb\xbf" + BODY_LINES[0].encode() + b"\r\n"
            + b'{"heartRate": 1, "deviceId": "d\xff", "time": "2024-01-01T08:00:00Z"}\r\n'
            + "{\"heartRate\": 2, \"deviceId\": \"d\u00e9\", \"time\": \"2024-01-01T08:00:00Z\"}\r\n".encode())
    src = tmp_path / "in.jsonl"
    src.write_bytes(data)
    want = [EXPECTED_BODY_MEASUREMENTS[0],
            measurement("heartrate", "2024-01-01T08:00:00Z", "d\ufffd", [("hr", "1")]),
            measurement("heartrate", "2024-01-01T08:00:00Z", "d\u00e9", [("hr", "2")])]
    for args, stdin in ((["--input", src], None), ([], data)):
        r = subprocess.run(command() + ["normalize", "--device-mapping", str(dm)] + [str(a) for a in args],
                           input=stdin, capture_output=True, timeout=60, cwd=REPO)
        assert (r.returncode, r.stderr) == (0, b""), r.stderr
        assert [json.loads(line) for line in r.stdout.decode("utf-8").splitlines()] == want


def test_transform_properties_not_an_array_is_incompatible_data(tmp_path):
    fm = write(tmp_path / "fm.json", FHIR)
    bad = {"Type": "temperature", "OccurrenceTimeUtc": "2024-01-01T08:00:00Z", "DeviceId": "d2",
           "Properties": 5}
    r = run("transform", "--fhir-mapping", fm, stdin=json.dumps(bad) + "\n" + TRANSFORM_LINES[7] + "\n")
    assert r.returncode == 0
    assert [strip_issued(o) for o in json_lines(r.stdout)] == [expected_temperature()]  # goes on
    assert [(e["line"], e["error"]) for e in json_lines(r.stderr)] == [(1, "IncompatibleDataException")]


def test_python_dash_m_dispatches_registered_commands():
    """``python -m pipelines.cli`` runs this file as ``__main__``; commands that parse their own
    argv (``run``) register into ``pipelines.cli`` and must be found from there too."""
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--help"], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "--device-mapping" in proc.stdout
