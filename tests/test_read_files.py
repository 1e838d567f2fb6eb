"""The read stage on FnApiRunner (``transforms/sources/files.py``): every input format, gzip /
bz2 / deflate by extension, large plain files split into ranges, and each kind of bad file
as one dead letter at stage ``read`` while the rest of the run goes on."""
import bz2
import gzip
import json
import os
import zlib

import pytest

from archive_files import (CAPTURE_SCHEMA, IOT_TEMPLATE, ROUTING_SCHEMA, avro_bytes, capture_records,
                           corrupt_second_block, iot_events, routing_records, summary)
from pipelines.run import launch
from transforms.sources import archive_formats as af
from transforms.records.dead_letter import DEAD_LETTER_TAG
from transforms.sources.files import ReadUnitFn, plan_reads


def body(i):
    return json.dumps({"hr": 60 + i, "dev": f"d{i % 3}"})


def test_json_lines_compressed_split_and_bad_files(tmp_path):
    plain = [body(i) for i in range(300)]
    (tmp_path / "big.jsonl").write_bytes(("\n".join(plain) + "\n").encode())  # split in 1 KiB ranges
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(b"\n".join(b.encode() for b in plain[:3])))
    (tmp_path / "b.jsonl.bz2").write_bytes(bz2.compress(b"\r\n".join(b.encode() for b in plain[3:5]) + b"\r\n"))
    (tmp_path / "c.jsonl.deflate").write_bytes(zlib.compress(b"\n\n".join(b.encode() for b in plain[5:7])))
    full = gzip.compress(("\n".join(plain) + "\n").encode())
    (tmp_path / "truncated.jsonl.gz").write_bytes(full[: len(full) // 2])
    (tmp_path / "notgzip.jsonl.gz").write_bytes(b'{"hr": "SECRET"}\n')
    (tmp_path / "odd.jsonl").write_bytes(b'\xff\xfe not utf-8\n{"hr": 1}\n')  # a bad line is not a bad file
    events, dead = summary(str(tmp_path / "*"), "body", range_bytes=1024)
    by_file = {}
    for text, name in events:
        by_file.setdefault(name, []).append(text)
    assert sorted(by_file["big.jsonl"]) == sorted(plain)  # each line once across ~13 ranges
    assert sorted(by_file["a.jsonl.gz"]) == sorted(plain[:3])
    assert sorted(by_file["b.jsonl.bz2"]) == sorted(plain[3:5])
    assert sorted(by_file["c.jsonl.deflate"]) == sorted(plain[5:7])
    assert len(by_file["odd.jsonl"]) == 2  # the non-UTF-8 line goes on to normalization's dead letter
    assert 0 < len(by_file["truncated.jsonl.gz"]) < 300  # what was readable is kept
    assert [d[:3] for d in dead] == [("read", "BadGzipFile", "notgzip.jsonl.gz"),
                                     ("read", "EOFError", "truncated.jsonl.gz")]
    trunc = dead[1]
    assert trunc[4] == len(by_file["truncated.jsonl.gz"])  # lines read before the end: the index
    assert trunc[3] == sum(len(b) + 1 for b in by_file["truncated.jsonl.gz"])  # decompressed offset
    assert all("SECRET" not in str(d) and '"hr"' not in str(d) for d in dead)


def test_envelope_lines_keep_their_system_properties_and_gain_the_file(tmp_path):
    line = json.dumps({"Body": {"hr": 1}, "Properties": {"p": 1}, "SystemProperties": {"x-opt-offset": "9"}})
    (tmp_path / "e.jsonl").write_text(line + "\n")
    [event] = list(ReadUnitFn("envelope").process((str(tmp_path / "e.jsonl"), 0, None, len(line) + 1)))
    assert event.to_message()["SystemProperties"] == {"x-opt-offset": "9",
                                                      af.SOURCE_FILE_PROPERTY: str(tmp_path / "e.jsonl")}


def test_json_array_files(tmp_path):
    export = [{"dateTime": f"01/01/24 08:0{i}:00", "value": {"bpm": 70 + i, "confidence": 2}} for i in range(5)]
    (tmp_path / "heart.json.gz").write_bytes(gzip.compress(json.dumps(export).encode()))
    (tmp_path / "object.json").write_text(json.dumps({"SECRET": export}))
    (tmp_path / "cut.json").write_text(json.dumps(export)[:-30])
    events, dead = summary(str(tmp_path / "*.json*"), "json-array")
    assert sorted(json.loads(t)["value"]["bpm"] for t, n in events if n == "heart.json.gz") == [70, 71, 72, 73, 74]
    assert [d[1:3] for d in dead] == [("InvalidJsonArray", "cut.json"), ("NotAJsonArray", "object.json")]
    assert dead[0][4] == sum(1 for _, n in events if n == "cut.json")
    assert all("SECRET" not in str(d) for d in dead)


def test_vanished_file_and_unreadable_unit_are_dead_letters_not_failures(tmp_path):
    gone = str(tmp_path / "gone.avro")
    [dead] = list(ReadUnitFn("capture-avro").process((gone, 0, None, 100)))
    assert dead.tag == DEAD_LETTER_TAG
    assert (dead.value["stage"], dead.value["error_type"]) == ("read", "FileNotFoundError")
    assert dead.value["payload"] == {"file": gone, "byte_offset": 0, "record_index": None}
    [dead] = list(ReadUnitFn("body").process((str(tmp_path / "gone.jsonl"), 128 << 20, 192 << 20, 1 << 30)))
    assert dead.value["payload"]["byte_offset"] == 128 << 20  # the range that was lost


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode; the Azurite test "
                                              "covers permission denied (tests/test_read_files_storage.py)")
def test_permission_denied_locally(tmp_path):
    path = tmp_path / "locked.jsonl"
    path.write_text(body(1) + "\n")
    path.chmod(0)
    [dead] = list(ReadUnitFn("body").process((str(path), 0, None, 10)))
    assert dead.value["error_type"] == "PermissionError"


def test_plan_reads_splits_only_plain_text():
    assert len(plan_reads("gs://b/x.jsonl", 5 << 30, "body")) == 80  # a 5 GB file spreads over workers
    assert plan_reads("gs://b/x.jsonl", 5 << 30, "body")[-1][1:3] == ((5 << 30) - (64 << 20), 5 << 30)
    assert plan_reads("gs://b/x.jsonl.gz", 5 << 30, "body") == [("gs://b/x.jsonl.gz", 0, None, 5 << 30)]
    assert len(plan_reads("gs://b/x.avro", 5 << 30, "capture-avro")) == 1
    assert len(plan_reads("gs://b/x.json", 5 << 30, "json-array")) == 1


def test_capture_backfill_end_to_end_with_bad_files(tmp_path):
    """iomt-fhir run --input-format capture-avro: good Capture and routing files become
    Observations; a corrupt block and a file that is not Avro are read dead letters."""
    events = iot_events(6)
    cap = tmp_path / "ns" / "hub" / "0" / "2024" / "01" / "01"
    cap.mkdir(parents=True)
    (cap / "good.avro").write_bytes(avro_bytes(CAPTURE_SCHEMA, capture_records(events[:3]), codec="null"))
    (cap / "routed.avro").write_bytes(avro_bytes(ROUTING_SCHEMA, routing_records(events[3:], base64_body=True)))
    many = capture_records(iot_events(40))
    (cap / "corrupt.avro").write_bytes(corrupt_second_block(
        avro_bytes(CAPTURE_SCHEMA, many, sync_interval=600), CAPTURE_SCHEMA, many))
    (cap / "text.avro").write_text('{"heartRate": 99}\n')
    (tmp_path / "dm.json").write_text(json.dumps(IOT_TEMPLATE))
    (tmp_path / "fm.json").write_text(json.dumps({"templateType": "CollectionFhir", "template": [{
        "templateType": "CodeValueFhir", "template": {
            "typeName": "heartrate", "periodInterval": 60, "codes": [{"code": "8867-4", "system": "http://loinc.org"}],
            "value": {"valueType": "Quantity", "valueName": "hr", "unit": "bpm"}}}]}))
    rc = launch.main([
        "--runner=FnApiRunner", f"--device-mapping={tmp_path / 'dm.json'}", f"--fhir-mapping={tmp_path / 'fm.json'}",
        f"--input={tmp_path}/ns/hub/*/*/*/*/*.avro", "--input-format=capture-avro",
        f"--output={tmp_path / 'obs'}", f"--dead-letter={tmp_path / 'dead'}", "--single-file-outputs"])
    assert rc == 0
    obs = [json.loads(l) for l in (tmp_path / "obs.jsonl").read_text().splitlines()]
    dead = [json.loads(l) for l in (tmp_path / "dead.jsonl").read_text().splitlines()]
    good = [o for o in obs if o["device"]["reference"] in ("Device/dev-0", "Device/dev-1", "Device/dev-2")]
    values = sorted(o["valueQuantity"]["value"] for o in good)
    assert values[:6] == [60, 61, 62, 63, 64, 65] or set(range(60, 66)) <= set(values)
    assert sorted((d["stage"], d["error_type"], os.path.basename(d["payload"]["file"])) for d in dead) == [
        ("read", "ValueError", "text.avro"), ("read", dead_type(dead, "corrupt.avro"), "corrupt.avro")]
    corrupt = next(d for d in dead if d["payload"]["file"].endswith("corrupt.avro"))
    assert 0 < corrupt["payload"]["record_index"] < 40
    assert all("heartRate" not in json.dumps(d) for d in dead)


def dead_type(dead, name):
    return next(d["error_type"] for d in dead if d["payload"]["file"].endswith(name))


def test_a_bad_json_array_element_is_dead_lettered_alone_at_normalization(tmp_path):
    """The elements of a good array go on one by one: one that fails normalization (a
    timestamp that is not a date) is the only dead letter, its neighbours are measured."""
    from transforms.normalize import NormalizeDoFn
    device = json.dumps({"templateType": "CollectionContent", "template": [{
        "templateType": "CalculatedContent", "template": {
            "typeName": "heartrate", "typeMatchExpression": "$..[?(@hr)]",
            "deviceIdExpression": "$.matchedToken.dev", "timestampExpression": "$.matchedToken.at",
            "values": [{"valueName": "hr", "valueExpression": "$.matchedToken.hr", "required": True}]}}]})
    elements = [{"hr": 60, "dev": "d1", "at": "2024-01-01T08:00:00Z"}, {"hr": 61, "dev": "d1", "at": "never"},
                {"hr": 62, "dev": "d1", "at": "2024-01-01T08:01:00Z"}]
    (tmp_path / "export.json").write_text(json.dumps(elements))
    events = list(ReadUnitFn("json-array").process((str(tmp_path / "export.json"), 0, None, 0)))
    assert len(events) == 3
    fn = NormalizeDoFn(device)
    fn.setup()
    out = [o for e in events for o in fn.process(e)]
    dead = [o.value for o in out if getattr(o, "tag", None) == DEAD_LETTER_TAG]
    measured = [o.value.to_json()["Properties"] for o in out if getattr(o, "tag", None) != DEAD_LETTER_TAG]
    assert [(d["stage"], json.loads(d["payload"]["body"])["at"]) for d in dead] == [("normalization", "never")]
    assert len(measured) == 2
