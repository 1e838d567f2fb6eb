"""--output-format fhir-ndjson: bulk-import files with Create mode's ids, and the round trip
through the local FHIR server (import the files, then a Create-mode backfill merges into them)."""
import json

import pytest
import requests

from pipelines.run import launch
from pipeline_fixtures import msg, read_lines, write_inputs
from transforms.mapping import identifiers


def bulk_args(d, out, extra=()):
    return ["--runner=FnApiRunner", f"--device-mapping={d / 'dm.json'}", f"--fhir-mapping={d / 'fm.json'}",
            f"--input={d / 'in.jsonl'}", f"--output={out}", "--output-format=fhir-ndjson",
            "--identity-mode=Create", f"--dead-letter={d / 'dead'}", "--window-seconds=600",
            "--single-file-outputs", "--skip-preflight", *extra]


def test_bulk_files_one_type_each_with_create_mode_ids(tmp_path):
    d = write_inputs(tmp_path, [msg(0, 60), msg(12, 61), msg(55, 65), msg(5, 70, "d2"),
                                json.dumps({"hr": 1, "dev": "d3", "at": "2026-03-01T10:00:00Z"})])  # no patient
    # exit 1: an identity dead letter, as the same data in Create mode against a server
    assert launch.main(bulk_args(d, d / "bulk")) == 1
    obs = read_lines(d / "bulk" / "Observation.ndjson")
    patients = read_lines(d / "bulk" / "Patient.ndjson")
    devices = read_lines(d / "bulk" / "Device.ndjson")
    pid = {p: identifiers.compute_hash_for_identifier(p) for p in ("p-d1", "p-d2")}
    did = {x: identifiers.compute_hash_for_identifier(x) for x in ("d1", "d2")}
    assert sorted((p["id"], p["identifier"]) for p in patients) == sorted(
        (pid[p], [{"value": p}]) for p in pid)
    assert sorted((x["id"], x["identifier"], x["patient"]) for x in devices) == sorted(
        (did[x], [{"value": x}], {"reference": f"Patient/{pid['p-' + x]}"}) for x in did)
    assert {o["resourceType"] for o in obs} == {"Observation"}
    by_device = {o["device"]["reference"]: o for o in obs}
    assert len(obs) == len({o["id"] for o in obs}) == 2  # windows of one hour folded into one per id
    one = by_device[f"Device/{did['d1']}"]
    assert one["subject"] == {"reference": f"Patient/{pid['p-d1']}"}
    assert one["valueSampledData"]["data"] == "60 61 E E E 65"
    value = one["identifier"][0]["value"]
    assert value.startswith(f"{pid['p-d1']}.{did['d1']}.heartrate.") and one["id"] == identifiers.observation_id(value)
    dead = read_lines(d / "dead.jsonl")
    assert [(r["stage"], r["error_type"]) for r in dead] == [("identity", "ResourceIdentityNotDefinedException")]


def test_bulk_output_needs_create_mode(tmp_path, capsys):
    d = write_inputs(tmp_path)
    args = [a if a != "--identity-mode=Create" else "--identity-mode=Lookup" for a in bulk_args(d, d / "bulk")]
    assert launch.main(args) == 2
    assert "--identity-mode Create" in capsys.readouterr().err


def load_ndjson(base, directory):
    """What a bulk import does, as one transaction bundle of PUTs per file."""
    for resource_type in ("Patient", "Device", "Observation"):
        entries = [{"resource": r, "request": {"method": "PUT", "url": f"{resource_type}/{r['id']}"}}
                   for r in read_lines(directory / f"{resource_type}.ndjson")]
        r = requests.post(base, json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
                          headers={"Content-Type": "application/fhir+json"}, timeout=60)
        assert r.status_code == 200, r.text[:300]


@pytest.mark.fhir_server
def test_round_trip_import_then_backfill_merges_into_the_imported_observations(tmp_path, fhir_base_url, unique):
    dev = f"bulk-{unique}"
    d = write_inputs(tmp_path, [msg(0, 50, dev), msg(10, 60, dev), msg(20, 70, dev)])
    assert launch.main(bulk_args(d, d / "bulk")) == 0
    (imported,) = read_lines(d / "bulk" / "Observation.ndjson")
    load_ndjson(fhir_base_url, d / "bulk")

    # new data for the same device: later readings of the imported hour, and the next hour
    later = [msg(30, 80, dev), msg(40, 90, dev),
             json.dumps({"hr": 99, "dev": dev, "pat": "p-" + dev, "at": "2026-03-01T11:05:00Z"})]
    (d / "in.jsonl").write_text("\n".join(later) + "\n")
    rc = launch.main(["--runner=FnApiRunner", f"--device-mapping={d / 'dm.json'}",
                            f"--fhir-mapping={d / 'fm.json'}", f"--input={d / 'in.jsonl'}",
                            f"--fhir-url={fhir_base_url}", "--identity-mode=Create",
                            f"--dead-letter={d / 'dead2'}", "--window-seconds=600", "--single-file-outputs"])
    assert rc == 0

    def search(resource_type, **params):
        got = requests.get(f"{fhir_base_url}/{resource_type}", params=params, timeout=30).json()
        return [e["resource"] for e in got.get("entry", [])]

    (device,) = search("Device", identifier=dev)  # the imported one, no second Device
    (patient,) = search("Patient", identifier="p-" + dev)
    assert device["id"] == identifiers.compute_hash_for_identifier(dev)
    assert patient["id"] == identifiers.compute_hash_for_identifier("p-" + dev)
    found = {o["id"]: o for o in search("Observation", device=f"Device/{device['id']}")}
    assert len(found) == 2 and imported["id"] in found  # merged into the imported one, plus the new hour
    merged = found[imported["id"]]
    assert merged["valueSampledData"]["data"] == "50 60 70 80 90 E"
    assert merged["meta"]["versionId"] != "1"
    assert read_lines(d / "dead2.jsonl") == []
