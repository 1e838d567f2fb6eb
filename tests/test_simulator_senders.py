"""The simulator's senders on real endpoints: Pub/Sub on Google's emulator, Kafka on the
local broker (PLAINTEXT, and SASL_SSL as Event Hubs' Kafka endpoint has it). Event Hubs'
AMQP sender has no local endpoint: its EventData shape is unit-tested, and a live test
runs when ``EVENTHUB_CONNECTION_STRING`` (and ``EVENTHUB_NAME`` if the string has no
EntityPath) is set.

Each test runs ``scripts/simulate_devices.py`` as a user would and reads back what arrived.
"""
import json
import os
import pathlib
import subprocess
import sys
import uuid

import pytest

from pipelines.simulator import devices as simulator
from pipelines.simulator.senders import (CONNECTION_STRING_ENV, EventHubsSender, SenderError,
                                         event_data, kafka_headers)

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "simulate_devices.py"
PROPERTY_NAMES = {"deviceId", "deviceKind", "measurementType", "iothub-creation-time-utc"}


def run_script(*args, env=None, check=True):
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr[-2000:]
    return done


def message():
    return next(simulator.live_messages(3))


# ---- Event Hubs (AMQP): shape, grouping, secrets ----

def test_event_data_body_and_application_properties():
    m = message()
    event = event_data(m)
    assert b"".join(event.body) == m.body
    assert event.properties == m.properties and set(event.properties) == PROPERTY_NAMES
    assert event.content_type == "application/json"
    amqp = event.raw_amqp_message
    assert amqp.application_properties == {k.encode() if isinstance(k, bytes) else k: v
                                           for k, v in m.properties.items()}


class RecordingProducer:
    def __init__(self):
        self.sent = []

    def create_batch(self, partition_key=None):
        return _Batch(partition_key)

    def send_batch(self, batch):
        self.sent.append(batch)

    def close(self):
        pass


class _Batch(list):
    def __init__(self, key):
        super().__init__()
        self.key = key

    def add(self, event):
        self.append(event)


def test_event_hubs_sender_batches_per_device_partition_key():
    producer = RecordingProducer()
    sender = EventHubsSender(producer=producer)
    batch = [next(it) for it in [simulator.live_messages(3)] for _ in range(7)]
    sender.send(batch)
    assert {b.key for b in producer.sent} == {"device-000", "device-001", "device-002"}
    assert sum(len(b) for b in producer.sent) == 7
    assert all(e.properties["deviceId"] == b.key for b in producer.sent for e in b)


def test_event_hubs_sender_needs_the_environment_and_never_echoes_it():
    with pytest.raises(SenderError, match=CONNECTION_STRING_ENV):
        EventHubsSender(environ={})
    bogus = "Endpoint=nothing;SharedAccessKey=TOPSECRETVALUE"
    with pytest.raises(SenderError) as raised:
        EventHubsSender(environ={CONNECTION_STRING_ENV: bogus})
    assert "TOPSECRETVALUE" not in str(raised.value)


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get(CONNECTION_STRING_ENV),
                    reason=f"live Event Hubs test: set {CONNECTION_STRING_ENV} (and EVENTHUB_NAME)")
def test_live_event_hubs_send():
    secret = os.environ[CONNECTION_STRING_ENV]
    args = ["--to", "eventhubs", "--count", "10", "--rate", "20", "--bad", "0.1"]
    if os.environ.get("EVENTHUB_NAME"):
        args += ["--eventhub-name", os.environ["EVENTHUB_NAME"]]
    done = run_script(*args)
    assert "sent total=10" in done.stderr and "malformed=1" in done.stderr
    assert secret not in done.stderr and secret not in done.stdout


# ---- Pub/Sub on the emulator ----

@pytest.mark.pubsub_emulator
def test_pubsub_sender_on_the_emulator(pubsub_emulator, monkeypatch):
    from google.cloud import pubsub_v1
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    name = f"sim-{uuid.uuid4().hex[:8]}"
    topic = f"projects/{pubsub_emulator.project}/topics/{name}"
    subscription = f"projects/{pubsub_emulator.project}/subscriptions/{name}"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    publisher.create_topic(name=topic, timeout=10)
    subscriber.create_subscription(name=subscription, topic=topic, timeout=10)
    try:
        done = run_script("--to", "pubsub", "--pubsub-topic", topic, "--devices", "3",
                          "--rate", "200", "--count", "30", "--bad", "3",
                          env={"PUBSUB_EMULATOR_HOST": pubsub_emulator.host})
        assert "to=pubsub sent total=30" in done.stderr and "malformed=3" in done.stderr
        received = []
        for _ in range(20):
            response = subscriber.pull(subscription=subscription, max_messages=100, timeout=10)
            received += [r.message for r in response.received_messages]
            if response.received_messages:
                subscriber.acknowledge(subscription=subscription,
                                       ack_ids=[r.ack_id for r in response.received_messages])
            if len(received) >= 30:
                break
        assert len(received) == 30
        assert all(set(m.attributes) == PROPERTY_NAMES for m in received)
        kinds = [m.attributes["measurementType"] for m in received]
        assert kinds.count("malformed") == 3
        good = [m for m in received if m.attributes["measurementType"] != "malformed"]
        assert all(json.loads(m.data) for m in good)
        assert {m.attributes["deviceId"] for m in received} == {"device-000", "device-001", "device-002"}
    finally:
        subscriber.delete_subscription(subscription=subscription, timeout=10)
        publisher.delete_topic(topic=topic, timeout=10)


# ---- Kafka on the local broker ----

def consume(conf, topic, expected, timeout=30.0):
    from confluent_kafka import Consumer
    consumer = Consumer({**conf, "group.id": f"check-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": "false"})
    consumer.subscribe([topic])
    records = []
    try:
        import time
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            record = consumer.poll(0.5)
            if record is not None and record.error() is None:
                records.append(record)
    finally:
        consumer.close()
    return records


def test_kafka_headers_are_utf8_properties():
    m = message()
    assert dict(kafka_headers(m)) == {k: v.encode() for k, v in m.properties.items()}


@pytest.mark.kafka_broker
def test_kafka_sender_plaintext(kafka_broker):
    topic = f"sim-{uuid.uuid4().hex[:8]}"
    done = run_script("--to", "kafka", "--kafka-topic", topic, "--kafka-bootstrap-servers",
                      kafka_broker.bootstrap, "--rate", "500", "--count", "40", "--bad", "0.1")
    assert "to=kafka sent total=40" in done.stderr and "malformed=4" in done.stderr
    records = consume({"bootstrap.servers": kafka_broker.bootstrap}, topic, 40)
    assert len(records) == 40
    for r in records:
        headers = {k: v.decode() for k, v in r.headers()}
        assert set(headers) == PROPERTY_NAMES and r.key().decode() == headers["deviceId"]
    assert sum(1 for r in records if dict(r.headers())["measurementType"] == b"malformed") == 4


@pytest.mark.kafka_broker
def test_kafka_sender_to_event_hubs_endpoint_sasl_ssl(kafka_broker):
    """Event Hubs' Kafka handshake: SASL_SSL, PLAIN, $ConnectionString; the CA of a private
    broker comes through --kafka-config, the secret only from the environment."""
    topic = f"hub-{uuid.uuid4().hex[:8]}"
    secret = kafka_broker.connection_string
    common = ["--to", "kafka", "--eventhubs", "--kafka-topic", topic,
              "--kafka-config", f"ssl.ca.location={kafka_broker.ca_file}", "--count", "12", "--rate", "500"]
    done = run_script(*common, env={CONNECTION_STRING_ENV: secret})
    assert "sent total=12" in done.stderr and secret not in done.stderr
    sasl = {"bootstrap.servers": kafka_broker.sasl_bootstrap, "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN", "sasl.username": "$ConnectionString", "sasl.password": secret,
            "ssl.ca.location": kafka_broker.ca_file}
    assert len(consume(sasl, topic, 12)) == 12

    wrong = secret.replace("SharedAccessKey=", "SharedAccessKey=x")
    refused = run_script(*common, env={CONNECTION_STRING_ENV: wrong}, check=False)
    assert refused.returncode == 1 and "Kafka client failed" in refused.stderr
    assert wrong not in refused.stderr and "SharedAccessKey=x" not in refused.stderr
