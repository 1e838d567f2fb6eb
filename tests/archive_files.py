"""Builders for the archive files the read-stage tests use: Event Hubs Capture and IoT Hub
routing Avro written through fastavro with the schemas those services write, and the
IoT Hub events they hold (also as the Kafka records the live Event Hub would give)."""
from __future__ import annotations

import datetime as dt
import io
import json
from typing import Dict, List

import fastavro

# The schema Event Hubs Capture writes (Microsoft.ServiceBus.Messaging.EventData).
CAPTURE_SCHEMA = {
    "type": "record", "name": "EventData", "namespace": "Microsoft.ServiceBus.Messaging",
    "fields": [
        {"name": "SequenceNumber", "type": "long"},
        {"name": "Offset", "type": "string"},
        {"name": "EnqueuedTimeUtc", "type": "string"},
        {"name": "SystemProperties", "type": {"type": "map", "values": ["long", "double", "string", "bytes"]}},
        {"name": "Properties", "type": {"type": "map", "values": ["long", "double", "string", "bytes", "null"]}},
        {"name": "Body", "type": ["null", "bytes"]},
    ],
}

# The schema IoT Hub message routing writes to storage with the Avro encoding.
ROUTING_SCHEMA = {
    "type": "record", "name": "Message", "namespace": "Microsoft.Azure.Devices",
    "fields": [
        {"name": "EnqueuedTimeUtc", "type": "string"},
        {"name": "Properties", "type": {"type": "map", "values": "string"}},
        {"name": "SystemProperties", "type": {"type": "map", "values": "string"}},
        {"name": "Body", "type": ["null", "bytes"]},
    ],
}

IOT_TEMPLATE = {"templateType": "CollectionContent", "template": [
    {"templateType": "IotJsonPathContent", "template": {
        "typeName": "heartrate", "typeMatchExpression": "$..[?(@Body.heartRate)]",
        "patientIdExpression": "$.Properties.patient",
        "values": [{"required": True, "valueExpression": "$.Body.heartRate", "valueName": "hr"}]}}]}

BASE = dt.datetime(2024, 1, 1, 8, 0, 0, tzinfo=dt.timezone.utc)


def iot_events(n: int = 6) -> List[Dict]:
    """IoT Hub device-to-cloud events: half carry iothub-creation-time-utc (the template's
    timestamp), half fall back to the hub's enqueue time. Enqueue times are whole seconds
    because Capture's EnqueuedTimeUtc string has no fraction."""
    out = []
    for i in range(n):
        enqueued = BASE + dt.timedelta(minutes=i, seconds=7)
        props = {"patient": f"p{i % 2}"}
        if i % 2 == 0:
            props["iothub-creation-time-utc"] = (BASE + dt.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append({"sequence": 100 + i, "offset": str(4096 * i), "enqueued": enqueued, "device": f"dev-{i % 3}",
                    "properties": props, "body": json.dumps({"heartRate": 60 + i}).encode()})
    return out


def _amqp_str(text: str) -> bytes:
    raw = text.encode()
    return b"\xa1" + bytes([len(raw)]) + raw


def kafka_record(event: Dict):
    """The row ``ReadFromKafka(with_metadata=True)`` gives for the event on the live Event Hub:
    IoT Hub's annotations and the sender's properties arrive as AMQP-encoded headers."""
    import apache_beam as beam
    ms = int(event["enqueued"].timestamp() * 1000)
    headers = [beam.Row(key="iothub-connection-device-id", value=_amqp_str(event["device"])),
               beam.Row(key="iothub-enqueuedtime", value=b"\x83" + ms.to_bytes(8, "big"))]
    headers += [beam.Row(key=k, value=_amqp_str(v)) for k, v in event["properties"].items()]
    return beam.Row(topic="devicedata", partition=0, offset=event["sequence"], timestamp=ms, key=None,
                    value=event["body"], headers=headers, timestampTypeId=1, timestampTypeName="LogAppendTime")


def _us_time(t: dt.datetime) -> str:
    """Capture's EnqueuedTimeUtc: .NET DateTime.ToString() in en-US, e.g. 1/1/2024 8:00:07 AM."""
    hour = t.hour % 12 or 12
    return f"{t.month}/{t.day}/{t.year} {hour}:{t:%M:%S} {'AM' if t.hour < 12 else 'PM'}"


def capture_records(events: List[Dict]) -> List[Dict]:
    return [{"SequenceNumber": e["sequence"], "Offset": e["offset"], "EnqueuedTimeUtc": _us_time(e["enqueued"]),
             "SystemProperties": {"iothub-connection-device-id": e["device"],
                                  "iothub-enqueuedtime": e["enqueued"].strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
                                  "iothub-connection-auth-method": '{"scope":"device","type":"sas"}',
                                  "iothub-message-source": "Telemetry"},
             "Properties": dict(e["properties"]), "Body": e["body"]} for e in events]


def routing_records(events: List[Dict], base64_body: bool = False) -> List[Dict]:
    import base64
    return [{"EnqueuedTimeUtc": e["enqueued"].strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
             "SystemProperties": {"connectionDeviceId": e["device"], "connectionAuthMethod": '{"scope":"device"}',
                                  "connectionDeviceGenerationId": "6384", "enqueuedTime":
                                      e["enqueued"].strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
                                  **({} if base64_body else {"contentType": "application/json",
                                                             "contentEncoding": "utf-8"})},
             "Properties": dict(e["properties"]),
             "Body": base64.b64encode(e["body"]) if base64_body else e["body"]} for e in events]


def avro_bytes(schema: Dict, records: List[Dict], codec: str = "deflate", sync_interval: int = 16000) -> bytes:
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(schema), records, codec=codec, sync_interval=sync_interval)
    return buf.getvalue()


def corrupt_second_block(data: bytes, schema: Dict, records: List[Dict]) -> bytes:
    """``data`` with a byte flipped inside the second Avro block (the first block stays good)."""
    blocks = list(fastavro.block_reader(io.BytesIO(data)))
    assert len(blocks) >= 2, "write with a small sync_interval to get several blocks"
    # header + first block end where the second block's data starts: find it by re-writing
    # the first block alone.
    first = avro_bytes(schema, records[:blocks[0].num_records], sync_interval=10 ** 9)
    cut = len(first) + 4  # a few bytes into the second block (count, size, then data)
    return data[:cut] + bytes([data[cut] ^ 0xFF]) + data[cut + 1:]


_RESULTS = {}  # FnApiRunner runs in this process: the matchers hand their input over here


def _stash(name, got):
    _RESULTS[name] = list(got)


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def summary(pattern: str, input_format: str, range_bytes: int = 64 << 20, pipeline_check=None):
    """Run ``ReadArchiveFiles`` on FnApiRunner: (sorted (body text, file basename), sorted
    (stage, error_type, file basename, byte_offset, record_index, message)) of the run.
    ``pipeline_check(pipeline)`` runs on the built pipeline before it runs."""
    return summaries([(pattern, input_format)], range_bytes, pipeline_check)[0]


def summaries(reads, range_bytes: int = 64 << 20, pipeline_check=None, options=None):
    """``summary`` of several (pattern, input format) reads, all in one pipeline run."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.testing.util import assert_that

    from transforms.sources import archive_formats as af
    from transforms.records.dead_letter import DEAD_LETTER_TAG
    from transforms.sources.files import ReadArchiveFiles

    p = beam.Pipeline(runner=FnApiRunner(), options=options)
    for i, (pattern, input_format) in enumerate(reads):
        read = p | f"Read{i}" >> ReadArchiveFiles(pattern, input_format, range_bytes=range_bytes)
        events = read.events | f"Bodies{i}" >> beam.Map(
            lambda e: (e.body.decode("utf-8", "replace") if isinstance(e.body, bytes) else e.body,
                       basename(e.system_properties[af.SOURCE_FILE_PROPERTY])))
        dead = read[DEAD_LETTER_TAG] | f"Dead{i}" >> beam.Map(
            lambda r: (r["stage"], r["error_type"], basename(r["payload"]["file"]),
                       r["payload"]["byte_offset"], r["payload"]["record_index"], r["message"]))
        assert_that(events, lambda got, i=i: _stash(("events", i), got), label=f"keepEvents{i}")
        assert_that(dead, lambda got, i=i: _stash(("dead", i), got), label=f"keepDead{i}")
    if pipeline_check:
        pipeline_check(p)
    p.run().wait_until_finish()
    return [(sorted(_RESULTS.pop(("events", i))), sorted(_RESULTS.pop(("dead", i)))) for i in range(len(reads))]
