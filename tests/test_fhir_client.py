"""FhirClient against the real local FHIR server, and through the fault proxy."""

import pytest

from clock_fixtures import FakeClock
from fault_proxy import Fault
from transforms.fhir.auth import Auth, StaticBearerAuth
from transforms.fhir.client import (EntryResult, FhirClient, FhirError, FhirVersionConflict,
                                    outcome_text, parse_bundle_response, version_from_etag)
from transforms.fhir.retry import RetryPolicy

pytestmark = pytest.mark.fhir_server

FAST = RetryPolicy(max_attempts=5, initial_backoff=0.01, max_backoff=0.05, max_total_seconds=10)


def obs(oid, text="x", **extra):
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"text": text}, **extra}


def put_entry(resource, if_match=None):
    req = {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
    if if_match:
        req["ifMatch"] = f'W/"{if_match}"'
    return {"resource": resource, "request": req}


@pytest.fixture
def client(fhir_base_url):
    c = FhirClient(fhir_base_url, retry_policy=FAST, timeout=(2, 10))
    yield c
    c.close()


# ---- happy path on the real server ------------------------------------------------------
def test_capabilities(client):
    assert client.capabilities()["resourceType"] == "CapabilityStatement"


def test_put_read_and_version(client, unique):
    oid = f"obs-{unique}"
    assert client.read("Observation", oid) is None
    created = client.put(obs(oid))
    assert created.status in (200, 201)
    v1 = created.version_id
    assert v1 and version_from_etag(created.etag) == v1
    got = client.read("Observation", oid)
    assert got.resource["code"] == {"text": "x"}
    assert got.version_id == v1
    updated = client.put(obs(oid, "y"), if_match=v1)
    assert updated.version_id != v1
    assert client.read("Observation", oid).resource["code"] == {"text": "y"}


def test_stale_if_match_is_412(client, unique):
    oid = f"obs-{unique}"
    v1 = client.put(obs(oid)).version_id
    client.put(obs(oid, "y"), if_match=v1)
    with pytest.raises(FhirVersionConflict) as info:
        client.put(obs(oid, "z"), if_match=v1)
    assert info.value.status == 412
    assert info.value.outcome_text == "Precondition Failed"
    assert client.read("Observation", oid).resource["code"] == {"text": "y"}


def test_search_by_identifier_with_and_without_system(client, unique):
    client.put({"resourceType": "Device", "id": f"d-{unique}",
                "identifier": [{"system": "urn:sys", "value": f"dev-{unique}"}]})
    assert [r["id"] for r in client.search("Device", {"identifier": f"dev-{unique}"})] == [f"d-{unique}"]
    assert [r["id"] for r in client.search("Device", {"identifier": f"urn:sys|dev-{unique}"})] == [f"d-{unique}"]
    assert client.search("Device", {"identifier": f"urn:other|dev-{unique}"}) == []


def test_transaction_per_entry_results(client, unique):
    ids = [f"tx-{unique}-{i}" for i in range(3)]
    results = client.transaction([put_entry(obs(i)) for i in ids])
    assert [r.status for r in results] == [200, 200, 200]  # Medplum: PUT to a new id is 200
    assert all(isinstance(r, EntryResult) and r.ok and r.version_id for r in results)
    assert [r.resource["id"] for r in results] == ids


def test_transaction_with_stale_entry_fails_whole_bundle(client, unique):
    a, b = f"a-{unique}", f"b-{unique}"
    va = client.put(obs(a)).version_id
    client.put(obs(a, "changed"), if_match=va)
    with pytest.raises(FhirVersionConflict) as info:
        client.transaction([put_entry(obs(b)), put_entry(obs(a, "stale"), if_match=va)])
    assert info.value.status == 412
    assert client.read("Observation", a).resource["code"] == {"text": "changed"}


def test_transaction_over_server_limit_is_permanent_400(client, unique):
    with pytest.raises(FhirError) as info:
        client.transaction([put_entry(obs(f"big-{unique}-{i}")) for i in range(51)])
    assert info.value.status == 400
    assert "more update operations than allowed" in info.value.outcome_text
    assert not info.value.retryable


def test_batch_per_entry_statuses(client, unique):
    a = f"ba-{unique}"
    va = client.put(obs(a)).version_id
    results = client.batch([
        put_entry(obs(a, "new"), if_match="stale"),
        put_entry(obs(f"bb-{unique}")),
        {"request": {"method": "GET", "url": f"Observation/{a}"}},
    ])
    assert [r.status for r in results] == [412, 200, 200]
    assert results[0].outcome_text == "Precondition Failed"
    assert results[2].version_id == va


def test_parse_bundle_response_and_outcome_text():
    body = {"resourceType": "Bundle", "entry": [
        {"response": {"status": "201 Created", "etag": 'W/"1"'}},
        {"response": {"status": "429", "outcome": {"resourceType": "OperationOutcome",
                                                   "issue": [{"diagnostics": "slow down"}]}}}]}
    r = parse_bundle_response(body, 2)
    assert (r[0].status, r[0].version_id, r[1].status, r[1].outcome_text) == (201, "1", 429, "slow down")
    with pytest.raises(FhirError):
        parse_bundle_response(body, 3)
    assert outcome_text({"resourceType": "Patient"}) == ""


# ---- faults through the proxy -----------------------------------------------------------
def proxied(proxy, auth=None, timeout=(2, 10), policy=FAST):
    return FhirClient(proxy.url, auth=auth, retry_policy=policy, timeout=timeout)


def test_429_with_retry_after_is_honoured(fault_proxy, unique):
    clock = FakeClock()
    c = FhirClient(fault_proxy.url, clock=clock, timeout=(2, 10), retry_policy=RetryPolicy(
        max_attempts=3, initial_backoff=0.01, max_total_seconds=10))
    fault_proxy.add(Fault("status", 429, headers={"Retry-After": "1"}, method="PUT"))
    r = c.put(obs(f"t-{unique}"))
    assert clock.sleeps == [1.0]  # the server's Retry-After, not the 0.01 s backoff
    assert r.status == 200
    assert [s for _, _, s in fault_proxy.log] == [429, 200]


def test_503_burst_then_success(fault_proxy, unique):
    c = proxied(fault_proxy)
    fault_proxy.add(*[Fault("status", 503) for _ in range(3)])
    r = c.put(obs(f"t-{unique}"))
    assert r.status == 200 and c.requests_sent == 4
    assert [s for _, _, s in fault_proxy.log] == [503, 503, 503, 200]


def test_503_forever_gives_up_in_bounded_time(fault_proxy, unique):
    c = proxied(fault_proxy, policy=RetryPolicy(max_attempts=4, initial_backoff=0.01,
                                                max_total_seconds=5))
    fault_proxy.add(*[Fault("status", 503) for _ in range(10)])
    with pytest.raises(FhirError) as info:
        c.read("Observation", f"t-{unique}")
    assert info.value.status == 503 and info.value.retryable
    assert c.requests_sent == 4
    fault_proxy.clear()


def test_connection_reset_before_and_after_server_applied(fault_proxy, client, unique):
    c = proxied(fault_proxy)
    oid = f"t-{unique}"
    fault_proxy.add(Fault("reset", method="PUT"))
    assert c.put(obs(oid)).status == 200
    v = client.read("Observation", oid).version_id
    # the server applies the update but the answer is lost; the retry re-sends the same
    # If-Match, which is now stale -> 412 tells the writer to re-read (nothing duplicated)
    fault_proxy.add(Fault("reset_after", method="PUT"))
    with pytest.raises(FhirVersionConflict):
        c.put(obs(oid, "y"), if_match=v)
    assert client.read("Observation", oid).resource["code"] == {"text": "y"}
    assert [s for _, _, s in fault_proxy.log] == ["reset", 200, "reset_after", 412]


def test_slow_response_past_timeout_is_retried(fault_proxy, unique):
    c = proxied(fault_proxy, timeout=(2, 0.3))
    oid = f"t-{unique}"
    fault_proxy.add(Fault("delay", seconds=1.0, method="PUT"))
    assert c.put(obs(oid)).status == 200
    # the held answer was given up after the 0.3 s read timeout and the PUT sent again
    assert [s for _, _, s in fault_proxy.log] == ["delay", 200] and c.requests_sent == 2
    assert c.search("Observation", {"_id": oid})[0]["id"] == oid


def test_401_refreshes_token_once(fault_proxy, unique):
    class Rotating(Auth):
        def __init__(self):
            self.issued = 0

        def headers(self):
            return {"Authorization": f"Bearer tok{self.issued}"}

        def invalidate(self):
            self.issued += 1
    fault_proxy.require_tokens = {"tok1"}
    auth = Rotating()
    c = proxied(fault_proxy, auth=auth)
    assert c.put(obs(f"t-{unique}")).status == 200
    assert (auth.issued, c.auth_refreshes) == (1, 1)
    assert [s for _, _, s in fault_proxy.log] == [401, 200]


def test_401_with_static_token_fails_after_one_retry(fault_proxy, unique):
    fault_proxy.require_tokens = {"right"}
    c = proxied(fault_proxy, auth=StaticBearerAuth("wrong"))
    with pytest.raises(FhirError) as info:
        c.read("Observation", f"t-{unique}")
    assert info.value.status == 401
    assert [s for _, _, s in fault_proxy.log] == [401, 401]
    assert "wrong" not in repr(c) and "wrong" not in str(info.value)


def test_per_entry_429_in_batch_resends_only_that_entry(fault_proxy, client, unique):
    """The proxy answers the first batch with a 200 batch-response whose second entry is
    429 (as a throttling server does); only that entry is re-sent."""
    import json
    a, b = f"pa-{unique}", f"pb-{unique}"
    throttled = {"resourceType": "Bundle", "type": "batch-response", "entry": [
        {"response": {"status": "200 OK"}, "resource": obs(a)},
        {"response": {"status": "429 Too Many Requests"}}]}
    # forward nothing for the first POST: the proxy's answer pretends entry 0 succeeded,
    # so create it directly to keep server state consistent with that answer
    client.put(obs(a))
    fault_proxy.add(Fault("status", 200, method="POST",
                          body=json.dumps(throttled).encode(),
                          headers={"Content-Type": "application/fhir+json"}))
    c = proxied(fault_proxy)
    results = c.batch([put_entry(obs(a)), put_entry(obs(b))])
    assert [r.status for r in results] == [200, 200]
    assert results[1].resource["id"] == b
    posts = [s for m, _, s in fault_proxy.log if m == "POST"]
    assert posts == [200, 200]
    assert client.read("Observation", b) is not None


# ---- environment: proxies and CA bundle, read once ---------------------------------------
def _clear_proxy_env(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY", "no_proxy", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def test_proxy_from_the_environment_is_used_and_read_once(monkeypatch, fhir_base_url):
    _clear_proxy_env(monkeypatch)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
    once = RetryPolicy(max_attempts=1, initial_backoff=0.01, max_backoff=0.01, max_total_seconds=2)
    proxied = FhirClient(fhir_base_url, retry_policy=once, timeout=(1, 2))
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    bypassed = FhirClient(fhir_base_url, retry_policy=once, timeout=(1, 2))
    monkeypatch.delenv("http_proxy")  # too late for the first client: read at construction
    with pytest.raises(FhirError) as err:
        proxied.capabilities()
    assert err.value.status is None and err.value.retryable
    assert bypassed.capabilities()["resourceType"] == "CapabilityStatement"
    assert not proxied.session.trust_env  # requests no longer re-reads os.environ per request
    proxied.close()
    bypassed.close()


def test_ca_bundle_from_the_environment_unless_verification_is_explicit(monkeypatch, tmp_path):
    _clear_proxy_env(monkeypatch)
    assert FhirClient("https://fhir.example.org").session.verify is True
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    assert FhirClient("https://fhir.example.org").session.verify == str(tmp_path / "ca.pem")
    assert FhirClient("https://fhir.example.org", verify=False).session.verify is False
    assert FhirClient("https://fhir.example.org", verify="/own.pem").session.verify == "/own.pem"


def test_entry_outcome_text_is_read_when_asked():
    (r,) = parse_bundle_response({"entry": [{"response": {"status": "404 Not Found", "outcome": {
        "resourceType": "OperationOutcome", "issue": [{"details": {"text": "Not found"}}]}}}]}, 1)
    assert (r.status, r.ok, r.outcome_text) == (404, False, "Not found")
