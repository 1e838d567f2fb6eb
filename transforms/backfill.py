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
import zlib
from typing import Any, Dict, Optional, Tuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.transforms import window

from transforms import metrics
from transforms.gc_budget import fewer_collections
from transforms.group import group_key, merge_measurement_sets
from transforms.mapping import timeutil
from transforms.mapping.device_templates import load_device_mapping
from transforms.mapping.grouping import keep_latest
from transforms.normalize import normalize_event
from transforms.records.dead_letter import (DEAD_LETTER_TAG, STAGE_NORMALIZATION, STAGE_READ, dead_letter,
                                            error_type_of)
from transforms.records.measurement_set import MeasurementSet, MeasurementsCoder
from transforms.sources import archive_formats as formats
from transforms.sources.files import PlanReadsFn, ReadUnit, read_dead_letter, read_unit
from transforms.to_observations import RESOURCES_TAG, FoldByIdDoFn, ToObservationsDoFn

#: counters are added every this many messages (and at the end of a unit)
COUNT_EVERY = 5000
MAX_BUFFERED = 50_000
#: byte ranges of a plain JSON-lines file: small enough that one file spreads evenly over the
#: workers of one machine (a runner splits a stage's elements among its workers by count), large
#: enough that a unit's fixed cost (open, seek, one DoFn call) is nothing against its lines
RANGE_BYTES = 2 << 20


class ReadNormalizePrecombineFn(beam.DoFn):
    """A read unit -> ``((group key, window index), encoded MeasurementSet)`` and dead letters."""

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
        with fewer_collections():  # a fifth of this loop's CPU was the GC's (transforms.gc_budget)
            yield from self._process(unit)

    def _process(self, unit: ReadUnit):
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
                    if m.occurrence_time in acc:  # the collapse rule decides
                        keep_latest(acc, m)
                    else:  # nothing to collapse with: what keep_latest does, without the call
                        acc[m.occurrence_time] = m
                self._buffered += len(measurements)
                if self._buffered >= self._max:  # hand the tables on, encoded, and start over
                    for key, acc in table.items():
                        yield key, _encode(acc)
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
        with fewer_collections():
            for key, acc in table.items():
                yield window.GlobalWindows.windowed_value((key, _encode(acc)))


# Accumulators cross the shuffle as bytes, encoded here: FnApiRunner's shuffle decodes every
# value it groups and holds the decoded objects until the next stage reads them (the whole
# archive's measurements as Python objects in the runner process: 904 MB of the runner's peak
# at 10M messages); bytes stay bytes, a dozen per reading, and are decoded once, where merged.
# zlib level 1 on top: readings of one key and window are alike (a 10M-message archive's
# accumulators shrink about threefold) for well under a microsecond a reading.
_CODER = MeasurementsCoder().get_impl()


def _encode(acc) -> bytes:
    return zlib.compress(_CODER.encode(acc), 1)


def _decode(blob: bytes):
    return _CODER.decode(zlib.decompress(blob))


def merge_encoded(key, blobs) -> tuple:
    """(key, window index), encoded accumulators -> (key, measurements), as ``merge_measurement_sets``."""
    return merge_measurement_sets(key, [_decode(b) for b in blobs])


def fold_key(key, correlation_types: frozenset) -> tuple:
    """What decides an Observation's id in a file output (patient, device, type, period or
    correlation id): every group that can give the same id has the same fold key. The window
    stands for the period (the windows are whole periods, see ``ReadNormalizeGroup``); a
    correlation-id type's Observation spans windows, so its groups share one key."""
    (device, mtype, patient, _encounter, _correlation), window_index = key
    return device, mtype, patient, (-1 if mtype in correlation_types else window_index)


class ConvertAndFoldFn(beam.DoFn):
    """(fold key, [((group key, window), encoded MeasurementSet), ...]) -> folded Observations.

    ``ToObservations`` then ``FoldObservationsById`` (their own DoFns, so the same Observations,
    dead letters and counters), in one step: every item of an Observation id is in this element
    (``fold_key``), so no second shuffle holds the whole archive's Observations."""

    def __init__(self, fhir_mapping_text: str):
        self._convert = ToObservationsDoFn(fhir_mapping_text)
        self._fold = FoldByIdDoFn(fhir_mapping_text)

    def setup(self):
        self._convert.setup()
        self._fold.setup()

    def process(self, element):
        with fewer_collections():  # see transforms.gc_budget
            yield from self._process(element)

    def _process(self, element):
        _, keyed = element
        by_key: Dict[tuple, list] = {}
        for key, acc in keyed:
            by_key.setdefault(key, []).append(acc)
        by_id: Dict[str, list] = {}
        for key, accs in by_key.items():
            for out in self._convert.process(merge_encoded(key, accs)):
                if isinstance(out, beam.pvalue.TaggedOutput):
                    yield out
                else:
                    by_id.setdefault(out.observation["id"], []).append(out)
        for observation_id, items in by_id.items():
            yield from self._fold.process((observation_id, items))


class ReadNormalizeGroup(beam.PTransform):
    """File pattern -> ``groups`` (``(GroupKey, list[Measurement])``, as ``GroupMeasurements``)
    and ``dead_letter`` (stages read and normalization).

    With ``fold_fhir_mapping`` (JSON file outputs): ``observations`` instead of ``groups``, the
    Observations ``ToObservations | FoldObservationsById`` would give, converted and folded per
    ``fold_key`` (dead letters of conversion included). The windows must then be whole multiples
    of the mapping's longest period (``folds_locally``)."""

    def __init__(self, pattern: str, input_format: str, device_mapping_text: str, window_seconds: int,
                 range_bytes: int = RANGE_BYTES, max_buffered: int = MAX_BUFFERED,
                 fold_fhir_mapping: Optional[str] = None):
        super().__init__()
        if input_format not in formats.INPUT_FORMATS:
            raise ValueError(f"--input-format must be one of {', '.join(formats.INPUT_FORMATS)}")
        self._pattern = pattern
        self._format = input_format
        self._text = device_mapping_text
        self._window_ticks = window_seconds * timeutil.TICKS_PER_SECOND
        self._range_bytes = range_bytes
        self._max = max_buffered
        self._fold_text = fold_fhir_mapping

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
                        Tuple[Any, bytes]).with_outputs(DEAD_LETTER_TAG, main="accumulators"))
        if self._fold_text is None:
            groups = (read.accumulators
                      | "Group" >> beam.GroupByKey()
                      | "Merge" >> beam.MapTuple(merge_encoded))
            return {"groups": groups, DEAD_LETTER_TAG: read[DEAD_LETTER_TAG]}
        types = correlation_types(self._fold_text)
        converted = (read.accumulators
                     | "FoldKey" >> beam.Map(lambda kv: (fold_key(kv[0], types), kv)).with_output_types(
                         Tuple[Any, Tuple[Any, bytes]])
                     | "Group" >> beam.GroupByKey()
                     | "ConvertAndFold" >> beam.ParDo(ConvertAndFoldFn(self._fold_text)).with_outputs(
                         DEAD_LETTER_TAG, RESOURCES_TAG, main="observations"))
        dead = ((read[DEAD_LETTER_TAG], converted[DEAD_LETTER_TAG]) | "ReadAndConvertDeadLetters" >> beam.Flatten())
        return {"observations": converted.observations, DEAD_LETTER_TAG: dead}


def correlation_types(fhir_mapping_text: str) -> frozenset:
    """Measurement types whose Observations group by correlation id (not by period)."""
    from transforms.mapping.fhir_templates import load_fhir_mapping
    from transforms.mapping.grouping import CORRELATION_ID

    return frozenset(t.type_name for t in load_fhir_mapping(fhir_mapping_text).templates()
                     if t.period_interval == CORRELATION_ID)


def folds_locally(window_seconds: int, longest_period_seconds: int) -> bool:
    """Whether every Observation period lies in one window (windows are epoch-aligned, and a
    whole multiple of the longest period holds whole hours and UTC days)."""
    return window_seconds % longest_period_seconds == 0
