"""A live stream accounted for, end to end: ``scripts/simulate_devices.py --to pubsub`` publishes
N messages at a steady rate (some malformed) to Google's Pub/Sub emulator; the main job's
streaming pipeline (``build``, BundleBasedDirectRunner --streaming) writes to the local FHIR
server. Every message is an Observation's reading on the server or a dead letter, none twice,
no reading lost.

What was sent is known from an audit subscription on the same topic (every message, with the
ids Pub/Sub gave it); what it should become is computed by the pure mapping core offline
(``transforms.mapping.offline``) and compared with what the server holds.
"""
import collections
import subprocess
import sys
import time
import uuid

import apache_beam as beam
import pytest
import requests
from apache_beam.options.pipeline_options import PipelineOptions

from conftest import REPO
from pipelines.iomt_to_fhir import build
from pipelines.options import IomtFhirOptions
from pipelines.simulator.readings import fhir_mapping_text, reading
from pubsub_fixtures import RUNNER, WAKE, Capture, captured, run_until
from transforms.mapping import identifiers
from transforms.mapping.device_templates import load_device_mapping
from transforms.mapping.fhir_templates import load_fhir_mapping
from transforms.mapping.offline import observations_for
from transforms.sources.device_events import _pubsub_event

pytestmark = [pytest.mark.pubsub_emulator, pytest.mark.fhir_server, pytest.mark.both_fhir_servers]

DEVICES, COUNT, RATE, BAD = 10, 40, 8.0, 0.1  # one message per device every 1.25 s: distinct seconds


@pytest.mark.timeout(240)  # ~13 s idle, plus the emulator's start (up to 60 s)
def test_simulated_stream_every_message_is_an_observation_or_a_dead_letter(
        channel, pubsub_emulator, fhir_base_url, unique, tmp_path):
    from google.cloud import pubsub_v1
    system = f"urn:e2e:{unique}"  # this test's Devices, apart from other tests' device-000...
    audit = channel.subscriber.subscription_path(pubsub_emulator.project, f"audit-{unique}")
    channel.subscriber.create_subscription(name=audit, topic=channel.topic, timeout=10)
    device_text = (REPO / "templates" / "devicecontent.json").read_text()
    fhir_text = fhir_mapping_text()

    options = PipelineOptions(RUNNER + [
        f"--pubsub-subscription={channel.subscription}", f"--fhir-url={fhir_base_url}", "--identity-mode=Create",
        f"--device-identifier-system={system}", "--early-firing-seconds=1"])
    p = beam.Pipeline(options=options)
    out = build(p, options.view_as(IomtFhirOptions), device_text, fhir_text, streaming=True)
    key = uuid.uuid4().hex
    out["dead_letter"] | "CaptureDead" >> beam.ParDo(Capture(key))

    started = time.monotonic()
    simulator = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "simulate_devices.py"), "--to", "pubsub", "--pubsub-topic",
         channel.topic, "--devices", str(DEVICES), "--rate", str(RATE), "--count", str(COUNT), "--bad", str(BAD)],
        stderr=subprocess.PIPE, text=True)
    device_ids = [f"device-{d:03d}" for d in range(DEVICES)]
    device_of = {identifiers.device_resource_id(d, system): d for d in device_ids}

    def on_server():
        found = []
        for resource_id in device_of:
            # no-cache: HAPI answers a search repeated within a minute from its cache
            r = requests.get(f"{fhir_base_url}/Observation", params={"device": f"Device/{resource_id}",
                                                                      "_count": "500"},
                             headers={"Cache-Control": "no-cache"}, timeout=10)
            r.raise_for_status()
            found += [e["resource"] for e in r.json().get("entry", [])]
        return found

    expected = {}

    def done():
        if simulator.poll() is None:
            return False
        if not expected:
            expected.update(audited(channel.subscriber, audit))
        bad = sum(1 for _, measurements in expected.values() if measurements is None)
        good = sum(len(ms) for _, ms in expected.values() if ms)
        return len(captured(key)) >= bad and len(on_server()) >= good

    run_until(p, channel, done, timeout=60)
    elapsed = time.monotonic() - started
    err = simulator.stderr.read()
    assert simulator.returncode == 0, err
    assert f"sent total={COUNT}" in err and f"malformed={int(COUNT * BAD)}" in err, err

    # Exactly the N messages were sent (the audit saw each once).
    assert len(expected) == COUNT

    # Offline oracle: what each good message should become.
    device_mapping, fhir_mapping = load_device_mapping(device_text), load_fhir_mapping(fhir_text)
    assert device_mapping.valid and fhir_mapping.valid
    numbered = [(n, m) for n, (_, ms) in enumerate(expected.values()) if ms for m in ms]
    offline = list(observations_for(fhir_mapping, numbered))
    assert all(failure is None for _, failure in offline)
    want = collections.Counter(reading(dict(o, device={"reference": "Device/" + o["device"]["reference"]
                                                        .split("/", 1)[1]}), {}) for o, _ in offline)
    got = collections.Counter(reading(o, device_of) for o in on_server())
    assert got == want, (f"{sum((want - got).values())} readings lost, e.g. {list(want - got)[:2]}; "
                         f"{sum((got - want).values())} extra or duplicated, e.g. {list(got - want)[:2]}")
    assert all(n == 1 for n in got.values())  # no reading twice

    # The malformed ones are dead letters, each once, with the message they came from.
    dead = collections.Counter(r["payload"]["system_properties"]["message_id"] for r, _ in captured(key))
    bad_ids = {mid for mid, (_, ms) in expected.items() if ms is None}
    assert dead == collections.Counter(bad_ids) and len(bad_ids) == int(COUNT * BAD)
    assert {(r["stage"], r["error_type"]) for r, _ in captured(key)} <= {
        ("normalization", "InvalidDataFormatException"), ("normalization", "IncompatibleDataException")}
    print(f"e2e: {COUNT} messages, {sum(want.values())} readings, {len(bad_ids)} dead letters in {elapsed:.1f}s")


def audited(subscriber, audit):
    """message id -> (message, measurements or None when normalization fails), for every message
    the simulator published (the wake messages of ``run_until`` left out)."""
    mapping = load_device_mapping((REPO / "templates" / "devicecontent.json").read_text())
    out = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = subscriber.pull(subscription=audit, max_messages=100, timeout=5)
        if not response.received_messages:
            break
        subscriber.acknowledge(subscription=audit, ack_ids=[r.ack_id for r in response.received_messages])
        for r in response.received_messages:
            if WAKE in r.message.attributes:
                continue
            event = _pubsub_event(r.message)
            try:
                measurements = mapping.get_measurements(event.to_message(), event.ingestion_time)
            except Exception:  # the pipeline dead-letters these; which type is checked above
                measurements = None
            assert r.message.message_id not in out, "the emulator delivered a message twice to the audit"
            out[r.message.message_id] = (r.message, measurements)
    return out
