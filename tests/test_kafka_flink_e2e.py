"""Kafka IO for real: the simulator -> the local Kafka broker -> ``iomt-fhir run`` on Flink
(``[local]``, LOOPBACK Python workers, Kafka IO EMBEDDED in the Flink job server) -> the
local FHIR server, exactly the command a user types after setup.

A streaming job never ends by itself: each test runs ``iomt-fhir run`` as a subprocess in
its own process group (the Flink job server and the expansion service JVMs are its
children), polls the FHIR server and the dead-letter folder until everything sent is
accounted for (bounded), then stops the whole group (SIGTERM, SIGKILL if it lingers), so no
JVM outlives the test.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid

import pytest
import requests

from pipelines.run import java_artifacts

REPO = pathlib.Path(__file__).resolve().parent.parent
SIMULATOR = REPO / "scripts" / "simulate_devices.py"
IOMT_FHIR = pathlib.Path(sys.executable).with_name("iomt-fhir")
RESULT_TIMEOUT = 240.0

pytestmark = [pytest.mark.kafka_broker, pytest.mark.fhir_server, pytest.mark.flink]


@pytest.fixture(autouse=True)
def _needs_java_runtime():
    if not java_artifacts.flink_job_server_jar() or not java_artifacts.kafka_expansion_service_jar():
        pytest.fail("Flink job server / expansion service jars missing: run scripts/setup (setup-java)")


def device_mapping(tmp_path):
    """The example device mapping, but heart rate takes its device id from the Kafka header
    ``deviceId``: heart-rate Observations exist only if headers became Properties."""
    mapping = json.loads((REPO / "templates" / "devicecontent.json").read_text())
    for entry in mapping["template"]:
        if entry["template"]["typeName"] == "heartrate":
            entry["template"]["deviceIdExpression"] = "$.Properties.deviceId"
    path = tmp_path / "devicecontent.json"
    path.write_text(json.dumps(mapping))
    return path


def send(topic, bootstrap, count, bad, extra=(), env=None):
    done = subprocess.run([sys.executable, str(SIMULATOR), "--to", "kafka", "--kafka-topic", topic,
                           *(["--kafka-bootstrap-servers", bootstrap] if bootstrap else []),
                           "--devices", "3", "--count", str(count), "--bad", str(bad), "--rate", "200",
                           *extra],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60)
    assert done.returncode == 0, done.stderr[-1500:]
    return done.stderr


def observations(base, since):
    """Observations changed since ``since`` (an ISO instant). The session's FHIR server holds
    every other test's Observations too, far more than one page, and Medplum gives no next link:
    an unfiltered first page can miss this test's Observations altogether."""
    bundle = requests.get(f"{base}/Observation", params={"_count": 1000, "_lastUpdated": f"ge{since}"},
                          timeout=10).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def a_minute_ago() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))


def dead_letters(folder):
    return [json.loads(line) for f in pathlib.Path(folder).glob("**/*.jsonl")
            for line in f.read_text().splitlines() if line.strip()]


def device_of(base, observation, cache={}):
    ref = observation["device"]["reference"]
    if ref not in cache:
        cache[ref] = requests.get(f"{base}/{ref}", timeout=10).json()["identifier"][0]["value"]
    return cache[ref]


class Job:
    """``iomt-fhir run`` in its own process group; ``stop`` ends it and its JVMs."""

    def __init__(self, args, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([str(IOMT_FHIR), "run", *args], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                     start_new_session=True)

    def wait_for(self, check, what):
        deadline = time.monotonic() + RESULT_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"iomt-fhir run exited {self.proc.returncode}:\n{self.output()[-3000:]}")
            if check():
                return
            time.sleep(2)
        raise AssertionError(f"{what} not there after {RESULT_TIMEOUT}s:\n{self.output()[-3000:]}")

    def output(self):
        if not self.log.closed:
            self.log.flush()
        return pathlib.Path(self.log_path).read_text(errors="replace")

    def stop(self):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=20)
                break
            except subprocess.TimeoutExpired:
                continue
        # the group's JVMs too (the job server may outlive a SIGTERMed launcher briefly)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        self.log.close()


def test_plain_kafka_on_flink_to_fhir(kafka_broker, fhir_base_url, tmp_path):
    """Exactly the documented command: headers -> Properties, readings -> Observations,
    malformed messages -> dead letters with stage and reason."""
    topic = f"devices-{uuid.uuid4().hex[:8]}"
    sent = send(topic, kafka_broker.bootstrap, count=30, bad=3)
    assert "sent total=30" in sent and "malformed=3" in sent
    since = a_minute_ago()
    before = {o["id"] for o in observations(fhir_base_url, since)}
    dl = tmp_path / "dead"
    job = Job(["--kafka-bootstrap-servers", kafka_broker.bootstrap, "--kafka-topic", topic,
               "--runner=FlinkRunner", "--flink_master=[local]", "--environment_type=LOOPBACK",
               "--fhir-url", fhir_base_url, "--dead-letter", str(dl),
               "--device-mapping", str(device_mapping(tmp_path)),
               "--fhir-mapping", str(REPO / "templates" / "fhirmapping.json")], tmp_path / "run.log")
    started = time.monotonic()
    try:
        def new():
            return [o for o in observations(fhir_base_url, since) if o["id"] not in before]

        # every device's kind arrives: heart rate (device id from the header), blood pressure, weight
        codes = lambda: {c["code"] for o in new() for c in o["code"]["coding"]}
        job.wait_for(lambda: {"8867-4", "85354-9", "29463-7"} <= codes() and len(dead_letters(dl)) >= 3,
                     "Observations of every kind and 3 dead letters")
        elapsed = time.monotonic() - started
    finally:
        job.stop()
    letters = dead_letters(dl)
    assert len(letters) == 3
    assert {d["stage"] for d in letters} == {"normalization"} and all(d.get("error_type") for d in letters)
    heart = [o for o in new() if any(c["code"] == "8867-4" for c in o["code"]["coding"])]
    assert {device_of(fhir_base_url, o) for o in heart} == {"device-000"}  # the watch, from its header
    print(f"plain Kafka on Flink: results after {elapsed:.0f}s")


def sent_messages(broker, topic):
    """Everything on the topic (the ground truth of what was sent), over SASL_SSL."""
    from confluent_kafka import Consumer
    consumer = Consumer({"bootstrap.servers": broker.sasl_bootstrap, "security.protocol": "SASL_SSL",
                         "sasl.mechanism": "PLAIN", "sasl.username": "$ConnectionString",
                         "sasl.password": broker.connection_string, "ssl.ca.location": broker.ca_file,
                         "group.id": f"truth-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    out, idle = [], 0
    try:
        while idle < 6:
            record = consumer.poll(0.5)
            if record is None or record.error():
                idle += 1 if out else 0
                continue
            idle = 0
            out.append(record.value())
    finally:
        consumer.close()
    return out


INSTANT_CODES = {"weightLbs": "29463-7", "systolic": "85354-9"}  # Observations of instants


def test_event_hubs_path_sasl_ssl_with_restart(kafka_broker, fhir_base_url, tmp_path):
    """--eventhub-name with EVENTHUB_CONNECTION_STRING pointing at the broker's SASL_SSL port
    (PLAIN, $ConnectionString): the ${env:...} placeholder resolves on the Java side (the broker
    accepts only that exact string), the CA comes through --kafka-consumer-config, the key is in
    no output. Then a restart with the same consumer group: every blood-pressure and weight
    reading sent is in an Observation (none twice: re-reads are idempotent), every malformed
    message dead-lettered."""
    hub = f"hub-{uuid.uuid4().hex[:8]}"
    secret = kafka_broker.connection_string
    key = secret.split("SharedAccessKey=", 1)[1]
    env = {"EVENTHUB_CONNECTION_STRING": secret}
    ca = ["--kafka-config", f"ssl.ca.location={kafka_broker.ca_file}", "--eventhubs"]
    send(hub, None, count=15, bad=2, extra=ca, env=env)
    dl = tmp_path / "dead"
    args = ["--eventhub-name", hub, "--runner=FlinkRunner", "--flink_master=[local]",
            "--environment_type=LOOPBACK", "--fhir-url", fhir_base_url, "--dead-letter", str(dl),
            "--kafka-consumer-config", "ssl.truststore.type=PEM",
            "--kafka-consumer-config", f"ssl.truststore.location={kafka_broker.ca_file}",
            "--device-mapping", str(REPO / "templates" / "devicecontent.json"),
            "--fhir-mapping", str(REPO / "templates" / "fhirmapping.json")]
    since = a_minute_ago()
    before = {o["id"] for o in observations(fhir_base_url, since)}

    def instants():
        """(code, start, end) of the blood-pressure / weight Observations this test made."""
        return [(c["code"], o["effectivePeriod"]["start"][:23], o["effectivePeriod"]["end"][:23])
                for o in observations(fhir_base_url, since) if o["id"] not in before
                for c in o["code"]["coding"] if c["code"] in INSTANT_CODES.values()]

    def covered():
        """Every blood-pressure / weight reading sent lies in an Observation of its code."""
        have = instants()
        return all(any(code == c and start <= at <= end for c, start, end in have) for code, at in expected())

    def expected():
        out = set()
        for value in sent_messages(kafka_broker, hub):
            try:
                body = json.loads(value)
            except ValueError:
                continue
            for field, code in INSTANT_CODES.items():
                if isinstance(body, dict) and field in body and body.get("endDate", "").endswith("Z") \
                        and body["endDate"][:4].isdigit():
                    out.add((code, body["endDate"][:23]))
        return out

    first = Job(args, tmp_path / "run1.log", env=env)
    started = time.monotonic()
    try:
        first.wait_for(lambda: covered() and len(dead_letters(dl)) >= 2,
                       "the first batch's readings and dead letters")
        time.sleep(12)  # one checkpoint (10 s): offsets committed to the consumer group
    finally:
        first.stop()
    first_run = time.monotonic() - started
    # mid-stream: more readings arrive while the job is down
    send(hub, None, count=15, bad=1, extra=ca, env=env)
    second = Job(args, tmp_path / "run2.log", env=env)
    started = time.monotonic()
    try:
        second.wait_for(lambda: covered() and len(dead_letters(dl)) >= 3,
                        "the second batch's readings and dead letters")
    finally:
        second.stop()
    second_run = time.monotonic() - started
    assert covered() and len(expected()) >= 8  # both batches' readings (4+ each) on the server
    got = instants()
    assert len(got) == len({(c, s) for c, s, _ in got}), "a re-read duplicated an Observation"
    letters = dead_letters(dl)
    # the 3 malformed messages dead-lettered (a re-read after the restart may repeat one)
    assert len(letters) >= 3 and {d["stage"] for d in letters} == {"normalization"}
    for log in (first.output(), second.output()):
        assert key not in log and secret not in log
    for f in dl.glob("**/*"):
        if f.is_file():
            assert key not in f.read_text(errors="replace")
    print(f"Event Hubs path on Flink: first run {first_run:.0f}s, restart {second_run:.0f}s")
