"""``Normalize``: device events -> measurements, timestamped at their occurrence time.

A thin Beam wrapper around ``DeviceMapping.get_measurements``. The mapping text is
shipped with the DoFn and compiled once per DoFn instance (``setup``), never per
element. Messages that fail go to the ``dead_letter`` output with the reason; the
others go on. Metric names follow the reference's (``DeviceEvent``,
``NormalizedEvent``, ``DroppedEvent``, errors by type).
"""
import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from transforms import progress
from transforms.dead_letter import DEAD_LETTER_TAG, STAGE_NORMALIZATION, dead_letter, error_type_of
from transforms.mapping import timeutil
from transforms.mapping.device_templates import load_device_mapping

METRIC_NAMESPACE = "iomt_fhir"


class NormalizeDoFn(beam.DoFn):
    def __init__(self, device_mapping_text: str):
        self._text = device_mapping_text
        self._mapping = None
        self._events = progress.counter(METRIC_NAMESPACE, "DeviceEvent")
        self._normalized = progress.counter(METRIC_NAMESPACE, "NormalizedEvent")
        self._dropped = progress.counter(METRIC_NAMESPACE, "DroppedEvent")

    def setup(self):
        self._mapping = load_device_mapping(self._text).ensure_valid()

    def process(self, event):
        self._events.inc()
        try:
            measurements = self._mapping.get_measurements(event.to_message(), event.ingestion_time)
        except Exception as e:  # every failure is data for the dead letter, never a stall
            Metrics.counter(METRIC_NAMESPACE, f"Errors.{STAGE_NORMALIZATION}.{error_type_of(e)}").inc()
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
