"""A live load through Kafka into ``iomt-fhir run`` on Flink ``[local]``, measured from outside.

Why: a stream job can look healthy while it falls behind or grows. This drives the
simulator into the local Kafka broker at a steady rate while the job runs, and watches
what a user would: how far the consumer group's committed offsets trail the topic's end
(``kafka_watch``), the resident memory of the job's processes (``stream_job``), and at the
end whether every reading sent is readable on the FHIR server, once (``readings``).
``scripts/soak_stream`` runs it for minutes; issue 20's ``bench_stream_load`` reuses
``LocalStack``, ``Sampler``, ``run_load`` and ``result_line`` for its rates.

Figures only, never a message body or an id, reach the output.
"""
from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from pipelines.simulator import kafka_watch
from pipelines.simulator.readings import device_ids, expected_readings, fhir_mapping_text, server_readings
from pipelines.simulator.stream_job import StreamJob

REPO = pathlib.Path(__file__).resolve().parents[2]
READY_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalStack:
    """``scripts/kafka-broker`` (2-partition topics) and ``scripts/fhir-server`` on free loopback
    ports, each its own process group, stopped together."""

    def __init__(self, workdir: pathlib.Path):
        self.workdir = workdir
        self.kafka_port, self.fhir_port = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        self.fhir_url = f"http://127.0.0.1:{self.fhir_port}/fhir"
        self._procs: List[subprocess.Popen] = []

    def _start(self, name: str, args: List[str], ready: str) -> None:
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.workdir, start_new_session=True)
        self._procs.append(proc)
        deadline = time.monotonic() + READY_TIMEOUT
        while ready not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {log_path}")
            time.sleep(0.3)

    def __enter__(self) -> "LocalStack":
        try:
            self._start("kafka-broker", [str(REPO / "scripts" / "kafka-broker"), "--port", str(self.kafka_port),
                                         "--partitions", "2", "--data-dir", str(self.workdir / "kafka")],
                        "kafka-broker: ready")
            self._start("fhir-server", [str(REPO / "scripts" / "fhir-server"), "--port", str(self.fhir_port)],
                        "listening on")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for proc in reversed(self._procs):
            stop_group(proc)


def stop_group(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    import signal
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=timeout)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Samples:
    lag: List[int] = field(default_factory=list)
    rss_mb: List[float] = field(default_factory=list)
    times: List[float] = field(default_factory=list)


class Sampler(threading.Thread):
    """Every ``interval`` s: the group's lag on the topic and the job's resident memory."""

    def __init__(self, config: Dict[str, str], topic: str, group: str, job: StreamJob, interval: float = 5.0):
        super().__init__(daemon=True)
        self.config, self.topic, self.group, self.job, self.interval = config, topic, group, job, interval
        self.samples = Samples()
        self._halt = threading.Event()
        self.started = time.monotonic()

    def sample(self) -> int:
        ends = kafka_watch.end_offsets(self.config, self.topic)
        lag = kafka_watch.lag(ends, kafka_watch.committed_offsets(self.config, self.topic, self.group))
        self.samples.lag.append(lag)
        self.samples.rss_mb.append(self.job.rss_mb())
        self.samples.times.append(time.monotonic() - self.started)
        return lag

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.sample()
            except Exception:  # a slow broker answer: skip this sample, keep watching
                continue

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)


@dataclass
class LoadResult:
    rate: float
    lag_max: int
    lag_end: int
    rss_start_mb: float
    rss_end_mb: float
    lost: int
    extra: int
    sent: int
    readings: int
    drain_s: float


def result_line(r: LoadResult) -> str:
    """The soak's last line (issue 22's format)."""
    return (f"rate={r.rate:.0f} lag_max={r.lag_max} lag_end={r.lag_end} rss_start_mb={r.rss_start_mb:.0f} "
            f"rss_end_mb={r.rss_end_mb:.0f} lost={r.lost}")


def _log(text: str) -> None:
    print(f"stream_load: {text}", file=sys.stderr, flush=True)


@dataclass
class LiveRun:
    """What a live load runs against: a fresh 2-partition topic and consumer group, the mappings
    on disk, the simulator's command line (add ``--rate``/``--count``) and the job reading the
    topic on Flink ``[local]`` into the stack's FHIR server (Create mode, a device system of its own)."""
    config: Dict[str, str]
    topic: str
    group: str
    system: str
    devices: int
    device_text: str
    fhir_text: str
    simulator: List[str]
    job: StreamJob


def start_live_run(stack: LocalStack, workdir: pathlib.Path, rate: float, fhir_text: str, name: str,
                   devices: Optional[int] = None, job_args: Optional[List[str]] = None) -> LiveRun:
    """Topic, mappings and the job (started; stop ``run.job`` when done). ``devices`` defaults to
    1.25 x rate, so no device sends twice in one second (Observation ids are per second: each
    reading stays countable)."""
    devices = devices or max(3, int(rate * 1.25 + 0.999))
    topic, group = f"{name}-{uuid.uuid4().hex[:8]}", f"{name}-{uuid.uuid4().hex[:6]}"
    system = f"urn:{name}:{uuid.uuid4().hex[:8]}"
    config = kafka_watch.client_config(stack.bootstrap)
    kafka_watch.create_topic(config, topic, partitions=2)
    device_text = (REPO / "templates" / "devicecontent.json").read_text(encoding="utf-8")
    (workdir / "dm.json").write_text(device_text, encoding="utf-8")
    (workdir / "fm.json").write_text(fhir_text, encoding="utf-8")
    simulator = [sys.executable, str(REPO / "scripts" / "simulate_devices.py"), "--to", "kafka",
                 "--kafka-topic", topic, "--kafka-bootstrap-servers", stack.bootstrap, "--devices", str(devices)]
    job = StreamJob(["--kafka-bootstrap-servers", stack.bootstrap, "--kafka-topic", topic,
                     "--eventhub-consumer-group", group, "--runner=FlinkRunner", "--flink_master=[local]",
                     "--environment_type=LOOPBACK", "--fhir-url", stack.fhir_url, "--identity-mode", "Create",
                     "--device-identifier-system", system, "--dead-letter", str(workdir / "dead"),
                     "--device-mapping", str(workdir / "dm.json"), "--fhir-mapping", str(workdir / "fm.json"),
                     *(job_args or [])], workdir / "job.log")
    return LiveRun(config, topic, group, system, devices, device_text, fhir_text, simulator, job)


def warm_up(run: LiveRun) -> None:
    """One message, read and committed, so a timed load starts on a running job."""
    subprocess.run([*run.simulator, "--count", "1"], check=True, timeout=60, capture_output=True)
    deadline = time.monotonic() + READY_TIMEOUT
    while kafka_watch.lag(kafka_watch.end_offsets(run.config, run.topic),
                          kafka_watch.committed_offsets(run.config, run.topic, run.group)) > 0:
        if not run.job.running() or time.monotonic() > deadline:
            raise RuntimeError(f"the job did not start reading; see {run.job.log_path}")
        time.sleep(2)


def run_load(stack: LocalStack, rate: float, seconds: float, workdir: pathlib.Path,
             devices: Optional[int] = None, drain: float = 180.0, job_args: Optional[List[str]] = None
             ) -> LoadResult:
    """Job first (``start_live_run``, warmed up), then the simulator at ``rate`` for ``seconds``;
    lag and memory sampled throughout; then up to ``drain`` s for the lag to reach 0 and every
    reading to be readable."""
    run = start_live_run(stack, workdir, rate, fhir_mapping_text(), "soak", devices, job_args)
    config, topic, group, system, devices = run.config, run.topic, run.group, run.system, run.devices
    device_text, fhir_text, simulator, job = run.device_text, run.fhir_text, run.simulator, run.job
    sampler = None
    try:
        warm_up(run)
        _log(f"job reading; sending {rate:g} msg/s from {devices} devices for {seconds:g} s")
        sampler = Sampler(config, topic, group, job)
        sampler.start()
        started = time.monotonic()
        sender = subprocess.Popen([*simulator, "--rate", str(rate), "--duration", str(seconds)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        rss_start = None
        next_report = 60.0
        while sender.poll() is None:
            time.sleep(1)
            if time.monotonic() - started >= next_report:  # a line a minute: figures survive a crash
                next_report += 60.0
                rss_now = job.rss_mb()
                rss_start = rss_start or rss_now
                _log(f"{time.monotonic() - started:.0f}s rss_mb={rss_now:.0f} lag={sampler.samples.lag[-1:]} "
                     f"lag_max={max(sampler.samples.lag, default=0)}")
            if not job.running():
                raise RuntimeError(f"the job exited; see {workdir / 'job.log'}")
        sent_seconds = time.monotonic() - started
        err = sender.stderr.read()
        if sender.returncode != 0:
            raise RuntimeError(f"the simulator failed: {err[-500:]}")
        rss_end = job.rss_mb()
        ends = kafka_watch.end_offsets(config, topic)
        sent = sum(ends.values()) - 1
        _log(f"sent {sent} in {sent_seconds:.0f} s; rss_mb={rss_end:.0f}; draining")
        drain_started = time.monotonic()
        lag_end = sampler.sample()
        _log(f"lag at the last send: {lag_end}")
        while lag_end > 0 and time.monotonic() - drain_started < drain:
            time.sleep(2)
            lag_end = sampler.sample()
        _log(f"lag {lag_end} after {time.monotonic() - drain_started:.0f} s of drain; counting readings")
        records = kafka_watch.read_topic(config, topic, ends, timeout=300)
        want, _bad = expected_readings(device_text, fhir_text, [(None, _event(topic, r)) for r in records])
        device_of = device_ids([f"device-{d:03d}" for d in range(devices)], system)
        got = server_readings(stack.fhir_url, device_of, timeout=120)
        while (want - got) and time.monotonic() - drain_started < drain:
            time.sleep(5)
            got = server_readings(stack.fhir_url, device_of, timeout=120)
        drain_s = time.monotonic() - drain_started
    finally:
        if sampler is not None:
            sampler.stop()
        job.stop()
    lost, extra = sum((want - got).values()), sum((got - want).values())
    return LoadResult(rate=sent / sent_seconds, lag_max=max(sampler.samples.lag, default=0), lag_end=lag_end,
                      rss_start_mb=rss_start or 0.0, rss_end_mb=rss_end, lost=lost, extra=extra, sent=sent,
                      readings=sum(want.values()), drain_s=drain_s)


def _event(topic: str, record):
    from transforms.sources.kafka import record_to_event
    return lambda: record_to_event({
        "topic": topic, "partition": record.partition, "offset": record.offset,
        "timestamp": record.timestamp_ms, "key": record.key, "value": record.value,
        "headers": [{"key": k, "value": v} for k, v in record.headers]})


def main_soak(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="soak_stream", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=200.0, help="messages per second (default 200)")
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of sending (default 10)")
    p.add_argument("--drain", type=float, default=600.0, help="seconds allowed after the last send (default 600)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    a = p.parse_args(argv)
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the job, broker and server too
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="soak-stream-"))
    _log(f"work directory {workdir}")
    with LocalStack(workdir) as stack:
        result = run_load(stack, a.rate, a.minutes * 60, workdir, drain=a.drain)
    print(f"sent={result.sent} readings={result.readings} extra_or_twice={result.extra} "
          f"drain_s={result.drain_s:.0f} load_avg_1m={os.getloadavg()[0]:.1f} cpus={os.cpu_count()}")
    print(result_line(result))
    if not a.keep:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if result.lag_end == 0 and result.lost == 0 else 1

