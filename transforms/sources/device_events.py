"""``ReadDeviceEvents``: files, Pub/Sub or Event Hubs / Kafka -> ``DeviceEvent``.

Each source maps its metadata onto the reference's envelope so templates written
for Event Hubs keep working: application properties / attributes -> ``Properties``,
broker metadata -> ``SystemProperties``, enqueue / publish time -> ``IngestionTimeUtc``.
Files are the historical backfill path (``transforms.sources.files``: JSON lines, JSON arrays,
Event Hubs Capture / IoT Hub routing Avro on any Beam filesystem). Like every stage, the
read returns its dead letters as an output (``DEAD_LETTER_TAG``, stage ``read``): files that
could not be read, Pub/Sub messages whose metadata could not be converted (payload: the
message id, never content), Kafka records likewise (topic, partition, offset).
Event Hubs / Kafka lives in ``transforms.sources.kafka`` (it has its own secret handling).
"""
import datetime as _dt

import apache_beam as beam

from transforms.records.dead_letter import DEAD_LETTER_TAG, STAGE_READ, dead_letter
from transforms.records.device_event import DeviceEvent
from transforms.sources.kafka import KafkaSource, ReadKafkaDeviceEvents, parse_consumer_settings
from transforms.mapping import timeutil
from transforms.sources.files import ReadArchiveFiles


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
    """Reads the one source the options name.

    The output is a dict: ``"events"``, the ``DeviceEvent`` PCollection, and
    ``DEAD_LETTER_TAG``, the read stage's dead letters (see the module docstring)."""

    def __init__(self, input_pattern=None, input_format="body", pubsub_subscription=None,
                 kafka: KafkaSource = None, kafka_expansion_service=None):
        super().__init__()
        given = [flag for flag, value in zip(_SOURCE_FLAGS, (input_pattern, pubsub_subscription, kafka))
                 if value]
        if len(given) != 1:
            raise SourceError("Choose exactly one source: " + ", ".join(_SOURCE_FLAGS) + " (given: "
                              + (", ".join(given) or "none") + ").")
        self._input = input_pattern
        self._format = input_format
        # Built now so an unknown --input-format stops the launch.
        self._files = ReadArchiveFiles(input_pattern, input_format) if input_pattern else None
        self._subscription = pubsub_subscription
        # Built now so a misconfigured Kafka source stops the launch before anything runs.
        self._kafka = ReadKafkaDeviceEvents(kafka, expansion_service=kafka_expansion_service) if kafka else None

    def expand(self, pbegin):
        if self._files:
            read = pbegin | "ReadFiles" >> self._files
            return {"events": read.events, DEAD_LETTER_TAG: read[DEAD_LETTER_TAG]}
        if self._kafka:
            read = pbegin | "ReadKafka" >> self._kafka
            return {"events": read.events, DEAD_LETTER_TAG: read[DEAD_LETTER_TAG]}
        read = (pbegin
                | "ReadPubSub" >> beam.io.ReadFromPubSub(subscription=self._subscription,
                                                         with_attributes=True)
                | "ToEvent" >> beam.ParDo(_PubSubToEvent()).with_outputs(DEAD_LETTER_TAG, main="events"))
        return {"events": read.events, DEAD_LETTER_TAG: read[DEAD_LETTER_TAG]}


class _PubSubToEvent(beam.DoFn):
    """A message whose metadata cannot be converted costs only itself: a read dead letter
    with its message id (never its data)."""

    def process(self, msg):
        try:
            yield _pubsub_event(msg)
        except Exception as e:  # noqa: BLE001 -- one bad message must not stop the stream
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, dead_letter(
                STAGE_READ, e, None, {"message_id": getattr(msg, "message_id", None)}))


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
