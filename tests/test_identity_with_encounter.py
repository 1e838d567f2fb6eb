"""``--identity-mode LookupWithEncounter`` succeeding, end to end: a run on FnApiRunner against
the local FHIR server finds the Device by identifier, its Patient through ``Device.patient``
and the Encounter by identifier, and writes the Observation linked to all three (README
"--identity-mode"; until now only this mode's refusals were tested)."""
import json

import pytest
import requests

from pipeline_fixtures import FHIR, read_lines
from pipelines.run import launch
from transforms.fhir.client import FhirClient

pytestmark = pytest.mark.fhir_server

DEVICE = json.dumps({"templateType": "CollectionContent", "template": [{
    "templateType": "CalculatedContent", "template": {
        "typeName": "heartrate", "typeMatchExpression": "$..[?(@hr)]",
        "deviceIdExpression": "$.matchedToken.dev", "encounterIdExpression": "$.matchedToken.enc",
        "timestampExpression": "$.matchedToken.at",
        "values": [{"valueName": "hr", "valueExpression": "$.matchedToken.hr", "required": True}]}}]})


def test_lookup_with_encounter_links_the_observation_to_patient_device_and_encounter(
        tmp_path, fhir_base_url, unique):
    patient, device, encounter = f"lwe-p-{unique}", f"lwe-d-{unique}", f"lwe-e-{unique}"
    device_ident, encounter_ident = f"lwe-dev-{unique}", f"lwe-enc-{unique}"
    client = FhirClient(fhir_base_url)
    try:
        client.put({"resourceType": "Patient", "id": patient})
        client.put({"resourceType": "Device", "id": device, "identifier": [{"value": device_ident}],
                    "patient": {"reference": f"Patient/{patient}"}})
        client.put({"resourceType": "Encounter", "id": encounter, "status": "in-progress",
                    "class": {"code": "AMB"}, "identifier": [{"value": encounter_ident}]})
    finally:
        client.close()
    (tmp_path / "dm.json").write_text(DEVICE)
    (tmp_path / "fm.json").write_text(FHIR)
    (tmp_path / "in.jsonl").write_text("".join(
        json.dumps({"hr": 70 + m, "dev": device_ident, "enc": encounter_ident,
                    "at": f"2026-03-01T10:{m:02d}:00Z"}) + "\n" for m in (0, 10)))
    rc = launch.main(["--runner=FnApiRunner", f"--device-mapping={tmp_path / 'dm.json'}",
                      f"--fhir-mapping={tmp_path / 'fm.json'}", f"--input={tmp_path / 'in.jsonl'}",
                      f"--fhir-url={fhir_base_url}", "--identity-mode=LookupWithEncounter",
                      f"--dead-letter={tmp_path / 'dead'}", "--single-file-outputs"])
    assert rc == 0
    assert read_lines(tmp_path / "dead.jsonl") == []
    found = requests.get(f"{fhir_base_url}/Observation", params={"encounter": f"Encounter/{encounter}"},
                         timeout=10).json().get("entry", [])
    [obs] = [e["resource"] for e in found]
    assert (obs["subject"], obs["device"], obs["encounter"]) == (
        {"reference": f"Patient/{patient}"}, {"reference": f"Device/{device}"},
        {"reference": f"Encounter/{encounter}"})
    assert obs["valueSampledData"]["data"] == "70 80 E E E E"
