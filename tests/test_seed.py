"""Seeding for Lookup mode (``transforms.fhir.seed``, ``iomt-fhir seed``) on the real local FHIR
server: the Patients/Devices/Encounters Lookup finds, idempotent, then a streaming run in Lookup
mode whose Observations reference them and whose unseeded device is dead-lettered."""
import datetime as dt
import json
import uuid

import apache_beam as beam
import pytest
import requests
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import cli
from pipelines.iomt_to_fhir import build
from pipelines.options import IomtFhirOptions
from pipeline_fixtures import FHIR
from pubsub_fixtures import DEVICE_E2E, RUNNER, Capture, captured, run_until
from pubsub_fixtures import body as pubsub_body
from transforms.fhir.client import FhirClient
from transforms.fhir.seed import DeviceRow, Seeder, read_rows

SYSTEM = "urn:example:devices"


def rows(text):
    return [(n, r if isinstance(r, DeviceRow) else type(r).__name__) for n, r in read_rows(text)]


def test_csv_with_and_without_header_and_json_lines():
    assert rows("device_id,patient_id,encounter_id\nd1,p1,\nd2, p2 ,e2\n") == [
        (2, DeviceRow("d1", "p1", None)), (3, DeviceRow("d2", "p2", "e2"))]
    assert rows("\ufeffd1,p1\n\nd2,p2,e2\n") == [(1, DeviceRow("d1", "p1")), (3, DeviceRow("d2", "p2", "e2"))]
    assert rows("Patient,Device\np1,d1\n") == [(2, DeviceRow("d1", "p1"))]  # by column name
    assert rows('{"device_id": "d1", "patient_id": "p1", "kind": "heartrate"}\n'
                '{"deviceId": "d2", "patientId": "p2", "encounterId": "e2"}\n') == [
        (1, DeviceRow("d1", "p1")), (2, DeviceRow("d2", "p2", "e2"))]


def test_bad_rows_are_reported_by_line_and_cost_only_themselves():
    assert rows("d1,p1\nd2\n,p3\nd4,p4\n") == [(1, DeviceRow("d1", "p1")), (2, "InvalidDataFormatException"),
                                              (3, "InvalidDataFormatException"), (4, DeviceRow("d4", "p4"))]
    assert rows('{"device_id": "d1", "patient_id": "p1"}\n[1]\n{broken\n') == [
        (1, DeviceRow("d1", "p1")), (2, "InvalidDataFormatException"), (3, "InvalidDataFormatException")]


# ---------------------------------------------------------------- against the server

pytestmark_server = pytest.mark.fhir_server


def search(base, resource, **params):
    r = requests.get(f"{base}/{resource}", params=params, timeout=10)
    r.raise_for_status()
    return [e["resource"] for e in r.json().get("entry", [])]


def seed_cli(base, path, *extra):
    return cli.main(["seed", "--fhir-url", base, "--devices", str(path), "--device-identifier-system", SYSTEM,
                     *extra])


@pytestmark_server
def test_seed_creates_what_lookup_finds_and_a_second_run_writes_nothing(fhir_base_url, unique, tmp_path, capsys):
    f = tmp_path / "devices.csv"
    f.write_text(f"device_id,patient_id,encounter_id\nsd1-{unique},sp1-{unique},\n"
                 f"sd2-{unique},sp1-{unique},se2-{unique}\nbroken-row\n")
    assert seed_cli(fhir_base_url, f) == 1  # the broken row failed, the others were seeded
    err = capsys.readouterr().err
    assert "row 4: InvalidDataFormatException" in err
    assert "seed: Device created=2; Encounter created=1; Patient created=1; errors=1" in err
    assert unique not in err  # counts and line numbers, never identifiers

    (patient,) = search(fhir_base_url, "Patient", identifier=f"sp1-{unique}")
    for device_id in (f"sd1-{unique}", f"sd2-{unique}"):
        (device,) = search(fhir_base_url, "Device", identifier=f"{SYSTEM}|{device_id}")  # Lookup's query
        assert device["patient"] == {"reference": f"Patient/{patient['id']}"}
    (enc,) = search(fhir_base_url, "Encounter", identifier=f"se2-{unique}")
    assert enc["subject"] == {"reference": f"Patient/{patient['id']}"} and enc["status"] == "in-progress"

    def versions():
        return sorted((r["resourceType"], r["id"], r["meta"]["versionId"]) for r in
                      search(fhir_base_url, "Device", identifier=f"{SYSTEM}|sd1-{unique},{SYSTEM}|sd2-{unique}")
                      + search(fhir_base_url, "Patient", identifier=f"sp1-{unique}")
                      + search(fhir_base_url, "Encounter", identifier=f"se2-{unique}"))

    before = versions()
    f.write_text(f"sd1-{unique},sp1-{unique}\nsd2-{unique},sp1-{unique},se2-{unique}\n")
    assert seed_cli(fhir_base_url, f) == 0
    assert "seed: Device unchanged=2; Encounter unchanged=1; Patient unchanged=1; errors=0" in capsys.readouterr().err
    assert versions() == before


@pytestmark_server
def test_from_simulator_seeds_exactly_the_simulators_devices(fhir_base_url, unique, capsys):
    from pipelines.simulator.devices import simulated_devices
    system = f"urn:sim:{unique}"  # this test's Devices (the simulator's ids are fixed)
    args = ["seed", "--fhir-url", fhir_base_url, "--from-simulator", "--devices-count", "4",
            "--device-identifier-system", system]
    assert cli.main(args) == 0
    assert "Device created=4" in capsys.readouterr().err
    for d in simulated_devices(4):
        (device,) = search(fhir_base_url, "Device", identifier=f"{system}|{d['device_id']}")
        (patient,) = search(fhir_base_url, "Patient", identifier=d["patient_id"])
        assert device["patient"] == {"reference": f"Patient/{patient['id']}"}
    assert search(fhir_base_url, "Device", identifier=f"{system}|device-004") == []
    assert cli.main(args) == 0
    assert "seed: Device unchanged=4; Patient unchanged=4; errors=0" in capsys.readouterr().err


@pytestmark_server
def test_existing_device_is_linked_a_device_of_another_patient_needs_relink(fhir_base_url, unique):
    client = FhirClient(fhir_base_url)
    client.put({"resourceType": "Device", "id": f"unlinked-{unique}",
                "identifier": [{"system": SYSTEM, "value": f"ld-{unique}"}]})
    seeder = Seeder(client, SYSTEM)
    report = seeder.seed([(1, DeviceRow(f"ld-{unique}", f"lp1-{unique}"))])
    assert report.counts["Device"] == {"linked": 1} and not report.errors
    (device,) = search(fhir_base_url, "Device", identifier=f"{SYSTEM}|ld-{unique}")
    assert device["id"] == f"unlinked-{unique}"  # the existing resource, not a new one

    moved = [(1, DeviceRow(f"ld-{unique}", f"lp2-{unique}"))]
    report = Seeder(client, SYSTEM).seed(moved)
    assert [e[1] for e in report.errors] == ["PatientDeviceMismatchException"]
    report = Seeder(client, SYSTEM, relink=True).seed(moved)
    assert report.counts["Device"] == {"relinked": 1}
    (p2,) = search(fhir_base_url, "Patient", identifier=f"lp2-{unique}")
    (device,) = search(fhir_base_url, "Device", identifier=f"{SYSTEM}|ld-{unique}")
    assert device["patient"]["reference"] == f"Patient/{p2['id']}"


@pytestmark_server
@pytest.mark.pubsub_emulator
def test_stream_in_lookup_mode_references_the_seeded_resources(fhir_base_url, unique, tmp_path, channel):
    """Pub/Sub -> the main job's pipeline in Lookup mode -> the server seeded just before."""
    seeded, unseeded = f"lk-dev-{unique}", f"lk-stranger-{unique}"
    (tmp_path / "devices.jsonl").write_text(json.dumps({"device_id": seeded, "patient_id": f"lk-pat-{unique}"}))
    assert seed_cli(fhir_base_url, tmp_path / "devices.jsonl") == 0
    hour = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    for m in (0, 10, 20):
        for dev in (seeded, unseeded):
            at = (hour + dt.timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ")
            channel.publish(pubsub_body(at, 60 + m, dev), patient="ignored-in-lookup")
    options = PipelineOptions(RUNNER + [
        f"--pubsub-subscription={channel.subscription}", f"--fhir-url={fhir_base_url}", "--identity-mode=Lookup",
        f"--device-identifier-system={SYSTEM}", "--early-firing-seconds=1"])
    p = beam.Pipeline(options=options)
    out = build(p, options.view_as(IomtFhirOptions), DEVICE_E2E, FHIR, streaming=True)
    key = uuid.uuid4().hex
    out["dead_letter"] | "CaptureDead" >> beam.ParDo(Capture(key))
    (device,) = search(fhir_base_url, "Device", identifier=f"{SYSTEM}|{seeded}")
    observations = []

    def written():
        observations[:] = search(fhir_base_url, "Observation", device=f"Device/{device['id']}")
        return (observations and observations[0]["valueSampledData"]["data"] == "60 70 80 E E E"
                and captured(key))

    run_until(p, channel, written)

    (patient,) = search(fhir_base_url, "Patient", identifier=f"lk-pat-{unique}")
    assert [o["valueSampledData"]["data"] for o in observations] == ["60 70 80 E E E"]
    assert all(o["subject"] == {"reference": f"Patient/{patient['id']}"} for o in observations)
    assert search(fhir_base_url, "Device", identifier=f"{SYSTEM}|{unseeded}") == []  # Lookup creates nothing
    assert search(fhir_base_url, "Patient", identifier="ignored-in-lookup") == []
    dead = [r for r, _ in captured(key)]
    assert {(d["stage"], d["error_type"]) for d in dead} == {("identity", "FhirResourceNotFoundException")}
    assert {m["DeviceId"] for d in dead for m in d["payload"]} == {unseeded}
