"""``Normalize``: device events -> measurements, timestamped at their occurrence time.

A thin Beam wrapper around ``DeviceMapping.get_measurements``. The mapping text is
shipped with the DoFn and compiled once per DoFn instance (``setup``), never per
element. Messages that fail go to the ``dead_letter`` output with the reason; the
others go on. Metric names follow the reference's (``DeviceEvent``,
``NormalizedEvent``, ``DroppedEvent``, errors by type).
"""
import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue

from transforms import metrics
from transforms.records.dead_letter import DEAD_LETTER_TAG, STAGE_NORMALIZATION, dead_letter, error_type_of
from transforms.mapping import timeutil
from transforms.mapping.device_templates import load_device_mapping


def normalize_event(mapping, event):
    """One event's measurements, as the DoFn and ``iomt-fhir replay`` both compute them
    (raises what the mapping raises: the caller dead-letters it at stage normalization)."""
    return mapping.get_measurements(event.to_message(), event.ingestion_time)


class NormalizeDoFn(beam.DoFn):
    def __init__(self, device_mapping_text: str):
        self._text = device_mapping_text
        self._mapping = None
        self._events = metrics.counter(metrics.NAMESPACE, "DeviceEvent")
        self._normalized = metrics.counter(metrics.NAMESPACE, "NormalizedEvent")
        self._dropped = metrics.counter(metrics.NAMESPACE, "DroppedEvent")

    def setup(self):
        self._mapping = load_device_mapping(self._text).ensure_valid()

    def process(self, event):
        self._events.inc()
        try:
            measurements = normalize_event(self._mapping, event)
        except Exception as e:  # every failure is data for the dead letter, never a stall
            metrics.error_counter(STAGE_NORMALIZATION, error_type_of(e)).inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, dead_letter(STAGE_NORMALIZATION, e, event.payload()))
            return
        if not measurements:
            self._dropped.inc()
            return
        self._normalized.inc(len(measurements))
        for m in measurements:
            yield TimestampedValue(m, timeutil.to_unix_seconds(m.occurrence_time))


class Normalize(beam.PTransform):
    """PCollection[DeviceEvent] -> outputs ``measurements`` and ``dead_letter``."""

    def __init__(self, device_mapping_text: str):
        super().__init__()
        self._text = device_mapping_text

    def expand(self, events):
        return events | beam.ParDo(NormalizeDoFn(self._text)).with_outputs(
            DEAD_LETTER_TAG, main="measurements")
