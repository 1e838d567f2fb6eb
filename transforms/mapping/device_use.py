"""Who wore a device when: use periods, the time-aware choice of a patient, and group splitting.

Why: devices change hands (a pulse oximeter cleaned and clipped on the next patient). The
reference's identity takes ``Device.patient``, i.e. whoever holds the device *now*, so a
backfill puts last year's readings on today's patient and a stream keeps writing to the
previous one. FHIR R4 records who used a device when as ``DeviceUseStatement`` (subject,
device, ``timingPeriod``, status); this module is the pure part of ``--identity-mode
LookupByDeviceUse``: no HTTP, no Beam, so the pipeline, ``transform`` and the debugger (a
CSV table of periods) choose patients with the same code.

Rules (README "Devices that change hands"):

* **Statuses**: ``active``, ``completed`` and ``intended`` count; ``entered-in-error``,
  ``stopped`` and ``on-hold`` (and anything else) do not. The subject must be a Patient.
* **Boundaries**: FHIR ``Period`` ends are inclusive *at their precision*: an end of
  ``2026-03-01T10:30:00Z`` covers up to 10:30:00.9999999, an end of ``2026-03-01`` the whole
  day; a start covers from the first instant of its precision. A missing start is "since
  always", a missing end "ongoing". Dates without a time are read in UTC.
* **Overlaps**: when several periods cover a reading, the latest start wins (ties: the larger
  statement id, so every worker picks the same one). The reading counts one overlap warning,
  except at a handover written as one period's end equal to the next one's start: that instant
  is covered by both by the inclusive-end rule, goes to the new holder, and is not a warning.
* **Uncovered times** are not guessed: the readings no period covers are handed back apart
  (``DeviceUseNotFoundException`` at stage ``identity``), with the device and the times in the
  reason, never a patient.
"""
from __future__ import annotations

import csv
import io
import re
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from transforms.mapping import timeutil
from transforms.mapping.errors import InvalidDataFormatException, MappingError
from transforms.mapping.identifiers import reference_id

COUNTING_STATUSES = frozenset({"active", "completed", "intended"})
NOT_COUNTING_STATUSES = frozenset({"entered-in-error", "stopped", "on-hold"})
STATUSES = COUNTING_STATUSES | NOT_COUNTING_STATUSES

OPEN_START = timeutil.MIN_TICKS
ONGOING = timeutil.MAX_TICKS


class DeviceUseNotFoundException(MappingError):
    """Readings at times no counting use period of their device covers."""

    error_type = "DeviceUseNotFoundException"
    stage = "identity"

    def __init__(self, device: str, times: Sequence[int]):
        first, last = min(times), max(times)
        when = (timeutil.format_trimmed(first) if first == last else
                f"{len(times)} readings from {timeutil.format_trimmed(first)} to "
                f"{timeutil.format_trimmed(last)}")
        super().__init__(f"no device use period of {device} covers {when}")
        self.err_name = "DeviceUseNotFoundException"


class DeviceUseNotDefinedException(MappingError):
    """A device without any counting use period: nothing says who wore it, ever."""

    error_type = "DeviceUseNotDefinedException"
    stage = "identity"

    def __init__(self, device: str):
        super().__init__(f"{device} has no device use period (a DeviceUseStatement with status active, "
                         "completed or intended and a timingPeriod)")
        self.err_name = "DeviceUseNotDefinedException"


class UsePeriod(NamedTuple):
    """One counting use of a device: ``patient`` (a logical id against a server, the patient
    identifier in an offline table) from ``start`` to ``end`` (ticks, both inclusive)."""

    patient: str
    start: int = OPEN_START
    end: int = ONGOING
    #: the declared end instant (its first tick): a period whose end equals the next period's
    #: start hands over there (see the module's overlap rule)
    end_at: int = ONGOING
    #: the statement's id (or the table's line): ties and reports
    source: str = ""


# ------------------------------------------------------------------ FHIR dateTime with precision

_DATETIME_RE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d{2}:\d{2}))?)?)?$")


def instant_range(text: str) -> Optional[Tuple[int, int]]:
    """A FHIR ``dateTime`` -> (first tick, last tick) of the interval its precision names.

    ``2026`` is the whole year, ``2026-03-01`` the whole day, ``...T10:30:00Z`` that second,
    ``...T10:30:00.5Z`` that tenth of a second. ``None`` when it is not a FHIR dateTime (a time
    needs a zone, as FHIR requires).
    """
    m = _DATETIME_RE.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        return None
    y, mo, d, h, mi, s, frac, zone = m.groups()
    if h is not None and zone is None:
        return None
    year = int(y)
    if mo is None:
        first = timeutil._ticks(year, 1, 1, 0, 0, 0, 0, None)
        nxt = timeutil._ticks(year + 1, 1, 1, 0, 0, 0, 0, None) if year < 9999 else timeutil.MAX_TICKS + 1
    elif d is None:
        month = int(mo)
        first = timeutil._ticks(year, month, 1, 0, 0, 0, 0, None)
        ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
        nxt = timeutil._ticks(ny, nm, 1, 0, 0, 0, 0, None) if ny <= 9999 else timeutil.MAX_TICKS + 1
    elif h is None:
        first = timeutil._ticks(year, int(mo), int(d), 0, 0, 0, 0, None)
        nxt = None if first is None else first + timeutil.TICKS_PER_DAY
    else:
        digits = (frac or "")[:7]
        first = timeutil._ticks(year, int(mo), int(d), int(h), int(mi), int(s or 0),
                                int(digits.ljust(7, "0")) if digits else 0, zone)
        if first is None:
            return None
        unit = (timeutil.TICKS_PER_MINUTE if s is None else
                timeutil.TICKS_PER_SECOND if not digits else 10 ** (7 - len(digits)))
        nxt = first + unit
    if first is None or nxt is None:
        return None
    return first, min(nxt - 1, timeutil.MAX_TICKS)


def period_bounds(start: Optional[str], end: Optional[str]) -> Tuple[int, int, int]:
    """``(start, end, end_at)`` ticks of a Period's texts (missing = open); ValueError if unreadable
    or if it ends before it starts."""
    first = OPEN_START
    if start:
        r = instant_range(start)
        if r is None:
            raise ValueError("the period start is not a FHIR dateTime")
        first = r[0]
    last = end_at = ONGOING
    if end:
        r = instant_range(end)
        if r is None:
            raise ValueError("the period end is not a FHIR dateTime")
        end_at, last = r
    if last < first:
        raise ValueError("the period ends before it starts")
    return first, last, end_at


# ------------------------------------------------------------------ DeviceUseStatement -> period

def period_of_statement(resource: dict) -> Optional[UsePeriod]:
    """The counting use period a ``DeviceUseStatement`` states, or ``None`` when it does not
    count: status not counting, subject not a Patient, no (readable) ``timingPeriod``.

    ``timingDateTime`` counts as a period of its precision (a day, a second); ``timingTiming``
    (schedules) is not read."""
    if (resource.get("status") or "").strip() not in COUNTING_STATUSES:
        return None
    patient = reference_id((resource.get("subject") or {}).get("reference"), "Patient")
    if patient is None:
        return None
    try:
        if "timingPeriod" in resource:
            timing = resource.get("timingPeriod") or {}
            start, end, end_at = period_bounds(timing.get("start"), timing.get("end"))
        elif resource.get("timingDateTime"):
            r = instant_range(resource["timingDateTime"])
            if r is None:
                return None
            start, end, end_at = r[0], r[1], r[0]
        else:
            return None
    except ValueError:
        return None
    return UsePeriod(patient, start, end, end_at, str(resource.get("id") or ""))


def periods_of_statements(resources: Iterable[dict]) -> List[UsePeriod]:
    return [p for p in (period_of_statement(r) for r in resources) if p is not None]


# ------------------------------------------------------------------ choosing

class Choice(NamedTuple):
    period: Optional[UsePeriod]
    overlapped: bool


def choose(periods: Sequence[UsePeriod], t: int) -> Choice:
    """The period a reading at ``t`` belongs to (latest start wins), and whether it was an
    overlap worth a warning (more than one period covers ``t``, other than at a handover)."""
    best = None
    covering = []
    for p in periods:
        if p.start <= t <= p.end:
            covering.append(p)
            if best is None or (p.start, p.source) > (best.start, best.source):
                best = p
    if best is None:
        return Choice(None, False)
    overlapped = any(p is not best and not (p.end_at == best.start and p.start < best.start)
                     for p in covering)
    return Choice(best, overlapped)


class Split(NamedTuple):
    """A measurement group cut by who wore the device: ``parts`` (patient, sub-group) in order of
    first reading, ``uncovered`` the readings no period covers, ``overlaps`` readings that more
    than one period covered."""

    parts: List[Tuple[str, object]]
    uncovered: Tuple
    overlaps: int


def split_group(group, periods: Sequence[UsePeriod]) -> Split:
    """Cut a ``MeasurementGroup`` into one group per patient that wore the device at its readings'
    times. Each part keeps the group's type, device, encounter and correlation id, with
    ``patient_id`` the chosen patient, so its Observations get that patient's identifiers (the
    reference's scheme: ``{patient}.{device}.{type}.{period}``): an hour in which the device
    changed hands becomes two Observations, each with its own readings only."""
    by_patient: Dict[str, list] = {}
    uncovered = []
    overlaps = 0
    for m in group.measurements:
        choice = choose(periods, m.occurrence_time)
        if choice.period is None:
            uncovered.append(m)
            continue
        overlaps += choice.overlapped
        by_patient.setdefault(choice.period.patient, []).append(m)
    parts = [(patient, group._replace(key=f"{group.key}@{patient}", patient_id=patient,
                                      measurements=tuple(ms)))
             for patient, ms in by_patient.items()]
    return Split(parts, tuple(uncovered), overlaps)


# ------------------------------------------------------------------ period rows (seed, offline table)

class PeriodRow(NamedTuple):
    """``device,patient,start,end[,status]``: a device's use by a patient (identifiers, not ids).
    ``end`` empty = ongoing; ``start`` empty = since always; ``status`` empty = ``completed`` when
    the row has an end, else ``active``."""

    device_id: str
    patient_id: str
    start: str = ""
    end: str = ""
    status: str = ""

    @property
    def effective_status(self) -> str:
        return self.status or ("completed" if self.end else "active")

    def bounds(self) -> Tuple[int, int, int]:
        return period_bounds(self.start or None, self.end or None)


_COLUMNS = {"device": ("device", "device_id", "deviceid"), "patient": ("patient", "patient_id", "patientid"),
            "start": ("start",), "end": ("end",), "status": ("status",)}


def _row(cells: Dict[str, str]) -> PeriodRow:
    lowered = {str(k).strip().lower(): (v or "").strip() for k, v in cells.items() if k is not None}

    def pick(name):
        return next((lowered[k] for k in _COLUMNS[name] if lowered.get(k)), "")

    row = PeriodRow(pick("device"), pick("patient"), pick("start"), pick("end"), pick("status").lower())
    if not row.device_id or not row.patient_id:
        raise InvalidDataFormatException("a device use row needs a device and a patient")
    if row.status and row.status not in STATUSES:
        raise InvalidDataFormatException("a device use row's status must be one of "
                                         + ", ".join(sorted(STATUSES)))
    try:
        row.bounds()
    except ValueError as e:
        raise InvalidDataFormatException(f"a device use row's period is unusable: {e}") from None
    return row


def read_period_rows(text: str) -> List[Tuple[int, object]]:
    """``(line, PeriodRow or MappingError)`` of a CSV ``device,patient,start,end[,status]`` (header
    optional; with one, columns by name). One bad row costs only itself."""
    text = text.lstrip("\ufeff")
    rows = [(n, r) for n, r in enumerate(csv.reader(io.StringIO(text)), 1) if any(c.strip() for c in r)]
    header = None
    if rows and any(c.strip().lower() in ("device", "device_id", "deviceid") for c in rows[0][1]):
        header = [c.strip() for c in rows[0][1]]
        rows = rows[1:]
    out: List[Tuple[int, object]] = []
    for number, cells in rows:
        names = header or ["device", "patient", "start", "end", "status"]
        try:
            out.append((number, _row(dict(zip(names, cells)))))
        except MappingError as e:
            out.append((number, e))
    return out


class DeviceUseTable:
    """Offline device use (``transform --device-use``, the debugger): device identifier -> periods
    of patient *identifiers*, from period rows. Only counting rows are periods."""

    def __init__(self, rows: Iterable[PeriodRow] = ()):
        self._periods: Dict[str, List[UsePeriod]] = {}
        for n, row in enumerate(rows, 1):
            if row.effective_status not in COUNTING_STATUSES:
                continue
            start, end, end_at = row.bounds()
            self._periods.setdefault(row.device_id, []).append(
                UsePeriod(row.patient_id, start, end, end_at, f"{n:09d}"))

    @classmethod
    def from_csv(cls, text: str) -> Tuple["DeviceUseTable", List[Tuple[int, MappingError]]]:
        """The table of the good rows, and the bad rows' (line, error)."""
        rows = read_period_rows(text)
        return (cls(r for _, r in rows if isinstance(r, PeriodRow)),
                [(n, r) for n, r in rows if not isinstance(r, PeriodRow)])

    def periods(self, device_id: str) -> Optional[List[UsePeriod]]:
        return self._periods.get(device_id)

    def __len__(self) -> int:
        return sum(len(v) for v in self._periods.values())
