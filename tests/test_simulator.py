"""The simulator's roster, generators and pacer (pure; no sender, no service), and
``scripts/simulate_devices.py`` writing files."""
import json
import pathlib
import subprocess
import sys
import time
from fractions import Fraction

import pytest

from pipelines.simulator import devices as simulator
from transforms.mapping.device_templates import envelope, load_device_mapping

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "simulate_devices.py"
MAPPING = load_device_mapping(str(REPO / "templates" / "devicecontent.json")).ensure_valid()


def measurements(message):
    return MAPPING.get_measurements(envelope(json.loads(message.body), message.properties))


def test_roster_is_what_the_messages_carry():
    roster = simulator.simulated_devices(4)
    assert roster == [
        {"device_id": "device-000", "patient_id": "patient-000", "encounter_id": None, "kind": "smartwatch"},
        {"device_id": "device-001", "patient_id": "patient-001", "encounter_id": None, "kind": "bp-monitor"},
        {"device_id": "device-002", "patient_id": "patient-002", "encounter_id": None, "kind": "scale"},
        {"device_id": "device-003", "patient_id": "patient-003", "encounter_id": None, "kind": "smartwatch"},
    ]
    sent = {(m.device_id, m.patient_id)
            for msg in _take(simulator.live_messages(4), 200) for m in measurements(msg)}
    assert sent == {(d["device_id"], d["patient_id"]) for d in roster}
    archive = {(m["deviceId"], m["patientId"]) for line in simulator.archive_lines(4, 60, "2026-01-05T08:00:00Z", 7)
               for m in (lambda v: v if isinstance(v, list) else [v])(json.loads(line))}
    assert archive == sent
    with pytest.raises(ValueError):
        simulator.simulated_devices(0)


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_live_messages_every_kind_of_the_templates_with_current_times_and_properties():
    now = [1_800_000_000.25]
    messages = _take(simulator.live_messages(3, clock=lambda: now[0]), 60)
    types = {}
    for message in messages:
        found = measurements(message)
        assert found, message.measurement_type
        assert {m.type for m in found} == {message.measurement_type}
        assert all(m.device_id == message.key == message.properties["deviceId"] for m in found)
        types[message.measurement_type] = types.get(message.measurement_type, 0) + 1
        assert message.properties["iothub-creation-time-utc"] == "2027-01-15T08:00:00.250Z"
        assert message.properties["deviceKind"] in simulator.DEVICE_KINDS
    assert set(types) == set(simulator.MEASUREMENT_TYPES)
    heartrate = next(m for m in messages if m.measurement_type == "heartrate")
    assert json.loads(heartrate.body)["endDate"] == "2027-01-15T08:00:00.250Z"
    # devices in turn; each kind sends only its own readings
    assert [m.properties["deviceKind"] for m in messages[:3]] == ["smartwatch", "bp-monitor", "scale"]
    assert {m.measurement_type for m in messages if m.properties["deviceKind"] == "scale"} == {"bodyweight"}


def test_bad_fraction_is_exact_and_spread():
    assert sum(simulator.is_bad(i, 0.1) for i in range(1000)) == 100
    assert sum(simulator.is_bad(i, Fraction(7, 50)) for i in range(50)) == 7
    messages = _take(simulator.live_messages(3, bad_fraction=0.25), 100)
    bad = [m for m in messages if m.measurement_type == simulator.MALFORMED]
    assert len(bad) == 25
    for m in bad:
        try:
            parsed = json.loads(m.body)
        except ValueError:
            continue  # not JSON at all
        assert parsed["endDate"] == "not-a-date"
    assert {m.body[:1] for m in bad} == {b"{"} and len({m.body for m in bad}) > 1
    with pytest.raises(ValueError):
        next(simulator.live_messages(3, bad_fraction=1.0))


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds > 0
        self.now += seconds


def test_paced_is_steady_and_stops_at_count_or_duration():
    clock = FakeClock()
    sent_at = []
    for batch in simulator.paced(iter(range(10_000)), rate=20, count=50, clock=clock, sleep=clock.sleep):
        sent_at += [clock.now] * len(batch)
    assert len(sent_at) == 50
    # message i no earlier than i / rate; the whole run as long as the rate says (49 / 20 s)
    assert all(at - 100.0 >= i / 20 - 1e-9 for i, at in enumerate(sent_at))
    assert sent_at[-1] - 100.0 == pytest.approx(49 / 20, abs=0.11)

    clock = FakeClock()
    total = sum(len(b) for b in simulator.paced(iter(range(10_000)), rate=10, duration=3,
                                               clock=clock, sleep=clock.sleep))
    assert total == 30
    assert sum(len(b) for b in simulator.paced(iter(range(7)), count=100)) == 7  # source runs dry
    with pytest.raises(ValueError):
        next(simulator.paced(iter(range(3)), rate=0))


def test_counts_summary_names_types_only():
    counts = simulator.SentCounts()
    counts.add(_take(simulator.live_messages(3, bad_fraction=0.1), 40))
    text = counts.summary()
    assert text.startswith("sent total=40 heartrate=")
    assert "malformed=4" in text and "device-" not in text and "patient-" not in text


def test_archive_output_unchanged(tmp_path):
    """The demo's sample is the archive with --bad 2: same arguments, same bytes."""
    out = tmp_path / "messages.jsonl"
    subprocess.run([sys.executable, str(SCRIPT), "--bad", "2", "--output", str(out)], check=True)
    assert out.read_bytes() == (REPO / "templates" / "sample" / "messages.jsonl").read_bytes()


def test_script_live_to_file_envelopes_at_a_rate(tmp_path):
    out = tmp_path / "live.jsonl"
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(SCRIPT), "--to", "file", "--output", str(out), "--envelope",
                           "--devices", "3", "--rate", "40", "--count", "20", "--bad", "2"],
                          check=True, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 20 and elapsed >= 19 / 40
    assert sum(1 for e in lines if e["Properties"]["measurementType"] == "malformed") == 2
    assert "sent total=20" in done.stderr and "malformed=2" in done.stderr
    assert "device-" not in done.stderr
    good = [e for e in lines if e["Properties"]["measurementType"] != "malformed"]
    assert all(MAPPING.get_measurements(envelope(e["Body"], e["Properties"])) for e in good)


@pytest.mark.parametrize("args, message", [
    (["--bad", "0.5"], "whole count"),
    (["--rate", "5", "--duration", "1", "--bad", "3"], "needs --count"),
    (["--to", "pubsub", "--count", "1"], "--pubsub-topic"),
    (["--to", "kafka", "--count", "1", "--kafka-topic", "t", "--kafka-config", "sasl.password=x"],
     "never options"),
])
def test_script_refuses_bad_arguments(args, message):
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr


def test_a_stalled_sender_catching_up_keeps_each_devices_readings_a_period_apart():
    """A sender that stalls 3 s then bursts: with generation-time stamps a device gets two
    readings in one second (merged into one per-second Observation, counted as lost by a
    soak); scheduled stamps keep them devices / rate seconds apart."""
    wall = FakeClock()
    wall.now = 1_800_000_000.0
    devices, rate = 5, 4.0

    def seconds_per_device(clock):
        seen = {}
        messages = simulator.live_messages(devices, clock=clock)
        for n in range(40):
            if n == 8:
                wall.now += 3.0  # the stall; then the next messages are generated in a burst
            m = next(messages)
            seen.setdefault(m.key, []).append(int(m.properties["iothub-creation-time-utc"][17:19]))
        return seen

    generation = seconds_per_device(wall)
    assert any(len(set(s)) < len(s) for s in generation.values())  # the burst: same second twice
    wall.now = 1_800_000_000.0
    scheduled = seconds_per_device(simulator.scheduled_clock(rate, wall=wall))
    for stamps in scheduled.values():
        assert len(set(stamps)) == len(stamps)
    with pytest.raises(ValueError):
        simulator.scheduled_clock(0)
