"""``ReadDeviceEvents(pubsub_subscription=...)`` on Google's real Pub/Sub emulator, run by
BundleBasedDirectRunner --streaming (the runner Beam's Pub/Sub read supports offline).

Each test runs its streaming pipeline with ``run_until`` on a ``channel`` (tests/pubsub_fixtures.py),
which wakes the runner's blocking pull with small "wake" messages; those match no template
and are left out of the checks.
"""
import datetime as dt
import json
import re
import uuid

import apache_beam as beam
import pytest
import requests
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.iomt_to_fhir import build
from pipelines.options import IomtFhirOptions
from pipeline_fixtures import FHIR  # the same heart-rate SampledData mapping
from pubsub_fixtures import DEVICE_E2E, RUNNER, WAKE, Capture, body, captured, run_until
from transforms.records.dead_letter import STAGE_NORMALIZATION
from transforms.records.device_event import DeviceEvent
from transforms.mapping import timeutil
from transforms.normalize import Normalize
from transforms.sources.device_events import ReadDeviceEvents

pytestmark = pytest.mark.pubsub_emulator

# Templates see Pub/Sub attributes as Properties and message id / publish time as SystemProperties.
DEVICE = json.dumps({"templateType": "CollectionContent", "template": [{
    "templateType": "CalculatedContent", "template": {
        "typeName": "heartrate", "typeMatchExpression": "$..[?(@hr)]",
        "deviceIdExpression": "$.matchedToken.dev", "patientIdExpression": "$.Properties.patient",
        "correlationIdExpression": "$.SystemProperties.message_id",
        "timestampExpression": "$.matchedToken.at",
        "values": [{"valueName": "hr", "valueExpression": "$.matchedToken.hr", "required": True}]}}]})
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def not_wake(items):
    return [(e, ts) for e, ts in items if WAKE not in (e.properties or {})]


def test_messages_become_device_events_and_measurements_malformed_ones_dead_letter(channel):
    key = uuid.uuid4().hex
    published = []  # (message id, data, attributes)
    before = dt.datetime.now(dt.timezone.utc)
    for data, attrs in ((body("2026-03-01T10:00:00Z", 60, "ps-d1"), {"patient": "ps-p1", "site": "ward 3"}),
                        (b"{broken", {"patient": "ps-p1"}),
                        (body("2026-03-01T10:12:00+01:00", 61.0, "ps-d1"), {"patient": "ps-p1"}),
                        ("\u00fcber".encode("latin-1"), {}),  # not UTF-8
                        (body("2026-03-01T10:05:00.5Z", 70, "ps-d2"), {"patient": "ps-p2"})):
        published.append((channel.publish(data, **attrs), data, attrs))
    after = dt.datetime.now(dt.timezone.utc)

    p = beam.Pipeline(options=PipelineOptions(RUNNER))
    events = (p | "Read" >> ReadDeviceEvents(pubsub_subscription=channel.subscription))["events"]
    events | "CaptureEvents" >> beam.ParDo(Capture(key + "events"))
    normalized = events | "Normalize" >> Normalize(DEVICE)
    normalized.measurements | "CaptureMeasurements" >> beam.ParDo(Capture(key + "measurements"))
    normalized.dead_letter | "CaptureDead" >> beam.ParDo(Capture(key + "dead"))
    run_until(p, channel, lambda: (len(not_wake(captured(key + "events"))) >= 5
                                   and len(captured(key + "measurements")) >= 3
                                   and len(captured(key + "dead")) >= 2))

    # Every message exactly once, as a DeviceEvent carrying the Pub/Sub metadata.
    events = {e.system_properties["message_id"]: (e, ts) for e, ts in not_wake(captured(key + "events"))}
    assert len(not_wake(captured(key + "events"))) == len(events) == 5
    assert sorted(events) == sorted(mid for mid, _, _ in published)
    for mid, data, attrs in published:
        event, ts = events[mid]
        assert isinstance(event, DeviceEvent) and not event.is_envelope
        assert event.body == data
        assert event.properties == attrs
        assert set(event.system_properties) == {"message_id", "publish_time"}
        publish_time = event.system_properties["publish_time"]
        assert ISO_Z.match(publish_time)
        parsed = dt.datetime.strptime(publish_time, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
        assert before - dt.timedelta(seconds=2) <= parsed <= after + dt.timedelta(seconds=2)
        assert event.ingestion_time == timeutil.parse_iso(publish_time)
        assert ts.micros == event.ingestion_time // 10  # the element's timestamp is the publish time

    # Measurements: values from the body, patient from an attribute, correlation id the message id,
    # IngestionTimeUtc the publish time; each timestamped at its occurrence time.
    ids = [mid for mid, _, _ in published]
    ingest = {mid: timeutil.format_trimmed(events[mid][0].ingestion_time) for mid in ids}
    got = sorted((m.to_json() for m, _ in captured(key + "measurements")), key=lambda j: j["OccurrenceTimeUtc"])
    assert got == [
        {"Type": "heartrate", "OccurrenceTimeUtc": "2026-03-01T09:12:00Z", "IngestionTimeUtc": ingest[ids[2]],
         "DeviceId": "ps-d1", "PatientId": "ps-p1", "EncounterId": None, "CorrelationId": ids[2],
         "Properties": [{"Name": "hr", "Value": "61"}]},
        {"Type": "heartrate", "OccurrenceTimeUtc": "2026-03-01T10:00:00Z", "IngestionTimeUtc": ingest[ids[0]],
         "DeviceId": "ps-d1", "PatientId": "ps-p1", "EncounterId": None, "CorrelationId": ids[0],
         "Properties": [{"Name": "hr", "Value": "60"}]},
        {"Type": "heartrate", "OccurrenceTimeUtc": "2026-03-01T10:05:00.5Z", "IngestionTimeUtc": ingest[ids[4]],
         "DeviceId": "ps-d2", "PatientId": "ps-p2", "EncounterId": None, "CorrelationId": ids[4],
         "Properties": [{"Name": "hr", "Value": "70"}]}]
    for m, ts in captured(key + "measurements"):
        assert ts.micros == m.occurrence_time // 10

    # The malformed messages went to the dead letter, whole, and the others went on.
    dead = {r["payload"]["system_properties"]["message_id"]: r for r, _ in captured(key + "dead")}
    assert sorted(dead) == sorted([ids[1], ids[3]])
    assert {(r["stage"], r["error_type"]) for r in dead.values()} == {
        (STAGE_NORMALIZATION, "InvalidDataFormatException")}
    assert dead[ids[1]]["payload"] == {"body": "{broken", "properties": {"patient": "ps-p1"},
                                       "system_properties": events[ids[1]][0].system_properties,
                                       "ingestion_time": events[ids[1]][0].ingestion_time, "is_envelope": False}
    assert dead[ids[3]]["payload"]["body"] == "\u00fcber".encode("latin-1").hex()  # not UTF-8: kept as hex
    json.dumps(dead)  # the records stay JSON-serializable for the dead-letter files


@pytest.mark.fhir_server
def test_stream_from_pubsub_to_fhir_server(channel, fhir_base_url, unique):
    """Pub/Sub -> the main job's pipeline (build) -> the local FHIR server, with early firings."""
    key = uuid.uuid4().hex
    device, patient = f"ps-dev-{unique}", f"ps-pat-{unique}"
    hour = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    at = hour.strftime("%Y-%m-%dT%H:%M:%SZ")  # current hour: the window is still open, early firing writes it
    channel.publish(body(at, 77, device), patient=patient)
    channel.publish(b"{broken", patient=patient)

    options = PipelineOptions(RUNNER + [
        f"--pubsub-subscription={channel.subscription}", f"--fhir-url={fhir_base_url}",
        "--identity-mode=Create", "--early-firing-seconds=1"])
    opts = options.view_as(IomtFhirOptions)
    p = beam.Pipeline(options=options)
    out = build(p, opts, DEVICE_E2E, FHIR, streaming=True)
    out["dead_letter"] | "CaptureDead" >> beam.ParDo(Capture(key + "dead"))

    def fhir_search(resource, **params):
        r = requests.get(f"{fhir_base_url}/{resource}", params=params, timeout=10)
        r.raise_for_status()
        return [e["resource"] for e in r.json().get("entry", [])]

    observations = []

    def written():
        devices = fhir_search("Device", identifier=device)
        if devices:
            observations[:] = fhir_search("Observation", device=f"Device/{devices[0]['id']}")
        return bool(observations) and bool(captured(key + "dead"))

    run_until(p, channel, written)

    assert len(observations) == 1, "the Observation did not reach the FHIR server"
    (obs,) = observations
    assert obs["valueSampledData"]["data"] == "77 E E E E E"
    assert obs["effectivePeriod"]["start"].startswith(hour.strftime("%Y-%m-%dT%H:00:00"))
    (pat,) = fhir_search("Patient", identifier=patient)  # the patient came from the message's attribute
    assert obs["subject"]["reference"] == f"Patient/{pat['id']}"
    assert [(r["stage"], r["error_type"], r["payload"]["body"]) for r, _ in captured(key + "dead")] == [
        (STAGE_NORMALIZATION, "InvalidDataFormatException", "{broken")]
