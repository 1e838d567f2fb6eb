"""Each template pack end to end into the local FHIR server: exported with ``iomt-fhir templates
export``, run with ``iomt-fhir run`` (FnApiRunner, Create mode) on each of its sample files, then run
again. The server must hold exactly the expected Observations (pack_fixtures.EXPECTED),
with their profiles, and the second run must write nothing (the merge keeps the profiled
Observation as it is)."""
import json

import pytest
import requests

from pipelines import cli, packs
from pipelines.run import launch
from pack_fixtures import samples
from transforms.mapping.identifiers import compute_hash_for_identifier


def _search(base, resource_type, **params):
    got = requests.get(f"{base}/{resource_type}", params={**params, "_count": "200"}, timeout=30)
    assert got.status_code == 200, got.text[:300]
    return [e["resource"] for e in got.json().get("entry", [])]


def _value(obs):
    if "valueQuantity" in obs:
        return (obs["valueQuantity"]["value"], obs["valueQuantity"]["code"])
    if "valueSampledData" in obs:
        return obs["valueSampledData"]["data"]
    return tuple((c["code"]["text"], c["valueQuantity"]["value"]) for c in obs["component"])


@pytest.mark.fhir_server
@pytest.mark.parametrize("name, sample, input_format, expected", samples(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_pack_runs_end_to_end_into_the_fhir_server(tmp_path, fhir_base_url, name, sample, input_format,
                                                   expected):
    d = tmp_path / name
    assert cli.main(["templates", "export", name, str(d)]) == 0
    args = ["--runner=FnApiRunner", f"--device-mapping={d / 'devicecontent.json'}",
            f"--fhir-mapping={d / 'fhirmapping.json'}", f"--input={d / sample}",
            f"--input-format={input_format}",
            f"--fhir-url={fhir_base_url}", "--identity-mode=Create",
            f"--dead-letter={tmp_path / 'dead'}", "--single-file-outputs"]

    def state():
        found = {}
        for device in sorted({row[2] for row in expected}):
            for obs in _search(fhir_base_url, "Observation",
                               device=f"Device/{compute_hash_for_identifier(device)}"):
                found[obs["id"]] = obs
        return found

    assert launch.main(args) == 0
    assert (tmp_path / "dead.jsonl").read_text() == ""
    first = state()
    got = sorted(((o["code"]["text"], o["subject"]["reference"], o["device"]["reference"],
                   (o.get("effectiveDateTime") or o["effectivePeriod"]["start"])[:19], _value(o))
                  for o in first.values()), key=repr)
    want = sorted(((t, f"Patient/{compute_hash_for_identifier(p)}",
                    f"Device/{compute_hash_for_identifier(dev)}", at, v)
                   for t, p, dev, at, v in expected), key=repr)
    assert got == want
    for obs in first.values():
        declared = json.loads((d / "fhirmapping.json").read_text())
        (template,) = [t["template"] for t in declared["template"]
                       if t["template"]["typeName"] == obs["code"]["text"]]
        assert (obs["code"]["text"], obs["meta"].get("profile", [])) == (obs["code"]["text"], template.get("profiles", []))

    assert launch.main(args) == 0  # replay: every Observation merged to itself, nothing written
    again = state()
    assert {i: o["meta"]["versionId"] for i, o in again.items()} == \
        {i: o["meta"]["versionId"] for i, o in first.items()}
