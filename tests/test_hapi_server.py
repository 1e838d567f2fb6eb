"""What the writer meets on HAPI FHIR's JPA server and not on Medplum's router (issue 17).

HAPI commits a transaction whole or not at all, answers a stale ``If-Match`` with 409 (the
router: 412), refuses purely numeric client ids, and pages searches with ``next`` links
(``[base]?_getpages=``). Each test runs on the session's HAPI server (``hapi_base_url``,
started with ``--validate-requests``); the conflict test runs on both servers to show the two
statuses lead to the same outcome.
"""
import requests
import pytest

from transforms.fhir.client import FhirClient, FhirVersionConflict
from transforms.fhir.retry import RetryPolicy
from transforms.fhir.writer import CREATED, FAILED, UPDATED, ObservationWriter, WriteItem

pytestmark = [pytest.mark.fhir_server, pytest.mark.hapi_server]

FAST = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05, max_total_seconds=60)


def observation(oid, patient, value):
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": "2024-03-01T10:00:00Z",
            "valueQuantity": {"value": value, "unit": "count/min",
                              "system": "http://unitsofmeasure.org", "code": "/min"}}


def new_value_wins(item, existing):
    """A merge that takes the new Observation whole (this file tests the server, not merges)."""
    merged = dict(item.observation)
    return merged, merged.get("valueQuantity") != existing.get("valueQuantity")


def versions(base, rtype, rid):
    r = requests.get(f"{base}/{rtype}/{rid}/_history", timeout=30)
    r.raise_for_status()
    return r.json().get("total", len(r.json().get("entry") or []))


@pytest.fixture
def hapi(hapi_base_url):
    c = FhirClient(hapi_base_url, retry_policy=FAST)
    yield c
    c.close()


def test_rolled_back_transaction_costs_only_the_refused_observation(hapi, hapi_base_url, unique):
    """One Observation of 50 points at a Patient deleted since (the mapping cannot know): HAPI
    rolls the whole transaction back; the writer re-sends the 50 as one batch, so the 49 are
    written once and the one is failed with HAPI's reason, in 3 requests (read, transaction,
    batch), not one request per entry."""
    alive, gone = f"alive-{unique}", f"gone-{unique}"
    hapi.put({"resourceType": "Patient", "id": alive})
    hapi.put({"resourceType": "Patient", "id": gone})
    hapi.request("DELETE", f"Patient/{gone}")
    bad = 17
    items = [WriteItem(observation(f"rb-{unique}-{n}", gone if n == bad else alive, n)) for n in range(50)]
    writer = ObservationWriter(hapi, new_value_wins, bundle_size=50)
    before = hapi.requests_sent
    res = writer.write(items)
    sent = hapi.requests_sent - before

    assert [r.outcome for r in res] == [FAILED if n == bad else CREATED for n in range(50)]
    err = res[bad].error
    assert err.status == 400
    assert "is deleted" in str(err) and "Observation.subject" in str(err)  # HAPI's own words
    assert gone not in str(err) and unique not in str(err)  # no ids (identifiers) in the reason
    assert sent == 3, f"{sent} requests for one bad bundle of 50"
    for n in (0, bad - 1, bad + 1, 49):
        assert versions(hapi_base_url, "Observation", f"rb-{unique}-{n}") == 1  # written once
    assert hapi.read("Observation", f"rb-{unique}-{bad}") is None


def test_refused_client_id_costs_only_itself(hapi, unique):
    """HAPI refuses a purely numeric client id (ALPHANUMERIC, its default): that Observation
    alone is failed with HAPI's reason (HAPI-0960), its neighbours are written."""
    pat = f"idp-{unique}"
    hapi.put({"resourceType": "Patient", "id": pat})
    numeric = str(int(unique, 16))[:12]
    items = [WriteItem(observation(f"id-{unique}-a", pat, 1)), WriteItem(observation(numeric, pat, 2)),
             WriteItem(observation(f"id-{unique}-c", pat, 3))]
    res = ObservationWriter(hapi, new_value_wins).write(items)
    assert [r.outcome for r in res] == [CREATED, FAILED, CREATED]
    assert "HAPI-0960" in str(res[1].error) and numeric not in str(res[1].error)


def test_observation_ids_the_pipeline_makes_are_accepted():
    """Our ids are sha256 hex (64 characters, the FHIR maximum): never purely numeric in
    practice, and within every server's id rules ([A-Za-z0-9-.]{1,64})."""
    import re
    from transforms.mapping.identifiers import compute_hash_for_identifier
    for value in ("patient-1", "12345", "", "x" * 200):
        rid = compute_hash_for_identifier(value, "urn:sys")
        assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", rid) and not rid.isdigit()


@pytest.mark.both_fhir_servers
def test_stale_if_match_is_a_conflict_on_both_servers(fhir_base_url, fhir_server_kind, unique):
    """HAPI answers a stale If-Match with 409, Medplum's router with 412; the client raises
    FhirVersionConflict for both, and the writer re-reads, merges and updates."""
    c = FhirClient(fhir_base_url, retry_policy=FAST)
    pat = f"cp-{unique}"
    c.put({"resourceType": "Patient", "id": pat})
    oid = f"cf-{unique}"
    c.put(observation(oid, pat, 60))
    c.put(observation(oid, pat, 61))  # now at version 2
    with pytest.raises(FhirVersionConflict) as info:
        c.put(observation(oid, pat, 62), if_match="1")
    assert info.value.status == {"hapi": 409, "medplum": 412}[fhir_server_kind]

    class Stale:
        """Reads as the writer would have an hour ago: version 1 (a stale cache)."""

        def get(self, rid):
            return dict(observation(oid, pat, 60), meta={"versionId": "1"})

        put = drop = lambda *a: None

    w = ObservationWriter(c, new_value_wins, cache=Stale())
    (r,) = w.write([WriteItem(observation(oid, pat, 63))])
    assert r.outcome == UPDATED and w.contention == 1
    assert c.read("Observation", oid).resource["valueQuantity"]["value"] == 63
    c.close()


def test_search_follows_next_links(hapi, unique):
    """HAPI pages (``_count``) with next links to ``[base]?_getpages=``; the client follows
    them within the base URL. (Medplum's router returns no next link.)"""
    system = f"urn:test:paging:{unique}"
    for n in range(23):
        hapi.put({"resourceType": "Device", "id": f"pg-{unique}-{n}",
                  "identifier": [{"system": system, "value": str(n)}]})
    first = requests.get(f"{hapi.base_url}/Device", params={"identifier": f"{system}|", "_count": "10"},
                         timeout=30).json()
    assert any(link["relation"] == "next" for link in first["link"])
    found = hapi.search("Device", {"identifier": f"{system}|", "_count": "10"})
    assert sorted(d["id"] for d in found) == sorted(f"pg-{unique}-{n}" for n in range(23))


def test_server_validates_what_it_is_sent(hapi, unique):
    """The test server refuses an invalid Observation (no ``code``: cardinality 1..1) with 422,
    alone or inside a transaction: what makes "every Observation written to HAPI is valid"
    true in every HAPI test."""
    pat = f"vp-{unique}"
    hapi.put({"resourceType": "Patient", "id": pat})
    invalid = observation(f"inv-{unique}", pat, 1)
    del invalid["code"]
    r = requests.put(f"{hapi.base_url}/Observation/{invalid['id']}", json=invalid,
                     headers={"Content-Type": "application/fhir+json"}, timeout=30)
    assert r.status_code == 422
    res = ObservationWriter(hapi, new_value_wins).write(
        [WriteItem(observation(f"val-{unique}", pat, 2)), WriteItem(invalid)])
    assert [x.outcome for x in res] == [CREATED, FAILED]
    assert res[1].error.status == 422


def test_lookup_finds_a_device_registered_after_a_miss(hapi, unique):
    """HAPI answers a search asked in the last minute from its cache (60 s by default), even
    when a matching resource was created since. Identity lookups ask for fresh results, so a
    Device registered right after a miss (dead-lettered: DeviceNotFound) is found on replay."""
    from transforms.fhir.identity import FhirResourceNotFoundException, IdentityService
    with pytest.raises(FhirResourceNotFoundException):
        IdentityService(hapi, "Lookup").resolve(f"late-{unique}")
    hapi.put({"resourceType": "Patient", "id": f"lp-{unique}"})
    hapi.put({"resourceType": "Device", "id": f"ld-{unique}", "identifier": [{"value": f"late-{unique}"}],
              "patient": {"reference": f"Patient/lp-{unique}"}})
    assert IdentityService(hapi, "Lookup").resolve(f"late-{unique}").device == f"ld-{unique}"
