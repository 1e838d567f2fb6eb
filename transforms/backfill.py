"""``ReadNormalizeGroup``: files -> measurement groups, reading, normalizing and pre-combining
a whole read unit (a file or a byte range of one) inside one DoFn call.

Why: the element-per-message graph (read -> normalize -> key and pre-combine) pays Beam's
per-element cost three times per message (a windowed value, a timestamp, a DoFn invocation and
a receiver per step); profiled, that was a fifth of a backfill's CPU, about as much as the
normalizing itself. Here a read unit is one element: its lines become ``DeviceEvent``s, then
measurements, which go straight into bounded per-(group key, window) tables, and only the
compact accumulators (``MeasurementSet``) leave the DoFn, to the same ``GroupByKey`` and merge
as ``GroupMeasurements``' batch path. Nothing crosses the shuffle per message.

Every guarantee of the element path, because the same functions do the work:

* a line that cannot be read: the read dead letter (file, byte offset / record index) of
  ``transforms.sources.files``; a unit that stops: one dead letter, the rest of the run goes on;
* a message that cannot be normalized: ``transforms.normalize``'s dead letter (the message,
  its source file in ``system_properties``), and only that message is lost;
* the same measurements (``normalize_event``), keyed and collapsed by the same rule
  (``group_key``, ``keep_latest``) into the same groups, so the same Observations;
* the same counters (``DeviceEvent``, ``NormalizedEvent``, ``DroppedEvent``, ``FilesRead``,
  errors by stage and type), added in blocks of ``COUNT_EVERY`` messages so progress lines move
  while a unit is read.

Memory: at most ``max_buffered`` measurements are held as Python objects per DoFn; then the
tables are handed on encoded (a few bytes a reading) and the DoFn starts over.
"""
from typing import Any, Dict, Tuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.transforms import window

from transforms import metrics
from transforms.group import group_key, merge_measurement_sets
from transforms.mapping import timeutil
from transforms.mapping.device_templates import load_device_mapping
from transforms.mapping.grouping import keep_latest
from transforms.normalize import normalize_event
from transforms.records.dead_letter import (DEAD_LETTER_TAG, STAGE_NORMALIZATION, STAGE_READ, dead_letter,
                                            error_type_of)
from transforms.records.measurement_set import MeasurementSet
from transforms.sources import archive_formats as formats
from transforms.sources.files import RANGE_BYTES, PlanReadsFn, ReadUnit, read_dead_letter, read_unit

#: counters are added every this many messages (and at the end of a unit)
COUNT_EVERY = 5000
MAX_BUFFERED = 50_000


class ReadNormalizePrecombineFn(beam.DoFn):
    """A read unit -> ``((group key, window index), MeasurementSet)`` and dead letters."""

    def __init__(self, input_format: str, device_mapping_text: str, window_ticks: int,
                 max_buffered: int = MAX_BUFFERED):
        self._format = input_format
        self._text = device_mapping_text
        self._size = window_ticks
        self._max = max_buffered
        self._mapping = None
        self._table: Dict[tuple, MeasurementSet] = {}
        self._buffered = 0
        self._files_read = metrics.counter(metrics.NAMESPACE, "FilesRead")
        self._files_failed = metrics.counter(metrics.NAMESPACE, "FilesFailed")
        self._events = metrics.counter(metrics.NAMESPACE, "DeviceEvent")
        self._normalized = metrics.counter(metrics.NAMESPACE, "NormalizedEvent")
        self._dropped = metrics.counter(metrics.NAMESPACE, "DroppedEvent")

    def setup(self):
        self._mapping = load_device_mapping(self._text).ensure_valid()

    def start_bundle(self):
        self._table, self._buffered = {}, 0

    def process(self, unit: ReadUnit):
        path, start, end, size = unit
        counts = [0, 0, 0]  # events, measurements, dropped (since the counters were last added)
        mapping, table, window_ticks = self._mapping, self._table, self._size
        try:
            for event in read_unit(path, start, end, self._format):
                if isinstance(event, formats.ArchiveReadError):  # one bad record: itself only
                    yield self._read_dead(path, event)
                    continue
                counts[0] += 1
                # one message, as ``NormalizeDoFn`` does it
                try:
                    measurements = normalize_event(mapping, event)
                except Exception as e:  # every failure is data for the dead letter, never a stall
                    metrics.error_counter(STAGE_NORMALIZATION, error_type_of(e)).inc()
                    yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, dead_letter(
                        STAGE_NORMALIZATION, e, event.payload()))
                    continue
                if not measurements:
                    counts[2] += 1
                    continue
                counts[1] += len(measurements)
                for m in measurements:
                    key = (group_key(m), m.occurrence_time // window_ticks)
                    acc = table.get(key)
                    if acc is None:
                        acc = table[key] = MeasurementSet()
                    keep_latest(acc, m)
                self._buffered += len(measurements)
                if self._buffered >= self._max:  # hand the tables on, encoded, and start over
                    yield from table.items()
                    table = self._table = {}
                    self._buffered = 0
                if counts[0] >= COUNT_EVERY:
                    self._count(counts)
        except formats.ArchiveReadError as e:
            self._count(counts)
            self._files_failed.inc()
            yield self._read_dead(path, e)
            return
        except Exception as e:  # anything else a filesystem raises mid-read
            self._count(counts)
            self._files_failed.inc()
            yield self._read_dead(path, formats.stopped(e, byte_offset=start))
            return
        self._count(counts)
        if end is None or end >= (size or 0):
            self._files_read.inc()

    def _count(self, counts):
        events, measurements, dropped = counts
        if events:
            self._events.inc(events)
        if measurements:
            self._normalized.inc(measurements)
        if dropped:
            self._dropped.inc(dropped)
        counts[:] = [0, 0, 0]

    @staticmethod
    def _read_dead(path, error):
        metrics.error_counter(STAGE_READ, error.error_type).inc()
        return beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, read_dead_letter(path, error))

    def finish_bundle(self):
        table, self._table, self._buffered = self._table, {}, 0
        for item in table.items():
            yield window.GlobalWindows.windowed_value(item)


class ReadNormalizeGroup(beam.PTransform):
    """File pattern -> outputs ``groups`` (``(GroupKey, list[Measurement])``, as
    ``GroupMeasurements``) and ``dead_letter`` (stages read and normalization)."""

    def __init__(self, pattern: str, input_format: str, device_mapping_text: str, window_seconds: int,
                 range_bytes: int = RANGE_BYTES, max_buffered: int = MAX_BUFFERED):
        super().__init__()
        if input_format not in formats.INPUT_FORMATS:
            raise ValueError(f"--input-format must be one of {', '.join(formats.INPUT_FORMATS)}")
        self._pattern = pattern
        self._format = input_format
        self._text = device_mapping_text
        self._window_ticks = window_seconds * timeutil.TICKS_PER_SECOND
        self._range_bytes = range_bytes
        self._max = max_buffered

    def expand(self, pbegin):
        read = (pbegin
                | "Pattern" >> beam.Create([self._pattern])
                | "Match" >> fileio.MatchAll()
                | "Plan" >> beam.ParDo(PlanReadsFn(self._format, self._range_bytes))
                | "Spread" >> beam.Reshuffle()
                # Beam's generic key coder for the key (Prism 2.62, see transforms.group); compact
                # accumulators
                | "ReadNormalizePrecombine" >> beam.ParDo(ReadNormalizePrecombineFn(
                    self._format, self._text, self._window_ticks, self._max)).with_output_types(
                        Tuple[Any, MeasurementSet]).with_outputs(DEAD_LETTER_TAG, main="accumulators"))
        groups = (read.accumulators
                  | "Group" >> beam.GroupByKey()
                  | "Merge" >> beam.MapTuple(merge_measurement_sets))
        return {"groups": groups, DEAD_LETTER_TAG: read[DEAD_LETTER_TAG]}
