"""Pytest fixture for Pub/Sub tests on Google's real emulator (registered from conftest.py).

``pubsub_emulator`` (session): the Cloud SDK's Pub/Sub emulator (Java) started on a free
loopback port, stopped at the end of the session (its whole process group: the launcher
script starts a java child). Tests skip when the launcher is not installed, and fail under
CI (scripts/setup-pubsub-emulator installs it; override its path with ``PUBSUB_EMULATOR_LAUNCHER``). The emulator keeps everything in memory and is
shared by the session, so tests create their own uniquely named topics and subscriptions.

Client libraries reach it through ``PUBSUB_EMULATOR_HOST`` (``emulator.host``); tests set
that variable themselves (``monkeypatch.setenv``) so it never leaks into other tests.

``channel`` (per test): a fresh topic and subscription, with ``run_until`` to run a streaming
pipeline on it until its outputs are there. A streaming Pub/Sub pipeline never ends by itself:
``run_until`` starts it with ``p.run()``, polls (bounded), then cancels it. The DirectRunner
reads Pub/Sub with one blocking pull (30 s deadline; the emulator holds an empty pull that
long) on its single worker thread, which runs nothing else meanwhile (no downstream bundle, no
timer, no cancel): so ``_pump`` publishes small "wake" messages (``{}``, attribute ``WAKE``)
while it waits; they match no template. ``Capture``/``captured`` keep a run's outputs.
"""
from __future__ import annotations

import collections
import json
import os
import pathlib
import subprocess
import threading
import time
import uuid
from typing import NamedTuple

import apache_beam as beam
import pytest

from ci_fixtures import missing
from local_processes import free_port, log_tail, stop_process_group, wait_http_ready

LAUNCHER = pathlib.Path(os.environ.get(
    "PUBSUB_EMULATOR_LAUNCHER",
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"))
# Beam's ReadFromPubSub checks project names like real ones (6-30 chars, lowercase, ...).
PROJECT = "iomt-emulator-test"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

RUNNER = ["--runner=BundleBasedDirectRunner", "--streaming"]
RESULTS_TIMEOUT = 30.0  # seconds to wait for a pipeline's expected outputs
PIPELINE_STOP_TIMEOUT = 45.0  # cancel waits for the runner's pull (30 s deadline) at worst
ADMIN_TIMEOUT = 10.0  # every emulator call
WAKE = "iomt-test-wake"

DEVICE_E2E = json.dumps({"templateType": "CollectionContent", "template": [{
    "templateType": "CalculatedContent", "template": {
        "typeName": "heartrate", "typeMatchExpression": "$..[?(@hr)]",
        "deviceIdExpression": "$.matchedToken.dev", "patientIdExpression": "$.Properties.patient",
        "timestampExpression": "$.matchedToken.at",
        "values": [{"valueName": "hr", "valueExpression": "$.matchedToken.hr", "required": True}]}}]})


class PubSubEmulator(NamedTuple):
    host: str  # "127.0.0.1:PORT", the value for PUBSUB_EMULATOR_HOST
    project: str


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory):
    if not LAUNCHER.is_file() or not os.access(LAUNCHER, os.X_OK):
        missing(f"Pub/Sub emulator not installed at {LAUNCHER} (Debian package "
                "google-cloud-cli-pubsub-emulator, scripts/setup-pubsub-emulator; or set PUBSUB_EMULATOR_LAUNCHER)")
    workdir = tmp_path_factory.mktemp("pubsub-emulator")
    log_path = workdir / "emulator.log"
    port = free_port()
    host = f"127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(LAUNCHER), "--host=127.0.0.1", f"--port={port}", f"--data-dir={workdir / 'data'}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
            start_new_session=True)  # own process group: killpg reaches the java child too
    try:
        wait_http_ready(f"http://{host}/", proc, "Pub/Sub emulator", READY_TIMEOUT,
                        lambda: log_tail(log_path))  # GET / answers 200 "Ok" once listening
        yield PubSubEmulator(host=host, project=PROJECT)
    finally:
        stop_process_group(proc, "Pub/Sub emulator", STOP_TIMEOUT)


def body(at, hr, dev):
    return json.dumps({"hr": hr, "dev": dev, "at": at}).encode()


# Outputs captured from the runner's worker thread (same process), per test run.
_CAPTURED = collections.defaultdict(list)
_LOCK = threading.Lock()


class Capture(beam.DoFn):
    def __init__(self, key):
        self._key = key

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        with _LOCK:
            _CAPTURED[self._key].append((element, timestamp))


def captured(key):
    with _LOCK:
        return list(_CAPTURED[key])


class Channel:
    """A fresh topic and subscription on the emulator."""

    def __init__(self, project, name):
        from google.cloud import pubsub_v1
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topic = self.publisher.topic_path(project, "devices-" + name)
        self.subscription = self.subscriber.subscription_path(project, "iomt-" + name)
        self.publisher.create_topic(name=self.topic, timeout=ADMIN_TIMEOUT)
        self.subscriber.create_subscription(name=self.subscription, topic=self.topic, timeout=ADMIN_TIMEOUT)

    def publish(self, data: bytes, **attributes) -> str:
        return self.publisher.publish(self.topic, data, **attributes).result(timeout=ADMIN_TIMEOUT)

    def wake(self):
        self.publish(b"{}", **{WAKE: "1"})

    def close(self):
        try:
            self.subscriber.delete_subscription(subscription=self.subscription, timeout=ADMIN_TIMEOUT)
            self.publisher.delete_topic(topic=self.topic, timeout=ADMIN_TIMEOUT)
        finally:
            self.subscriber.close()
            self.publisher.stop()


@pytest.fixture
def channel(pubsub_emulator, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    ch = Channel(pubsub_emulator.project, uuid.uuid4().hex[:12])
    try:
        yield ch
    finally:
        ch.close()


def run_until(p, ch, done, timeout=RESULTS_TIMEOUT):
    """Run the streaming pipeline until ``done()`` (bounded), then stop it; returns the result."""
    result = p.run()
    try:
        _pump(ch, done, timeout)
    finally:
        canceller = threading.Thread(target=result.cancel, name="cancel-pipeline", daemon=True)
        canceller.start()
        _pump(ch, lambda: not canceller.is_alive(), PIPELINE_STOP_TIMEOUT)
        assert not canceller.is_alive(), f"pipeline did not stop within {PIPELINE_STOP_TIMEOUT}s"
    return result


def _pump(ch, done, timeout):
    """Wait until ``done()`` or ``timeout``, waking the runner's blocking pull every 0.2 s: its single
    worker thread fires timers (early firings), runs downstream bundles and sees a cancel only
    between pulls."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        ch.wake()
        time.sleep(0.2)
