"""``ReadDeviceEvents``: files or Pub/Sub -> ``DeviceEvent``.

Each source maps its metadata onto the reference's envelope so templates written
for Event Hubs keep working: application properties / attributes -> ``Properties``,
broker metadata -> ``SystemProperties``, enqueue / publish time -> ``IngestionTimeUtc``.
Files are the historical backfill path (JSON lines, any Beam filesystem incl. gs://).
"""
import datetime as _dt

import apache_beam as beam

from transforms.device_event import DeviceEvent
from transforms.mapping import timeutil


def _file_event(line: str, is_envelope: bool) -> DeviceEvent:
    return DeviceEvent(body=line, is_envelope=is_envelope)


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


class ReadDeviceEvents(beam.PTransform):
    """Reads the one source the options name."""

    def __init__(self, input_pattern=None, input_format="body", pubsub_subscription=None):
        super().__init__()
        if bool(input_pattern) == bool(pubsub_subscription):
            raise ValueError("Choose exactly one source: --input or --pubsub_subscription.")
        self._input = input_pattern
        self._envelope = input_format == "envelope"
        self._subscription = pubsub_subscription

    def expand(self, pbegin):
        if self._input:
            envelope = self._envelope
            return (pbegin
                    | "ReadFiles" >> beam.io.ReadFromText(self._input)
                    | "SkipBlank" >> beam.Filter(lambda line: line.strip() != "")
                    | "ToEvent" >> beam.Map(_file_event, envelope))
        return (pbegin
                | "ReadPubSub" >> beam.io.ReadFromPubSub(subscription=self._subscription,
                                                         with_attributes=True)
                | "ToEvent" >> beam.Map(_pubsub_event))
