"""Simulated devices: who they are, what they send, and a steady-rate pacer.

One roster (``simulated_devices``) serves the message generators here, the
``scripts/simulate_devices.py`` senders (file, Pub/Sub, Event Hubs, Kafka) and
``iomt-fhir seed --from-simulator``, so Lookup-mode tests seed exactly the devices that
then stream. Bodies are shaped for ``templates/devicecontent.json``.

Two generators, on purpose:

* ``archive_messages`` is the deterministic archive (per-minute readings from a fixed start;
  every device sends every type). The demo's ``templates/sample/messages.jsonl`` and the
  benchmarks are made with it, so its output never changes: same arguments, same bytes.
* ``live_messages`` is what a clinic's devices send now: current timestamps, each device
  sending its own kind's readings (watch: heart rate, batched steps, "worn"; blood-pressure
  cuff; scale), each message with IoT Hub-style application properties (``deviceId``,
  ``deviceKind``, ``measurementType``, ``iothub-creation-time-utc``) so the envelope path
  (``Properties``) has something to carry.

Malformed messages (``--bad``) are not JSON, or JSON whose timestamp is not a date, so the
dead-letter path of the pipeline is exercised by every source.

Pure Python: no Beam, no client libraries (the senders import theirs lazily).
"""
from __future__ import annotations

import calendar
import itertools
import json
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence

# Device kind -> the measurement types (templates/devicecontent.json typeNames) it sends, in
# the order of one cycle. A watch mostly sends heart rate; steps come batched.
DEVICE_KINDS: Dict[str, Sequence[str]] = {
    "smartwatch": ("heartrate",) * 4 + ("steps",) + ("heartrate",) * 4 + ("deviceWorn",),
    "bp-monitor": ("bloodpressure",),
    "scale": ("bodyweight",),
}
KIND_ORDER = ("smartwatch", "bp-monitor", "scale")
MEASUREMENT_TYPES = ("heartrate", "bloodpressure", "steps", "bodyweight", "deviceWorn")
MALFORMED = "malformed"
_BAD_BODIES = ("{this is not json",
               '{"heartRate": "71", "deviceId": "%s", "endDate": "not-a-date"}')


DEFAULT_DEVICES = 3  # scripts/simulate_devices.py --devices default


def simulated_devices(devices: int = DEFAULT_DEVICES) -> List[dict]:
    """The devices the simulator sends for ``--devices N``: ``device-000`` of ``patient-000``
    and so on, kinds cycling watch / blood-pressure cuff / scale. No encounters (the example
    device mapping has no encounter expression)."""
    if devices < 1:
        raise ValueError("devices must be at least 1")
    return [{"device_id": f"device-{d:03d}", "patient_id": f"patient-{d:03d}",
             "encounter_id": None, "kind": KIND_ORDER[d % len(KIND_ORDER)]}
            for d in range(devices)]


def iso(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds, four-digit years (``...T08:00:00.500Z``)."""
    whole = int(epoch)
    ms = int(round((epoch - whole) * 1000))
    if ms == 1000:
        whole, ms = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"


# ---- the deterministic archive (byte-stable: the demo's sample and the benchmarks) ----

def archive_messages(devices: int, minutes: int, start: str, seed: int) -> Iterator[object]:
    """Per-minute heart rate, half-hourly blood pressure, hourly batched steps (a JSON array
    with epoch seconds), one "worn" event and one weight in pounds per device, devices a
    second apart. Never change what this yields: committed samples depend on it."""
    rnd = random.Random(seed)
    t0 = calendar.timegm(time.strptime(start, "%Y-%m-%dT%H:%M:%SZ"))
    for minute in range(minutes):
        for d in range(devices):
            dev, pat = f"device-{d:03d}", f"patient-{d:03d}"
            t = t0 + minute * 60 + d  # devices a second apart
            yield {"heartRate": str(rnd.randint(55, 110)), "endDate": iso(t),
                   "deviceId": dev, "patientId": pat}
            if minute % 30 == 0:
                yield {"systolic": str(rnd.randint(105, 140)), "diastolic": str(rnd.randint(65, 90)),
                       "endDate": iso(t + 0.5), "deviceId": dev, "patientId": pat}
            if minute % 60 == 59:
                yield [{"steps": rnd.randint(0, 900), "epochSeconds": t - 60 * k,
                        "deviceId": dev, "patientId": pat} for k in range(3)]
            if minute == 0:
                yield {"event": "worn", "endDate": iso(t + 0.25), "deviceId": dev, "patientId": pat}
                yield {"weightLbs": f"{rnd.uniform(120, 220):.1f}", "endDate": iso(t + 0.75),
                       "deviceId": dev, "patientId": pat}


def archive_lines(devices: int, minutes: int, start: str, seed: int, bad: int = 0) -> List[str]:
    """``archive_messages`` as compact JSON lines with ``bad`` malformed lines spread evenly."""
    lines = [json.dumps(m, separators=(",", ":")) for m in archive_messages(devices, minutes, start, seed)]
    if bad:
        step = max(1, len(lines) // (bad + 1))
        for i in range(bad):
            lines.insert(step * (i + 1), _BAD_BODIES[1] % "device-000" if i % 2 else _BAD_BODIES[0])
    return lines


# ---- live messages ----

@dataclass(frozen=True)
class SimulatedMessage:
    """One message as a device sends it: the body, its application properties (IoT Hub
    style; strings only, as every transport accepts them) and a partition key (the device).
    ``measurement_type`` is what the body holds (or ``malformed``), for the sent counts."""

    body: bytes
    properties: Dict[str, str]
    key: str
    measurement_type: str


def _live_body(kind: str, dev: dict, now: float, rnd: random.Random):
    ids = {"deviceId": dev["device_id"], "patientId": dev["patient_id"]}
    if kind == "heartrate":
        return {"heartRate": str(rnd.randint(55, 110)), "endDate": iso(now), **ids}
    if kind == "bloodpressure":
        return {"systolic": str(rnd.randint(105, 140)), "diastolic": str(rnd.randint(65, 90)),
                "endDate": iso(now), **ids}
    if kind == "steps":
        whole = int(now)
        return [{"steps": rnd.randint(0, 900), "epochSeconds": whole - 60 * k, **ids} for k in range(3)]
    if kind == "bodyweight":
        return {"weightLbs": f"{rnd.uniform(120, 220):.1f}", "endDate": iso(now), **ids}
    if kind == "deviceWorn":
        return {"event": "worn", "endDate": iso(now), **ids}
    raise ValueError(f"unknown measurement type {kind!r}")


def is_bad(index: int, fraction: float) -> bool:
    """Whether message ``index`` (0-based) is one of the malformed ones: exactly
    ``floor(n * fraction)`` of the first ``n`` messages are, evenly spread."""
    return int((index + 1) * fraction) > int(index * fraction)


def live_messages(devices: int, seed: int = 7, bad_fraction: float = 0.0,
                  clock: Callable[[], float] = time.time) -> Iterator[SimulatedMessage]:
    """Endless messages, devices in turn, each from its kind's cycle, timestamped ``clock()``
    when generated (call it right before sending). ``bad_fraction`` of them are malformed."""
    if not 0.0 <= bad_fraction < 1.0:
        raise ValueError("bad fraction must be in [0, 1)")
    roster = simulated_devices(devices)
    rnd = random.Random(seed)
    cycles = {d["device_id"]: itertools.cycle(DEVICE_KINDS[d["kind"]]) for d in roster}
    for index in itertools.count():
        dev = roster[index % len(roster)]
        now = clock()
        if is_bad(index, bad_fraction):
            template = _BAD_BODIES[(index // 2) % 2]
            body = (template % dev["device_id"]) if "%s" in template else template
            mtype = MALFORMED
        else:
            mtype = next(cycles[dev["device_id"]])
            body = json.dumps(_live_body(mtype, dev, now, rnd), separators=(",", ":"))
        yield SimulatedMessage(
            body=body.encode("utf-8"),
            properties={"deviceId": dev["device_id"], "deviceKind": dev["kind"],
                        "measurementType": mtype, "iothub-creation-time-utc": iso(now)},
            key=dev["device_id"], measurement_type=mtype)


def scheduled_clock(rate: float, wall: Callable[[], float] = time.time) -> Callable[[], float]:
    """A clock for ``live_messages`` at a steady ``rate``: message ``i`` is stamped with its
    scheduled time, ``t0 + i / rate`` (``t0``: the first call's wall time), not the moment
    it was generated.

    Why: ``paced`` catches a stalled sender up with a burst (a loaded machine, a slow
    broker). Stamped with the generation time, a burst gives one device two readings in one
    second, and per-second Observation ids (the reference's) then merge them into one
    Observation: a soak counting readings saw that as readings lost. Scheduled stamps keep
    each device's readings ``devices / rate`` seconds apart, as a device measures them; the
    delay is the network's, as for a real device."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    state = {"t0": None, "i": 0}

    def clock() -> float:
        if state["t0"] is None:
            state["t0"] = wall()
        stamp = state["t0"] + state["i"] / rate
        state["i"] += 1
        return stamp
    return clock


def paced(messages: Iterable[SimulatedMessage], rate: Optional[float] = None,
          count: Optional[int] = None, duration: Optional[float] = None,
          clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep,
          tick: float = 0.1) -> Iterator[List[SimulatedMessage]]:
    """Batches of the messages due, at a steady ``rate`` per second (message ``i`` is due at
    ``start + i / rate``, so a slow send is caught up, not drifted), until ``count`` messages
    or ``duration`` seconds, whichever comes first (neither: until the caller stops).
    Without a rate, everything is sent as fast as the sender takes it."""
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    source = iter(messages)
    start = clock()
    sent = 0
    while True:
        now = clock()
        if duration is not None and now - start >= duration - 1e-9:
            return
        if count is not None and sent >= count:
            return
        # 1e-9: float noise must not hold back a message that is due exactly now
        due = (int((now - start) * rate + 1e-9) + 1) if rate is not None else sent + 500
        if count is not None:
            due = min(due, count)
        if due > sent:
            batch = list(itertools.islice(source, due - sent))
            if not batch:
                return
            sent += len(batch)
            yield batch
            continue
        wait = (sent / rate) - (now - start)
        if duration is not None:
            wait = min(wait, duration - (now - start))
        sleep(max(0.001, min(wait, tick)))


@dataclass
class SentCounts:
    """What was sent, by measurement type (``malformed`` for the bad ones)."""

    by_type: Dict[str, int] = field(default_factory=dict)

    def add(self, batch: Iterable[SimulatedMessage]) -> None:
        for m in batch:
            self.by_type[m.measurement_type] = self.by_type.get(m.measurement_type, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.by_type.values())

    def summary(self) -> str:
        """``sent total=N heartrate=.. ...``: counts only, never ids or bodies."""
        parts = [f"{k}={self.by_type[k]}" for k in (*MEASUREMENT_TYPES, MALFORMED) if k in self.by_type]
        return " ".join([f"sent total={self.total}", *parts])
