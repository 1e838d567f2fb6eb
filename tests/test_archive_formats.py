"""The pure archive readers (``transforms/sources/archive_formats.py``): Capture / routing records
onto the reference's envelope, incremental JSON arrays, JSON-line ranges, errors without
content."""
import base64
import io
import json

import pytest

from archive_files import (CAPTURE_SCHEMA, IOT_TEMPLATE, ROUTING_SCHEMA, avro_bytes, capture_records,
                           corrupt_second_block, iot_events, kafka_record, routing_records)
from transforms.sources import archive_formats as af
from transforms.sources.kafka import record_to_event
from transforms.mapping.device_templates import load_device_mapping

SRC = "azfs://acct/capture/ns/hub/0/2024/01/01/08/00/00.avro"


def measurements(events):
    mapping = load_device_mapping(json.dumps(IOT_TEMPLATE)).ensure_valid()
    return [m.to_json() for e in events for m in mapping.get_measurements(e.to_message(), e.ingestion_time)]


def read_all(reader):
    items = list(reader)
    return [i for i in items if not isinstance(i, af.ArchiveReadError)], \
        [i for i in items if isinstance(i, af.ArchiveReadError)]


# ---------------------------------------------------------------- Capture / routing Avro

def test_capture_record_becomes_the_reference_envelope():
    [event] = af.read_capture_avro(io.BytesIO(avro_bytes(CAPTURE_SCHEMA, capture_records(iot_events(1)))), SRC)
    msg = event.to_message()
    assert msg["Body"] == {"heartRate": 60}
    assert msg["Properties"] == {"patient": "p0", "iothub-creation-time-utc": "2024-01-01T08:00:00Z"}
    system = msg["SystemProperties"]
    assert system["x-opt-sequence-number"] == 100
    assert system["x-opt-offset"] == "0"
    assert system["x-opt-enqueued-time"] == "2024-01-01T08:00:07Z"  # from "1/1/2024 8:00:07 AM"
    assert system["iothub-connection-device-id"] == "dev-0"
    assert system["iothub-enqueuedtime"] == "2024-01-01T08:00:07Z"
    assert system["iothub-message-source"] == "Telemetry"
    assert system[af.SOURCE_FILE_PROPERTY] == SRC
    assert event.ingestion_time == af.timeutil.parse_iso("2024-01-01T08:00:07Z")


def test_pm_enqueued_time_and_long_annotations():
    record = dict(capture_records(iot_events(1))[0], EnqueuedTimeUtc="12/31/2023 11:59:58 PM")
    record["SystemProperties"] = {"iothub-enqueuedtime": 1704067198000, "x-opt-partition-key": b"dev-0"}
    event = af.capture_record_to_event(record)
    assert event.system_properties["x-opt-enqueued-time"] == "2023-12-31T23:59:58Z"
    assert event.system_properties["iothub-enqueuedtime"] == "2023-12-31T23:59:58Z"  # AMQP ms -> ISO
    assert event.system_properties["x-opt-partition-key"] == "dev-0"  # bytes -> text


def test_routing_names_map_onto_the_sdk_names_and_base64_bodies_are_decoded():
    events = iot_events(2)
    data = avro_bytes(ROUTING_SCHEMA, routing_records(events, base64_body=True))
    got, errors = read_all(af.read_capture_avro(io.BytesIO(data), SRC))
    assert not errors
    assert [e.to_message()["Body"] for e in got] == [{"heartRate": 60}, {"heartRate": 61}]
    system = got[0].system_properties
    assert system["iothub-connection-device-id"] == "dev-0"
    assert system["iothub-connection-auth-generation-id"] == "6384"
    assert system["iothub-enqueuedtime"] == "2024-01-01T08:00:07Z"
    assert "x-opt-sequence-number" not in system  # routing files have no sequence numbers


@pytest.mark.parametrize("body, content_type, expected", [
    (b'{"a": 1}', None, b'{"a": 1}'),                                   # JSON stays
    (base64.b64encode(b'{"a": 1}'), None, b'{"a": 1}'),                 # base64 JSON decoded
    (base64.b64encode(b'[1]'), None, b'[1]'),
    (base64.b64encode(b'{"a": 1}'), "application/json", base64.b64encode(b'{"a": 1}')),  # sender said so
    (b"1234", None, b"1234"),                                          # a JSON number that is valid base64
    (b"true", None, b"true"),
    (base64.b64encode(b"plain text"), None, base64.b64encode(b"plain text")),  # not JSON inside: kept
])
def test_base64_recognition(body, content_type, expected):
    system = {"content-type": content_type} if content_type else {}
    record = {"EnqueuedTimeUtc": "2024-01-01T00:00:00Z", "SystemProperties": system, "Properties": {}, "Body": body}
    assert af.capture_record_to_event(record).body == expected


def test_iot_template_gives_the_same_measurements_from_the_archive_as_from_the_live_event_hub():
    events = iot_events(6)
    live = measurements([record_to_event(kafka_record(e)) for e in events])
    capture = measurements(af.read_capture_avro(io.BytesIO(avro_bytes(CAPTURE_SCHEMA, capture_records(events)))))
    routing = measurements(af.read_capture_avro(io.BytesIO(avro_bytes(ROUTING_SCHEMA, routing_records(events)))))
    assert len(live) == 6
    assert {m["DeviceId"] for m in live} == {"dev-0", "dev-1", "dev-2"}
    # the odd events have no creation time: their timestamp is the iothub-enqueuedtime fallback
    assert live[1]["OccurrenceTimeUtc"] == "2024-01-01T08:01:07Z"
    assert capture == live
    assert routing == live


def test_corrupt_avro_block_keeps_the_records_before_it_and_says_where_it_stopped():
    records = capture_records(iot_events(40))
    data = avro_bytes(CAPTURE_SCHEMA, records, sync_interval=600)
    bad = corrupt_second_block(data, CAPTURE_SCHEMA, records)
    got = []
    with pytest.raises(af.ArchiveReadError) as err:
        for event in af.read_capture_avro(io.BytesIO(bad), SRC):
            got.append(event)
    assert 0 < len(got) < 40
    assert err.value.record_index == len(got)
    assert "heartRate" not in str(err.value)


def test_avro_that_is_not_capture_and_not_avro():
    other = avro_bytes({"type": "record", "name": "X", "fields": [{"name": "a", "type": "long"}]}, [{"a": 1}])
    with pytest.raises(af.ArchiveReadError) as err:
        list(af.read_capture_avro(io.BytesIO(other)))
    assert err.value.error_type == "NotACaptureFile"
    with pytest.raises(af.ArchiveReadError) as err:
        list(af.read_capture_avro(io.BytesIO(b'{"heartRate": 60}\n')))
    assert err.value.record_index == 0 and "heartRate" not in str(err.value)


# ---------------------------------------------------------------- JSON arrays

class CountingStream(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.largest_read = 0

    def read(self, n=-1):
        chunk = super().read(n)
        self.largest_read = max(self.largest_read, len(chunk))
        return chunk


def test_json_array_is_parsed_incrementally():
    elements = [{"dateTime": f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}", "value": {"bpm": 60 + i % 40}}
                for i in range(60000)]
    data = ("\ufeff \n" + json.dumps(elements)).encode()  # BOM and whitespace before the array
    stream = CountingStream(data)
    reader = af.read_json_array(stream, "f.json")
    first = next(reader)
    assert json.loads(first.body) == elements[0]
    assert first.system_properties == {af.SOURCE_FILE_PROPERTY: "f.json"}
    assert stream.tell() < len(data) // 4  # the first element came before most of the file was read
    rest = list(reader)
    assert len(rest) == len(elements) - 1 and json.loads(rest[-1].body) == elements[-1]
    assert stream.largest_read <= 64 * 1024  # never asked for the whole file at once


def test_json_array_numbers_and_text_survive_the_round_trip():
    [a, b] = af.read_json_array(io.BytesIO('[{"v": 1.5, "n": 3, "t": "caf\u00e9", "z": 1e2}, "x"]'.encode()))
    assert json.loads(a.body) == {"v": 1.5, "n": 3, "t": "caf\u00e9", "z": 100.0}
    assert json.loads(b.body) == "x"  # a non-object element is an event of its own (normalization decides)


@pytest.mark.parametrize("data, error_type, index", [
    (b'{"heartRate": 60}', "NotAJsonArray", 0),
    (b"", "NotAJsonArray", 0),
    (b'[{"heartRate": 60}, {"heartRate": 61}, {"heartRate": SECRET}]', "InvalidJsonArray", 2),
    (b'[{"heartRate": 60}, {"heartRate"', "InvalidJsonArray", 1),   # truncated
])
def test_json_array_errors(data, error_type, index):
    got = []
    with pytest.raises(af.ArchiveReadError) as err:
        for e in af.read_json_array(io.BytesIO(data)):
            got.append(e)
    assert err.value.error_type == error_type
    assert err.value.record_index == index == len(got)
    assert "SECRET" not in str(err.value) and "heartRate" not in str(err.value)


# ---------------------------------------------------------------- JSON lines

def lines_of(data, start=0, end=None):
    stream = io.BytesIO(data)
    stream.seek(max(start - 1, 0))
    return [e.body for e in af.read_lines(stream, start, end)]


def test_ranges_give_every_line_exactly_once():
    lines = [json.dumps({"i": i, "pad": "x" * (i % 17)}).encode() for i in range(500)]
    data = b"\n".join(lines[:250]) + b"\r\n\n  \n" + b"\n".join(lines[250:])  # CRLF, blank lines, no final newline
    for size in (1, 7, 64, 1000, len(data)):
        got = []
        for start in range(0, len(data), size):
            got += lines_of(data, start, min(start + size, len(data)))
        assert got == lines, size


def test_read_error_names_the_offset_and_line_but_no_content():
    class Failing(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > 0:
                raise ConnectionResetError(104, "Connection reset by peer")
            return super().read(10)
        read1 = read
    got = []
    with pytest.raises(af.ArchiveReadError) as err:
        for e in af.read_lines(Failing(b'{"a":1}\n{"b":2}\n{"c":3}\n')):
            got.append(e.body)
    assert got == [b'{"a":1}']
    assert err.value.error_type == "ConnectionResetError"
    assert (err.value.byte_offset, err.value.record_index) == (8, 1)
    assert str(err.value) == "Connection reset by peer"
