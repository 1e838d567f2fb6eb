"""FHIR-stage grouping: measurement groups (vector F11) and observation groups (vector F07).

Why two levels, as in the reference: a *measurement group* is what one
device/type/patient/encounter/correlation produced in a batch; each template then
cuts it into *observation groups* by ``periodInterval``. One observation group
becomes (or is merged into) exactly one Observation, identified by its name and
id segment, so boundaries and value ordering must match the reference exactly.
"""
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple, Union

from transforms.mapping import timeutil
from transforms.mapping.errors import CorrelationIdNotDefinedException, NotSupportedException
from transforms.mapping.measurement import Measurement

# ObservationPeriodInterval
CORRELATION_ID = -1
SINGLE = 0
HOURLY = 60
DAILY = 1440
PERIOD_INTERVAL_NAMES = {"correlationid": CORRELATION_ID, "single": SINGLE,
                         "hourly": HOURLY, "daily": DAILY}
_NAME_OF = {CORRELATION_ID: "CorrelationId", SINGLE: "Single", HOURLY: "Hourly", DAILY: "Daily"}

TimeValue = Tuple[int, str]


def parse_period_interval(value) -> int:
    """Template ``periodInterval``: an int (any, like the C# enum) or a name (case-insensitive).

    Unsupported ints load fine and fail when grouping, as in the reference.
    """
    if value is None:
        return SINGLE
    if isinstance(value, bool):
        raise ValueError(f"invalid periodInterval {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in PERIOD_INTERVAL_NAMES:
            return PERIOD_INTERVAL_NAMES[text.lower()]
        try:
            return int(text)
        except ValueError:
            pass
    raise ValueError(f"Requested value '{value}' was not found for ObservationPeriodInterval.")


class MeasurementGroup(NamedTuple):
    """The reference's ``MeasurementGroup`` (fields copied from the first measurement)."""

    key: str
    measure_type: str
    device_id: str
    patient_id: Optional[str]
    encounter_id: Optional[str]
    correlation_id: Optional[str]
    measurements: Tuple[Measurement, ...]


class ObservationGroup(NamedTuple):
    """One future Observation: name (= measurement Type as received), boundary, values.

    ``values`` maps property name -> [(ticks, value)] sorted by time, identical
    times dropped (first kept), mirroring the reference's time-only ``SortedSet``.
    """

    name: str
    start: int
    end: int
    id_segment: str
    values: Dict[str, List[TimeValue]]


def group_key(m: Measurement) -> str:
    """``$"{DeviceId}-{Type}-{PatientId}-{EncounterId}-{CorrelationId}"`` (null -> empty)."""
    return (f"{m.device_id}-{m.type}-{m.patient_id or ''}-{m.encounter_id or ''}"
            f"-{m.correlation_id or ''}")


def measurement_groups(measurements: Iterable[Measurement]) -> List[MeasurementGroup]:
    """Group a batch like ``MeasurementGroupFhirImportService`` (vector F11).

    Within a key, measurements with the same OccurrenceTime collapse to the one
    with the latest IngestionTime (a missing ingestion time counts as earliest; on
    equal ingestion times the first one stays). The survivor takes the position of
    the first occurrence of that time; groups come in order of first appearance.
    """
    groups: Dict[str, Dict[int, Measurement]] = {}
    for m in measurements:
        key = group_key(m)
        by_time = groups.get(key)
        if by_time is None:
            by_time = groups[key] = {}
        keep_latest(by_time, m)
    out = []
    for key, by_time in groups.items():
        data = tuple(by_time.values())
        first = data[0]
        out.append(MeasurementGroup(key, first.type, first.device_id, first.patient_id,
                                    first.encounter_id, first.correlation_id, data))
    return out


def keep_latest(by_time: Dict[int, Measurement], m: Measurement) -> None:
    """The collapse rule (F11), the one place it is written: ``m`` takes its occurrence
    time's place in ``by_time`` unless a measurement already there was ingested at the same
    time or later (a missing ingestion time counts as earliest; on a tie the one seen first
    stays). Every grouping step applies it (``measurement_groups``, and the Beam combiner
    before and after the shuffle), so the result never depends on how bundles were split."""
    seen = by_time.get(m.occurrence_time)
    if seen is None or _ingestion(m) > _ingestion(seen):
        by_time[m.occurrence_time] = m


def _ingestion(m: Measurement) -> int:
    return m.ingestion_time if m.ingestion_time is not None else timeutil.MIN_TICKS - 1


class _Builder:
    """Collects property values for one observation group; O(1) per value, sorted once."""

    __slots__ = ("start", "end", "values", "times")

    def __init__(self, start: int, end: int):
        self.start = start
        self.end = end
        self.values: Dict[str, List[TimeValue]] = {}
        self.times: Dict[str, set] = {}

    def add(self, m: Measurement) -> None:
        t = m.occurrence_time
        for name, value in m.properties:
            seen = self.times.get(name)
            if seen is None:
                self.times[name] = {t}
                self.values[name] = [(t, value)]
            elif t not in seen:  # SortedSet with a time-only comparer keeps the first
                seen.add(t)
                self.values[name].append((t, value))

    def sorted_values(self) -> Dict[str, List[TimeValue]]:
        for lst in self.values.values():
            lst.sort(key=_time)
        return self.values


def _time(tv: TimeValue) -> int:
    return tv[0]


def _boundary(interval: int, t: int) -> Tuple[int, int]:
    if interval == SINGLE:
        return t, t
    if interval == HOURLY:
        s = timeutil.floor_hour(t)
        return s, s + timeutil.TICKS_PER_HOUR - 1
    if interval == DAILY:
        s = timeutil.floor_day(t)
        return s, s + timeutil.TICKS_PER_DAY - 1
    raise NotSupportedException(f"ObservationPeriodInterval {interval_name(interval)} is not supported.")


def interval_name(interval: int) -> str:
    return _NAME_OF.get(interval, str(interval))


def time_segment(start: int, end: int) -> str:
    return f"{timeutil.format_id_segment(start)}.{timeutil.format_id_segment(end)}"


def observation_groups_for(interval: int, measurements: Iterable[Measurement],
                           name: Optional[str] = None,
                           correlation_id: Optional[str] = None) -> List[ObservationGroup]:
    """Split one measurement group's measurements by ``interval``.

    ``name`` defaults to the first measurement's Type; ``correlation_id`` (for
    interval -1) to the first measurement's CorrelationId.
    """
    ms = list(measurements)
    if interval not in _NAME_OF:
        raise NotSupportedException(f"ObservationPeriodInterval {interval} is not supported.")
    if not ms:
        return []
    if name is None:
        name = ms[0].type
    if interval == CORRELATION_ID:
        cid = correlation_id if correlation_id is not None else ms[0].correlation_id
        if cid is None or not str(cid).strip():
            raise CorrelationIdNotDefinedException(
                "Correlation id is required for period interval CorrelationId.")
        start = min(m.occurrence_time for m in ms)
        end = max(m.occurrence_time for m in ms)
        b = _Builder(start, end)
        for m in ms:
            b.add(m)
        return [ObservationGroup(name, start, end, str(cid), b.sorted_values())]
    builders: Dict[int, _Builder] = {}
    for m in ms:
        start, end = _boundary(interval, m.occurrence_time)
        b = builders.get(start)
        if b is None:
            b = builders[start] = _Builder(start, end)
        b.add(m)
    return [ObservationGroup(name, b.start, b.end, time_segment(b.start, b.end), b.sorted_values())
            for b in builders.values()]


def observation_groups(template, measurements: Union[MeasurementGroup, Iterable[Measurement]]
                       ) -> List[ObservationGroup]:
    """Observation groups of one measurement group for a ``CodeValueTemplate``."""
    if isinstance(measurements, MeasurementGroup):
        return observation_groups_for(template.period_interval, measurements.measurements,
                                      measurements.measure_type, measurements.correlation_id)
    return observation_groups_for(template.period_interval, measurements)
