"""``CollectMeasurements``: the CombineFn behind ``GroupMeasurements``, and its compact coder.

Why a CombineFn and not a GroupByKey: a runner lifts a combiner, so each bundle
pre-combines a key's measurements before the shuffle and one accumulator per key and
window crosses it instead of one element per message (a backfill is dominated by that
per-element cost, not by the mapping). The result is the same list a GroupByKey gives.

The accumulator applies the reference's collapse rule early (``MeasurementGroup``, F11):
within a key, measurements with the same OccurrenceTime collapse to the one with the
latest IngestionTime (a missing one counts as earliest; on a tie the one seen first
stays). ``measurement_groups`` applies the same rule again downstream, so the result
does not depend on how a runner splits bundles (which, like a GroupByKey's order, it
never did on a tie).

The coder writes an accumulator as varints and UTF-8: the key's ids and the property
names once, per measurement only its times (as deltas) and values, instead of pickling
every ``Measurement``. It is what crosses the shuffle and what an in-memory runner holds
until the stage that reads it (about a quarter of the pickled size).
"""
from typing import Dict, Iterable, List, Optional

import apache_beam as beam
from apache_beam import coders

from transforms.mapping import timeutil
from transforms.mapping.measurement import Measurement

Accumulator = Dict[int, Measurement]  # occurrence time (ticks) -> surviving measurement

_NO_INGESTION = timeutil.MIN_TICKS - 1


def _later(m: Measurement, seen: Measurement) -> bool:
    a = m.ingestion_time if m.ingestion_time is not None else _NO_INGESTION
    b = seen.ingestion_time if seen.ingestion_time is not None else _NO_INGESTION
    return a > b


class MeasurementSet(dict):
    """An accumulator as a type of its own, so a coder can be registered for it (see the end)."""


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
        t = m.occurrence_time
        seen = acc.get(t)
        if seen is None or (m.ingestion_time is not None and _later(m, seen)):
            acc[t] = m
        self._count += 1
        if self._count >= self._max:
            table, self._table, self._count = self._table, {}, 0
            yield from table.items()

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindows

        table, self._table, self._count = self._table, {}, 0
        for item in table.items():
            yield GlobalWindows.windowed_value(item)


def merge_measurement_sets(key, accs) -> tuple:
    """(key, window index), accumulators -> (key, measurements) as the CombineFn's output."""
    fn = CollectMeasurements()
    return key[0], fn.extract_output(fn.merge_accumulators(accs))


class CollectMeasurements(beam.CombineFn):
    """Measurements of one key and window -> their list, collapsed by occurrence time."""

    def create_accumulator(self) -> Accumulator:
        return {}

    def add_input(self, acc: Accumulator, m: Measurement) -> Accumulator:
        t = m.occurrence_time
        seen = acc.get(t)
        if seen is None:
            acc[t] = m
        elif m.ingestion_time is not None and _later(m, seen):
            acc[t] = m
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
            for t, m in acc.items():
                seen = out.get(t)
                if seen is None or _later(m, seen):
                    out[t] = m
        return out

    def extract_output(self, acc: Accumulator) -> List[Measurement]:
        return list(acc.values())

    def get_accumulator_coder(self):
        return MeasurementsCoder()


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _unzigzag(z: int) -> int:
    return (z >> 1) ^ -(z & 1)


class _MeasurementsCoderImpl(coders.coder_impl.StreamCoderImpl):
    """Varints and UTF-8, in this order:

    count; type, device, patient, encounter, correlation of the first measurement (each a
    nullable string); the distinct property-name tuples; then per measurement: occurrence
    time as a delta from the previous one, ingestion time as a delta from its occurrence
    time (0 = none), the index of its name tuple and its values; last, the measurements
    whose ids differ from the first one's (``None`` and ``""`` share a group key, and an
    accumulator is not bound to one key: nothing is lost either way).
    """

    def encode_to_stream(self, acc, stream, nested):
        ms = list(acc.values())
        stream.write_var_int64(len(ms))
        if not ms:
            return
        first = ms[0]
        ids = (first.type, first.device_id, first.patient_id, first.encounter_id, first.correlation_id)
        for s in ids:
            _write_str(stream, s)
        names: Dict[tuple, int] = {}
        rows = []
        for m in ms:
            key = tuple(n for n, _ in m.properties)
            index = names.get(key)
            if index is None:
                index = names[key] = len(names)
            rows.append(index)
        stream.write_var_int64(len(names))
        for key in names:
            stream.write_var_int64(len(key))
            for n in key:
                _write_str(stream, n)
        previous = 0
        for m, index in zip(ms, rows):
            t = m.occurrence_time
            stream.write_var_int64(_zigzag(t - previous))
            previous = t
            ing = m.ingestion_time
            stream.write_var_int64(0 if ing is None else _zigzag(ing - t) + 1)
            stream.write_var_int64(index)
            for _, v in m.properties:
                _write_str(stream, v)
        odd = [(i, m) for i, m in enumerate(ms)
               if (m.type, m.device_id, m.patient_id, m.encounter_id, m.correlation_id) != ids]
        stream.write_var_int64(len(odd))
        for i, m in odd:
            stream.write_var_int64(i)
            for s in (m.type, m.device_id, m.patient_id, m.encounter_id, m.correlation_id):
                _write_str(stream, s)

    def decode_from_stream(self, stream, nested):
        count = stream.read_var_int64()
        if not count:
            return MeasurementSet()
        mtype, device, patient, encounter, correlation = (_read_str(stream) for _ in range(5))
        tables = []
        for _ in range(stream.read_var_int64()):
            tables.append(tuple(_read_str(stream) for _ in range(stream.read_var_int64())))
        ms = []
        t = 0
        for _ in range(count):
            t += _unzigzag(stream.read_var_int64())
            ing = stream.read_var_int64()
            names = tables[stream.read_var_int64()]
            props = tuple((n, _read_str(stream)) for n in names)
            ms.append(_new_measurement(Measurement, (mtype, t, device, props, patient, encounter, correlation,
                                                     None if ing == 0 else t + _unzigzag(ing - 1))))
        for _ in range(stream.read_var_int64()):
            i = stream.read_var_int64()
            mt, dev, pat, enc, cor = (_read_str(stream) for _ in range(5))
            ms[i] = ms[i]._replace(type=mt, device_id=dev, patient_id=pat, encounter_id=enc, correlation_id=cor)
        return MeasurementSet((m.occurrence_time, m) for m in ms)


_new_measurement = tuple.__new__  # skips NamedTuple's Python-level __new__; same field order


def _write_str(stream, s: Optional[str]) -> None:
    if s is None:
        stream.write_var_int64(0)
        return
    b = s.encode("utf-8")
    stream.write_var_int64(len(b) + 1)
    stream.write(b)


def _read_str(stream) -> Optional[str]:
    n = stream.read_var_int64()
    if n == 0:
        return None
    return stream.read(n - 1).decode("utf-8")


class MeasurementsCoder(coders.coders.FastCoder):
    """Compact coder of a ``CollectMeasurements`` accumulator (see the module docstring)."""

    def _create_impl(self):
        return _MeasurementsCoderImpl()

    def to_type_hint(self):
        return dict

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


coders.registry.register_coder(MeasurementSet, MeasurementsCoder)
