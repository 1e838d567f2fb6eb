"""``iomt-fhir replay`` against the real local FHIR server (issue 11, "Replay dead letters").

1. A run with a broken device mapping and a FHIR mapping missing a type dead-letters
   messages (normalization) and groups (fhir_conversion); the mappings are fixed; replay;
   the Observations are on the server. Replaying again writes nothing.
2. An outage: identity lookups and writes fail through the fault proxy (the pipeline's own
   conversion DoFn and writer, no retries), the records go to dead letters with what a replay needs; the server
   comes back; replay merges the failed write into the Observation the server holds now.
"""
import json

import pytest
import requests

from pipelines import cli
from pipelines.run import launch

# the tests that use a FHIR server run on Medplum's router and on HAPI FHIR's JPA server
# (tests/fhir_fixtures.py): the same outcome is expected from both
pytestmark = pytest.mark.both_fhir_servers

DEVICE = {"templateType": "CollectionContent", "template": [
    {"templateType": "CalculatedContent", "template": {
        "typeName": "heartrate", "typeMatchExpression": "$..[?(@hr)]",
        "deviceIdExpression": "$.matchedToken.dev", "patientIdExpression": "$.matchedToken.pat",
        "timestampExpression": "$.matchedToken.at",
        "values": [{"valueName": "hr", "valueExpression": "$.matchedToken.HEART", "required": True}]}},
    {"templateType": "CalculatedContent", "template": {
        "typeName": "spo2", "typeMatchExpression": "$..[?(@spo2)]",
        "deviceIdExpression": "$.matchedToken.dev", "patientIdExpression": "$.matchedToken.pat",
        "timestampExpression": "$.matchedToken.at",
        "values": [{"valueName": "spo2", "valueExpression": "$.matchedToken.spo2", "required": True}]}}]}


def fhir_template(type_name, code):
    return {"templateType": "CodeValueFhir", "template": {
        "typeName": type_name, "periodInterval": 60,
        "codes": [{"code": code, "system": "http://loinc.org"}],
        "value": {"valueType": "SampledData", "valueName": type_name.replace("heartrate", "hr"),
                  "defaultPeriod": 600000, "unit": "1"}}}


FHIR_HR_ONLY = {"templateType": "CollectionFhir", "template": [fhir_template("heartrate", "8867-4")]}
FHIR_BOTH = {"templateType": "CollectionFhir",
             "template": [fhir_template("heartrate", "8867-4"), fhir_template("spo2", "59408-5")]}


def msg(dev, minute, **values):
    return json.dumps({"dev": dev, "pat": "p-" + dev, "at": f"2026-03-01T10:{minute:02d}:00Z", **values})


def write(path, obj):
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


#: HAPI answers a search it was asked in the last minute from its cache unless told not to
NO_CACHE = {"Cache-Control": "no-cache"}


def observations(base, device):
    dev = requests.get(f"{base}/Device", params={"identifier": device}, headers=NO_CACHE, timeout=10).json()
    ids = [e["resource"]["id"] for e in dev.get("entry", [])]
    if not ids:
        return {}
    found = requests.get(f"{base}/Observation", params={"device": f"Device/{ids[0]}"}, headers=NO_CACHE,
                         timeout=10).json()
    return {e["resource"]["code"]["coding"][0]["code"]: (e["resource"]["valueSampledData"]["data"],
                                                         e["resource"]["meta"]["versionId"])
            for e in found.get("entry", [])}


def replay(capsys, *args):
    rc = cli.main(["replay", *map(str, args)])
    return rc, capsys.readouterr().err


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.fhir_server
def test_fix_the_mappings_replay_observations_appear_and_twice_writes_nothing(tmp_path, fhir_base_url, unique, capsys):
    dev = f"replay-{unique}"
    dm, fm = write(tmp_path / "dm.json", DEVICE), write(tmp_path / "fm.json", FHIR_HR_ONLY)
    write(tmp_path / "in.jsonl", "\n".join([msg(dev, 0, hr=60), msg(dev, 10, hr=61), msg(dev, 0, spo2=97),
                                            "{not json"]) + "\n")
    rc = launch.main(["--runner=FnApiRunner", f"--device-mapping={dm}", f"--fhir-mapping={fm}",
                            f"--input={tmp_path / 'in.jsonl'}", f"--fhir-url={fhir_base_url}",
                            f"--dead-letter={tmp_path / 'dead'}", "--single-file-outputs"])
    err = capsys.readouterr().err
    assert rc == 0  # data errors alone: exit 0, and the summary says where they are and how to replay
    dead = read_jsonl(tmp_path / "dead.jsonl")
    assert sorted((r["stage"], r["error_type"]) for r in dead) == [
        ("fhir_conversion", "TemplateNotFoundException"), ("normalization", "IncompatibleDataException"),
        ("normalization", "IncompatibleDataException"), ("normalization", "InvalidDataFormatException")]
    assert f"dead letters: 4 in {tmp_path / 'dead'}*" in err
    assert f"iomt-fhir replay --dead-letter '{tmp_path / 'dead'}*' --device-mapping {dm}" in err
    assert observations(fhir_base_url, dev) == {}  # the spo2 group's device was never created

    write(dm, json.dumps(DEVICE).replace("$.matchedToken.HEART", "$.matchedToken.hr"))
    write(fm, FHIR_BOTH)
    args = ["--dead-letter", f"{tmp_path / 'dead'}*", "--device-mapping", dm, "--fhir-mapping", fm,
            "--fhir-url", fhir_base_url, "--dead-letter", tmp_path / "again"]
    rc, err = replay(capsys, *args)
    assert rc == 1  # the line that is not JSON fails again, and is kept
    assert "recovered: normalization 2/3, fhir_conversion 1/1" in err
    assert "written: created=2 updated=0 unchanged=0" in err
    assert [(r["stage"], r["error_type"], r["payload"]["body"]) for r in read_jsonl(tmp_path / "again.jsonl")] == [
        ("normalization", "InvalidDataFormatException", "{not json")]
    first = observations(fhir_base_url, dev)
    assert {code: data for code, (data, _) in first.items()} == {"8867-4": "60 61 E E E E", "59408-5": "97 E E E E E"}

    rc, err = replay(capsys, *args[:-2], "--dead-letter", tmp_path / "again2", "--stage", "fhir_conversion",
                     "--stage", "normalization", "--error-type", "IncompatibleDataException",
                     "--error-type", "TemplateNotFoundException")
    assert rc == 0 and "written: created=0 updated=0 unchanged=2" in err and "failed again: none" in err
    assert "recovered: normalization 2/2, fhir_conversion 1/1" in err
    assert observations(fhir_base_url, dev) == first  # same versions: nothing was written
    assert not (tmp_path / "again2.jsonl").exists()


@pytest.mark.fhir_server
def test_replay_after_an_outage_merges_into_what_the_server_holds(tmp_path, fhir_base_url, fault_proxy, unique, capsys):
    from fault_proxy import Fault
    from transforms.fhir.client import FhirClient
    from transforms.fhir.identity import IdentityService
    from transforms.fhir.retry import NO_RETRY
    from transforms.mapping.fhir_templates import load_fhir_mapping
    from transforms.mapping.measurement import Measurement
    from transforms.identities import ServerIdentity
    from transforms.to_observations import ToObservationsDoFn
    from transforms.records.dead_letter import write_failure
    from transforms.fhir.writer import MappingMerge, ObservationWriter

    dev, dev2 = f"outage-{unique}", f"outage2-{unique}"
    fm_text = json.dumps(FHIR_BOTH)
    fm = write(tmp_path / "fm.json", FHIR_BOTH)
    dm = write(tmp_path / "dm.json", json.dumps(DEVICE).replace("$.matchedToken.HEART", "$.matchedToken.hr"))

    def measurements(device, minutes, hr0):
        return [Measurement.from_json({"Type": "heartrate", "OccurrenceTimeUtc": f"2026-03-01T10:{m:02d}:00Z",
                                       "DeviceId": device, "PatientId": "p-" + device,
                                       "Properties": [{"Name": "hr", "Value": str(hr0 + m)}]}) for m in minutes]

    def convert(url, ms):
        fn = ToObservationsDoFn(fm_text, lambda: ServerIdentity(
            lambda: IdentityService(FhirClient(url, retry_policy=NO_RETRY), "Create")))
        fn.setup()
        return list(fn.process((None, ms)))

    mapping = load_fhir_mapping(fm_text)
    # before the outage: 10:00 and 10:10 are written
    before = convert(fhir_base_url, measurements(dev, (0, 10), 60))
    writer = ObservationWriter(FhirClient(fhir_base_url), MappingMerge(mapping))
    assert [o.outcome for o in writer.write(before)] == ["created"]
    # during it: the 10:20/10:30 write and dev2's identity lookup fail (connection reset)
    during = convert(fhir_base_url, measurements(dev, (20, 30), 60))
    fault_proxy.add(*[Fault("reset") for _ in range(4)])
    failing = ObservationWriter(FhirClient(fault_proxy.url, retry_policy=NO_RETRY), MappingMerge(mapping))
    # the record the pipeline's writer (WriteObservationsFn) dead-letters, built by the same function
    dead = [write_failure(o.error, i.observation, i.template_name, i.group)
            for i, o in zip(during, failing.write(during)) if o.outcome == "failed"]
    fault_proxy.add(*[Fault("reset") for _ in range(4)])
    dead += [o.value for o in convert(fault_proxy.url, measurements(dev2, (0,), 80))]
    assert sorted((r["stage"], r["error_type"]) for r in dead) == [
        ("fhir_write", "FHIRServiceError"), ("identity", "FHIRServiceError")]
    (tmp_path / "dead-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dead))
    held = observations(fhir_base_url, dev)["8867-4"]
    assert held[0] == "60 70 E E E E"

    # the server is back (a replay's preflight would have refused while it was not)
    fault_proxy.clear()
    args = ["--dead-letter", f"{tmp_path / 'dead'}*", "--device-mapping", dm, "--fhir-mapping", fm,
            "--fhir-url", fault_proxy.url, "--fhir-outage-seconds", "30"]
    rc, err = replay(capsys, *args)
    assert rc == 0, err
    assert "recovered: identity 1/1, fhir_write 1/1" in err and "written: created=1 updated=1 unchanged=0" in err
    after = observations(fhir_base_url, dev)["8867-4"]
    assert after[0] == "60 70 80 90 E E" and after[1] != held[1]  # merged into the version written before
    assert observations(fhir_base_url, dev2)["8867-4"][0] == "80 E E E E E"
    rc, err = replay(capsys, *args)
    assert rc == 0 and "written: created=0 updated=0 unchanged=2" in err
    assert observations(fhir_base_url, dev)["8867-4"] == after


def test_a_read_record_of_an_unreadable_file_is_kept_and_named(tmp_path):
    from pipelines.commands.replay import Replayer

    class NoWrites:
        def write(self, items):
            raise AssertionError("nothing to write")

    record = {"stage": "read", "error_type": "ArchiveReadError", "message": "truncated gzip",
              "payload": {"file": "archive/a.jsonl.gz", "byte_offset": 10, "record_index": None}, "attributes": {}}
    result = Replayer(json.dumps(DEVICE), json.dumps(FHIR_BOTH), None, NoWrites()).replay([("f", 1, record)])
    assert result.failures == [record] and result.stages["read"].failed == 1
    assert result.lines("new")[-1] == ("1 file(s) could not be read (stage read): run them again with "
                                       "iomt-fhir run --input FILE once they are fixed")


def test_a_streams_dead_letter_folder_is_read_and_new_prefixes_stay_outside_the_pattern(tmp_path):
    import datetime
    from pipelines.commands.replay import default_new_prefix, matched_by, read_records

    (tmp_path / "dead").mkdir()
    (tmp_path / "dead" / "DeadLetters-1.jsonl").write_text('{"stage": "identity", "payload": []}\nnot json\n')
    got = list(read_records(str(tmp_path / "dead*")))
    assert [(p.rsplit("/", 1)[-1], n, r) for p, n, r in got] == [
        ("DeadLetters-1.jsonl", 1, {"stage": "identity", "payload": []}), ("DeadLetters-1.jsonl", 2, None)]
    now = datetime.datetime(2026, 3, 1, 10, 0, tzinfo=datetime.timezone.utc)
    for pattern in ("out/dead-letter*", "out/dead/*", "out/*"):
        new = default_new_prefix(pattern, now)
        assert (pattern, matched_by(pattern, new)) == (pattern, False)
    assert matched_by("out/*", "out/again") and matched_by("out/*", "out/replayed-1/dead-letter")
    assert default_new_prefix("out/dead/*", now) == "out/replayed-20260301T100000Z/dead-letter"
