"""The stream load benchmark's accounting (``pipelines.simulator.stream_bench``), without a job:
its mapping keeps every simulated reading findable, and ``contents`` counts what a set of
Observations holds, so a lost slot or reading shows."""
import json
import math

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
