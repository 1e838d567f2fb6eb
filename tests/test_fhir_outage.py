"""Riding out a FHIR server outage (``--fhir-outage-seconds``): the server unreachable for
90 s in the middle of a backfill and of a stream -> no dead letters, every Observation
written once, memory bounded.

Both run at the same time (one 90 s wait for both), each behind its own fault proxy, which
closes its listening socket (connection refused) and resets open connections:

- the backfill is the real ``iomt-fhir run`` (FnApiRunner) in a subprocess; its outage starts
  after its 40th Device search, so identity lookups meet it;
- the stream is ``build()`` on BundleBasedDirectRunner --streaming reading the Pub/Sub
  emulator; its outage starts after the first Observation write, and more devices are
  published while the server is down.

Memory: the resident set of each pipeline's process is sampled every 0.25 s; the growth from
the start of the outage to its end is reported and bounded (the writer blocks instead of
buffering, and the runner then takes no new work).
"""
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import uuid

import apache_beam as beam
import pytest
import requests
from apache_beam.options.pipeline_options import PipelineOptions

from fault_proxy import FaultProxy
from pipelines.iomt_to_fhir import build
from pipelines.options import IomtFhirOptions
from pipeline_fixtures import DEVICE, FHIR, read_lines
from pubsub_fixtures import DEVICE_E2E, RUNNER, Capture, body, captured, run_until

pytestmark = [pytest.mark.fhir_server, pytest.mark.pubsub_emulator, pytest.mark.outage]

OUTAGE = 90.0
BACKFILL_DEVICES = 150
STREAM_BEFORE, STREAM_DURING = 6, 6
MAX_GROWTH_MB = 64


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class MemorySampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            mb = rss_mb(self.pid)
            if mb is not None:
                self.samples.append((time.monotonic(), mb))
            self.stop.wait(0.25)

    def growth(self, events):
        """MB from the last sample before the outage to the largest one during it."""
        (_, down, _), (_, up, _) = events
        before = [mb for t, mb in self.samples if t <= down]
        during = [mb for t, mb in self.samples if down < t <= up]
        assert before and during, "no memory samples around the outage"
        return before[-1], max(during) - before[-1]


def fhir_search(base, resource, **params):
    r = requests.get(f"{base}/{resource}", params=dict(params, _count="500"), timeout=10)
    r.raise_for_status()
    return [e["resource"] for e in r.json().get("entry", [])]


def observations_of(base, device_identifier):
    devices = fhir_search(base, "Device", identifier=device_identifier)
    if len(devices) != 1:
        return None
    return fhir_search(base, "Observation", device=f"Device/{devices[0]['id']}")


def start_backfill(tmp_path, proxy, unique):
    """The archive: BACKFILL_DEVICES devices, three readings each in one hour."""
    lines = [json.dumps({"hr": 60 + slot, "dev": f"bf-{unique}-{d}", "pat": f"bfp-{unique}-{d}",
                         "at": f"2026-03-01T10:{10 * slot:02d}:00Z"})
             for d in range(BACKFILL_DEVICES) for slot in range(3)]
    (tmp_path / "dm.json").write_text(DEVICE)
    (tmp_path / "fm.json").write_text(FHIR)
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    proxy.outage_after(40, OUTAGE, method="GET", path_contains="/Device?")
    cmd = [sys.executable, "-c", "import sys; from pipelines.cli import main; sys.exit(main())",
           "run", "--runner=FnApiRunner", f"--device-mapping={tmp_path / 'dm.json'}",
           f"--fhir-mapping={tmp_path / 'fm.json'}", f"--input={tmp_path / 'in.jsonl'}",
           f"--fhir-url={proxy.url}", "--identity-mode=Create", "--fhir-outage-seconds=300",
           f"--dead-letter={tmp_path / 'dead'}", "--single-file-outputs"]
    log = open(tmp_path / "backfill.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=os.getcwd())
    return proc, log


@pytest.mark.timeout(480)  # ~140 s idle: two 90 s outages ridden out
def test_outage_of_90s_mid_backfill_and_mid_stream(tmp_path, fhir_base_url, channel, unique):
    t0 = time.monotonic()
    backfill_proxy, stream_proxy = FaultProxy(fhir_base_url).start(), FaultProxy(fhir_base_url).start()
    proc = None
    try:
        proc, log = start_backfill(tmp_path, backfill_proxy, unique)
        backfill_mem = MemorySampler(proc.pid)
        backfill_mem.start()

        # ---- the stream -------------------------------------------------------------------
        hour = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
        at = hour.strftime("%Y-%m-%dT%H:%M:%SZ")
        before = [f"st-{unique}-a{n}" for n in range(STREAM_BEFORE)]
        during = [f"st-{unique}-b{n}" for n in range(STREAM_DURING)]
        for n, dev in enumerate(before):
            channel.publish(body(at, 70 + n, dev), patient=f"stp-{dev}")
        stream_proxy.outage_after(1, OUTAGE, body_contains=b'"resourceType": "Observation"')
        options = PipelineOptions(RUNNER + [
            f"--pubsub-subscription={channel.subscription}", f"--fhir-url={stream_proxy.url}",
            "--identity-mode=Create", "--early-firing-seconds=1", "--fhir-outage-seconds=300"])
        p = beam.Pipeline(options=options)
        out = build(p, options.view_as(IomtFhirOptions), DEVICE_E2E, FHIR, streaming=True)
        key = uuid.uuid4().hex
        out["dead_letter"] | "CaptureDead" >> beam.ParDo(Capture(key))
        stream_mem = MemorySampler(os.getpid())
        stream_mem.start()
        published = []

        def publish_during_outage():
            if not published and stream_proxy.events:
                for n, dev in enumerate(during):
                    channel.publish(body(at, 80 + n, dev), patient=f"stp-{dev}")
                published.append(time.monotonic())

        found = {}

        def stream_done():
            publish_during_outage()
            if len(stream_proxy.events) < 2:
                return False
            for dev in before + during:
                if dev not in found:
                    obs = observations_of(fhir_base_url, dev)
                    if not obs:
                        return False
                    found[dev] = obs
            return True

        run_until(p, channel, stream_done, timeout=OUTAGE + 60)
        stream_mem.stop.set()

        # ---- the backfill ends by itself ----------------------------------------------------
        rc = proc.wait(timeout=OUTAGE + 90)
        backfill_mem.stop.set()
        log.close()
        took = time.monotonic() - t0

        # the outages happened, in the middle of each run
        for proxy in (backfill_proxy, stream_proxy):
            (down, _, n_down), (up, _, n_up) = proxy.events
            assert (down, up) == ("down", "up") and n_down > 0
            assert len(proxy.log) > n_up, "no request after the server came back"
        assert published, "the stream's outage never started"
        # the backfill's outage interrupted identity lookups: the first request after it is one
        first_after = backfill_proxy.log[backfill_proxy.events[1][2]][1]
        assert first_after.startswith(("/fhir/Device", "/fhir/Patient")), first_after

        # stream: every device's one Observation, no dead letters
        assert captured(key) == []
        for n, dev in enumerate(before + during):
            (obs,) = found[dev]
            value = 70 + n if n < STREAM_BEFORE else 80 + n - STREAM_BEFORE
            assert obs["valueSampledData"]["data"].split()[0] == str(value)

        # backfill: exit 0, no dead letters, every Observation once with its three readings
        assert rc == 0, (tmp_path / "backfill.log").read_text()[-3000:]
        assert read_lines(tmp_path / "dead.jsonl") == []
        for d in range(BACKFILL_DEVICES):
            (obs,) = observations_of(fhir_base_url, f"bf-{unique}-{d}")
            assert obs["valueSampledData"]["data"] == "60 61 62 E E E"

        bf_before, bf_growth = backfill_mem.growth(backfill_proxy.events)
        st_before, st_growth = stream_mem.growth(stream_proxy.events)
        print(f"\noutage test: {took:.0f}s; backfill RSS {bf_before:.0f} MB, +{bf_growth:.1f} MB "
              f"during the outage; stream process RSS {st_before:.0f} MB, +{st_growth:.1f} MB")
        assert bf_growth < MAX_GROWTH_MB and st_growth < MAX_GROWTH_MB
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        backfill_proxy.stop()
        stream_proxy.stop()
