"""Devices that change hands (issue 18), end to end on the local FHIR server: ``seed --periods``
writes DeviceUseStatements, a backfill in ``--identity-mode LookupByDeviceUse`` puts each reading
on the patient who wore the device then (beside a Create-mode run of the same archive, which
puts them all on the message's patient), a reading outside every period is dead-lettered, a
re-run writes nothing, ``replay`` recovers the dead letter once a period covers it, the cache of
periods expires on time, and on a live Pub/Sub stream a handover takes effect within the TTL."""
import datetime as dt
import json
import time
import uuid

import apache_beam as beam
import pytest
import requests
from apache_beam.options.pipeline_options import PipelineOptions

from clock_fixtures import FakeClock
from pipelines import cli
from pipelines.iomt_to_fhir import build
from pipelines.options import IomtFhirOptions
from pipelines.run import launch
from pipeline_fixtures import read_lines
from pubsub_fixtures import RUNNER, Capture, captured, run_until
from transforms.fhir.client import FhirClient
from transforms.fhir.identity import (FhirResourceNotFoundException, IdentityService,
                                      PatientEncounterMismatchException, ResourceIdentityNotDefinedException,
                                      TtlLruCache)
from transforms.fhir.seed import DEVICE_USE_SYSTEM, Seeder
from transforms.identities import ServerIdentity
from transforms.mapping import identifiers, timeutil
from transforms.mapping.device_use import PeriodRow
from transforms.mapping.grouping import measurement_groups
from transforms.mapping.measurement import Measurement

pytestmark = pytest.mark.fhir_server

DEVICE = json.dumps({"templateType": "CollectionContent", "template": [
    {"templateType": "CalculatedContent", "template": {
        "typeName": name, "typeMatchExpression": f"$..[?(@{value})]",
        "deviceIdExpression": "$.matchedToken.dev", "patientIdExpression": "$.matchedToken.pat",
        "encounterIdExpression": "$.matchedToken.enc",
        "timestampExpression": "$.matchedToken.at",
        "values": [{"valueName": value, "valueExpression": f"$.matchedToken.{value}", "required": True}]}}
    for name, value in (("heartrate", "hr"), ("spo2", "spo2"))]})
FHIR = json.dumps({"templateType": "CollectionFhir", "template": [
    {"templateType": "CodeValueFhir", "template": {
        "typeName": "heartrate", "periodInterval": 60,
        "codes": [{"code": "8867-4", "system": "http://loinc.org", "display": "Heart rate"}],
        "value": {"valueType": "SampledData", "valueName": "hr", "defaultPeriod": 600000, "unit": "bpm"}}},
    {"templateType": "CodeValueFhir", "template": {
        "typeName": "spo2", "periodInterval": 0,
        "codes": [{"code": "59408-5", "system": "http://loinc.org", "display": "SpO2"}],
        "value": {"valueType": "Quantity", "valueName": "spo2", "unit": "%", "system": "http://unitsofmeasure.org",
                  "code": "%"}}}]})
HANDOVER = "2026-03-01T10:30:00Z"


def line(dev, at, **values):
    return json.dumps(dict({"dev": dev, "pat": "p-in-message", "at": at}, **values))


def search(base, resource, **params):
    r = requests.get(f"{base}/{resource}", params=dict(params, _count="200"), timeout=10)
    r.raise_for_status()
    return [e["resource"] for e in r.json().get("entry", [])]


def one_id(base, resource, **params):
    (found,) = search(base, resource, **params)
    return found["id"]


def seed_periods(base, path, system, rows):
    path.write_text("device,patient,start,end,status\n" + "".join(",".join(r) + "\n" for r in rows))
    return cli.main(["seed", "--fhir-url", base, "--periods", str(path), "--device-identifier-system", system])


def observations(base, system, device):
    """(type, subject patient identifier, effective start, value, version) of the device's
    Observations this connector wrote."""
    device_id = one_id(base, "Device", identifier=f"{system}|{device}")
    out = []
    for o in search(base, "Observation", device=f"Device/{device_id}"):
        if not any(i.get("system") == identifiers.SERVICE_SYSTEM for i in o.get("identifier") or []):
            continue  # not written by this connector
        (patient,) = requests.get(f"{base}/{o['subject']['reference']}", timeout=10).json()["identifier"]
        value = (o.get("valueSampledData") or {}).get("data") or str(o["valueQuantity"]["value"])
        out.append((o["code"]["text"], patient["value"], o["effectivePeriod"]["start"][:19], value,
                    o["meta"]["versionId"]))
    return sorted(out)


def run_args(d, base, system, mode, dead):
    return ["--runner=FnApiRunner", f"--device-mapping={d / 'dm.json'}", f"--fhir-mapping={d / 'fm.json'}",
            f"--input={d / 'in.jsonl'}", f"--fhir-url={base}", f"--identity-mode={mode}",
            f"--device-identifier-system={system}", f"--dead-letter={d / dead}", "--single-file-outputs",
            "--progress-seconds=0"]


@pytest.mark.timeout(120)
def test_backfill_handover_mid_hour_create_and_device_use_side_by_side(tmp_path, fhir_base_url, unique, capsys):
    dev, a, b = f"du-dev-{unique}", f"du-a-{unique}", f"du-b-{unique}"
    system = f"urn:du:{unique}"
    (tmp_path / "dm.json").write_text(DEVICE)
    (tmp_path / "fm.json").write_text(FHIR)
    (tmp_path / "in.jsonl").write_text("\n".join([
        line(dev, "2026-03-01T10:00:00Z", hr=60), line(dev, "2026-03-01T10:20:00Z", hr=61),
        line(dev, "2026-03-01T10:40:00Z", hr=70), line(dev, "2026-03-01T10:50:00Z", hr=71),
        line(dev, "2026-03-01T10:25:00Z", spo2=97), line(dev, HANDOVER, spo2=96),
        line(dev, "2026-03-01T10:35:00Z", spo2=95),
        line(dev, "2026-02-28T10:00:00Z", hr=50)]) + "\n")  # before every period
    periods = [(dev, a, "2026-03-01T00:00:00Z", HANDOVER, ""), (dev, b, HANDOVER, "", "")]
    assert seed_periods(fhir_base_url, tmp_path / "periods.csv", system, periods) == 0
    assert "DeviceUseStatement created=2" in capsys.readouterr().err

    # LookupByDeviceUse: the hour splits at 10:30, instants go to either side, the handover
    # instant (covered by both periods: ends are inclusive) to the new wearer.
    args = run_args(tmp_path, fhir_base_url, system, "LookupByDeviceUse", "dead")
    assert launch.main(args) == 1  # a reading could not be placed: the identity stage dead-lettered it
    first = observations(fhir_base_url, system, dev)
    assert [o[:4] for o in first] == [
        ("heartrate", a, "2026-03-01T10:00:00", "60 E 61 E E E"),
        ("heartrate", b, "2026-03-01T10:00:00", "E E E E 70 71"),
        ("spo2", a, "2026-03-01T10:25:00", "97"),
        ("spo2", b, "2026-03-01T10:30:00", "96"),
        ("spo2", b, "2026-03-01T10:35:00", "95")]
    (dead,) = read_lines(tmp_path / "dead.jsonl")
    assert (dead["stage"], dead["error_type"]) == ("identity", "DeviceUseNotFoundException")
    assert [m["OccurrenceTimeUtc"] for m in dead["payload"]] == ["2026-02-28T10:00:00Z"]
    device_id = one_id(fhir_base_url, "Device", identifier=f"{system}|{dev}")
    assert dead["message"] == f"no device use period of Device/{device_id} covers 2026-02-28T10:00:00Z"
    assert unique not in dead["message"]  # no patient (nor device identifier) in the reason

    # The replay is idempotent: same resources, same versions.
    assert launch.main(args) == 1
    assert observations(fhir_base_url, system, dev) == first

    # Staff record who wore it on 28 February; replaying the dead letter puts the reading there.
    earlier = f"du-c-{unique}"
    assert seed_periods(fhir_base_url, tmp_path / "periods.csv", system,
                        periods + [(dev, earlier, "2026-02-28", "2026-02-28", "")]) == 0
    assert "DeviceUseStatement created=1 unchanged=2" in capsys.readouterr().err
    replay = ["replay", "--dead-letter", str(tmp_path / "dead.jsonl"), "--device-mapping", str(tmp_path / "dm.json"),
              "--fhir-mapping", str(tmp_path / "fm.json"), "--fhir-url", fhir_base_url,
              "--identity-mode", "LookupByDeviceUse", "--device-identifier-system", system,
              "--dead-letter", str(tmp_path / "again")]
    assert cli.main(replay) == 0
    assert ("heartrate", earlier, "2026-02-28T10:00:00", "50 E E E E E") in [
        o[:4] for o in observations(fhir_base_url, system, dev)]

    # Create mode, same archive, another device system: every reading on the message's patient.
    create_system = system + ":create"
    assert launch.main(run_args(tmp_path, fhir_base_url, create_system, "Create", "dead-create")) == 0
    assert [o[:4] for o in observations(fhir_base_url, create_system, dev)] == [
        ("heartrate", "p-in-message", "2026-02-28T10:00:00", "50 E E E E E"),
        ("heartrate", "p-in-message", "2026-03-01T10:00:00", "60 E 61 E 70 71"),
        ("spo2", "p-in-message", "2026-03-01T10:25:00", "97"),
        ("spo2", "p-in-message", "2026-03-01T10:30:00", "96"),
        ("spo2", "p-in-message", "2026-03-01T10:35:00", "95")]


def test_seed_periods_idempotent_updates_and_never_touches_foreign_statements(tmp_path, fhir_base_url, unique, capsys):
    dev, a = f"sp-dev-{unique}", f"sp-a-{unique}"
    system = f"urn:sp:{unique}"
    rows = [(dev, a, "2026-03-01T08:00:00Z", "", "")]
    assert seed_periods(fhir_base_url, tmp_path / "p.csv", system, rows) == 0
    assert "seed: Device created=1; DeviceUseStatement created=1; Patient created=1; errors=0" in capsys.readouterr().err
    assert seed_periods(fhir_base_url, tmp_path / "p.csv", system, rows) == 0
    assert "seed: Device unchanged=1; DeviceUseStatement unchanged=1; Patient unchanged=1; errors=0" in \
        capsys.readouterr().err
    device_id = one_id(fhir_base_url, "Device", identifier=f"{system}|{dev}")
    (before,) = search(fhir_base_url, "DeviceUseStatement", device=f"Device/{device_id}")
    # a statement somebody else wrote for the same device stays as it is
    foreign = {"resourceType": "DeviceUseStatement", "id": f"foreign-{unique}", "status": "active",
               "subject": {"reference": "Patient/" + one_id(fhir_base_url, "Patient", identifier=a)},
               "device": {"reference": f"Device/{device_id}"}, "timingPeriod": {"start": "2026-03-01T08:00:00Z"}}
    requests.put(f"{fhir_base_url}/DeviceUseStatement/{foreign['id']}", json=foreign, timeout=10).raise_for_status()
    # closing the ongoing period (same start in another notation) and a wrong row retired
    rows = [(dev, a, "2026-03-01T08:00:00.000Z", "2026-03-01T09:00:00Z", ""),
            (dev, f"sp-wrong-{unique}", "2026-03-01T09:00:00Z", "", "entered-in-error"), (dev, "", "", "", "")]
    assert seed_periods(fhir_base_url, tmp_path / "p.csv", system, rows) == 1
    err = capsys.readouterr().err
    assert "row 4: InvalidDataFormatException: a device use row needs a device and a patient" in err
    assert "DeviceUseStatement created=1 updated=1" in err and unique not in err
    statements = {s["id"]: s for s in search(fhir_base_url, "DeviceUseStatement", device=f"Device/{device_id}")}
    assert len(statements) == 3
    ours = [s for s in statements.values() if (s.get("identifier") or [{}])[0].get("system") == DEVICE_USE_SYSTEM]
    assert sorted((s["status"], s["timingPeriod"].get("end"), s["id"] == before["id"]) for s in ours) == [
        ("completed", "2026-03-01T09:00:00Z", True), ("entered-in-error", None, False)]
    assert statements[before["id"]]["meta"]["versionId"] != before["meta"]["versionId"]  # updated in place
    del statements[foreign["id"]]["meta"]
    assert statements[foreign["id"]] == foreign


def test_from_simulator_hands_devices_over(fhir_base_url, unique, capsys):
    system = f"urn:simdu:{unique}"
    args = ["seed", "--fhir-url", fhir_base_url, "--from-simulator", "--devices-count", "2",
            "--handover-at", "2026-03-01T10:30:00Z", "--device-identifier-system", system]
    assert cli.main(args) == 0
    assert "DeviceUseStatement created=4" in capsys.readouterr().err
    client = FhirClient(fhir_base_url)
    try:
        service = IdentityService(client, "LookupByDeviceUse", system)
        uses = service.device_uses("device-001")
        holders = {client.read("Patient", p.patient).resource["identifier"][0]["value"]
                   for p in uses.periods}
        assert holders == {"patient-001", "patient-003"}
        assert cli.main(args) == 0
        assert "DeviceUseStatement unchanged=4" in capsys.readouterr().err
        assert cli.main(args[:-2] + ["--handover-at", "half past ten", "--device-identifier-system", system]) == 2
    finally:
        client.close()


def measurement(dev, when, enc=None):
    return Measurement("spo2", timeutil.parse_iso(when), dev, (("spo2", "97"),), "p-msg", enc)


def test_cache_holds_periods_until_the_ttl_then_sees_a_new_statement(tmp_path, fhir_base_url, unique):
    dev, a, b = f"tt-dev-{unique}", f"tt-a-{unique}", f"tt-b-{unique}"
    system = f"urn:tt:{unique}"
    client = FhirClient(fhir_base_url)
    try:
        seeder = Seeder(client, system)
        assert not seeder.seed([(1, PeriodRow(dev, a, "2026-03-01T08:00:00Z"))]).errors
        clock = FakeClock()
        service = IdentityService(client, "LookupByDeviceUse", system,
                                  cache=TtlLruCache(sliding_seconds=30, clock=clock, sliding=False))
        identity = ServerIdentity(lambda: service)
        (group,) = measurement_groups([measurement(dev, "2026-03-01T11:00:00Z")])

        def patients():
            return [ids.patient for _, ids in identity.parts(group)]

        pa = one_id(fhir_base_url, "Patient", identifier=a)
        assert patients() == [pa]
        assert not Seeder(client, system).seed([(1, PeriodRow(dev, a, "2026-03-01T08:00:00Z", "2026-03-01T10:30:00Z")),
                                                (2, PeriodRow(dev, b, "2026-03-01T10:30:00Z"))]).errors
        pb = one_id(fhir_base_url, "Patient", identifier=b)
        clock.advance(29)  # busy device, within the TTL: the cached periods (absolute, not sliding)
        assert patients() == [pa]
        clock.advance(2)
        assert patients() == [pb]

        # unknown device, and a device whose only statement does not count
        (stranger,) = measurement_groups([measurement(f"tt-none-{unique}", "2026-03-01T11:00:00Z")])
        assert [type(e) for _, e in identity.parts(stranger)] == [FhirResourceNotFoundException]
        assert not Seeder(client, system).seed([(1, PeriodRow(f"tt-eie-{unique}", a, "", "", "entered-in-error"))]).errors
        (retired,) = measurement_groups([measurement(f"tt-eie-{unique}", "2026-03-01T11:00:00Z")])
        (_, err), = identity.parts(retired)
        assert err.error_type == "DeviceUseNotDefinedException" and unique not in str(err)
    finally:
        client.close()


def test_encounter_variant_requires_an_encounter_of_the_wearer(fhir_base_url, unique):
    dev, a, b = f"en-dev-{unique}", f"en-a-{unique}", f"en-b-{unique}"
    system = f"urn:en:{unique}"
    client = FhirClient(fhir_base_url)
    try:
        assert not Seeder(client, system).seed([
            (1, PeriodRow(dev, a, "2026-03-01T08:00:00Z", HANDOVER)), (2, PeriodRow(dev, b, HANDOVER))]).errors
        pb = one_id(fhir_base_url, "Patient", identifier=b)
        client.put({"resourceType": "Encounter", "id": f"enc-{unique}", "identifier": [{"value": f"enc-{unique}"}],
                    "status": "in-progress", "class": {"code": "VR"}, "subject": {"reference": f"Patient/{pb}"}})
        identity = ServerIdentity(lambda: IdentityService(client, "LookupByDeviceUseWithEncounter", system))
        (group,) = measurement_groups([measurement(dev, "2026-03-01T10:00:00Z", f"enc-{unique}"),
                                       measurement(dev, "2026-03-01T11:00:00Z", f"enc-{unique}")])
        results = [(part.patient_id, ids) for part, ids in identity.parts(group)]
        assert isinstance(results[0][1], PatientEncounterMismatchException)  # B's encounter, A's time
        assert results[1][1].encounter == f"enc-{unique}" and results[1][1].patient == pb
        (no_encounter,) = measurement_groups([measurement(dev, "2026-03-01T11:00:00Z")])
        assert [type(e) for _, e in identity.parts(no_encounter)] == [ResourceIdentityNotDefinedException]
    finally:
        client.close()


@pytest.mark.pubsub_emulator
@pytest.mark.timeout(180)
def test_stream_handover_takes_effect_within_the_ttl(fhir_base_url, unique, tmp_path, channel):
    """A live stream (Pub/Sub emulator) in LookupByDeviceUse with a 2 s cache: readings go to A;
    the device is handed to B while the job runs (A's period closed, B's opened, ``seed``); every
    reading sent once the TTL has passed goes to B, none of them to A."""
    ttl = 2.0
    dev, a, b = f"st-dev-{unique}", f"st-a-{unique}", f"st-b-{unique}"
    system = f"urn:st:{unique}"
    since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert seed_periods(fhir_base_url, tmp_path / "p.csv", system, [(dev, a, since, "", "")]) == 0
    device_id = one_id(fhir_base_url, "Device", identifier=f"{system}|{dev}")
    pa = one_id(fhir_base_url, "Patient", identifier=a)
    options = PipelineOptions(RUNNER + [
        f"--pubsub-subscription={channel.subscription}", f"--fhir-url={fhir_base_url}",
        "--identity-mode=LookupByDeviceUse", f"--identity-cache-seconds={ttl}",
        f"--device-identifier-system={system}", "--early-firing-seconds=1"])
    p = beam.Pipeline(options=options)
    out = build(p, options.view_as(IomtFhirOptions), DEVICE, FHIR, streaming=True)
    key = uuid.uuid4().hex
    out["dead_letter"] | "CaptureDead" >> beam.ParDo(Capture(key))

    sent = {"before": [], "after": []}
    state = {"phase": "before", "handover": None}
    value = iter(range(80, 200))

    def send(phase):
        # instant Observations are per second (the reference's id segment): one reading a second;
        # before the handover in the recent past, after it from now on
        n = len(sent[phase])
        when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(
            seconds=n - 10 if phase == "before" else n)
        at = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        v = next(value)
        channel.publish(line(dev, at, spo2=v).encode())
        sent[phase].append(str(v))

    def on_server():
        found = {}
        for o in search(fhir_base_url, "Observation", device=f"Device/{device_id}"):
            found[str(o["valueQuantity"]["value"])] = o["subject"]["reference"].split("/", 1)[1]
        return found

    def step():
        found = on_server()
        if state["phase"] == "before":
            if len(sent["before"]) < 3:
                send("before")
            elif all(v in found for v in sent["before"]):
                handover = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"
                assert seed_periods(fhir_base_url, tmp_path / "p.csv", system,
                                    [(dev, a, since, handover, ""), (dev, b, handover, "", "")]) == 0
                state.update(phase="waiting", handover=time.monotonic())
        elif state["phase"] == "waiting":
            if time.monotonic() > state["handover"] + ttl + 0.5:
                state["phase"] = "after"
        elif len(sent["after"]) < 3:
            send("after")
        else:
            return all(v in found for v in sent["after"])
        return False

    run_until(p, channel, step, timeout=90)
    found = on_server()
    pb = one_id(fhir_base_url, "Patient", identifier=b)
    assert state["phase"] == "after" and len(sent["after"]) == 3, (state, captured(key))
    assert {v: found.get(v) for v in sent["before"]} == {v: pa for v in sent["before"]}
    assert {v: found.get(v) for v in sent["after"]} == {v: pb for v in sent["after"]}
    assert captured(key) == []


@pytest.mark.timeout(120)
def test_correcting_the_past_rerun_then_misattributed_reports_and_corrects(tmp_path, fhir_base_url, unique, capsys):
    """The runbook: the handover was recorded at 11:00 but was at 10:30. Fix the statements,
    re-run the backfill (B gets its readings), then ``misattributed`` lists what stayed on A and
    ``--correct`` withdraws/cuts it; an Observation this connector did not write is never touched."""
    dev, a, b = f"cp-dev-{unique}", f"cp-a-{unique}", f"cp-b-{unique}"
    system = f"urn:cp:{unique}"
    (tmp_path / "dm.json").write_text(DEVICE)
    (tmp_path / "fm.json").write_text(FHIR)
    (tmp_path / "in.jsonl").write_text("\n".join([
        line(dev, "2026-03-01T10:00:00Z", hr=60), line(dev, "2026-03-01T10:20:00Z", hr=61),
        line(dev, "2026-03-01T10:40:00Z", hr=70), line(dev, "2026-03-01T10:50:00Z", hr=71),
        line(dev, "2026-03-01T10:45:00Z", spo2=95)]) + "\n")
    start = "2026-03-01T00:00:00Z"
    assert seed_periods(fhir_base_url, tmp_path / "p.csv", system,
                        [(dev, a, start, "2026-03-01T11:00:00Z", ""), (dev, b, "2026-03-01T11:00:00Z", "", "")]) == 0
    args = run_args(tmp_path, fhir_base_url, system, "LookupByDeviceUse", "dead")
    assert launch.main(args) == 0
    assert [o[:4] for o in observations(fhir_base_url, system, dev)] == [
        ("heartrate", a, "2026-03-01T10:00:00", "60 E 61 E 70 71"), ("spo2", a, "2026-03-01T10:45:00", "95")]
    device_id = one_id(fhir_base_url, "Device", identifier=f"{system}|{dev}")
    pa = one_id(fhir_base_url, "Patient", identifier=a)
    foreign = {"resourceType": "Observation", "id": f"foreign-{unique}", "status": "final",
               "code": {"text": "spo2"}, "subject": {"reference": f"Patient/{pa}"},
               "device": {"reference": f"Device/{device_id}"}, "effectiveDateTime": "2026-03-01T10:50:00Z",
               "valueQuantity": {"value": 90}}
    requests.put(f"{fhir_base_url}/Observation/{foreign['id']}", json=foreign, timeout=10).raise_for_status()

    # 1. fix the statements: A's ends at 10:30, B's 11:00 statement withdrawn, B's from 10:30 added
    assert seed_periods(fhir_base_url, tmp_path / "p.csv", system, [
        (dev, a, start, "2026-03-01T10:30:00Z", ""),
        (dev, b, "2026-03-01T11:00:00Z", "", "entered-in-error"), (dev, b, "2026-03-01T10:30:00Z", "", "")]) == 0
    # 2. re-run the backfill for the range: B gets its readings
    assert launch.main(args) == 0
    rerun = [o[:4] for o in observations(fhir_base_url, system, dev)]
    assert ("heartrate", b, "2026-03-01T10:00:00", "E E E E 70 71") in rerun
    assert ("spo2", b, "2026-03-01T10:45:00", "95") in rerun
    capsys.readouterr()
    # 3. what stayed on A is reported (not silently left), then corrected
    check = ["misattributed", "--fhir-url", fhir_base_url, "--device", dev, "--device-identifier-system", system,
             "--since", "2026-03-01T00:00:00Z", "--until", "2026-03-01T23:59:59Z"]
    assert cli.main(check) == 1
    out, err = capsys.readouterr()
    report = sorted((r["finding"], r["readings"], r["wrong"], r["corrected"]) for r in map(json.loads, out.splitlines()))
    assert report == [("misattributed", 1, 1, False), ("partly-misattributed", 4, 2, False)]
    assert "not-ours=1" in err and unique not in out + err
    assert cli.main(check + ["--correct"]) == 0
    capsys.readouterr()
    on_a = sorted((o["code"]["text"], o["status"], (o.get("valueSampledData") or {}).get("data"))
                  for o in search(fhir_base_url, "Observation", subject=f"Patient/{pa}"))
    assert on_a == [("heartrate", "amended", "60 E 61 E E E"), ("spo2", "entered-in-error", None),
                    ("spo2", "final", None)]  # the last: the foreign one, untouched
    stored = requests.get(f"{fhir_base_url}/Observation/{foreign['id']}", timeout=10).json()
    assert stored["valueQuantity"] == {"value": 90} and stored["status"] == "final"
    assert cli.main(check) == 0
    assert "correct=3 partly-misattributed=0 misattributed=0 withdrawn=1 not-ours=1" in capsys.readouterr().err
    # and a further re-run writes nothing
    before = observations(fhir_base_url, system, dev)
    assert launch.main(args) == 0
    assert observations(fhir_base_url, system, dev) == before


def test_overlaps_are_counted_and_check_probes_device_use(fhir_base_url, unique):
    from pipelines.run import preflight

    dev, a, b = f"ov-dev-{unique}", f"ov-a-{unique}", f"ov-b-{unique}"
    system = f"urn:ov:{unique}"
    client = FhirClient(fhir_base_url)
    try:
        assert not Seeder(client, system).seed([(1, PeriodRow(dev, a, "2026-03-01T08:00:00Z")),  # left open
                                                (2, PeriodRow(dev, b, "2026-03-01T10:00:00Z"))]).errors
        warned = []
        identity = ServerIdentity(lambda: IdentityService(client, "LookupByDeviceUse", system),
                                  on_overlap=warned.append)
        (group,) = measurement_groups([measurement(dev, "2026-03-01T09:00:00Z"),
                                       measurement(dev, "2026-03-01T10:00:00Z"),
                                       measurement(dev, "2026-03-01T11:00:00Z")])
        parts = [(len(part.measurements), ids.patient) for part, ids in identity.parts(group)]
        pa, pb = (one_id(fhir_base_url, "Patient", identifier=p) for p in (a, b))
        assert parts == [(1, pa), (2, pb)]  # the latest start wins where both cover
        assert warned == [2]
    finally:
        client.close()
    passed = preflight.check_fhir(fhir_base_url, identity_mode="LookupByDeviceUse", device_system=system)
    assert "search DeviceUseStatement?device: authorised" in passed


@pytest.mark.timeout(60)
def test_a_statement_left_open_is_an_overlap_the_run_summary_shows(tmp_path, fhir_base_url, unique, capsys):
    dev, a, b = f"lo-dev-{unique}", f"lo-a-{unique}", f"lo-b-{unique}"
    system = f"urn:lo:{unique}"
    (tmp_path / "dm.json").write_text(DEVICE)
    (tmp_path / "fm.json").write_text(FHIR)
    (tmp_path / "in.jsonl").write_text("\n".join([line(dev, "2026-03-01T10:00:00Z", hr=60),
                                                  line(dev, "2026-03-01T10:40:00Z", hr=70)]) + "\n")
    assert seed_periods(fhir_base_url, tmp_path / "p.csv", system,
                        [(dev, a, "2026-03-01T08:00:00Z", "", ""), (dev, b, HANDOVER, "", "")]) == 0
    capsys.readouterr()
    assert launch.main(run_args(tmp_path, fhir_base_url, system, "LookupByDeviceUse", "dead")) == 0
    assert "DeviceUseOverlap=1 " in capsys.readouterr().err
    assert [o[:4] for o in observations(fhir_base_url, system, dev)] == [
        ("heartrate", a, "2026-03-01T10:00:00", "60 E E E E E"), ("heartrate", b, "2026-03-01T10:00:00", "E E E E 70 E")]
