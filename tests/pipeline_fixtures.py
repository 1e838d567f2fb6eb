"""The heart-rate scenario shared by the pipeline tests: a device mapping, a FHIR mapping
(SampledData, 10-minute slots in a 1 h period), message lines and file helpers.

Why a fixture module: these were defined in ``test_pipeline`` and imported by nine other
modules, so importing one test module ran another's collection-time code and tied their edits
together; test modules now import only fixture modules (tests/test_layout.py checks it).
"""
import json

DEVICE = json.dumps({"templateType": "CollectionContent", "template": [{
    "templateType": "CalculatedContent", "template": {
        "typeName": "heartrate", "typeMatchExpression": "$..[?(@hr)]",
        "deviceIdExpression": "$.matchedToken.dev", "patientIdExpression": "$.matchedToken.pat",
        "timestampExpression": "$.matchedToken.at",
        "values": [{"valueName": "hr", "valueExpression": "$.matchedToken.hr", "required": True}]}}]})
FHIR = json.dumps({"templateType": "CollectionFhir", "template": [{
    "templateType": "CodeValueFhir", "template": {
        "typeName": "heartrate", "periodInterval": 60,
        "codes": [{"code": "8867-4", "system": "http://loinc.org", "display": "Heart rate"}],
        "value": {"valueType": "SampledData", "valueName": "hr", "defaultPeriod": 600000, "unit": "bpm"}}}]})


def msg(minute, hr, dev="d1"):
    return json.dumps({"hr": hr, "dev": dev, "pat": "p-" + dev, "at": f"2026-03-01T10:{minute:02d}:00Z"})


LINES = [msg(0, 60), msg(12, 61), msg(25, 62), "{broken", msg(55, 65), msg(5, 70, "d2"),
         json.dumps({"hr": 1, "dev": "d1", "at": "never"})]


def write_inputs(tmp_path, lines=LINES):
    for name, text in (("dm.json", DEVICE), ("fm.json", FHIR)):
        (tmp_path / name).write_text(text)
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n\n")
    return tmp_path


def read_lines(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
