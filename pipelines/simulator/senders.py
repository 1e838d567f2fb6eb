"""Where the simulator's messages go: a file, Pub/Sub, Event Hubs (AMQP) or Kafka.

Each sender takes batches of ``SimulatedMessage`` (``send``) and is closed once
(``close``), which waits until everything sent was acknowledged, so the printed counts are
messages the service accepted. Client libraries are imported when a sender is made, so the
file sender (the demo, the benchmarks) needs none of them.

Secrets: the Event Hubs connection string (``EVENTHUB_CONNECTION_STRING``) is read from the
environment only, never from an option, and never appears in a message or error we raise
(errors name the variable, not its value).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict, IO, Iterable, List, Mapping, Optional, Tuple

from pipelines.simulator.devices import SimulatedMessage

CONNECTION_STRING_ENV = "EVENTHUB_CONNECTION_STRING"


class SenderError(RuntimeError):
    """A sender could not be made or a send failed; the text holds no secret."""


class FileSender:
    """Message bodies as JSON lines (``-`` = stdout), or whole envelopes
    (``{"Body", "Properties"}``, the pipeline's ``--input-format envelope``)."""

    def __init__(self, path: str = "-", envelope: bool = False):
        self._out: IO[str] = sys.stdout if path == "-" else open(path, "w", encoding="utf-8")
        self._envelope = envelope

    def send(self, batch: Iterable[SimulatedMessage]) -> None:
        for m in batch:
            body = m.body.decode("utf-8")
            if self._envelope:
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = body  # a malformed body stays a string: the pipeline dead-letters it
                line = json.dumps({"Body": parsed, "Properties": m.properties}, separators=(",", ":"))
            else:
                line = body
            self._out.write(line + "\n")
        self._out.flush()

    def close(self) -> None:
        if self._out is not sys.stdout:
            self._out.close()


class PubSubSender:
    """``google-cloud-pubsub`` publisher; properties become attributes. Honours
    ``PUBSUB_EMULATOR_HOST`` (the client library does). ``topic`` is
    ``projects/P/topics/T``."""

    def __init__(self, topic: str, publisher=None):
        from google.cloud import pubsub_v1
        if not topic.startswith("projects/") or "/topics/" not in topic:
            raise SenderError("--pubsub-topic must be projects/PROJECT/topics/TOPIC")
        self._publisher = publisher or pubsub_v1.PublisherClient()
        self._topic = topic
        self._futures: List = []

    def send(self, batch: Iterable[SimulatedMessage]) -> None:
        for m in batch:
            self._futures.append(self._publisher.publish(self._topic, m.body, **m.properties))
        self._settle(keep=1000)

    def _settle(self, keep: int = 0) -> None:
        # Bound the futures held; a failed publish stops the run with its error type only.
        while len(self._futures) > keep:
            future = self._futures.pop(0)
            try:
                future.result(timeout=60)
            except Exception as err:  # noqa: BLE001 - reported without payload
                raise SenderError(f"Pub/Sub publish failed: {type(err).__name__}") from None

    def close(self) -> None:
        self._settle()
        stop = getattr(self._publisher, "stop", None)
        if stop:
            stop()


def event_data(message: SimulatedMessage):
    """The ``azure.eventhub.EventData`` a device's message becomes: the body as bytes, the
    device's properties as AMQP *application properties* (what IoT Hub routes to Event Hubs,
    and what Event Hubs' Kafka endpoint hands readers as headers)."""
    from azure.eventhub import EventData
    event = EventData(message.body)
    event.properties = dict(message.properties)
    event.content_type = "application/json"
    return event


class EventHubsSender:
    """``azure-eventhub`` producer over AMQP; connection string from the environment only.
    Each batch is sent per device (partition key = device id), so one device's readings keep
    their order, as with IoT Hub's routing."""

    def __init__(self, eventhub_name: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
                 producer=None):
        environ = os.environ if environ is None else environ
        if producer is None:
            secret = environ.get(CONNECTION_STRING_ENV)
            if not secret:
                raise SenderError(f"--to eventhubs needs the connection string in {CONNECTION_STRING_ENV}.")
            from azure.eventhub import EventHubProducerClient
            try:
                producer = EventHubProducerClient.from_connection_string(secret, eventhub_name=eventhub_name)
            except Exception as err:  # noqa: BLE001 - the SDK's message may quote the string
                raise SenderError(f"{CONNECTION_STRING_ENV} was not accepted: {type(err).__name__}") from None
        self._producer = producer

    def send(self, batch: Iterable[SimulatedMessage]) -> None:
        by_key: Dict[str, List[SimulatedMessage]] = {}
        for m in batch:
            by_key.setdefault(m.key, []).append(m)
        for key, messages in by_key.items():
            try:
                event_batch = self._producer.create_batch(partition_key=key)
                for m in messages:
                    try:
                        event_batch.add(event_data(m))
                    except ValueError:  # batch full: send it, start the next
                        self._producer.send_batch(event_batch)
                        event_batch = self._producer.create_batch(partition_key=key)
                        event_batch.add(event_data(m))
                self._producer.send_batch(event_batch)
            except SenderError:
                raise
            except Exception as err:  # noqa: BLE001
                raise SenderError(f"Event Hubs send failed: {type(err).__name__}") from None

    def close(self) -> None:
        self._producer.close()


def kafka_headers(message: SimulatedMessage) -> List[Tuple[str, bytes]]:
    """Kafka record headers for a message's properties (UTF-8 values)."""
    return [(name, value.encode("utf-8")) for name, value in message.properties.items()]


class KafkaSender:
    """``confluent-kafka`` producer (librdkafka): key = device id, properties = headers,
    idempotent producer with ``acks=all``. ``config`` adds client settings (e.g. TLS for a
    private cluster); ``eventhubs=True`` speaks Event Hubs' Kafka endpoint (SASL_SSL, PLAIN,
    user ``$ConnectionString``, password from ``EVENTHUB_CONNECTION_STRING``). ``partition``
    sends every message to that partition instead of the key's (tests that keep a partition
    empty)."""

    def __init__(self, topic: str, bootstrap_servers: Optional[str] = None,
                 config: Optional[Mapping[str, str]] = None, eventhubs: bool = False,
                 environ: Optional[Mapping[str, str]] = None, partition: Optional[int] = None):
        from confluent_kafka import Producer
        conf: Dict[str, str] = {"enable.idempotence": "true", "acks": "all", "linger.ms": "5"}
        if eventhubs:
            from transforms.sources.kafka import parse_connection_string, eventhubs_bootstrap
            environ = os.environ if environ is None else environ
            secret = environ.get(CONNECTION_STRING_ENV)
            if not secret:
                raise SenderError(f"--to kafka --eventhubs needs the connection string in {CONNECTION_STRING_ENV}.")
            parse_connection_string(secret)  # checks it; errors name no part of it
            conf.update({"bootstrap.servers": bootstrap_servers or eventhubs_bootstrap(secret),
                         "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                         "sasl.username": "$ConnectionString", "sasl.password": secret})
        else:
            if not bootstrap_servers:
                raise SenderError("--to kafka needs --kafka-bootstrap-servers (or --eventhubs).")
            conf["bootstrap.servers"] = bootstrap_servers
        conf.update(config or {})
        self._topic = topic
        self._partition = {} if partition is None else {"partition": int(partition)}
        self._errors: List[str] = []
        self._failure: Optional[str] = None
        self._producer = Producer({**conf, "error_cb": self._client_error})

    def _client_error(self, err) -> None:
        # A refused login or TLS handshake never heals by retrying: stop instead of waiting.
        from confluent_kafka import KafkaError
        if err.fatal() or err.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL,
                                         KafkaError.SASL_AUTHENTICATION_FAILED):
            self._failure = err.name()

    def _delivered(self, err, _msg) -> None:
        if err is not None:
            self._errors.append(err.name() if hasattr(err, "name") else type(err).__name__)

    def send(self, batch: Iterable[SimulatedMessage]) -> None:
        for m in batch:
            while True:
                try:
                    self._producer.produce(self._topic, value=m.body, key=m.key.encode("utf-8"),
                                           headers=kafka_headers(m), on_delivery=self._delivered,
                                           **self._partition)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    self._producer.poll(0.1)
        self._producer.poll(0)
        self._raise_errors()

    def _raise_errors(self) -> None:
        if self._failure:
            raise SenderError(f"Kafka client failed: {self._failure}")
        if self._errors:
            raise SenderError(f"Kafka delivery failed for {len(self._errors)} message(s): {self._errors[0]}")

    def close(self) -> None:
        deadline = time.monotonic() + 60
        left = self._producer.flush(1)
        while left and not self._failure and time.monotonic() < deadline:
            left = self._producer.flush(1)
        self._raise_errors()
        if left:
            raise SenderError(f"Kafka: {left} message(s) not delivered within 60 s")
