"""Pytest fixtures for FHIR integration tests (registered from conftest.py).

``fhir_base_url`` (session): the local Medplum-based server started with
``scripts/fhir-server`` on a free loopback port, stopped at the end of the session; or an
external server when ``IOMT_FHIR_URL`` is set (nothing is started then). The in-memory
server is shared by the session, so tests use unique identifiers (``unique``) instead
of relying on an empty server.

``fault_proxy`` (function): a :class:`fault_proxy.FaultProxy` in front of it.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import uuid

import pytest

from ci_fixtures import missing
from local_processes import free_port, wait_http_ready

REPO = pathlib.Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def fhir_base_url():
    external = os.environ.get("IOMT_FHIR_URL")
    if external:
        wait_http_ready(external.rstrip("/") + "/metadata", None, "FHIR server", 30)
        yield external.rstrip("/")
        return
    if shutil.which("npm") is None and not (REPO / "scripts/fhir-server-js/node_modules/.bin/node").exists():
        missing("Node.js/npm not installed: cannot run the local FHIR server")
    subprocess.run([str(REPO / "scripts/setup-fhir-server")], check=True)
    port = free_port()
    log = open(os.devnull, "wb")
    proc = subprocess.Popen([str(REPO / "scripts/fhir-server"), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        wait_http_ready(base + "/metadata", proc, "FHIR server", READY_TIMEOUT)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def fault_proxy(fhir_base_url):
    from fault_proxy import FaultProxy
    if not fhir_base_url.startswith("http://127.0.0.1") and not fhir_base_url.startswith("http://localhost"):
        pytest.skip("fault injection needs a loopback FHIR server")
    proxy = FaultProxy(fhir_base_url).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def unique():
    """A fresh suffix so tests sharing the session's server never see each other's data."""
    return uuid.uuid4().hex[:12]
