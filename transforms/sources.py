"""``ReadDeviceEvents``: files, Pub/Sub or Event Hubs / Kafka -> ``DeviceEvent``.

Each source maps its metadata onto the reference's envelope so templates written
for Event Hubs keep working: application properties / attributes -> ``Properties``,
broker metadata -> ``SystemProperties``, enqueue / publish time -> ``IngestionTimeUtc``.
Files are the historical backfill path (``transforms.read_files``: JSON lines, JSON arrays,
Event Hubs Capture / IoT Hub routing Avro on any Beam filesystem); only files have
read failures, so only they set ``ReadDeviceEvents.dead_letters``.
Event Hubs / Kafka lives in ``transforms.kafka_source`` (it has its own secret handling).
"""
import datetime as _dt

import apache_beam as beam

from transforms.dead_letter import DEAD_LETTER_TAG
from transforms.device_event import DeviceEvent
from transforms.kafka_source import KafkaSource, ReadKafkaDeviceEvents, parse_consumer_settings
from transforms.mapping import timeutil
from transforms.read_files import ReadArchiveFiles


def _pubsub_event(msg) -> DeviceEvent:
    publish = getattr(msg, "publish_time", None)
    ticks = None
    system = {"message_id": getattr(msg, "message_id", None)}
    if isinstance(publish, _dt.datetime):
        if publish.tzinfo is None:
            publish = publish.replace(tzinfo=_dt.timezone.utc)
        iso = publish.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        ticks = timeutil.parse_iso(iso)
        system["publish_time"] = iso
    return DeviceEvent(body=msg.data, properties=dict(msg.attributes or {}),
                       system_properties=system, ingestion_time=ticks)


class SourceError(ValueError):
    """Not exactly one source named; the message lists the choices and what was given."""


_SOURCE_FLAGS = ("--input", "--pubsub-subscription", "--kafka-topic / --eventhub-name")


class ReadDeviceEvents(beam.PTransform):
    """Reads the one source the options name; the output is the ``DeviceEvent`` PCollection.

    After it is applied, ``dead_letters`` holds the read-stage dead letters (files that could
    not be read) for a file source and is ``None`` otherwise: the events stay the transform's
    one output, as every caller uses them, and the pipeline adds the dead letters to its own."""

    def __init__(self, input_pattern=None, input_format="body", pubsub_subscription=None,
                 kafka: KafkaSource = None):
        super().__init__()
        given = [flag for flag, value in zip(_SOURCE_FLAGS, (input_pattern, pubsub_subscription, kafka))
                 if value]
        if len(given) != 1:
            raise SourceError("Choose exactly one source: " + ", ".join(_SOURCE_FLAGS) + " (given: "
                              + (", ".join(given) or "none") + ").")
        self._input = input_pattern
        self._format = input_format
        self.dead_letters = None
        # Built now so an unknown --input-format stops the launch.
        self._files = ReadArchiveFiles(input_pattern, input_format) if input_pattern else None
        self._subscription = pubsub_subscription
        # Built now so a misconfigured Kafka source stops the launch before anything runs.
        self._kafka = ReadKafkaDeviceEvents(kafka) if kafka else None

    def expand(self, pbegin):
        if self._files:
            read = pbegin | "ReadFiles" >> self._files
            self.dead_letters = read[DEAD_LETTER_TAG]
            return read.events
        if self._kafka:
            return pbegin | "ReadKafka" >> self._kafka
        return (pbegin
                | "ReadPubSub" >> beam.io.ReadFromPubSub(subscription=self._subscription,
                                                         with_attributes=True)
                | "ToEvent" >> beam.Map(_pubsub_event))


def kafka_source_from_options(opts):
    """The ``KafkaSource`` the options describe, or ``None`` when they name no Kafka topic.

    ``--kafka-bootstrap-servers`` alone is an error (else it would be silently ignored)."""
    topic = getattr(opts, "kafka_topic", None)
    bootstrap = getattr(opts, "kafka_bootstrap_servers", None)
    if not topic and not bootstrap:
        return None
    if bootstrap and not topic:
        raise SourceError("--kafka-bootstrap-servers needs --kafka-topic.")
    return KafkaSource(topic=topic, bootstrap_servers=bootstrap or None,
                       consumer_group=opts.eventhub_consumer_group, offset_reset=opts.kafka_offset_reset,
                       expansion_service=opts.kafka_expansion_service or None,
                       extra_config=parse_consumer_settings(getattr(opts, "kafka_consumer_config", None) or ()))
