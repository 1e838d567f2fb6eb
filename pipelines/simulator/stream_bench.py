"""Issue 20's clinic-live benchmark: a steady Kafka load into ``iomt-fhir run`` on Flink
``[local]``, measured as a user would feel it: how long a reading takes from its send to being
readable on the FHIR server, whether any reading is lost, and how many versions of each open
Observation the server stores per hour.

Why these three: latency is what a clinician waits for, lost readings are what a hospital cannot
accept, and versions are what a real FHIR server keeps on disk forever (issue 17's history).

The mapping is the example's, as a user streams it, with one change so every reading stays
findable: heart rate is the hourly SampledData Observation of the example with one-second slots
(a device reads every ``devices / rate`` >= 1 s, so each reading has its own slot; the example's
one-minute slots would merge readings by design), every other type one Observation per reading
(``readings.fhir_mapping_text``). So the hourly Observation is updated at every early firing,
as in production, and its versions are counted.

- **Latency**: ``probes`` heart-rate devices' Observations are polled every 0.5 s (``ProbePoller``:
  found by search, read by id); a reading's latency is from its scheduled send time (the simulator stamps each message with it,
  ``devices.scheduled_clock``; a sender running late makes the figure larger, never smaller) to
  the first poll that shows its value in its slot.
- **Start-up apart**: every device sends once and is readable before the measured load
  (``first_contact_s``: its identity created), so the figures are a known clinic's steady state.
- **Lost**: after the drain, every Observation of every device is compared with what the pure
  mapping core makes of the topic's records (``transforms.mapping.offline``): a slot or a
  reading missing is lost.
- **Versions**: the probes' hourly Observations' ``_history``, per hour of the measured send.

Figures only, never a message body or an identifier, reach the output. Shares ``LocalStack``,
``StreamJob`` and ``kafka_watch`` with ``scripts/soak_stream`` (``stream_load``).
"""
from __future__ import annotations

import collections
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, NamedTuple, Optional, Tuple

import requests

from pipelines.simulator import kafka_watch
from pipelines.simulator.devices import simulated_devices
from pipelines.simulator.readings import device_ids, fhir_mapping_text, reading
from pipelines.simulator.stream_load import LocalStack, Sampler, _event, _log, start_live_run, warm_up

REPO = pathlib.Path(__file__).resolve().parents[2]
HEART_RATE = "heartrate"
#: the example mapping's heart-rate code: the probes poll only those Observations
HEART_RATE_CODE = "http://loinc.org|8867-4"


def bench_fhir_mapping_text() -> str:
    """``fhir_mapping_text`` with heart rate back to the example's hourly SampledData, in
    one-second slots (module docstring)."""
    example = json.loads((REPO / "templates" / "fhirmapping.json").read_text(encoding="utf-8"))
    mapping = json.loads(fhir_mapping_text())
    for entry, original in zip(mapping["template"], example["template"]):
        if entry["template"]["typeName"] == HEART_RATE:
            entry["template"] = dict(original["template"])
            entry["template"]["value"] = dict(original["template"]["value"], defaultPeriod=1000)
    return json.dumps(mapping)


def percentile(values: List[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))]


def slot_seconds(obs: dict) -> Dict[int, str]:
    """SampledData slot second -> value of one Observation (``E`` slots left out)."""
    from transforms.mapping import timeutil
    sd = obs["valueSampledData"]
    origin = timeutil.to_unix_seconds(timeutil.parse_iso(obs["effectivePeriod"]["start"]))
    return {int(round(origin + k * sd["period"] / 1000)): token
            for k, token in enumerate(sd.get("data", "").split()) if token != "E"}


def contents(observations: List[dict], device_of: Dict[str, str]) -> Tuple[collections.Counter, Dict]:
    """``(readings of the per-reading Observations, {(device, slot second): value} of the
    SampledData ones)``: what a set of Observations holds, independent of server ids."""
    plain, slots = collections.Counter(), {}
    for obs in observations:
        device = obs["device"]["reference"].split("/", 1)[1]
        device = device_of.get(device, device)
        if "valueSampledData" in obs:
            for second, value in slot_seconds(obs).items():
                slots[(device, second)] = value
        else:
            plain[reading(obs, device_of)] += 1
    return plain, slots


def _device_observations(session: requests.Session, base: str, resource_id: str, timeout: float,
                         code: Optional[str] = None) -> List[dict]:
    out, url = [], f"{base}/Observation"
    params = {"device": f"Device/{resource_id}", "_count": "1000", **({"code": code} if code else {})}
    while url:
        r = session.get(url, params=params, timeout=timeout)
        r.raise_for_status()
        bundle = r.json()
        out += [e["resource"] for e in bundle.get("entry") or []]
        url = next((link["url"] for link in bundle.get("link") or [] if link.get("relation") == "next"), None)
        params = None
    return out


def _all_observations(session: requests.Session, base: str, timeout: float) -> List[dict]:
    """Every Observation on the server, by ``_offset`` pages (the router gives no ``next``
    link): one search per device would be hundreds of searches over tens of thousands of
    Observations per count."""
    out: List[dict] = []
    while True:
        r = session.get(f"{base}/Observation", params={"_count": "1000", "_offset": str(len(out))},
                        timeout=timeout)
        r.raise_for_status()
        page = [e["resource"] for e in r.json().get("entry") or []]
        if not page:
            return out
        out += page


class ProbePoller(threading.Thread):
    """Every ``interval`` s, all probes at once (one thread each, so one slow answer delays only
    its own device): each probe's heart-rate Observations; the first time each (device, second,
    value) is seen. The poll's own delay is part of every latency figure: about half an interval
    plus one answer's time on average, one interval plus an answer at most.

    Why by id: a search costs the server a scan of what it stores (tens of thousands of
    Observations within a minute), and twenty a second slowed the job it measures. So a probe's
    hourly Observations are found by search every ``search_every`` s (a new hour's appears) and
    read by id in between."""

    def __init__(self, base: str, probes: Dict[str, str], interval: float = 0.5, search_every: float = 10.0):
        super().__init__(daemon=True)
        self.base, self.probes, self.interval, self.search_every = base, probes, interval, search_every
        self.first_seen: Dict[Tuple[str, int, str], float] = {}
        self.cycles: List[float] = []  # seconds per poll of all probes
        self.halt = threading.Event()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._known: Dict[str, List[str]] = {rid: [] for rid in probes}  # probe -> its Observation ids
        self._searched: Dict[str, float] = {rid: -math.inf for rid in probes}

    def _poll(self, resource_id: str, device: str) -> None:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        try:
            if time.monotonic() - self._searched[resource_id] >= self.search_every:
                found = _device_observations(session, self.base, resource_id, timeout=10, code=HEART_RATE_CODE)
                self._searched[resource_id] = time.monotonic()
                self._known[resource_id] = [o["id"] for o in found]
            else:
                found = []
                for oid in self._known[resource_id]:
                    r = session.get(f"{self.base}/Observation/{oid}", timeout=10)
                    r.raise_for_status()
                    found.append(r.json())
        except requests.RequestException:
            return  # a slow answer: the next poll sees it, later (the figure only grows)
        now = time.time()
        with self._lock:
            for obs in found:
                if "valueSampledData" in obs:
                    for second, value in slot_seconds(obs).items():
                        self.first_seen.setdefault((device, second, value), now)

    def run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=max(1, len(self.probes))) as pool:
            while not self.halt.wait(self.interval):
                cycle_started = time.monotonic()
                list(pool.map(lambda kv: self._poll(*kv), list(self.probes.items())))
                self.cycles.append(time.monotonic() - cycle_started)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=60)


def history_versions(base: str, observation_ids: List[str]) -> List[int]:
    session, out = requests.Session(), []
    for oid in observation_ids:
        r = session.get(f"{base}/Observation/{oid}/_history", params={"_count": "1000"}, timeout=30)
        r.raise_for_status()
        bundle = r.json()
        out.append(bundle.get("total") or len(bundle.get("entry") or []))
    return out


class Topic(NamedTuple):
    """What the pure core makes of the topic's records up to some ends: the readings the server
    must hold, and the exact send stamp of each probe reading measured for latency."""

    plain: collections.Counter
    slots: Dict[Tuple[str, int], str]
    send_time: Dict[Tuple[str, int], float]  # (probe device, slot second) -> its stamp, measured records only


def topic_readings(run, ends: Dict[int, int], watches: List[str],
                   measured_from: Optional[Dict[int, int]] = None) -> Topic:
    """Every record up to ``ends`` through ``transforms.mapping.offline``; ``send_time`` only for
    records at or after ``measured_from`` (the measured load, not the first-contact round)."""
    from transforms.mapping.device_templates import load_device_mapping
    from transforms.mapping.fhir_templates import load_fhir_mapping
    from transforms.mapping.offline import observations_for
    from transforms.mapping.timeutil import TICKS_PER_SECOND

    records = kafka_watch.read_topic(run.config, run.topic, ends, timeout=300)
    dmap, fmap = load_device_mapping(run.device_text), load_fhir_mapping(run.fhir_text)
    numbered, send_time = [], {}
    for n, record in enumerate(records):
        event = _event(run.topic, record)()
        measured = measured_from is not None and record.offset >= measured_from.get(record.partition, 0)
        for m in dmap.get_measurements(event.to_message(), event.ingestion_time):
            numbered.append((n, m))
            if measured and m.type == HEART_RATE and m.device_id in watches:
                stamp = m.occurrence_time / TICKS_PER_SECOND
                send_time[(m.device_id, int(stamp))] = stamp
    offline = [o for o, failure in observations_for(fmap, numbered) if failure is None]
    for o in offline:  # Create mode's ids stand for the offline ones: compare by device identifier
        o["device"] = {"reference": "Device/" + o["device"]["reference"].split("/", 1)[1]}
    plain, slots = contents(offline, {})
    return Topic(plain, slots, send_time)


def unreadable(base: str, want: Topic, device_of: Dict[str, str], session: requests.Session
               ) -> Tuple[int, int, List[dict]]:
    """``(lost, extra, the run's Observations)``: readings of ``want`` the server does not hold
    (a slot missing or with another value counts), and per-reading Observations it holds twice."""
    got = [o for o in _all_observations(session, base, 120)
           if (o.get("device") or {}).get("reference", "/").split("/", 1)[1] in device_of]
    got_plain, got_slots = contents(got, device_of)
    lost = (sum((want.plain - got_plain).values())
            + sum(1 for k, v in want.slots.items() if got_slots.get(k) != v))
    return lost, sum((got_plain - want.plain).values()), got


def wait_readable(base: str, want: Topic, device_of: Dict[str, str], timeout: float) -> Tuple[int, int, List[dict]]:
    """Polls ``unreadable`` every 2 s until nothing is lost or ``timeout`` s have passed."""
    session, deadline = requests.Session(), time.monotonic() + timeout
    while True:
        lost, extra, got = unreadable(base, want, device_of, session)
        if lost == 0 or time.monotonic() > deadline:
            return lost, extra, got
        time.sleep(2)


def run_bench(stack: LocalStack, rate: float, seconds: float, workdir: pathlib.Path, probes: int = 10,
              drain: float = 300.0, job_args: Optional[List[str]] = None) -> Dict[str, float]:
    """The job first (on an empty 2-partition topic, warmed up by one message), then a
    first-contact round (one message from each of the ``1.25 x rate`` devices, at ``rate``), timed
    until all of it is readable; then the measured load, ``rate`` msg/s for ``seconds``; then up to
    ``drain`` s for every reading to be readable. Returns the figures.

    Why the first-contact round: the first message of a device costs its identity (Device and
    Patient looked up and created on the server, Create mode) before its Observation, hundreds of
    devices at once for a job that just started. That is start-up, reported as ``first_contact_s``;
    the latency figures are the steady state of a clinic whose devices the server knows."""
    run = start_live_run(stack, workdir, rate, bench_fhir_mapping_text(), "bench", job_args=job_args)
    config, topic, group, system, devices = run.config, run.topic, run.group, run.system, run.devices
    simulator, job = run.simulator, run.job
    roster = simulated_devices(devices)
    device_of = device_ids([d["device_id"] for d in roster], system)
    watches = [d["device_id"] for d in roster if d["kind"] == "smartwatch"][:probes]
    probe_of = {rid: dev for rid, dev in device_of.items() if dev in watches}
    poller = sampler = None
    try:
        warm_up(run)
        _log(f"job reading; first contact: one message from each of {devices} devices at {rate:g} msg/s")
        contact_started = time.monotonic()
        subprocess.run([*simulator, "--rate", str(rate), "--count", str(devices)], check=True,
                       capture_output=True, timeout=600)
        warm_end = kafka_watch.end_offsets(config, topic)
        lost, _, _ = wait_readable(stack.fhir_url, topic_readings(run, warm_end, watches), device_of, drain)
        first_contact_s = time.monotonic() - contact_started
        if lost:
            raise RuntimeError(f"{lost} readings of the first-contact round never became readable")
        _log(f"first contact readable in {first_contact_s:.0f} s; sending {rate:g} msg/s for {seconds:g} s")
        poller, sampler = ProbePoller(stack.fhir_url, probe_of), Sampler(config, topic, group, job)
        poller.start()
        sampler.start()
        started, cpu_started = time.monotonic(), job.cpu_seconds()
        sender = subprocess.run([*simulator, "--rate", str(rate), "--duration", str(seconds)],
                                capture_output=True, text=True, timeout=seconds + 600)
        sent_seconds, job_cpu_s = time.monotonic() - started, job.cpu_seconds() - cpu_started
        if sender.returncode != 0:
            raise RuntimeError(f"the simulator failed: {sender.stderr[-500:]}")
        ends = kafka_watch.end_offsets(config, topic)
        sent = sum(ends.values()) - sum(warm_end.values())
        _log(f"sent {sent} in {sent_seconds:.0f} s; draining")
        want = topic_readings(run, ends, watches, measured_from=warm_end)
        drain_started = time.monotonic()
        lost, extra, got = wait_readable(stack.fhir_url, want, device_of, drain)
        drain_s = time.monotonic() - drain_started
    finally:
        for thread in (poller, sampler):
            if thread is not None:
                thread.stop()
        job.stop()
    # latency: from the reading's scheduled send (its own stamp) to the first poll showing it
    latencies = []
    for (device, second), sent_at in want.send_time.items():
        seen = poller.first_seen.get((device, second, want.slots.get((device, second))))
        latencies.append(seen - sent_at if seen is not None else math.inf)
    heart_ids = [o["id"] for o in got if "valueSampledData" in o and device_of.get(
        o["device"]["reference"].split("/", 1)[1]) in watches]
    versions = history_versions(stack.fhir_url, heart_ids) if heart_ids else []
    hours = sent_seconds / 3600.0
    return {"rate": sent / sent_seconds, "sent": sent, "devices": devices,
            "readings": sum(want.plain.values()) + len(want.slots), "lost": lost, "extra": extra,
            "p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95), "latency_n": len(latencies),
            "versions_per_observation_hour": (sum(versions) / len(versions) / hours) if versions else float("nan"),
            "lag_max": max(sampler.samples.lag, default=0), "drain_s": drain_s,
            "first_contact_s": first_contact_s, "job_cpu_s": job_cpu_s,
            "poll_cycle_s": percentile(poller.cycles, 0.5),
            "rss_max_mb": max(sampler.samples.rss_mb, default=0.0)}


def result_line(f: Dict[str, float]) -> str:
    return (f"rate={f['rate']:.0f} p95_latency_s={f['p95']:.2f} lost={f['lost']} "
            f"versions_per_observation_hour={f['versions_per_observation_hour']:.0f}")


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="bench_stream_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=500.0, help="messages per second (default 500)")
    p.add_argument("--duration", type=float, default=120.0, help="seconds of sending (default 120)")
    p.add_argument("--probes", type=int, default=10, help="heart-rate devices polled for latency (default 10)")
    p.add_argument("--drain", type=float, default=300.0, help="seconds allowed after the last send (default 300)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("job_args", nargs="*", help="extra 'iomt-fhir run' options (after --)")
    a = p.parse_args(argv)
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-stream-load-"))
    _log(f"work directory {workdir}")
    with LocalStack(workdir) as stack:
        f = run_bench(stack, a.rate, a.duration, workdir, probes=a.probes, drain=a.drain, job_args=a.job_args)
    print(f"sent={f['sent']} devices={f['devices']} readings={f['readings']} extra_or_twice={f['extra']} "
          f"p50_latency_s={f['p50']:.2f} latency_readings={f['latency_n']} poll_cycle_s={f['poll_cycle_s']:.2f} "
          f"lag_max={f['lag_max']} first_contact_s={f['first_contact_s']:.0f} job_cpu_s={f['job_cpu_s']:.0f} "
          f"drain_s={f['drain_s']:.0f} job_rss_max_mb={f['rss_max_mb']:.0f} "
          f"load_avg_1m={os.getloadavg()[0]:.1f} cpus={os.cpu_count()}")
    print(result_line(f))
    if not a.keep:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if f["lost"] == 0 and f["p95"] <= 10.0 else 1
