"""``GroupMeasurements``: fixed event-time windows keyed by device, type and ids.

The key is the reference's FHIR-stage grouping key (device, type, patient, encounter,
correlation id), so one group never mixes subjects. Window size only decides how much
is written at once: Observations are keyed by their own period (hour, day, instant)
and later windows merge into the same resource, so correctness does not depend on it.

Late data is not dropped silently: panes fire at the watermark and again for every
late element within ``allowed_lateness`` (default one day); each late pane merges
into the Observation already written. On a stream, ``early_firing_seconds`` also
emits what has arrived so far, so day-long windows do not hold readings back.

Why the default window follows the FHIR mapping (``window_for_mapping``): with windows
as long as the longest Observation period, one key's data for one Observation is in
one window, so two workers never create the same new Observation at the same time
(a PUT that creates carries no version to conflict on; the second would overwrite
the first). Panes of one key and window are processed one after another.
"""
from typing import Tuple

import apache_beam as beam
from apache_beam.transforms import trigger, window

GroupKey = Tuple[str, str, str, str, str]

_PERIOD_SECONDS = {60: 3600, 1440: 86400}
DEFAULT_WINDOW_SECONDS = 300


def window_for_mapping(fhir_mapping) -> int:
    """The longest Observation period of the mapping's templates, in seconds (else 300)."""
    longest = [_PERIOD_SECONDS[t.period_interval] for t in fhir_mapping.templates()
               if t.period_interval in _PERIOD_SECONDS]
    return max(longest, default=DEFAULT_WINDOW_SECONDS)


def group_key(m) -> GroupKey:
    return (m.device_id, m.type, m.patient_id or "", m.encounter_id or "", m.correlation_id or "")


class GroupMeasurements(beam.PTransform):
    """PCollection[Measurement] (timestamped) -> PCollection[(GroupKey, list[Measurement])]."""

    def __init__(self, window_seconds: int = DEFAULT_WINDOW_SECONDS, allowed_lateness_seconds: int = 86400,
                 early_firing_seconds: int = 0):
        super().__init__()
        self._window = window_seconds
        self._lateness = allowed_lateness_seconds
        self._early = early_firing_seconds

    def expand(self, measurements):
        return (
            measurements
            | "Window" >> beam.WindowInto(
                window.FixedWindows(self._window),
                trigger=trigger.AfterWatermark(
                    early=trigger.AfterProcessingTime(self._early) if self._early else None,
                    late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
                allowed_lateness=self._lateness)
            | "Key" >> beam.Map(lambda m: (group_key(m), m))
            | "Group" >> beam.GroupByKey()
            | "List" >> beam.MapTuple(lambda k, ms: (k, list(ms)))
        )
