"""Kafka IO for real, live: the simulator -> the local Kafka broker -> ``iomt-fhir run`` on Flink
(``[local]``, LOOPBACK Python workers, Kafka IO EMBEDDED in the Flink job server) -> the
local FHIR server, exactly the command a user types after setup.

Each test sends while the job runs: a backlog before it starts, then more once it is reading
(and, for the Event Hubs path, while it is stopped and started again). Before the launcher
asked for the unbounded-source read on Flink, the job read the backlog and then nothing
(apache/beam issues 20979, 22809), and these tests failed; a test that sends everything
before the job starts cannot tell.

What was sent is the topic itself (``pipelines.simulator.kafka_watch.read_topic``); what it
should become is computed offline by the pure mapping core (``pipelines.simulator.readings``) and compared,
reading by reading, with the server: none lost, none twice. Where the job resumed is read
from the broker: the consumer group's committed offsets.

A streaming job never ends by itself: each test runs ``iomt-fhir run`` as a process group
(``pipelines.simulator.stream_job``), polls until everything sent is accounted for
(bounded), then stops the whole group, so no JVM outlives the test.
"""
import collections
import json
import os
import pathlib
import subprocess
import sys
import time
import uuid

import pytest

from pipelines.run import java_artifacts
from pipelines.simulator import kafka_watch
from pipelines.simulator.stream_job import StreamJob
from pipelines.simulator.readings import compare, device_ids, expected_readings, fhir_mapping_text, server_readings
from transforms.sources.kafka import record_to_event

REPO = pathlib.Path(__file__).resolve().parent.parent
SIMULATOR = REPO / "scripts" / "simulate_devices.py"
RESULT_TIMEOUT = 240.0  # a Flink start-up took up to 155 s on the shared 2-core box (load 30)
#: the simulator's --devices; a device reads at most every DEVICES / RATE = 1.25 s, so each
#: reading has its own second (Observation ids are per second, as the reference's)
DEVICES = tuple(f"device-{d:03d}" for d in range(10))
RATE = 8

pytestmark = [pytest.mark.kafka_broker, pytest.mark.fhir_server, pytest.mark.flink]


@pytest.fixture(autouse=True)
def _needs_java_runtime():
    if not java_artifacts.flink_job_server_jar() or not java_artifacts.kafka_expansion_service_jar():
        pytest.fail("Flink job server / expansion service jars missing: run scripts/setup (setup-java)")


def device_mapping_text():
    """The example device mapping, but heart rate takes its device id from the Kafka header
    ``deviceId``: heart-rate Observations exist only if headers became Properties."""
    mapping = json.loads((REPO / "templates" / "devicecontent.json").read_text())
    for entry in mapping["template"]:
        if entry["template"]["typeName"] == "heartrate":
            entry["template"]["deviceIdExpression"] = "$.Properties.deviceId"
    return json.dumps(mapping)


def simulator_args(topic, bootstrap, extra=()):
    return [sys.executable, str(SIMULATOR), "--to", "kafka", "--kafka-topic", topic,
            *(["--kafka-bootstrap-servers", bootstrap] if bootstrap else []), "--devices", str(len(DEVICES)), *extra]


def send(topic, bootstrap, count, bad, extra=(), env=None, rate=RATE):
    done = subprocess.run(simulator_args(topic, bootstrap, ["--count", str(count), "--bad", str(bad),
                                                            "--rate", str(rate), *extra]),
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60)
    assert done.returncode == 0, done.stderr[-1500:]
    assert f"sent total={count}" in done.stderr, done.stderr[-500:]
    return done.stderr


def dead_letters(folder):
    return [json.loads(line) for f in pathlib.Path(folder).glob("**/*.jsonl")
            for line in f.read_text().splitlines() if line.strip()]


def where(letter):
    """(partition, offset) of the Kafka record a dead letter came from."""
    system = letter["payload"]["system_properties"]
    return system["kafka-partition"], system["kafka-offset"]


def record_event(topic, record):
    """The ``DeviceEvent`` Kafka IO's row for this record becomes (``record_to_event``)."""
    return lambda: record_to_event({
        "topic": topic, "partition": record.partition, "offset": record.offset,
        "timestamp": record.timestamp_ms, "key": record.key, "value": record.value,
        "headers": [{"key": k, "value": v} for k, v in record.headers]})


def at_end(committed, ends):
    return all((committed.get(p) or 0) == end for p, end in ends.items())


class Job(StreamJob):
    def wait_for(self, check, what, timeout=RESULT_TIMEOUT, detail=lambda: ""):
        """Poll ``check`` until true; fail with ``detail()`` (what is missing) and the log's tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(f"iomt-fhir run exited {self.proc.returncode}:\n{self.output()[-3000:]}")
            if check():
                return
            time.sleep(2)
        raise AssertionError(f"{what} not there after {timeout:g}s: {detail()}\n{self.output()[-3000:]}")


class Accounting:
    """The topic against the server: every reading once, every malformed record a dead letter."""

    def __init__(self, topic, watch_config, base, system, device_text, fhir_text):
        self.topic, self.config, self.base = topic, watch_config, base
        self.device_text, self.fhir_text = device_text, fhir_text
        self.device_of = device_ids(DEVICES, system)
        self.records = []

    def refresh(self, ends=None):
        self.records = kafka_watch.read_topic(self.config, self.topic, ends)
        self.want, self.bad = expected_readings(
            self.device_text, self.fhir_text,
            [((r.partition, r.offset), record_event(self.topic, r)) for r in self.records])
        return self

    def problem(self):
        return compare(self.want, server_readings(self.base, self.device_of))

    def readings_done(self):
        return self.problem() is None


def run_args(base, dl, system, mapping_dir, *source):
    return [*source, "--runner=FlinkRunner", "--flink_master=[local]", "--environment_type=LOOPBACK",
            "--fhir-url", base, "--identity-mode", "Create", "--device-identifier-system", system,
            "--dead-letter", str(dl), "--early-firing-seconds", "1",
            "--device-mapping", str(mapping_dir / "dm.json"), "--fhir-mapping", str(mapping_dir / "fm.json")]


def write_mappings(tmp_path, device_text, fhir_text):
    (tmp_path / "dm.json").write_text(device_text)
    (tmp_path / "fm.json").write_text(fhir_text)
    return tmp_path


def test_plain_kafka_backlog_then_live(kafka_broker, fhir_base_url, tmp_path):
    """A backlog before the job starts, then messages while it runs, all on partition 0 of a
    2-partition topic (partition 1 stays empty throughout): every reading in its Observation,
    once; every malformed message a dead letter with stage and reason, once; the consumer
    group's committed offset reaches the end of partition 0."""
    topic = f"devices-{uuid.uuid4().hex[:8]}"
    system = f"urn:kafka-live:{uuid.uuid4().hex[:8]}"
    device_text, fhir_text = device_mapping_text(), fhir_mapping_text()
    config = kafka_watch.client_config(kafka_broker.bootstrap)
    on_p0 = ["--kafka-partition", "0"]
    send(topic, kafka_broker.bootstrap, count=24, bad=2, extra=on_p0)
    account = Accounting(topic, config, fhir_base_url, system, device_text, fhir_text)
    dl = tmp_path / "dead"
    job = Job(run_args(fhir_base_url, dl, system, write_mappings(tmp_path, device_text, fhir_text),
                       "--kafka-bootstrap-servers", kafka_broker.bootstrap, "--kafka-topic", topic),
              tmp_path / "run.log")
    started = time.monotonic()
    try:
        account.refresh()
        job.wait_for(lambda: account.readings_done() and len(dead_letters(dl)) >= 2, "the backlog's readings",
                     detail=account.problem)
        backlog_at = time.monotonic() - started
        # live: the job is reading; these arrive now
        send(topic, kafka_broker.bootstrap, count=24, bad=2, extra=on_p0)
        account.refresh()
        job.wait_for(lambda: account.readings_done() and len(dead_letters(dl)) >= 4,
                     "the readings sent while the job ran", detail=account.problem)
        live_at = time.monotonic() - started
        group = "$Default"
        ends = kafka_watch.end_offsets(config, topic)
        job.wait_for(lambda: kafka_watch.committed_offsets(config, topic, group).get(0) == ends[0],
                     "the committed offset of partition 0 at its end", timeout=40)
    finally:
        job.stop()
    assert ends == {0: 48, 1: 0}, ends  # partition 1 empty throughout
    assert len(account.records) == 48 and {r.partition for r in account.records} == {0}
    assert account.problem() is None
    assert sum(account.want.values()) >= 40  # readings, each checked above
    letters = dead_letters(dl)
    assert sorted(where(d) for d in letters) == sorted(account.bad) and len(account.bad) == 4
    assert {d["stage"] for d in letters} == {"normalization"} and all(d.get("error_type") for d in letters)
    assert kafka_watch.committed_offsets(config, topic, "$Default").get(1) in (None, 0)  # nothing read there
    print(f"plain Kafka on Flink: backlog readable after {backlog_at:.0f}s, live readings after {live_at:.0f}s")


def test_event_hubs_path_live_across_a_restart(kafka_broker, fhir_base_url, tmp_path):
    """--eventhub-name with EVENTHUB_CONNECTION_STRING pointing at the broker's SASL_SSL port
    (PLAIN, $ConnectionString): the ${env:...} placeholder resolves on the Java side, the CA
    comes through --kafka-consumer-config, the key is in no output.

    A backlog, then messages while the job reads; the job is stopped once it has written and
    committed them, and messages keep flowing (a simulator at a steady rate) while it is down
    and while it starts again on the same consumer group. Then: every reading on the topic is
    in its Observation, once (none lost: the second run did not skip to the latest offset);
    every malformed record is a dead letter, once, and the second run dead-lettered nothing
    below the offsets the first run committed (it resumed there, not from the earliest); the
    group's offsets reached the topic's end.

    The stop is after the first run caught up on purpose: Kafka IO commits offsets when a
    Flink checkpoint completes, while readings read before it may still sit in window or
    writer state; a fresh job does not get that state back (Beam 2.62 restores savepoints on
    a remote cluster only), so a stop in mid-flow can lose them (README: Restarts).

    Seen failing: with run 2 on a fresh consumer group (reads from the earliest offset) the
    malformed records below the committed offsets were dead-lettered again; with a fresh group
    and ``--kafka-offset-reset latest`` the readings sent while the job was down were lost."""
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    system = f"urn:eventhubs-live:{uuid.uuid4().hex[:8]}"
    secret = kafka_broker.connection_string
    key = secret.split("SharedAccessKey=", 1)[1]
    env = {"EVENTHUB_CONNECTION_STRING": secret}
    ca = ["--kafka-config", f"ssl.ca.location={kafka_broker.ca_file}", "--eventhubs"]
    config = kafka_watch.client_config(kafka_broker.sasl_bootstrap, secret, kafka_broker.ca_file)
    group = f"cg-{uuid.uuid4().hex[:6]}"
    device_text, fhir_text = (REPO / "templates" / "devicecontent.json").read_text(), fhir_mapping_text()
    mappings = write_mappings(tmp_path, device_text, fhir_text)
    send(hub, None, count=16, bad=2, extra=ca, env=env)
    account = Accounting(hub, config, fhir_base_url, system, device_text, fhir_text)

    def args(dl):
        return run_args(fhir_base_url, dl, system, mappings, "--eventhub-name", hub,
                        "--eventhub-consumer-group", group,
                        "--kafka-consumer-config", "ssl.truststore.type=PEM",
                        "--kafka-consumer-config", f"ssl.truststore.location={kafka_broker.ca_file}")

    def committed():
        return kafka_watch.committed_offsets(config, hub, group)

    def letters():
        return dead_letters(tmp_path / "dead1") + dead_letters(tmp_path / "dead2")

    def caught_up():
        """Every reading sent so far on the server, every malformed message a dead letter, and
        the group's offsets at the topic's end."""
        ends = kafka_watch.end_offsets(config, hub)
        return (at_end(committed(), ends) and account.refresh(ends).readings_done()
                and len(letters()) >= len(account.bad))

    def missing():
        return (f"{account.problem()}; {len(letters())} of {len(account.bad)} dead letters; "
                f"committed {committed()} of {kafka_watch.end_offsets(config, hub)}")

    first = Job(args(tmp_path / "dead1"), tmp_path / "run1.log", env=env)
    started = time.monotonic()
    try:
        first.wait_for(lambda: account.refresh().readings_done(), "the backlog's readings", detail=missing)
        send(hub, None, count=24, bad=2, extra=ca, env=env)  # while the job reads
        first.wait_for(caught_up, "the live readings written and their offsets committed", detail=missing)
        first_run = time.monotonic() - started
    finally:
        first.stop()
    at_stop = committed()
    assert sum(v or 0 for v in at_stop.values()) == 40
    # from now on messages keep arriving: while the job is down and while it starts again
    stream = subprocess.Popen(simulator_args(hub, None, ["--rate", "3", "--duration", "45", "--bad", "0.1", *ca]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    second = None
    try:
        deadline = time.monotonic() + 60
        while sum(kafka_watch.end_offsets(config, hub).values()) < 40 + 15:  # 5 s of sending at least
            assert time.monotonic() < deadline and stream.poll() is None, "nothing was sent while the job was down"
            time.sleep(1)
        sent_while_down = sum(kafka_watch.end_offsets(config, hub).values()) - 40
        second = Job(args(tmp_path / "dead2"), tmp_path / "run2.log", env=env)
        started = time.monotonic()
        assert stream.wait(timeout=120) == 0, stream.stderr.read()[-1000:]
        second.wait_for(caught_up, "every reading on the server and the group's offsets at the topic's end",
                        detail=missing)
        second_run = time.monotonic() - started
    finally:
        if stream.poll() is None:
            stream.kill()
        if second is not None:
            second.stop()
    assert account.problem() is None
    final_ends = kafka_watch.end_offsets(config, hub)
    assert len(account.records) == sum(final_ends.values()) >= 40 + 120
    # run 2 started from the committed offsets: nothing below them went through it again
    second_letters = dead_letters(tmp_path / "dead2")
    early = [w for w in map(where, second_letters) if w[1] < (at_stop.get(w[0]) or 0)]
    assert not early, f"run 2 re-read {len(early)} malformed records below the committed offsets {at_stop}"
    # each malformed record a dead letter (stage, reason), once
    every = letters()
    assert sorted(map(where, every)) == sorted(account.bad) and len(account.bad) >= 4 + 12
    assert {d["stage"] for d in every} == {"normalization"} and all(d.get("error_type") for d in every)
    for log in (first.output(), second.output()):
        assert key not in log and secret not in log
    for f in tmp_path.glob("dead*/**/*"):
        if f.is_file():
            assert key not in f.read_text(errors="replace")
    print(f"Event Hubs path on Flink: {len(account.records)} messages, {sum(account.want.values())} readings; "
          f"first run {first_run:.0f}s, restart {second_run:.0f}s, {sent_while_down} sent while down")


def test_missing_topic_stops_at_start_naming_it(kafka_broker, fhir_base_url, tmp_path):
    """A job started on a topic that does not exist stops with one line naming the topic and
    exit 2, instead of running on, reading nothing."""
    topic = f"absent-{uuid.uuid4().hex[:8]}"
    mappings = write_mappings(tmp_path, device_mapping_text(), fhir_mapping_text())
    job = Job(run_args(fhir_base_url, tmp_path / "dead", "urn:absent", mappings,
                       "--kafka-bootstrap-servers", kafka_broker.bootstrap, "--kafka-topic", topic),
              tmp_path / "run.log")
    try:
        code = job.proc.wait(timeout=RESULT_TIMEOUT)
    finally:
        job.stop()
    errors = [line for line in job.output().splitlines() if line.startswith("iomt-fhir: error:")]
    assert code == 2 and len(errors) == 1, job.output()[-3000:]
    assert f"Kafka topic {topic!r} does not exist" in errors[0]
