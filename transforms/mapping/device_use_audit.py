"""Correcting the past: which of this connector's Observations sit on a patient who did not wear
the device then, and what correcting them means.

Why: staff fix a DeviceUseStatement after the fact (the handover was at 10:30, not 11:00). A
re-run of the backfill writes the readings to the right patient, under that patient's
identifiers (new Observations), but the re-run cannot see the Observations it wrote before on
the wrong patient: they are keyed by the old patient. This module judges one Observation against
the device's periods now; ``iomt-fhir misattributed`` (``pipelines.commands.device_use``) finds
the Observations, reports them, and with ``--correct`` applies ``correction``:

* every reading on another patient (or on nobody): the Observation is marked
  ``entered-in-error`` (kept, so the chart's audit trail shows what was withdrawn);
* some readings: their SampledData slots become ``E`` (status ``amended``) and the rest stays;
  an Observation whose value is not SampledData cannot be cut and is only reported.

Only Observations this connector wrote are judged: an identifier with its system
(``identifiers.SERVICE_SYSTEM``); anything else is never touched. A SampledData reading is only
known by its slot: it is the subject's when the subject wore the device at any time of that slot
(a handover inside a slot leaves a reading in it on both sides, each rightly); any other value
must be the subject's at the effective period's start and end.
Pure: no HTTP.
"""
import copy
from typing import List, NamedTuple, Optional, Sequence, Tuple

from transforms.mapping import timeutil
from transforms.mapping.device_use import UsePeriod, choose
from transforms.mapping.identifiers import SERVICE_SYSTEM, reference_id
from transforms.mapping.sampled_data import period_ticks, sampled_data_to_time_values

CORRECT, PARTLY, WHOLLY, NOT_OURS = "correct", "partly-misattributed", "misattributed", "not-ours"
WITHDRAWN = "withdrawn"  # already entered-in-error: nothing left to judge


class Verdict(NamedTuple):
    finding: str
    readings: int
    wrong: int
    #: the corrected Observation to PUT, its ``meta`` as read (``None``: nothing to do, or it
    #: cannot be cut)
    corrected: Optional[dict] = None


def written_by_us(observation: dict) -> bool:
    return any(i.get("system") == SERVICE_SYSTEM for i in observation.get("identifier") or [])


def _sampled_data_places(observation: dict) -> List[dict]:
    places = [observation] + list(observation.get("component") or [])
    return [p for p in places if (p.get("valueSampledData") or {}).get("data")]


def _belongs(periods: Sequence[UsePeriod], t: int, patient: str, until: Optional[int] = None) -> bool:
    """Whether ``patient`` wore the device at ``t`` or, for a slot, at any time up to ``until``
    (a handover inside a slot: both wearers' Observations may hold a reading in it)."""
    times = [t] + ([p.start for p in periods if t < p.start <= until] if until is not None else [])
    for x in times:
        chosen = choose(periods, x).period
        if chosen is not None and chosen.patient == patient:
            return True
    return False


def judge(observation: dict, periods: Sequence[UsePeriod]) -> Verdict:
    """The finding for one Observation against the device's counting periods now."""
    if not written_by_us(observation):
        return Verdict(NOT_OURS, 0, 0)
    if observation.get("status") == "entered-in-error":
        return Verdict(WITHDRAWN, 0, 0)
    subject = reference_id((observation.get("subject") or {}).get("reference"), "Patient")
    effective = observation.get("effectivePeriod") or {}
    start = timeutil.parse_datetime(effective.get("start") or observation.get("effectiveDateTime") or "")
    end = timeutil.parse_datetime(effective.get("end") or "") if effective.get("end") else start
    if subject is None or start is None or end is None:
        return Verdict(CORRECT, 0, 0)  # not a shape we wrote: nothing to judge
    places = _sampled_data_places(observation)
    if not places:
        times = sorted({start, end})
        wrong = sum(not _belongs(periods, t, subject) for t in times)
        finding = CORRECT if not wrong else WHOLLY if wrong == len(times) else PARTLY
        corrected = _withdrawn(observation) if finding == WHOLLY else None
        return Verdict(finding, len(times), wrong, corrected)
    readings = wrong = 0
    corrected = copy.deepcopy(observation)
    for place, fixed in zip(places, _sampled_data_places(corrected)):
        sd = place["valueSampledData"]
        tokens = sd["data"].split(" ")
        step = period_ticks(sd["period"])
        for k, (t, token) in enumerate(sampled_data_to_time_values(sd["data"], start, sd["period"],
                                                                    preserve_errors=True)):
            if token == "E":
                continue
            readings += 1
            if not _belongs(periods, t, subject, t + step - 1):
                wrong += 1
                tokens[k] = "E"
        fixed["valueSampledData"]["data"] = " ".join(tokens)
    if not wrong:
        return Verdict(CORRECT, readings, 0)
    if wrong == readings:
        return Verdict(WHOLLY, readings, wrong, _withdrawn(observation))
    corrected["status"] = "amended"
    return Verdict(PARTLY, readings, wrong, corrected)


def _withdrawn(observation: dict) -> dict:
    out = copy.deepcopy(observation)
    out["status"] = "entered-in-error"
    return out


def summary(verdicts: Sequence[Tuple[str, Verdict]]) -> str:
    counts = {}
    for _, v in verdicts:
        counts[v.finding] = counts.get(v.finding, 0) + 1
    return "misattributed: " + " ".join(f"{k}={counts.get(k, 0)}" for k in (CORRECT, PARTLY, WHOLLY, WITHDRAWN, NOT_OURS))
