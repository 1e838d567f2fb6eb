"""SampledData strings exactly as the reference's ``SampledDataProcessor`` builds them.

Why a mirror and not a "better" encoder: existing Observations written by
iomt-fhir / MedTech hold these strings; when we merge new readings into them the
slots must line up to the tick, and an Observation we create must be
byte-identical to the one the reference would have created.

All times are int ticks (see ``timeutil``). Building is one linear pass over the
slots and the (time-sorted) values: no datetime objects, no per-slot lookups.
"""
import math
from decimal import Decimal
from typing import List, Sequence, Tuple, Union

from transforms.mapping.timeutil import TICKS_PER_MS

TimeValue = Tuple[int, str]
Period = Union[int, float, Decimal]


def period_ticks(period_ms: Period) -> int:
    """Ticks added per slot for a ``defaultPeriod`` in milliseconds.

    The reference converts the decimal period to ``double`` and calls
    ``DateTime.AddMilliseconds`` (.NET 7+: integral milliseconds times 10 000 plus
    the fractional part's ticks, truncated toward zero). Repeated additions of the
    same value always add the same ticks, so the step is a constant.
    """
    value = float(period_ms)
    if value != value or math.isinf(value):
        raise ValueError(f"Invalid sample period {period_ms!r}.")
    integral = math.trunc(value)
    fraction = value - integral
    return int(integral) * TICKS_PER_MS + int(fraction * TICKS_PER_MS)


def build_sampled_data(values: Sequence[TimeValue], start: int, end: int, period_ms: Period) -> str:
    """``BuildSampledData``: one token per slot from ``start`` while slot start <= ``end``.

    ``values`` must be sorted by time (observation groups and ``merge_data`` give
    them so). A slot takes the LAST value whose time is in [slot, slot+period);
    empty slots are ``E``. Values before ``start`` stop the scan of later values
    exactly as in the reference (its inner loop only advances while the current
    value lies in the current slot), and values after ``end`` are discarded.
    """
    if period_ms is None:
        raise ValueError("samplePeriod is required (template defaultPeriod missing).")
    step = period_ticks(period_ms)
    if step <= 0:
        # The reference would loop forever; refuse instead.
        raise ValueError(f"Sample period must be positive, got {period_ms!r}.")
    if start > end:
        return ""
    slots = (end - start) // step + 1
    out: List[str] = ["E"] * slots
    n = len(values)
    i = 0
    # Mirror the reference's two-pointer walk, but jump over runs of empty slots
    # instead of visiting them one by one.
    slot = 0
    while slot < slots and i < n:
        t = values[i][0]
        slot_start = start + slot * step
        if t < slot_start:
            # Reference: a value earlier than the current slot blocks the cursor for good.
            break
        if t >= slot_start + step:
            slot = (t - start) // step
            continue
        value = None
        nxt = slot_start + step
        while i < n and slot_start <= values[i][0] < nxt:
            value = values[i][1]
            i += 1
        out[slot] = value
        slot += 1
    return " ".join(out)


def sampled_data_to_time_values(stream: str, start: int, period_ms: Period,
                                preserve_errors: bool = False) -> List[TimeValue]:
    """``SampledDataToTimeValues``: token k is at ``start + k*period``; ``E`` dropped unless asked."""
    if stream is None or not stream.strip():
        raise ValueError("SampledData stream is empty.")
    step = period_ticks(period_ms)
    out: List[TimeValue] = []
    t = start
    for token in stream.split(" "):
        if preserve_errors or token != "E":
            out.append((t, token))
        t += step
    return out


def merge_data(data1: Sequence[TimeValue], data2: Sequence[TimeValue]) -> List[TimeValue]:
    """``MergeData``: time-ordered merge of two sorted series; on equal time keep ``data1``'s.

    This follows the reference source (``SampledDataProcessor.MergeData``: "Collision,
    take one and increment both" -> ``data1``) and its unit test
    ``GivenCollisions_WhenMergeData_ThenData1ValueUsed``. Callers choose who wins by
    the argument order; see ``merge.py`` for the order used when merging Observations.
    """
    out: List[TimeValue] = []
    i = j = 0
    n1, n2 = len(data1), len(data2)
    while i < n1 and j < n2:
        a, b = data1[i], data2[j]
        if a[0] < b[0]:
            out.append(a)
            i += 1
        elif a[0] > b[0]:
            out.append(b)
            j += 1
        else:
            out.append(a)
            i += 1
            j += 1
    if i < n1:
        out.extend(data1[i:])
    if j < n2:
        out.extend(data2[j:])
    return out
