"""Instants as integer ticks, with the reference's (.NET) parsing and formatting.

Why ticks: the reference keeps times as .NET ``DateTime`` (100 ns "ticks"), and its
Observation identifiers, periods and SampledData slots depend on all 7 fractional
digits (``2019-01-30T22:45:02.6073744Z``). Python's ``datetime`` stops at
microseconds, so we carry ``int`` ticks since the Unix epoch everywhere and format
them exactly as .NET does. Integer arithmetic is also the cheapest per element.

Time zone rule: the reference runs in a container on UTC. A timestamp with an offset
is converted to that instant; one without an offset is read as UTC.
"""
import datetime as _dt
import re
from typing import Optional

TICKS_PER_SECOND = 10_000_000
TICKS_PER_MS = 10_000
TICKS_PER_MINUTE = 60 * TICKS_PER_SECOND
TICKS_PER_HOUR = 60 * TICKS_PER_MINUTE
TICKS_PER_DAY = 24 * TICKS_PER_HOUR

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
# .NET DateTime range, as ticks since the Unix epoch.
MIN_TICKS = -62135596800 * TICKS_PER_SECOND
MAX_TICKS = 253402300799 * TICKS_PER_SECOND + TICKS_PER_SECOND - 1

# Newtonsoft's ISO 8601 date detection (DateTimeParser): yyyy-MM-ddTHH:mm:ss, optional
# fraction of 1-7 digits, optional zone Z | +HH | +HH:mm | +HHmm.
_ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?\Z"
)
# Looser forms accepted by DateTime.Parse(InvariantCulture) that devices commonly send.
_LOOSE_RE = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?\Z"
)
_US_RE = re.compile(
    r"(\d{1,2})/(\d{1,2})/(\d{4})(?: (\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?\s*(AM|PM)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?\Z",
    re.IGNORECASE,
)


class DateToken:
    """A JSON value the reference would hold as a Date token rather than a string.

    Produced by ``fromUnixTimestamp[Ms]`` and by the JSON reader for ISO strings
    when they are read as values. ``ticks`` is the UTC instant.
    """

    __slots__ = ("ticks",)

    def __init__(self, ticks: int):
        self.ticks = ticks

    def __eq__(self, other):
        return isinstance(other, DateToken) and other.ticks == self.ticks

    def __hash__(self):
        return hash(self.ticks)

    def __repr__(self):
        return f"DateToken({format_trimmed(self.ticks)})"


_DAYS: dict = {}  # (year, month, day) -> days since 1970-01-01; device streams repeat dates


def _days(year: int, month: int, day: int) -> Optional[int]:
    key = (year, month, day)
    days = _DAYS.get(key)
    if days is None:
        try:
            days = _dt.date(year, month, day).toordinal() - 719163
        except ValueError:
            return None
        if len(_DAYS) < 100_000:
            _DAYS[key] = days
    return days


def _ticks(year, month, day, hour, minute, second, fraction7, zone) -> Optional[int]:
    days = _days(year, month, day)
    if days is None:
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    t = ((days * 24 + hour) * 60 + minute) * 60 + second
    t = t * TICKS_PER_SECOND + fraction7
    if zone and zone != "Z":
        offset = _zone_ticks(zone)
        if offset is None:
            return None
        t -= offset
    if t < MIN_TICKS or t > MAX_TICKS:
        return None
    return t


def _fraction7(text: Optional[str]) -> int:
    if not text:
        return 0
    return int(text.ljust(7, "0"))


_MINUTES: dict = {}  # "yyyy-MM-ddTHH:mm" -> ticks; a device stream repeats minutes
_TAIL_RE = re.compile(r"(\d{2})(?:\.(\d{1,7}))?(Z|[+-]\d{2}(?::?\d{2})?)?\Z")


def parse_iso(text: str) -> Optional[int]:
    """Ticks for a strict ISO 8601 string as Newtonsoft detects dates, else ``None``.

    Hot path (every message has a timestamp): the date-hour-minute prefix is looked up
    in a cache, so only seconds, fraction and zone are parsed per call.
    """
    if len(text) >= 19 and text[16] == ":":
        base = _MINUTES.get(text[:16])
        if base is not None:
            if len(text) == 24 and text[19] == "." and text[23] == "Z":
                # "ss.fffZ", what devices send most: the regex's result without the regex
                # (isdecimal is exactly the regex's \d, and int() reads what it accepts)
                second, frac = text[17:19], text[20:23]
                if second.isdecimal() and frac.isdecimal():
                    sec = int(second)
                    if sec > 59:
                        return None
                    t = base + sec * TICKS_PER_SECOND + int(frac) * 10_000
                    return t if MIN_TICKS <= t <= MAX_TICKS else None
            m = _TAIL_RE.match(text, 17)
            if m is None:
                return None
            second, frac, zone = m.groups()
            sec = int(second)
            if sec > 59:
                return None
            t = base + sec * TICKS_PER_SECOND + (int(frac.ljust(7, "0")) if frac else 0)
            if zone and zone != "Z":
                offset = _zone_ticks(zone)
                if offset is None:
                    return None
                t -= offset
            return t if MIN_TICKS <= t <= MAX_TICKS else None
    m = _ISO_RE.match(text)
    if m is None:
        return None
    y, mo, d, h, mi, s, frac, zone = m.groups()
    minute = _ticks(int(y), int(mo), int(d), int(h), int(mi), 0, 0, None)
    if minute is not None and len(_MINUTES) < 100_000:
        _MINUTES[text[:16]] = minute
    return _ticks(int(y), int(mo), int(d), int(h), int(mi), int(s), _fraction7(frac), zone)


def _zone_ticks(zone: str) -> Optional[int]:
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    oh = int(digits[:2])
    om = int(digits[2:4]) if len(digits) >= 4 else 0
    if oh > 14 or om > 59:
        return None
    return sign * (oh * 60 + om) * TICKS_PER_MINUTE


def looks_like_iso_date(text: str) -> bool:
    """Cheap pre-check before ``parse_iso``: Newtonsoft only tries strings shaped like dates."""
    return len(text) >= 19 and text[4] == "-" and text[10] == "T" and text[0].isdigit()


def parse_datetime(text: str) -> Optional[int]:
    """Ticks for a timestamp string the way ``Value<DateTime?>()`` reads it, else ``None``.

    ISO 8601 first (the common case), then the looser forms ``DateTime.Parse``
    accepts with the invariant culture (date only, space separator, ``MM/dd/yyyy``).
    """
    text = text.strip()
    t = parse_iso(text)
    if t is not None:
        return t
    m = _LOOSE_RE.match(text)
    if m is not None:
        y, mo, d, h, mi, s, frac, zone = m.groups()
        return _ticks(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0),
                      _fraction7(frac), zone)
    m = _US_RE.match(text)
    if m is not None:
        mo, d, y, h, mi, s, frac, ampm, zone = m.groups()
        hour = int(h or 0)
        if ampm:
            if hour < 1 or hour > 12:
                return None
            hour = hour % 12 + (12 if ampm.upper() == "PM" else 0)
        return _ticks(int(y), int(mo), int(d), hour, int(mi or 0), int(s or 0),
                      _fraction7(frac), zone)
    return None


def _split(ticks: int):
    seconds, frac = divmod(ticks, TICKS_PER_SECOND)
    dt = _EPOCH + _dt.timedelta(seconds=seconds)
    return dt, frac


def _ymd_hms(dt: _dt.datetime) -> str:
    """``yyyy-MM-ddTHH:mm:ss``, the year always four digits.

    ``strftime("%Y")`` does not pad years before 1000 on glibc (``0001`` comes out as
    ``1``), and an ISO reader (ours, the reference's, a FHIR server's) rejects that.
    """
    return f"{dt.year:04d}-{dt:%m-%dT%H:%M:%S}"


def format_o(ticks: int) -> str:
    """.NET ``DateTime.ToString("o")`` of a UTC time: always 7 fractional digits."""
    dt, frac = _split(ticks)
    return f"{_ymd_hms(dt)}.{frac:07d}Z"


def format_trimmed(ticks: int) -> str:
    """Newtonsoft's ISO form: fraction without trailing zeros, none if zero."""
    dt, frac = _split(ticks)
    if frac:
        return f"{_ymd_hms(dt)}.{frac:07d}".rstrip("0") + "Z"
    return f"{_ymd_hms(dt)}Z"


def format_id_segment(ticks: int) -> str:
    """``yyyyMMddHHmmss`` + ``Z``: the time part of the reference's Observation identifier."""
    dt, _ = _split(ticks)
    return f"{dt.year:04d}{dt:%m%d%H%M%S}Z"


def format_invariant(ticks: int) -> str:
    """``DateTime.ToString(InvariantCulture)``: what a Date token becomes as a string value."""
    dt, _ = _split(ticks)
    return f"{dt:%m/%d}/{dt.year:04d} {dt:%H:%M:%S}"


def floor_hour(ticks: int) -> int:
    return ticks - ticks % TICKS_PER_HOUR


def floor_day(ticks: int) -> int:
    return ticks - ticks % TICKS_PER_DAY


def from_unix_seconds(seconds: int) -> int:
    return seconds * TICKS_PER_SECOND


def from_unix_ms(ms: int) -> int:
    return ms * TICKS_PER_MS


def to_unix_seconds(ticks: int) -> float:
    """Seconds since the epoch (for Beam timestamps); loses sub-microsecond digits."""
    return ticks / TICKS_PER_SECOND


def now_ticks() -> int:
    d = _dt.datetime.now(_dt.timezone.utc) - _EPOCH
    return (d.days * 86400 + d.seconds) * TICKS_PER_SECOND + d.microseconds * 10
