"""``GroupMeasurements``: measurements -> groups keyed by device, type and ids, per window.

The key is the reference's FHIR-stage grouping key (device, type, patient, encounter,
correlation id), so one group never mixes subjects. Window size only decides how much
is written at once: Observations are keyed by their own period (hour, day, instant)
and later windows merge into the same resource, so correctness does not depend on it.
Within a group, measurements with the same occurrence time collapse to the latest
ingested (``transforms.mapping.grouping.keep_latest``, vector F11).

Two paths, one partition of the data:

* Files (bounded input): no Beam windows. The window index goes into the key, one DoFn
  keys and pre-combines with a bound on what it buffers (``PrecombineMeasurements``), and
  compact ``MeasurementSet`` accumulators (``transforms.records.measurement_set``), not one
  element per message, cross a ``GroupByKey``; they are merged after it. Nothing in a
  batch is early or late, and nothing downstream reads a batch group's window.
* Streams: fixed event-time windows and ``CombinePerKey(CollectMeasurements())``, which a
  runner lifts ahead of the shuffle.

On a stream, late data is not dropped silently: panes fire at the watermark and again for
every late element within ``allowed_lateness`` (default one day); each late pane merges
into the Observation already written. ``early_firing_seconds`` also emits what has
arrived so far, so day-long windows do not hold readings back.

Later still (a device that uploads a week of buffered readings), the group-by would drop
a reading without a trace. On a stream (``regroup_late``) a measurement that arrived (its
source's ingestion time) when less than half the allowed lateness was left after its
window closed is re-timestamped to its arrival (or now, if later) instead, counted as
``LateMeasurementRegrouped``, and grouped with what arrives with it. Its Observation is
still the one of its own period: Observations are built from the measurements' own times,
and the writer merges it into what the server holds. The half is headroom for a watermark
that runs ahead of a backlog's ingestion times.

Why the default window follows the FHIR mapping (``window_for_mapping``): with windows
as long as the longest Observation period, one key's data for one Observation is in
one window, so two workers never create the same new Observation at the same time
(a PUT that creates carries no version to conflict on; the second would overwrite
the first). Panes of one key and window are processed one after another.
"""
import time
from typing import Any, Callable, Dict, Iterable, List, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window

from transforms.mapping import timeutil
from transforms import metrics
from transforms.mapping.grouping import keep_latest
from transforms.mapping.measurement import Measurement
from transforms.records.measurement_set import MeasurementSet, MeasurementsCoder

GroupKey = Tuple[str, str, str, str, str]
Accumulator = Dict[int, Measurement]  # occurrence time (ticks) -> surviving measurement

_PERIOD_SECONDS = {60: 3600, 1440: 86400}
DEFAULT_WINDOW_SECONDS = 300


def window_for_mapping(fhir_mapping) -> int:
    """The longest Observation period of the mapping's templates, in seconds (else 300)."""
    longest = [_PERIOD_SECONDS[t.period_interval] for t in fhir_mapping.templates()
               if t.period_interval in _PERIOD_SECONDS]
    return max(longest, default=DEFAULT_WINDOW_SECONDS)


def group_key(m) -> GroupKey:
    return (m.device_id, m.type, m.patient_id or "", m.encounter_id or "", m.correlation_id or "")


class RegroupLate(beam.DoFn):
    """Re-timestamps measurements that arrived too late for their own window (see above)."""

    def __init__(self, window_seconds: int, allowed_lateness_seconds: int,
                 clock: Callable[[], float] = time.time):
        self._window = window_seconds
        self._lateness = allowed_lateness_seconds
        self._clock = clock
        self._regrouped = Metrics.counter(metrics.NAMESPACE, "LateMeasurementRegrouped")

    def process(self, m, timestamp=beam.DoFn.TimestampParam):
        if m.ingestion_time is not None:
            start = float(timestamp) // self._window * self._window
            arrived = timeutil.to_unix_seconds(m.ingestion_time)
            if start + self._window + self._lateness / 2 < arrived:
                self._regrouped.inc()
                yield window.TimestampedValue(m, max(arrived, self._clock()))
                return
        yield m


class GroupMeasurements(beam.PTransform):
    """PCollection[Measurement] (timestamped) -> PCollection[(GroupKey, list[Measurement])]."""

    def __init__(self, window_seconds: int = DEFAULT_WINDOW_SECONDS, allowed_lateness_seconds: int = 86400,
                 early_firing_seconds: int = 0, regroup_late: bool = False):
        super().__init__()
        self._window = window_seconds
        self._lateness = allowed_lateness_seconds
        self._early = early_firing_seconds
        self._regroup_late = regroup_late

    def expand(self, measurements):
        if measurements.is_bounded and not self._early and not self._regroup_late:
            return self._expand_bounded(measurements)
        if self._regroup_late:
            measurements = measurements | "RegroupLate" >> beam.ParDo(
                RegroupLate(self._window, self._lateness))
        if (measurements.is_bounded or not self._lateness) and not self._early:
            # Files: nothing is late or early, so the default trigger fires the same single
            # pane, and (unlike AfterWatermark without early firings) lets the runner lift the
            # combiner ahead of the shuffle. No lateness either (bounded input is never late),
            # and a stream without lateness or early panes has the default trigger's panes:
            # Prism 2.62 refuses other triggers and any lateness but none or forever.
            when, lateness = trigger.DefaultTrigger(), 0
        else:
            lateness = self._lateness
            when = trigger.AfterWatermark(
                early=trigger.AfterProcessingTime(self._early) if self._early else None,
                late=trigger.AfterCount(1))
        return (
            measurements
            | "Window" >> beam.WindowInto(
                window.FixedWindows(self._window), trigger=when,
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
                allowed_lateness=lateness)
            # Key coder: Beam's generic (length-prefixed) one, not the tuple coder it would infer
            # from group_key's hint, which Prism 2.62 cannot decode ("unknown coder urn").
            | "Key" >> beam.Map(lambda m: (group_key(m), m)).with_output_types(Tuple[Any, Any])
            | "Group" >> beam.CombinePerKey(CollectMeasurements())
        )

    def _expand_bounded(self, measurements):
        """Files: the window goes into the key instead of a Beam window.

        With bounded input nothing is early or late: every window fires once, with all
        its data, and nothing downstream reads a batch group's window (Observations take
        their period from the measurements; the writer and the file fold re-window into
        the global window). Keying by (group key, window) groups exactly the same
        measurements as FixedWindows + the key, without a window-assignment step per
        measurement. One DoFn keys and pre-combines (``PrecombineMeasurements``: bounded
        memory, unlike a runner's lifted combiner), so compact accumulators, not one
        element per message, cross the shuffle.
        """
        size = self._window * timeutil.TICKS_PER_SECOND
        return (
            measurements
            # Beam's generic key coder for the key (Prism 2.62: see above); compact accumulators
            | "KeyAndPrecombine" >> beam.ParDo(PrecombineMeasurements(size, group_key)).with_output_types(
                Tuple[Any, MeasurementSet])
            | "Group" >> beam.GroupByKey()
            | "Merge" >> beam.MapTuple(merge_measurement_sets)
        )


class PrecombineMeasurements(beam.DoFn):
    """Batch: key (group key, window index) and pre-combine, with a bound on what is buffered.

    The lifted combiner of a runner keeps every key's accumulator until its bundle ends,
    which on ``FnApiRunner`` (one bundle per file range) is the whole archive in memory as
    Python objects. This keeps at most ``max_buffered`` measurements, then hands the
    accumulators on (compactly encoded) and starts over; the shuffle merges them.
    """

    def __init__(self, window_ticks: int, key_fn, max_buffered: int = 50_000):
        self._size = window_ticks
        self._key = key_fn
        self._max = max_buffered
        self._table: Dict[tuple, MeasurementSet] = {}
        self._count = 0

    def start_bundle(self):
        self._table, self._count = {}, 0

    def process(self, m):
        key = (self._key(m), m.occurrence_time // self._size)
        acc = self._table.get(key)
        if acc is None:
            acc = self._table[key] = MeasurementSet()
        keep_latest(acc, m)
        self._count += 1
        if self._count >= self._max:
            table, self._table, self._count = self._table, {}, 0
            yield from table.items()

    def finish_bundle(self):
        table, self._table, self._count = self._table, {}, 0
        for item in table.items():
            yield window.GlobalWindows.windowed_value(item)


def merge_measurement_sets(key, accs) -> tuple:
    """(key, window index), accumulators -> (key, measurements) as the CombineFn's output."""
    fn = CollectMeasurements()
    return key[0], fn.extract_output(fn.merge_accumulators(accs))


class CollectMeasurements(beam.CombineFn):
    """Measurements of one key and window -> their list, collapsed by occurrence time."""

    def create_accumulator(self) -> Accumulator:
        return {}

    def add_input(self, acc: Accumulator, m: Measurement) -> Accumulator:
        keep_latest(acc, m)
        return acc

    def add_inputs(self, acc: Accumulator, ms: Iterable[Measurement]) -> Accumulator:
        for m in ms:
            self.add_input(acc, m)
        return acc

    def merge_accumulators(self, accs: Iterable[Accumulator]) -> Accumulator:
        accs = iter(accs)
        out = next(accs, None)
        if out is None:
            return {}
        for acc in accs:
            for m in acc.values():
                keep_latest(out, m)
        return out

    def extract_output(self, acc: Accumulator) -> List[Measurement]:
        return list(acc.values())

    def get_accumulator_coder(self):
        return MeasurementsCoder()
