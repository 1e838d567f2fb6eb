"""``MeasurementSet``: one group key's measurements by occurrence time, and its compact coder.

It is what crosses the batch shuffle of ``GroupMeasurements`` (``transforms.group``) and
what an in-memory runner holds until the stage that reads it. The coder writes it as
varints and UTF-8: the key's ids and the property names once, per measurement only its
times (as deltas) and values, instead of pickling every ``Measurement`` (about a quarter
of the pickled size).
"""
from typing import Dict, Optional

from apache_beam import coders

from transforms.beam_private import StreamCoder, StreamCoderImpl
from transforms.mapping.measurement import Measurement


class MeasurementSet(dict):
    """occurrence time (ticks) -> surviving measurement; a type of its own so a coder can
    be registered for it (see the end)."""


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _unzigzag(z: int) -> int:
    return (z >> 1) ^ -(z & 1)


class _MeasurementsCoderImpl(StreamCoderImpl):
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


class MeasurementsCoder(StreamCoder):
    """Compact coder of a ``MeasurementSet`` (see the module docstring)."""

    impl_class = _MeasurementsCoderImpl

    def to_type_hint(self):
        return dict

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


coders.registry.register_coder(MeasurementSet, MeasurementsCoder)
