"""Event Hubs / Kafka source (``transforms.sources.kafka``): consumer config, secret handling,
record -> DeviceEvent mapping, source selection, and the pipeline built through a stub
expansion service (offline), plus live reads that run only when an address is given.

Offline, ``ReadFromKafka`` is expanded by ``StubKafkaExpansion`` (the ``stub_kafka`` fixture,
tests/kafka_stub_fixtures.py): an in-process gRPC
expansion service that records the request (what a real Java expansion service would
receive, and what ends up in the job) and answers with a Python ``Create`` of rows in
KafkaIO's ``with_metadata`` schema. Nothing is downloaded; the Java side is only exercised
by the live tests.
"""
import json
import logging
import os
import pickle
import time
import uuid
from unittest import mock

import apache_beam as beam
from pipelines.run.runners import FN_API_RUNNER
import pytest
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from pipelines.run import launch
from pipelines.options import IomtFhirOptions
from transforms.sources import amqp_values
from transforms.records.device_event import DeviceEvent
from transforms.sources.kafka import (CONNECTION_STRING_ENV, ENV_CONFIG_PROVIDER, KafkaSource, KafkaSourceError,
                                     ReadKafkaDeviceEvents, eventhubs_bootstrap, parse_connection_string,
                                     record_to_event)
from kafka_stub_fixtures import KEY, SECRET, kafka_row
from transforms.mapping.device_templates import load_device_mapping
from transforms.normalize import Normalize
from transforms.sources.device_events import ReadDeviceEvents, SourceError, kafka_source_from_options

PLACEHOLDER = "${env:EVENTHUB_CONNECTION_STRING}"


# ---------------------------------------------------------------- consumer config and secrets

def test_eventhubs_config_points_at_namespace_and_holds_only_a_placeholder():
    topic, config = KafkaSource(topic="devices").resolve({CONNECTION_STRING_ENV: SECRET})
    assert topic == "devices"
    assert config["bootstrap.servers"] == "demo-ns.servicebus.windows.net:9093"
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "PLAIN"
    assert config["sasl.jaas.config"] == (
        'org.apache.kafka.common.security.plain.PlainLoginModule required '
        f'username="$ConnectionString" password="{PLACEHOLDER}";')
    assert config["config.providers"] == "env"
    assert config["config.providers.env.class"] == ENV_CONFIG_PROVIDER
    assert config["group.id"] == "$Default"
    assert config["auto.offset.reset"] == "earliest"
    assert KEY not in json.dumps(config)


def test_consumer_group_and_offset_reset_pass_through():
    _, config = KafkaSource(topic="devices", consumer_group="medtech", offset_reset="latest").resolve(
        {CONNECTION_STRING_ENV: SECRET})
    assert (config["group.id"], config["auto.offset.reset"]) == ("medtech", "latest")
    with pytest.raises(KafkaSourceError, match="earliest or latest"):
        KafkaSource(topic="devices", offset_reset="newest").resolve({CONNECTION_STRING_ENV: SECRET})


def test_plain_kafka_config_needs_no_secret_and_has_no_sasl():
    topic, config = KafkaSource(topic="t", bootstrap_servers="k1:9092,k2:9092").resolve({})
    assert topic == "t"
    assert config == {"bootstrap.servers": "k1:9092,k2:9092", "group.id": "$Default",
                      "auto.offset.reset": "earliest"}


def test_entity_path_names_the_hub_and_must_agree():
    scoped = SECRET + ";EntityPath=devices"
    assert KafkaSource().resolve({CONNECTION_STRING_ENV: scoped})[0] == "devices"
    with pytest.raises(KafkaSourceError, match="EntityPath") as info:
        KafkaSource(topic="other").resolve({CONNECTION_STRING_ENV: scoped})
    assert KEY not in str(info.value)


def test_secret_read_from_the_environment_by_default(monkeypatch):
    monkeypatch.setenv(CONNECTION_STRING_ENV, SECRET.replace("demo-ns", "from-env"))
    assert KafkaSource(topic="d").resolve()[1]["bootstrap.servers"] == "from-env.servicebus.windows.net:9093"
    monkeypatch.delenv(CONNECTION_STRING_ENV)
    with pytest.raises(KafkaSourceError, match=CONNECTION_STRING_ENV):
        KafkaSource(topic="d").resolve()


@pytest.mark.parametrize("bad, complaint", [
    (f"SharedAccessKeyName=listen;SharedAccessKey={KEY}", "Endpoint"),
    (f"Endpoint=sb://demo-ns.servicebus.windows.net/;SharedAccessKey={KEY}", "SharedAccessKeyName"),
    (f"Endpoint=sb://;SharedAccessKeyName=listen;SharedAccessKey={KEY}", "Endpoint"),
    (KEY, "Endpoint"),
])
def test_malformed_connection_string_errors_never_echo_it(bad, complaint, caplog):
    with caplog.at_level(logging.DEBUG), pytest.raises(KafkaSourceError, match=complaint) as info:
        KafkaSource(topic="d").resolve({CONNECTION_STRING_ENV: bad})
    assert KEY not in str(info.value) + repr(info.value) + caplog.text


def test_parse_connection_string_host_and_entity():
    assert parse_connection_string(SECRET) == ("demo-ns.servicebus.windows.net", None)
    assert parse_connection_string(
        "endpoint=sb://x.servicebus.windows.net:5671/;sharedaccesskeyname=a;sharedaccesskey=b;entitypath=h"
    ) == ("x.servicebus.windows.net", "h")


def test_eventhubs_bootstrap_port():
    assert eventhubs_bootstrap(SECRET) == "demo-ns.servicebus.windows.net:9093"
    # an Azure namespace's Endpoint may name its AMQP port: Kafka is still 9093
    assert eventhubs_bootstrap(
        "Endpoint=sb://x.servicebus.windows.net:5671/;SharedAccessKeyName=a;SharedAccessKey=b") == (
        "x.servicebus.windows.net:9093")
    local = "Endpoint=sb://127.0.0.1:19093/;SharedAccessKeyName=a;SharedAccessKey=b"
    assert eventhubs_bootstrap(local) == "127.0.0.1:19093"
    assert KafkaSource(topic="d").resolve({CONNECTION_STRING_ENV: local})[1]["bootstrap.servers"] == (
        "127.0.0.1:19093")
    with pytest.raises(KafkaSourceError) as info:
        eventhubs_bootstrap("Endpoint=sb://h:x9/;SharedAccessKeyName=a;SharedAccessKey=SECRETKEY")
    assert "SECRETKEY" not in str(info.value)


def test_source_and_transform_hold_no_secret_in_repr_str_or_pickle(monkeypatch, caplog):
    monkeypatch.setenv(CONNECTION_STRING_ENV, SECRET)
    source = KafkaSource(topic="devices")
    with caplog.at_level(logging.DEBUG):
        transform = ReadKafkaDeviceEvents(source)
    shipped = pickler.dumps(transform) + pickle.dumps(source)
    assert KEY.encode() not in shipped
    assert KEY not in repr(source) + str(source) + repr(transform) + str(transform) + caplog.text
    assert PLACEHOLDER in repr(transform._config)


# ---------------------------------------------------------------- record -> DeviceEvent

def row(**overrides):
    base = dict(topic="devices", partition=3, offset=41, timestamp=1767225600123, key=b"dev-1",
                value=b'{"hr": 61}', headers=[], timestampTypeId=1, timestampTypeName="LogAppendTime")
    base.update(overrides)
    return beam.Row(**base)


def header(key, value):
    return beam.Row(key=key, value=value)


def test_record_maps_onto_the_reference_envelope():
    event = record_to_event(row(headers=[header("patient", b"p-1")]))
    assert event.body == b'{"hr": 61}'
    assert event.properties == {"patient": "p-1"}
    assert event.system_properties == {
        "x-opt-enqueued-time": "2026-01-01T00:00:00.123Z", "x-opt-sequence-number": 41,
        "x-opt-partition-key": "dev-1", "kafka-topic": "devices", "kafka-partition": 3, "kafka-offset": 41,
        "kafka-timestamp-type": "LogAppendTime"}
    assert event.ingestion_time == 1767225600123 * 10_000
    assert event.to_message() == {"Body": {"hr": 61}, "Properties": {"patient": "p-1"},
                                  "SystemProperties": event.system_properties}


def test_missing_timestamp_key_headers_and_value():
    event = record_to_event(row(timestamp=-1, timestampTypeName="NoTimestampType", key=None,
                                headers=None, value=None))
    assert event.ingestion_time is None
    assert "x-opt-enqueued-time" not in event.system_properties
    assert "x-opt-partition-key" not in event.system_properties
    assert event.properties == {}
    assert event.to_message()["Body"] is None  # the reference: empty body -> null


def test_dict_records_and_a_headerless_schema_work_too():
    event = record_to_event({"topic": "t", "partition": 0, "offset": 1, "value": b"{}"})
    assert event.ingestion_time is None and event.system_properties["kafka-offset"] == 1


def test_system_annotation_headers_go_to_system_properties():
    event = record_to_event(row(headers=[
        header("iothub-connection-device-id", b"\xa1\x05dev-9"),    # AMQP str8, as Event Hubs stores it
        header("iothub-creation-time-utc", b"\xa1\x142024-01-01T08:00:00Z"),  # device-settable
        header("x-opt-offset", b"\xa1\x0512345"),
        header("content-type", b"application/json"),
        header("x-opt-sequence-number", b"\x81" + (7).to_bytes(8, "big")),  # the record's offset wins
    ]))
    assert event.system_properties["iothub-connection-device-id"] == "dev-9"
    assert event.system_properties["x-opt-offset"] == "12345"
    assert event.system_properties["content-type"] == "application/json"
    assert event.system_properties["x-opt-sequence-number"] == 41
    assert event.properties == {"iothub-creation-time-utc": "2024-01-01T08:00:00Z"}


def test_iot_hub_template_reads_a_kafka_record_like_an_event_hubs_event():
    mapping = load_device_mapping(json.dumps({"templateType": "CollectionContent", "template": [
        {"templateType": "IotJsonPathContent", "template": {
            "typeName": "heartrate", "typeMatchExpression": "$..[?(@Body.heartRate)]",
            "patientIdExpression": "$.Properties.patient",
            "values": [{"required": True, "valueExpression": "$.Body.heartRate", "valueName": "hr"}]}}]}))
    event = record_to_event(row(value=b'{"heartRate": 64}', headers=[
        header("iothub-connection-device-id", b"\xa1\x05dev-9"),
        header("iothub-creation-time-utc", b"\xa1\x142024-01-01T08:00:00Z"),
        header("patient", b"\xa1\x02p9")]))
    [m] = mapping.ensure_valid().get_measurements(event.to_message(), event.ingestion_time)
    assert m.to_json()["DeviceId"] == "dev-9"
    assert m.to_json()["PatientId"] == "p9"
    assert m.to_json()["OccurrenceTimeUtc"] == "2024-01-01T08:00:00Z"
    assert m.to_json()["IngestionTimeUtc"] == "2026-01-01T00:00:00.123Z"


@pytest.mark.parametrize("raw, value", [
    (b"plain text", "plain text"),
    (b"", ""),
    (None, None),
    ("caf\u00e9".encode(), "caf\u00e9"),
    (b"\xa1\x03abc", "abc"),                                   # str8-utf8
    (b"\xb1\x00\x00\x00\x02hi", "hi"),                         # str32-utf8
    (b"\xa3\x03sym", "sym"),                                   # sym8
    (b"\x81" + (-5).to_bytes(8, "big", signed=True), -5),      # long
    (b"\x80" + (5).to_bytes(8, "big"), 5),                     # ulong
    (b"\x83" + (1704096000000).to_bytes(8, "big"), "2024-01-01T08:00:00Z"),  # timestamp
    (b"\x98" + bytes(range(16)), "00010203-0405-0607-0809-0a0b0c0d0e0f"),  # uuid
    (b"q\x00\x00\x00\x05", 5),                                 # int (not printable after "q")
    (b"T\xfb", -5),                                            # smallint
    (b"V\x01", True),                                          # boolean
    (b"qabcd", "qabcd"),                                       # text that only looks like an int
    (b"A", "A"),                                               # a lone letter stays text
    (b"\xa1\x05ab", "a1056162"),                               # truncated str8: hex, never an error
    (b"\xff\xfe", "fffe"),                                     # not UTF-8: hex
])
def test_header_values(raw, value):
    assert amqp_values.header_value(raw) == value


# ---------------------------------------------------------------- source selection

def parse(*args):
    return PipelineOptions(list(args)).view_as(IomtFhirOptions)


def test_exactly_one_source():
    kafka = KafkaSource(topic="t", bootstrap_servers="k:9092")
    with pytest.raises(SourceError, match=r"given: none"):
        ReadDeviceEvents()
    with pytest.raises(SourceError, match=r"given: --input, --kafka-topic / --eventhub-name"):
        ReadDeviceEvents("in/*.jsonl", kafka=kafka)
    with pytest.raises(SourceError, match=r"given: --pubsub-subscription, --kafka-topic"):
        ReadDeviceEvents(pubsub_subscription="projects/p/subscriptions/s", kafka=kafka)
    assert ReadDeviceEvents(kafka=kafka)._kafka is not None


def test_options_to_kafka_source():
    assert kafka_source_from_options(parse("--input=x")) is None
    source = kafka_source_from_options(parse("--eventhub-name=devices", "--eventhub-consumer-group=g",
                                             "--kafka-expansion-service=localhost:8097",
                                             "--kafka-offset-reset=latest"))
    assert source == KafkaSource(topic="devices", consumer_group="g", offset_reset="latest",
                                 expansion_service="localhost:8097")
    assert source.is_eventhubs
    plain = kafka_source_from_options(parse("--kafka-topic=t", "--kafka-bootstrap-servers=k:9092"))
    assert not plain.is_eventhubs and plain.consumer_group == "$Default"
    with pytest.raises(SourceError, match="--kafka-bootstrap-servers needs --kafka-topic"):
        kafka_source_from_options(parse("--kafka-bootstrap-servers=k:9092"))


@pytest.fixture
def repo_cwd(monkeypatch):
    from conftest import REPO
    monkeypatch.chdir(REPO)


BASE = ["--runner=FnApiRunner", "--device-mapping=templates/devicecontent.json",
        "--fhir-mapping=templates/fhirmapping.json"]


@pytest.mark.parametrize("args, message", [
    (["--input=templates/sample/*.jsonl", "--eventhub-name=hub"], "Choose exactly one source"),
    (["--eventhub-name=hub"], CONNECTION_STRING_ENV),
    (["--kafka-bootstrap-servers=k:9092"], "--kafka-bootstrap-servers needs --kafka-topic"),
])
def test_main_refuses_a_bad_source_with_exit_2(args, message, repo_cwd, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(CONNECTION_STRING_ENV, raising=False)
    rc = launch.main(BASE + args + [f"--dead-letter={tmp_path / 'd'}", f"--output={tmp_path / 'o'}"])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_malformed_secret_in_env_exits_2_without_echo(repo_cwd, tmp_path, capsys, monkeypatch, caplog):
    monkeypatch.setenv(CONNECTION_STRING_ENV, f"SharedAccessKeyName=a;SharedAccessKey={KEY}")
    with caplog.at_level(logging.DEBUG):
        rc = launch.main(BASE + ["--eventhub-name=hub", f"--dead-letter={tmp_path / 'd'}",
                                       f"--output={tmp_path / 'o'}"])
    captured = capsys.readouterr()
    assert rc == 2 and "Endpoint" in captured.err
    assert KEY not in captured.err + captured.out + caplog.text


# ---------------------------------------------------------------- pipeline through a stub expansion service

HR_DEVICE = json.dumps({"templateType": "CollectionContent", "template": [{
    "templateType": "JsonPathContent", "template": {
        "typeName": "heartrate", "typeMatchExpression": "$..[?(@hr)]", "deviceIdExpression": "$.dev",
        "timestampExpression": "$.at", "patientIdExpression": "$.Properties.patient",
        "values": [{"valueName": "hr", "valueExpression": "$.hr", "required": True}]}}]})


def test_kafka_read_feeds_normalize_on_fnapirunner(stub_kafka):
    rows = [kafka_row(1, '{"hr": 60, "dev": "d1", "at": "2026-03-01T10:00:00Z"}', [("patient", b"\xa1\x02p1")]),
            kafka_row(2, "{broken"),
            kafka_row(3, '{"hr": 62, "dev": "d2", "at": "2026-03-01T10:05:00Z"}')]
    stub, address = stub_kafka(rows)
    source = KafkaSource(topic="devices", bootstrap_servers="k:9092", expansion_service=address)
    with beam.Pipeline(options=PipelineOptions(runner=FN_API_RUNNER)) as p:
        normalized = (p | ReadKafkaDeviceEvents(source)).events | Normalize(HR_DEVICE)
        assert_that(normalized.measurements | beam.Map(lambda m: (m.device_id, m.patient_id, m.ingestion_time)),
                    equal_to([("d1", None, 1767225600000 * 10_000), ("d2", None, 1767225600000 * 10_000)]),
                    label="measurements")
        assert_that(normalized.dead_letter | beam.Map(lambda d: d["error_type"]),
                    equal_to(["InvalidDataFormatException"]), label="dead")
    [request] = stub.requests
    assert request.transform.spec.urn == "beam:transform:org.apache.beam:kafka_read_with_metadata:v1"
    assert b"devices" in request.transform.spec.payload and b"k:9092" in request.transform.spec.payload


def test_eventhubs_job_translates_for_dataflow_without_the_secret(stub_kafka, repo_cwd, tmp_path, monkeypatch):
    """Dry-run Dataflow translation of the whole streaming job. The expansion request (what a real
    Java expansion service gets, and serializes into the Java transform and its display data) and
    the job hold the placeholder, never the key."""
    from apache_beam.runners.dataflow import dataflow_runner
    monkeypatch.setenv(CONNECTION_STRING_ENV, SECRET)
    stub, address = stub_kafka([kafka_row(1, "{}")])
    captured = {}
    original = dataflow_runner.DataflowRunner.run_pipeline

    def spy(self, pipeline, options, pipeline_proto=None):
        result = original(self, pipeline, options, pipeline_proto)
        captured["job"], captured["options"] = self.job, options
        return result

    with mock.patch.object(dataflow_runner.DataflowRunner, "run_pipeline", spy):
        rc = launch.main([
            "--runner=DataflowRunner", "--dry_run=True", "--project=demo-project", "--region=europe-west1",
            "--temp_location=gs://demo-bucket/tmp", "--no_auth",
            "--device-mapping=templates/devicecontent.json", "--fhir-mapping=templates/fhirmapping.json",
            "--eventhub-name=devices", f"--kafka-expansion-service={address}",
            f"--output={tmp_path / 'obs'}", f"--dead-letter={tmp_path / 'dead'}"])
    assert rc == 0
    job = captured["job"]
    assert job.proto.type.name == "JOB_TYPE_STREAMING"
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    assert {"Read", "Read/ReadKafka/ReadKafka", "Normalize", "Group", "AllDeadLetters"} <= names
    [request] = stub.requests
    sent = request.SerializeToString()
    assert PLACEHOLDER.encode() in sent and b"demo-ns.servicebus.windows.net:9093" in sent
    assert KEY.encode() not in sent + job.proto_pipeline.SerializeToString()
    assert KEY not in str(job.proto) + json.dumps(captured["options"].get_all_options(), default=str)


# ---------------------------------------------------------------- live (skipped without an address)

LIVE_RUNNER = os.environ.get("IOMT_LIVE_RUNNER", "PrismRunner")


def _live_read(source, tmp_path, start_ms):
    """Read for up to 90 s from ``start_ms`` on the named runner; returns the events as dicts."""
    out = tmp_path / "events"
    with beam.Pipeline(options=PipelineOptions(runner=LIVE_RUNNER)) as p:
        ((p | ReadKafkaDeviceEvents(source, max_read_time=90, start_read_time=start_ms)).events
         | beam.Map(lambda e: json.dumps({"body": e.payload()["body"], "properties": e.properties,
                                          "system": e.system_properties, "ingestion": e.ingestion_time},
                                         default=str))
         | beam.io.WriteToText(str(out)))
    return [json.loads(line) for f in tmp_path.glob("events*") for line in f.read_text().splitlines()]


@pytest.mark.skipif(not (os.environ.get(CONNECTION_STRING_ENV) and os.environ.get("IOMT_LIVE_EVENTHUB_NAME")),
                    reason=f"live Event Hubs test: set {CONNECTION_STRING_ENV} and IOMT_LIVE_EVENTHUB_NAME "
                           "(a test hub; the Java harness must see the same variable, e.g. an expansion "
                           "service started with --defaultEnvironmentType=PROCESS or EMBEDDED at "
                           "IOMT_KAFKA_EXPANSION_SERVICE), optionally IOMT_LIVE_RUNNER (default PrismRunner)")
def test_live_eventhubs_amqp_event_arrives_with_reference_envelope(tmp_path):
    from azure.eventhub import EventData, EventHubProducerClient
    hub, run_id = os.environ["IOMT_LIVE_EVENTHUB_NAME"], uuid.uuid4().hex
    start_ms = int(time.time() * 1000) - 60_000
    with EventHubProducerClient.from_connection_string(os.environ[CONNECTION_STRING_ENV], eventhub_name=hub) as pr:
        event = EventData(json.dumps({"run": run_id, "hr": 70}))
        event.properties = {"patient": "p-live", "iothub-creation-time-utc": "2024-01-01T08:00:00Z"}
        pr.send_batch([event], partition_key="dev-live")
    source = KafkaSource(topic=hub, consumer_group=f"iomt-live-{run_id}",
                         expansion_service=os.environ.get("IOMT_KAFKA_EXPANSION_SERVICE"))
    mine = [e for e in _live_read(source, tmp_path, start_ms) if run_id in e["body"]]
    assert len(mine) == 1, "the event sent over AMQP was not read back over Kafka within 90 s"
    [e] = mine
    assert e["properties"]["patient"] == "p-live"  # AMQP-encoded application property, decoded
    assert e["properties"]["iothub-creation-time-utc"] == "2024-01-01T08:00:00Z"
    assert e["system"]["x-opt-partition-key"] == "dev-live"
    assert e["system"]["x-opt-enqueued-time"].endswith("Z") and e["ingestion"] > 0


@pytest.mark.skipif(not (os.environ.get("IOMT_LIVE_KAFKA_BOOTSTRAP") and os.environ.get("IOMT_LIVE_KAFKA_TOPIC")),
                    reason="live Kafka test: set IOMT_LIVE_KAFKA_BOOTSTRAP and IOMT_LIVE_KAFKA_TOPIC "
                           "(optionally IOMT_KAFKA_EXPANSION_SERVICE, IOMT_LIVE_RUNNER)")
def test_live_plain_kafka_record_with_headers(tmp_path):
    from apache_beam.io.kafka import WriteToKafka
    bootstrap, topic, run_id = (os.environ["IOMT_LIVE_KAFKA_BOOTSTRAP"], os.environ["IOMT_LIVE_KAFKA_TOPIC"],
                                uuid.uuid4().hex)
    expansion = os.environ.get("IOMT_KAFKA_EXPANSION_SERVICE")
    start_ms = int(time.time() * 1000) - 60_000
    with beam.Pipeline(options=PipelineOptions(runner=LIVE_RUNNER)) as p:
        (p | beam.Create([beam.Row(key=b"dev-live", value=json.dumps({"run": run_id}).encode(),
                                   headers=[beam.Row(key="patient", value=b"p-live")])])
         | WriteToKafka({"bootstrap.servers": bootstrap}, topic, with_headers=True, expansion_service=expansion))
    source = KafkaSource(topic=topic, bootstrap_servers=bootstrap, consumer_group=f"iomt-live-{run_id}",
                         expansion_service=expansion)
    mine = [e for e in _live_read(source, tmp_path, start_ms) if run_id in e["body"]]
    assert len(mine) == 1
    assert mine[0]["properties"] == {"patient": "p-live"}
    assert mine[0]["system"]["x-opt-partition-key"] == "dev-live"


def test_consumer_settings_accept_non_secrets_and_refuse_secrets():
    from transforms.sources.kafka import parse_consumer_settings
    assert parse_consumer_settings(["ssl.truststore.type=PEM", "ssl.truststore.location=/ca.pem"]) == (
        ("ssl.truststore.type", "PEM"), ("ssl.truststore.location", "/ca.pem"))
    for bad in ("ssl.truststore.password=x", "sasl.jaas.config=x", "ssl.key.password=x",
                "client.id=Endpoint=sb://h/;SharedAccessKey=TOPSECRET", "bootstrap.servers=h:1",
                "config.providers=file", "novalue"):
        with pytest.raises(KafkaSourceError) as info:
            parse_consumer_settings([bad])
        assert "TOPSECRET" not in str(info.value) and "=x" not in str(info.value)
    local = "Endpoint=sb://127.0.0.1:19093/;SharedAccessKeyName=a;SharedAccessKey=b"
    source = KafkaSource(topic="d", extra_config=(("ssl.truststore.type", "PEM"),))
    assert source.resolve({CONNECTION_STRING_ENV: local})[1]["ssl.truststore.type"] == "PEM"


def test_java_environment_and_flink_checkpointing_defaults():
    from pipelines.run.runners import flink_kafka_args, java_environment_for
    assert java_environment_for("FlinkRunner") == "EMBEDDED"
    assert java_environment_for("apache_beam.runners.portability.flink_runner.FlinkRunner") == "EMBEDDED"
    assert java_environment_for("DataflowRunner") is None and java_environment_for(None) is None
    assert flink_kafka_args(["--runner=FlinkRunner"]) == ["--checkpointing_interval=10000"]
    assert flink_kafka_args(["--runner", "FlinkRunner", "--checkpointing_interval=500"]) == []
    assert flink_kafka_args(["--runner=DataflowRunner"]) == []
