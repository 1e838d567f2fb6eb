"""Preflight (issue 11): a wrong FHIR destination stops the launch with one line, before any data.

Against the real local server, through the fault proxy (401, a refused search) and tiny
loopback servers (nothing listening, a non-FHIR HTTP server, a FHIR server of another
version). Every message is checked whole: what was tried, the status, the OperationOutcome.
"""
import http.server
import json
import socket
import subprocess
import threading

import pytest

from cli_fixtures import command
from conftest import REPO
from pipelines.run.preflight import PreflightFailed, check_fhir, check_input_pattern


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def tiny_server():
    """A loopback HTTP server answering every GET with (status, content type, body)."""
    servers = []

    def start(status, content_type, body):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/fhir"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def failure(*args, **kwargs) -> str:
    with pytest.raises(PreflightFailed) as e:
        check_fhir(*args, **kwargs)
    return str(e.value)


@pytest.mark.fhir_server
def test_the_local_server_passes_in_every_mode(fhir_base_url):
    assert check_fhir(fhir_base_url) == ["GET metadata: FHIR 4.0.1", "read Observation: authorised",
                                         "search Device?identifier: authorised",
                                         "search Patient?identifier: authorised"]
    passed = check_fhir(fhir_base_url, identity_mode="Lookup", device_system="urn:example:devices")
    assert passed[2] == "search Device?identifier=SYSTEM|...: authorised" and len(passed) == 3


def test_nothing_listening():
    url = f"http://127.0.0.1:{closed_port()}/fhir"
    assert failure(url) == (f"FHIR server check: GET {url}/metadata no answer (GET transport error: "
                            "ConnectionError (after 2 attempts)); is a server listening there?")


@pytest.mark.fhir_server
def test_wrong_base_path(fhir_base_url):
    url = fhir_base_url.rsplit("/", 1)[0] + "/fhir/R5"
    msg = failure(url)
    assert msg.startswith(f"FHIR server check: GET {url}/metadata answered 404 (not found: is the base path right?)")


@pytest.mark.fhir_server
def test_401_says_credentials_refused_and_never_shows_the_token(fault_proxy, monkeypatch):
    fault_proxy.require_tokens = {"good-token"}
    monkeypatch.setenv("FHIR_BEARER_TOKEN", "wrong-s3cret")
    msg = failure(fault_proxy.url + "?key=also-secret", "bearer")
    assert msg == (f"FHIR server check: GET {fault_proxy.url}/metadata answered 401 (credentials refused): "
                   "Unauthorized")
    assert "s3cret" not in msg and "also-secret" not in msg
    monkeypatch.setenv("FHIR_BEARER_TOKEN", "good-token")
    assert len(check_fhir(fault_proxy.url, "bearer")) == 4


@pytest.mark.fhir_server
def test_lookup_needs_a_searchable_device_identifier_system(fault_proxy):
    from fault_proxy import Fault, _outcome
    fault_proxy.add(Fault("status", status=400, path_contains="/Device?",
                          body=_outcome("not-supported", "Unknown search parameter identifier")))
    msg = failure(fault_proxy.url, identity_mode="Lookup", device_system="urn:example:devices")
    assert msg == (f"FHIR server check: search Device?identifier=SYSTEM|... at {fault_proxy.url} answered 400: "
                   "Unknown search parameter identifier (the device identifier system must be searchable "
                   "for --identity-mode Lookup)")


def test_a_non_fhir_http_server(tiny_server):
    url = tiny_server(200, "text/html", "<html><body>Welcome to nginx!</body></html>")
    assert failure(url) == (f"FHIR server check: GET {url}/metadata answered 200 with no FHIR JSON, not a "
                            "CapabilityStatement: not a FHIR server, or a wrong base path")


def test_a_fhir_server_of_another_version(tiny_server):
    url = tiny_server(200, "application/fhir+json",
                      json.dumps({"resourceType": "CapabilityStatement", "fhirVersion": "3.0.2"}))
    assert failure(url) == f"FHIR server check: {url} speaks FHIR 3.0.2, this connector writes FHIR R4 (4.0.x)"


def test_input_pattern(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    assert check_input_pattern(str(tmp_path / "*.jsonl")) == "--input matches files (e.g. a.jsonl)"
    with pytest.raises(PreflightFailed, match="matches no file"):
        check_input_pattern(str(tmp_path / "*.json"))


def test_check_command_through_the_console_script():
    url = f"http://127.0.0.1:{closed_port()}/fhir"
    r = subprocess.run(command() + ["check", "--fhir-url", url], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (f"iomt-fhir: error: FHIR server check: GET {url}/metadata no answer (GET transport "
                        "error: ConnectionError (after 2 attempts)); is a server listening there?\n")


@pytest.mark.pubsub_emulator
def test_pubsub_subscription_must_exist(pubsub_emulator, monkeypatch, unique):
    from google.cloud import pubsub_v1
    from pipelines.run.preflight import check_pubsub_subscription

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    project = pubsub_emulator.project
    topic = f"projects/{project}/topics/pre-{unique}"
    subscription = f"projects/{project}/subscriptions/pre-{unique}"
    pubsub_v1.PublisherClient().create_topic(name=topic)
    with pubsub_v1.SubscriberClient() as sub:
        sub.create_subscription(name=subscription, topic=topic)
    assert check_pubsub_subscription(subscription) == "Pub/Sub subscription exists"
    missing = f"projects/{project}/subscriptions/nope-{unique}"
    with pytest.raises(PreflightFailed) as e:
        check_pubsub_subscription(missing)
    assert str(e.value) == f"--pubsub-subscription {missing}: no such subscription"
