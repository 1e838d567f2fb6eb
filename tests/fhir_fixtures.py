"""Pytest fixtures for FHIR integration tests (registered from conftest.py).

Two real servers, each started once per session on a free loopback port, only when a test
asks for it:

- ``medplum_base_url``: Medplum's router, ``scripts/fhir-server`` (in memory, Node);
- ``hapi_base_url``: HAPI FHIR's JPA server, ``scripts/hapi-fhir-server`` (H2 on disk, Java),
  with ``--validate-requests``: HAPI validates every resource written to it and refuses (422)
  any with a validation error, so every Observation a HAPI test writes is valid FHIR R4 (a
  refused one is dead-lettered and the test's counts fail).

``fhir_base_url`` (function) is the one a test uses: Medplum's unless the test is run on both
(``@pytest.mark.both_fhir_servers`` on the test or module: ``pytest_generate_tests`` below
parametrizes ``fhir_server_kind`` with ``medplum`` and ``hapi``, ids ``[medplum]``/``[hapi]``).
``IOMT_FHIR_URL`` (``IOMT_HAPI_FHIR_URL``) points the tests at an external server instead of
Medplum's (HAPI's): nothing is started then.
The servers are shared by the session, so tests use unique identifiers (``unique``) instead
of relying on an empty server.

``fault_proxy`` (function): a :class:`fault_proxy.FaultProxy` in front of ``fhir_base_url``.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile
import uuid

import pytest

from ci_fixtures import missing
from local_processes import free_port, log_tail, stop_process_group, wait_http_ready

REPO = pathlib.Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0


#: the servers a ``both_fhir_servers`` test runs on
FHIR_SERVER_KINDS = ("medplum", "hapi")
#: HAPI starts in about 45 s on this 2-core machine when it is idle (Spring, Hibernate, schema);
#: minutes when other jobs load it
HAPI_READY_TIMEOUT = 300.0


def pytest_configure(config):
    config.addinivalue_line("markers", "both_fhir_servers: run the test on Medplum's router and on "
                                       "HAPI FHIR's JPA server (fhir_server_kind)")
    config.addinivalue_line("markers", "hapi_server: needs HAPI FHIR's JPA server (Java); started by a fixture")


def pytest_generate_tests(metafunc):
    if "fhir_server_kind" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_fhir_servers"):
        metafunc.parametrize("fhir_server_kind", FHIR_SERVER_KINDS)


@pytest.fixture
def fhir_server_kind():
    """Which local server ``fhir_base_url`` is: Medplum's unless parametrized (see module doc)."""
    return "medplum"


@pytest.fixture
def fhir_base_url(request, fhir_server_kind):
    if fhir_server_kind == "hapi":
        return request.getfixturevalue("hapi_base_url")
    return request.getfixturevalue("medplum_base_url")


class _HapiServer:
    """The session's HAPI server process, started as soon as collection shows a test needs it
    (``pytest_collection_modifyitems``): its ~45 s of start-up (Spring, Hibernate, the schema)
    overlap the tests that run before the first HAPI test, on the core pytest leaves idle."""

    proc = None
    base = ""
    log_path = None

    @classmethod
    def start(cls):
        if cls.proc is not None or os.environ.get("IOMT_HAPI_FHIR_URL") or shutil.which("java") is None:
            return
        subprocess.run([str(REPO / "scripts/setup-hapi-fhir-server")], check=True)
        port = free_port()
        cls.log_path = pathlib.Path(tempfile.mkdtemp(prefix="iomt-hapi-log-")) / "server.log"
        with open(cls.log_path, "wb") as log:
            # no --data-dir: the script's own temporary H2 folder, removed when it stops
            cls.proc = subprocess.Popen([str(REPO / "scripts/hapi-fhir-server"), "--port", str(port),
                                         "--validate-requests"],
                                        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        cls.base = f"http://127.0.0.1:{port}/fhir"

    @classmethod
    def stop(cls):
        if cls.proc is not None:
            proc, cls.proc = cls.proc, None
            stop_process_group(proc, "HAPI FHIR server", term_wait=30)
            shutil.rmtree(cls.log_path.parent, ignore_errors=True)


#: the bound (pytest-timeout) of a test that needs HAPI: its first such test may wait for the
#: server's start-up (about 45 s idle, minutes under load), the --postgres test starts its own
HAPI_TEST_TIMEOUT = 360


def _uses_session_hapi(item) -> bool:
    """The test writes to the session's HAPI server (``hapi_base_url``, or ``fhir_base_url``
    parametrized ``[hapi]``)."""
    return "hapi_base_url" in getattr(item, "fixturenames", ()) or "[hapi" in item.nodeid


def _needs_hapi(item) -> bool:
    """The test waits for a HAPI server's start-up: the session's, or one of its own
    (``hapi_server`` marker, e.g. ``--postgres``)."""
    return _uses_session_hapi(item) or item.get_closest_marker("hapi_server") is not None


@pytest.hookimpl(trylast=True)  # after -k / -m deselection and the bounds by kind (conftest.py)
def pytest_collection_modifyitems(session, config, items):
    for item in items:
        if not _needs_hapi(item):
            continue
        bound = item.get_closest_marker("timeout")
        if bound is None or (bound.args and bound.args[0] < HAPI_TEST_TIMEOUT):
            item.add_marker(pytest.mark.timeout(HAPI_TEST_TIMEOUT), append=False)
    # only for a test that uses it: a test that starts its own HAPI (the --postgres one) run
    # alone would otherwise start up beside a second, idle JVM on the same two cores
    if any(_uses_session_hapi(item) for item in items):
        _HapiServer.start()


def pytest_sessionfinish(session, exitstatus):
    _HapiServer.stop()


@pytest.fixture(scope="session")
def hapi_base_url():
    external = os.environ.get("IOMT_HAPI_FHIR_URL")
    if external:
        wait_http_ready(external.rstrip("/") + "/metadata", None, "HAPI FHIR server", 30)
        yield external.rstrip("/")
        return
    if shutil.which("java") is None:
        missing("Java not installed: cannot run HAPI FHIR's JPA server")
    _HapiServer.start()  # already started after collection, unless the test came in another way
    wait_http_ready(_HapiServer.base + "/metadata", _HapiServer.proc, "HAPI FHIR server", HAPI_READY_TIMEOUT,
                    lambda: log_tail(_HapiServer.log_path))
    yield _HapiServer.base


@pytest.fixture(scope="session")
def medplum_base_url():
    external = os.environ.get("IOMT_FHIR_URL")
    if external:
        wait_http_ready(external.rstrip("/") + "/metadata", None, "FHIR server", 30)
        yield external.rstrip("/")
        return
    if shutil.which("npm") is None and not (REPO / "scripts/fhir-server-js/node_modules/.bin/node").exists():
        missing("Node.js/npm not installed: cannot run the local FHIR server")
    subprocess.run([str(REPO / "scripts/setup-fhir-server")], check=True)
    yield from _local_medplum()


def _local_medplum():
    """A new local FHIR server (Medplum's router) on a free port, stopped when the generator ends."""
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
def empty_fhir_base_url(medplum_base_url):
    """A FHIR server of this test's own, empty: for a run whose Patients and Devices carry the
    sample data's identifiers, which the session's server may already hold from other tests
    (Create mode then finds several and dead-letters MultipleResourceFoundException)."""
    if os.environ.get("IOMT_FHIR_URL"):
        pytest.skip("IOMT_FHIR_URL names one shared server")
    yield from _local_medplum()


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
