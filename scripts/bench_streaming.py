"""Benchmark: publish-to-readable latency of a live stream.

Pub/Sub emulator -> ``iomt-fhir run --runner=BundleBasedDirectRunner --streaming`` (a separate
process, exactly as a user starts it) -> the local FHIR server. Messages are published at a
steady rate with current event times (heart rate, ``--devices`` devices in turn, one reading
per device every ``devices / rate`` seconds); the mapping is the usual hourly SampledData
Observation (one-second slots), so every reading lands in its own slot of its device's
Observation. The server is polled (one search for all Observations every ``--poll`` s); a
message's latency is from just before its publish call to the first poll that shows its value
in its slot.

Baseline in the same run: a plain subscriber on a second subscription of the same topic,
its latency from the same publish time to its callback (the emulator's delivery floor).

Only the ``--duration`` s that start ``--warmup`` s after the first reading became readable are
measured: the runner's start-up (tens of seconds on a loaded machine) leaves a backlog that
would otherwise be counted as latency. The line before last gives the machine's load average:
the DirectRunner runs the whole pipeline on one thread, so a busy machine moves the figures.

Last line: ``p50_latency_s=<x> p95_latency_s=<y> msgs_per_s=<n>`` (``msgs_per_s``: measured
messages readable on the server per second of the measured period). Messages never readable within
``--drain`` s after the last publish are reported as ``unseen=N`` and count as infinitely late.
"""
import argparse
import datetime as dt
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import requests

from pipelines.simulator.stream_bench import percentile, slot_seconds
from transforms.mapping import identifiers

PROJECT = "iomt-bench-streaming"
DEVICE = json.dumps({"templateType": "CollectionContent", "template": [{
    "templateType": "JsonPathContent", "template": {
        "typeName": "heartrate", "typeMatchExpression": "$..[?(@hr)]", "deviceIdExpression": "$.dev",
        "patientIdExpression": "$.pat", "timestampExpression": "$.at",
        "values": [{"valueName": "hr", "valueExpression": "$.hr", "required": True}]}}]})
FHIR = json.dumps({"templateType": "CollectionFhir", "template": [{
    "templateType": "CodeValueFhir", "template": {
        "typeName": "heartrate", "periodInterval": 60,
        "codes": [{"code": "8867-4", "system": "http://loinc.org", "display": "Heart rate"}],
        "value": {"valueType": "SampledData", "valueName": "hr", "defaultPeriod": 1000, "unit": "bpm"}}}]})


class Readable:
    """Polls the server: which (device resource id, slot second) holds which value."""

    def __init__(self, base):
        self.base = base
        self.session = requests.Session()

    def slots(self):
        out = {}
        url, params = f"{self.base}/Observation", {"_count": "1000"}
        while url:
            bundle = self.session.get(url, params=params, timeout=30).json()
            for e in bundle.get("entry") or []:
                o = e["resource"]
                if not o.get("valueSampledData"):
                    continue
                dev = identifiers.reference_id((o.get("device") or {}).get("reference"), "Device")
                for second, token in slot_seconds(o).items():
                    out[(dev, second)] = token
            url = next((l["url"] for l in bundle.get("link") or [] if l.get("relation") == "next"), None)
            params = None
        return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fhir-url", required=True)
    p.add_argument("--emulator-host", required=True, help="PUBSUB_EMULATOR_HOST of a running emulator")
    p.add_argument("--rate", type=float, default=10.0, help="messages per second (steady)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of publishing (>= 60 for the figure)")
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--warmup", type=float, default=15.0,
                   help="seconds of publishing, after the first reading is readable, before measuring "
                        "(the pipeline's start-up backlog must not count)")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--drain", type=float, default=30.0)
    p.add_argument("--poll", type=float, default=0.25)
    p.add_argument("--runner", default="BundleBasedDirectRunner")
    p.add_argument("pipeline_args", nargs="*", help="extra 'iomt-fhir run' options (after --)")
    a = p.parse_args(argv)
    if a.devices / a.rate < 1.0:
        p.error("--devices / --rate must be >= 1 s (one reading per device per one-second slot)")
    os.environ["PUBSUB_EMULATOR_HOST"] = a.emulator_host
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    run = uuid.uuid4().hex[:8]
    topic = publisher.topic_path(PROJECT, f"bench-{run}")
    sub_pipeline = subscriber.subscription_path(PROJECT, f"bench-pipeline-{run}")
    sub_baseline = subscriber.subscription_path(PROJECT, f"bench-baseline-{run}")
    publisher.create_topic(name=topic, timeout=30)
    for s in (sub_pipeline, sub_baseline):
        subscriber.create_subscription(name=s, topic=topic, timeout=30)

    work = tempfile.mkdtemp(prefix="bench-streaming-")
    for name, text in (("dm.json", DEVICE), ("fm.json", FHIR)):
        with open(os.path.join(work, name), "w") as f:
            f.write(text)
    cmd = [os.path.join(os.path.dirname(sys.executable), "iomt-fhir"), "run", f"--runner={a.runner}", "--streaming",
           f"--device-mapping={work}/dm.json", f"--fhir-mapping={work}/fm.json",
           f"--pubsub-subscription={sub_pipeline}", f"--fhir-url={a.fhir_url}", "--identity-mode=Create",
           f"--dead-letter={work}/dead/dl"] + a.pipeline_args
    log = open(os.path.join(work, "pipeline.log"), "wb")
    pipeline = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    print(f"pipeline: {' '.join(cmd[1:])}", file=sys.stderr)

    published = {}  # seq -> (publish time, device resource id, slot second, value)
    baseline = {}
    lock = threading.Lock()

    def on_baseline(message):
        now = time.time()
        with lock:
            baseline.setdefault(int(message.attributes["seq"]), now)  # -1: traffic after the run
        message.ack()

    streaming = subscriber.subscribe(sub_baseline, callback=on_baseline)
    rnd = random.Random(7)
    seen = {}
    readable = Readable(a.fhir_url)
    stop_polling = threading.Event()

    def poll():
        while not stop_polling.is_set():
            try:
                slots = readable.slots()
            except requests.RequestException:
                slots = {}
            now = time.time()
            with lock:
                pending = [(s, v) for s, v in published.items() if s not in seen]
            for seq, (_, dev, second, value) in pending:
                if slots.get((dev, second)) == value:
                    seen[seq] = now
            stop_polling.wait(a.poll)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    start = time.time()
    measure_from = None  # the measured period starts --warmup s after the first reading is readable
    seq = 0
    try:
        while True:
            now = time.time()
            if measure_from is None and seen:
                measure_from = now + a.warmup
            if measure_from is None and now - start > a.startup_timeout:
                raise SystemExit(f"nothing readable after {a.startup_timeout:g} s; see {work}/pipeline.log")
            if measure_from is not None and now >= measure_from + a.duration:
                break
            due = start + seq / a.rate
            time.sleep(max(0.0, due - time.time()))
            if pipeline.poll() is not None:
                raise SystemExit(f"pipeline exited with {pipeline.returncode}; see {work}/pipeline.log")
            d = seq % a.devices
            dev, pat = f"bench-{run}-dev-{d:03d}", f"bench-{run}-pat-{d:03d}"
            now = time.time()
            second = int(now)
            value = str(rnd.randint(40, 199))
            body = {"hr": value, "dev": dev, "pat": pat,
                    "at": dt.datetime.fromtimestamp(second, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
            with lock:
                published[seq] = (now, identifiers.device_resource_id(dev), second, value)
            publisher.publish(topic, json.dumps(body).encode(), seq=str(seq))
            seq += 1
        total = seq
        end_publish = time.time()
        deadline = end_publish + a.drain
        while time.time() < deadline and len(seen) < total:
            # keep traffic flowing: the DirectRunner's Pub/Sub read blocks its worker (and its
            # timers) for up to 30 s on an empty subscription; a live stream never goes quiet
            publisher.publish(topic, b"{}", seq="-1")  # matches no template
            time.sleep(0.5)
    finally:
        stop_polling.set()
        poller.join(timeout=30)
        streaming.cancel()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pipeline.pid, sig)
                pipeline.wait(timeout=30)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
        if not seen:
            with open(os.path.join(work, "pipeline.log"), errors="replace") as f:
                print("pipeline log tail:\n" + "".join(f.readlines()[-15:]), file=sys.stderr)
        try:
            subscriber.delete_subscription(subscription=sub_pipeline, timeout=30)
            subscriber.delete_subscription(subscription=sub_baseline, timeout=30)
            publisher.delete_topic(topic=topic, timeout=30)
        except Exception:  # the emulator may already be gone; the figures are what matters
            pass

    measured = [s for s in range(total) if published[s][0] >= measure_from]
    latencies = [seen[s] - published[s][0] if s in seen else math.inf for s in measured]
    base = [baseline[s] - published[s][0] for s in measured if s in baseline]
    unseen = sum(1 for s in measured if s not in seen)
    readable_n = len(measured) - unseen
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    b50, b95 = percentile(base, 0.5), percentile(base, 0.95)
    thirds = [latencies[i * len(latencies) // 3:(i + 1) * len(latencies) // 3] for i in range(3)]
    print("p50 by third of the run: " + " ".join(f"{percentile(t, 0.5):.2f}" for t in thirds))
    print(f"measured={len(measured)} unseen={unseen} max_latency_s={max(latencies, default=float('nan')):.2f} "
          f"startup_s={measure_from - a.warmup - start:.1f} rate={a.rate:g} devices={a.devices} "
          f"load_avg_1m={os.getloadavg()[0]:.1f}")
    print(f"baseline (plain subscriber): p50_latency_s={b50:.3f} p95_latency_s={b95:.3f}; "
          f"ratio p95 pipeline/baseline={p95 / b95 if b95 else float('nan'):.0f}")
    print(f"p50_latency_s={p50:.2f} p95_latency_s={p95:.2f} msgs_per_s={readable_n / a.duration:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
