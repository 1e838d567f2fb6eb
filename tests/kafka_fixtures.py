"""Pytest fixture for tests on a real Apache Kafka broker (registered from conftest.py).

``kafka_broker`` (session): ``scripts/kafka-broker`` on free loopback ports, with a PLAINTEXT
listener and a SASL_SSL one that accepts exactly one Event Hubs-style connection string
(user ``$ConnectionString``), made up for the session with a random key; the connection
string's Endpoint names the SASL_SSL port, so ``EVENTHUB_CONNECTION_STRING`` set to it makes
the Event Hubs path read this broker. Clients trust ``ca_file`` (the self-signed
certificate). Tests create their own uniquely named topics (auto-created on first use).

Skips only where the machine has no Java or Maven (a user's machine); on a machine that has
them, missing jars are an error: ``scripts/setup`` fetches them.
"""
from __future__ import annotations

import os
import pathlib
import secrets
import shutil
import subprocess
import time
from typing import NamedTuple

import pytest

from local_processes import free_port, log_tail, stop_process_group

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "kafka-broker"
LIB = pathlib.Path(os.environ.get("IOMT_CACHE", pathlib.Path.home() / ".cache" / "iomt-fhir")) / "kafka-broker" / "lib"
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0


class KafkaBroker(NamedTuple):
    bootstrap: str          # PLAINTEXT "127.0.0.1:P"
    sasl_bootstrap: str     # SASL_SSL "127.0.0.1:Q"
    connection_string: str  # the one the SASL_SSL listener accepts (Endpoint=sb://127.0.0.1:Q/)
    ca_file: str            # PEM certificate to trust for SASL_SSL
    log: pathlib.Path


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    if not shutil.which("java") or not shutil.which("mvn"):
        pytest.skip("the local Kafka broker needs Java 17 and Maven (scripts/setup-kafka)")
    if not any(LIB.glob("kafka_2.13-*.jar")):
        raise RuntimeError(f"no Kafka jars in {LIB}: run scripts/setup (it calls scripts/setup-kafka)")
    workdir = tmp_path_factory.mktemp("kafka-broker")
    port, sasl_port = free_port(), free_port()
    key = secrets.token_urlsafe(24)
    connection_string = (f"Endpoint=sb://127.0.0.1:{sasl_port}/;SharedAccessKeyName=iomt-test;"
                         f"SharedAccessKey={key}")
    log_path = workdir / "broker.log"
    env = {**os.environ, "KAFKA_BROKER_CONNECTION_STRING": connection_string}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(SCRIPT), "--port", str(port), "--sasl-port", str(sasl_port),
             "--data-dir", str(workdir / "data"), "--tls-dir", str(workdir / "tls")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
            start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while "kafka-broker: ready" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None:
                raise RuntimeError(f"Kafka broker exited with code {proc.returncode}:\n{log_tail(log_path, 30)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kafka broker not ready after {READY_TIMEOUT}s:\n{log_tail(log_path, 30)}")
            time.sleep(0.2)
        yield KafkaBroker(bootstrap=f"127.0.0.1:{port}", sasl_bootstrap=f"127.0.0.1:{sasl_port}",
                          connection_string=connection_string,
                          ca_file=str(workdir / "tls" / "ca.pem"), log=log_path)
    finally:
        stop_process_group(proc, "Kafka broker", STOP_TIMEOUT)
