"""Pytest fixture for Pub/Sub tests on Google's real emulator (registered from conftest.py).

``pubsub_emulator`` (session): the Cloud SDK's Pub/Sub emulator (Java) started on a free
loopback port, stopped at the end of the session (its whole process group: the launcher
script starts a java child). Tests skip when the launcher is not installed, and fail under
CI (scripts/setup-pubsub-emulator installs it; override its path with ``PUBSUB_EMULATOR_LAUNCHER``). The emulator keeps everything in memory and is
shared by the session, so tests create their own uniquely named topics and subscriptions.

Client libraries reach it through ``PUBSUB_EMULATOR_HOST`` (``emulator.host``); tests set
that variable themselves (``monkeypatch.setenv``) so it never leaks into other tests.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
from typing import NamedTuple

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
