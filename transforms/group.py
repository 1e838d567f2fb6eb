"""``GroupMeasurements``: fixed event-time windows keyed by device, type and ids.

The key is the reference's FHIR-stage grouping key (device, type, patient, encounter,
correlation id), so one group never mixes subjects. Window size only decides how much
is written at once: Observations are keyed by their own period (hour, day, instant)
and later windows merge into the same resource, so correctness does not depend on it.

Late data is not dropped silently: panes fire at the watermark and again for every
late element within ``allowed_lateness`` (default one day); each late pane merges
into the Observation already written.
"""
from typing import Tuple

import apache_beam as beam
from apache_beam.transforms import trigger, window

GroupKey = Tuple[str, str, str, str, str]


def group_key(m) -> GroupKey:
    return (m.device_id, m.type, m.patient_id or "", m.encounter_id or "", m.correlation_id or "")


class GroupMeasurements(beam.PTransform):
    """PCollection[Measurement] (timestamped) -> PCollection[(GroupKey, list[Measurement])]."""

    def __init__(self, window_seconds: int = 300, allowed_lateness_seconds: int = 86400):
        super().__init__()
        self._window = window_seconds
        self._lateness = allowed_lateness_seconds

    def expand(self, measurements):
        return (
            measurements
            | "Window" >> beam.WindowInto(
                window.FixedWindows(self._window),
                trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
                allowed_lateness=self._lateness)
            | "Key" >> beam.Map(lambda m: (group_key(m), m))
            | "Group" >> beam.GroupByKey()
            | "List" >> beam.MapTuple(lambda k, ms: (k, list(ms)))
        )
