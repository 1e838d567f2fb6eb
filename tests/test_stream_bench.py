"""The stream load benchmark's accounting (``pipelines.simulator.stream_bench``), without a job:
its mapping keeps every simulated reading findable, and ``contents`` counts what a set of
Observations holds, so a lost slot or reading shows."""
import json
import math
import time

import pytest
import requests

from pipelines.simulator import devices as simulator
from pipelines.simulator import stream_bench
from transforms.mapping.device_templates import load_device_mapping
from transforms.mapping.fhir_templates import load_fhir_mapping
from transforms.mapping.offline import observations_for

from conftest import REPO


def _offline(messages, fhir_text):
    dmap = load_device_mapping((REPO / "templates" / "devicecontent.json").read_text())
    numbered = [(n, m) for n, msg in enumerate(messages)
                for m in dmap.get_measurements({"Body": json.loads(msg.body), "Properties": msg.properties,
                                                "SystemProperties": {}}, None)]
    return [o for o, failure in observations_for(load_fhir_mapping(fhir_text), numbered) if failure is None]


def test_heart_rate_is_the_examples_hourly_sampled_data_in_one_second_slots():
    mapping = json.loads(stream_bench.bench_fhir_mapping_text())
    by_type = {e["template"]["typeName"]: e["template"] for e in mapping["template"]}
    assert by_type["heartrate"]["periodInterval"] == 60
    assert by_type["heartrate"]["value"] == {"valueType": "SampledData", "valueName": "hr",
                                             "defaultPeriod": 1000, "unit": "count/min"}
    assert all(t["periodInterval"] == 0 for name, t in by_type.items() if name != "heartrate")


def test_every_simulated_reading_is_counted_once_and_a_missing_slot_shows():
    wall = [1_800_000_000.0]
    clock = simulator.scheduled_clock(8.0, wall=lambda: wall[0])  # 10 devices at 8 msg/s: 1.25 s apart
    messages = [next(it) for it in [simulator.live_messages(10, clock=clock)] for _ in range(400)]
    heart = sum(1 for m in messages if m.measurement_type == "heartrate")
    offline = _offline(messages, stream_bench.bench_fhir_mapping_text())
    plain, slots = stream_bench.contents(offline, {})
    assert len(slots) == heart  # no two readings of a device in one slot
    assert sum(plain.values()) > 0
    hourly = next(o for o in offline if "valueSampledData" in o)
    tokens = hourly["valueSampledData"]["data"].split()
    k = next(i for i, t in enumerate(tokens) if t != "E")
    tokens[k] = "E"
    damaged = [dict(hourly, valueSampledData=dict(hourly["valueSampledData"], data=" ".join(tokens)))]
    _, fewer = stream_bench.contents(damaged + [o for o in offline if o is not hourly], {})
    assert len(slots) - len(fewer) == 1


def test_percentile_counts_a_reading_never_seen_as_infinitely_late():
    assert stream_bench.percentile([1.0, 2.0, 3.0, math.inf], 0.5) == 2.0
    assert stream_bench.percentile([1.0] * 19 + [math.inf], 0.95) == 1.0
    assert stream_bench.percentile([1.0] * 18 + [math.inf] * 2, 0.95) == math.inf
    assert math.isnan(stream_bench.percentile([], 0.5))


def _hourly(oid: str, device: str, data: str) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "device": {"reference": f"Device/{device}"},
            "effectivePeriod": {"start": "2026-12-04T10:00:00Z", "end": "2026-12-04T10:59:59.9999999Z"},
            "valueSampledData": {"origin": {"value": 0}, "period": 1000, "dimensions": 1, "data": data}}


@pytest.mark.fhir_server
@pytest.mark.timeout(60)
def test_probe_poller_finds_by_search_then_follows_by_id(empty_fhir_base_url):
    """Found by search once, read by id after: a slot written later is still seen, and an
    Observation of another code (not the probe's heart rate) is not polled."""
    base = empty_fhir_base_url
    session = requests.Session()

    def put(resource):
        session.put(f"{base}/Observation/{resource['id']}", json=resource,
                    headers={"content-type": "application/fhir+json"}, timeout=10).raise_for_status()

    put(_hourly("hr-1", "watch-1", "71 E E"))
    other = dict(_hourly("spo2-1", "watch-1", "97"), code={"coding": [{"system": "http://loinc.org", "code": "59408-5"}]})
    put(other)
    start = 1_796_378_400  # 2026-12-04T10:00:00Z
    poller = stream_bench.ProbePoller(base, {"watch-1": "dev-1"}, interval=0.05, search_every=3600)
    poller.start()
    try:
        deadline = time.monotonic() + 20
        while ("dev-1", start, "71") not in poller.first_seen and time.monotonic() < deadline:
            time.sleep(0.05)
        put(_hourly("hr-1", "watch-1", "71 E 73"))
        while ("dev-1", start + 2, "73") not in poller.first_seen and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        poller.stop()
    assert ("dev-1", start, "71") in poller.first_seen
    assert ("dev-1", start + 2, "73") in poller.first_seen  # the by-id read saw the later write
    assert not [k for k in poller.first_seen if k[2] == "97"]
    assert poller._known == {"watch-1": ["hr-1"]}
