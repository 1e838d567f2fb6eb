"""The Observation writer end to end against the REAL local FHIR server, with the REAL merge.

Observations are built by the mapping engine (``ToObservationsDoFn`` with server identity)
from measurements written here, and merged with ``write_fhir.MappingMerge`` over a
mapping loaded from the JSON text below. Fault tests go through the loopback fault proxy
in front of the real server; the writer's client uses a fake clock, so backoff and
``Retry-After`` cost no wall time (the delays asked for are still asserted).

Checked on what the server actually stores: one Observation per identifier, the exact
resource the merge should produce, and the outcome of every item.

Every test runs on both local servers (``both_fhir_servers``): Medplum's router and HAPI FHIR's
JPA server, which rolls transactions back, validates every resource it is sent (refusing
invalid ones) and answers a stale If-Match with 409 where the router answers 412 (``CONFLICT``).
"""
import copy
import functools
import json

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.pvalue import TaggedOutput
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from fault_proxy import Fault
from transforms.fhir.auth import Auth
from transforms.fhir.client import FhirClient
from transforms.fhir.identity import FhirResourceNotFoundException, IdentityService
from transforms.fhir.retry import RetryPolicy
from clock_fixtures import FakeClock
from transforms.mapping.fhir_templates import load_fhir_mapping
from transforms.mapping.grouping import observation_groups
from transforms.mapping.identifiers import (SERVICE_SYSTEM, device_resource_id,
                                            patient_resource_id)
from transforms.mapping.measurement import Measurement
from transforms.mapping.merge import merge_observation
from transforms.mapping.timeutil import parse_datetime
from transforms.identities import ServerIdentity
from transforms.to_observations import ToObservations, ToObservationsDoFn
from transforms.fhir.writer import (CREATED, FAILED, UNCHANGED, UPDATED, MappingMerge,
                                    ObservationWriter, WriteItem)
from transforms.sinks.fhir_server import WriteToFhir

pytestmark = [pytest.mark.fhir_server, pytest.mark.both_fhir_servers]

#: a stale If-Match is refused with 412 by Medplum's router, 409 by HAPI (HAPI-0989)
CONFLICT = {"medplum": 412, "hapi": 409}
FAST = RetryPolicy(max_attempts=6, initial_backoff=0.01, max_backoff=0.05, max_total_seconds=20)
TX, BATCH = b'"transaction"', b'"batch"'
DEVICE_SYSTEM = "urn:test:device"

MAPPING = json.dumps({"templateType": "CollectionFhir", "template": [
    {"templateType": "CodeValueFhir", "template": {
        "typeName": "heartrate", "periodInterval": 60,
        "category": [{"text": "vital-signs", "codes": [
            {"code": "vital-signs", "system": "http://terminology.hl7.org/CodeSystem/observation-category"}]}],
        "codes": [{"code": "8867-4", "system": "http://loinc.org", "display": "Heart rate"}],
        "value": {"valueType": "SampledData", "valueName": "hr", "defaultPeriod": 600000,
                  "unit": "count/min"}}},
    {"templateType": "CodeValueFhir", "template": {
        "typeName": "steps", "periodInterval": 0,
        "codes": [{"code": "55423-8", "system": "http://loinc.org"}],
        "value": {"valueType": "Quantity", "valueName": "steps", "unit": "steps",
                  "system": "http://unitsofmeasure.org", "code": "{steps}"}}},
    {"templateType": "CodeValueFhir", "template": {
        "typeName": "bloodpressure", "periodInterval": 0,
        "codes": [{"code": "85354-9", "system": "http://loinc.org"}],
        "components": [
            {"codes": [{"code": "8480-6", "system": "http://loinc.org"}],
             "value": {"valueType": "Quantity", "valueName": "systolic", "unit": "mmHg"}},
            {"codes": [{"code": "8462-4", "system": "http://loinc.org"}],
             "value": {"valueType": "Quantity", "valueName": "diastolic", "unit": "mmHg"}}]}},
]})
_MAPPING = load_fhir_mapping(MAPPING).ensure_valid()


def merge():
    return MappingMerge(load_fhir_mapping(MAPPING).ensure_valid())


# ---- helpers -------------------------------------------------------------------------------
def hr(device, at, value, patient=None):
    return Measurement("heartrate", parse_datetime(at), device, (("hr", str(value)),),
                       patient_id=patient)


def steps(device, at, value, patient=None):
    return Measurement("steps", parse_datetime(at), device, (("steps", str(value)),),
                       patient_id=patient)


def bp(device, at, sys_, dia, patient=None):
    return Measurement("bloodpressure", parse_datetime(at), device,
                       (("systolic", str(sys_)), ("diastolic", str(dia))), patient_id=patient)


def to_items(measurements, identity):
    """The mapping engine's Beam DoFn run in process: (write items, dead letters)."""
    fn = ToObservationsDoFn(MAPPING, lambda: ServerIdentity(lambda: identity))
    fn.setup()
    items, dead = [], []
    for out in fn.process((None, list(measurements))):
        if isinstance(out, TaggedOutput):
            dead.append(out.value)
        else:
            assert isinstance(out, WriteItem)
            items.append(out)
    return items, dead


def strip(resource):
    out = dict(resource)
    out.pop("meta", None)
    return out


def by_identifier(client, item):
    (ident,) = item.observation["identifier"]
    return client.search("Observation", {"identifier": f"{ident['system']}|{ident['value']}"})


def stored(client, item):
    r = client.read("Observation", item.observation["id"])
    return r.resource if r else None


def one_per_identifier(client, items):
    """Every item's identifier finds exactly one Observation, at the item's id."""
    for it in items:
        found = by_identifier(client, it)
        assert [f["id"] for f in found] == [it.observation["id"]]


def subject_count(client, patient_id):
    return len(client.search("Observation", {"subject": f"Patient/{patient_id}", "_count": "100"}))


def expected_after(items, before):
    """What the server must hold per id: the item's Observation when new, else the merge."""
    m = merge()
    out = {}
    for it in items:
        rid = it.observation["id"]
        cur = out.get(rid, before.get(rid))
        if cur is None:
            out[rid] = strip(it.observation)
        else:
            merged, _ = m(it, cur)
            out[rid] = strip(merged)
    return out


@pytest.fixture
def client(fhir_base_url):
    c = FhirClient(fhir_base_url, retry_policy=FAST)
    yield c
    c.close()


# ---- (a) Create mode --------------------------------------------------------------------
def test_create_mode_makes_shell_patient_and_device_then_observations(client, unique):
    dev, pat = f"dev-{unique}", f"pat-{unique}"
    items, dead = to_items([hr(dev, "2024-03-01T10:10:00Z", 60, pat),
                            hr(dev, "2024-03-01T10:30:00Z", 70, pat),
                            steps(dev, "2024-03-01T10:07:00Z", 1200, pat)],
                           IdentityService(client, "Create"))
    assert dead == []
    pid, did = patient_resource_id(pat), device_resource_id(dev)
    patient = client.read("Patient", pid).resource
    assert patient["identifier"] == [{"value": pat}]
    device = client.read("Device", did).resource
    assert device["identifier"] == [{"value": dev}]
    assert device["patient"] == {"reference": f"Patient/{pid}"}

    res = ObservationWriter(client, merge()).write(items)
    assert [r.outcome for r in res] == [CREATED, CREATED]
    hr_obs, steps_obs = (stored(client, it) for it in items)
    assert strip(hr_obs) == strip(items[0].observation)
    assert strip(steps_obs) == strip(items[1].observation)
    assert hr_obs["subject"] == {"reference": f"Patient/{pid}"}
    assert hr_obs["device"] == {"reference": f"Device/{did}"}
    assert hr_obs["status"] == "final"
    assert hr_obs["valueSampledData"]["data"] == "E 60 E 70 E E"
    assert hr_obs["effectivePeriod"] == {"start": "2024-03-01T10:00:00.0000000Z",
                                         "end": "2024-03-01T10:59:59.9999999Z"}
    assert steps_obs["valueQuantity"]["value"] == 1200
    one_per_identifier(client, items)
    assert subject_count(client, pid) == 2
    assert res[0].resource["meta"]["versionId"] == hr_obs["meta"]["versionId"]


# ---- (b) Lookup mode --------------------------------------------------------------------
def test_lookup_mode_uses_existing_device_and_dead_letters_unknown_device(client, unique):
    dev, pid = f"ldev-{unique}", f"lpat-{unique}"
    client.put({"resourceType": "Patient", "id": pid})
    device_id = f"ld-{unique}"
    client.put({"resourceType": "Device", "id": device_id,
                "identifier": [{"system": DEVICE_SYSTEM, "value": dev}],
                "patient": {"reference": f"Patient/{pid}"}})
    ident = IdentityService(client, "Lookup", default_device_identifier_system=DEVICE_SYSTEM)
    ghost = f"ghost-{unique}"
    items, dead = to_items([hr(dev, "2024-03-01T10:10:00Z", 61),
                            hr(ghost, "2024-03-01T10:10:00Z", 99)], ident)
    assert len(items) == 1
    assert [(d["stage"], d["error_type"]) for d in dead] == [
        ("identity", "FhirResourceNotFoundException")]
    assert [m["DeviceId"] for m in dead[0]["payload"]] == [ghost]

    res = ObservationWriter(client, merge()).write(items)
    assert [r.outcome for r in res] == [CREATED]
    obs = stored(client, items[0])
    assert obs["subject"] == {"reference": f"Patient/{pid}"}
    assert obs["device"] == {"reference": f"Device/{device_id}"}
    assert obs["identifier"][0]["value"].startswith(f"{pid}.{device_id}.heartrate.")
    one_per_identifier(client, items)

    # not found is a data error: raised at once (one search, no retry), not cached
    before = client.requests_sent
    with pytest.raises(FhirResourceNotFoundException) as err:
        ident.resolve(ghost)
    assert err.value.err_name == "DeviceNotFoundException"
    assert client.requests_sent - before == 1
    # no Device or Patient was created for it in Lookup mode
    assert client.search("Device", {"identifier": f"{DEVICE_SYSTEM}|{ghost}"}) == []


# ---- (c) idempotent rewrite ---------------------------------------------------------------
def test_writing_the_same_data_twice_leaves_identical_state(client, unique):
    dev, pat = f"idem-{unique}", f"ipat-{unique}"
    data = [hr(dev, "2024-03-01T10:10:00Z", 60, pat), hr(dev, "2024-03-01T11:20:00Z", 62, pat),
            steps(dev, "2024-03-01T10:07:00Z", 300, pat),
            bp(dev, "2024-03-01T10:08:00Z", 120, 80, pat)]
    ident = IdentityService(client, "Create")
    w = ObservationWriter(client, merge(), bundle_size=3)
    items, _ = to_items(data, ident)
    assert len(items) == 4
    assert [r.outcome for r in w.write(items)] == [CREATED] * 4
    first = {it.observation["id"]: stored(client, it) for it in items}

    items2, _ = to_items(data, ident)  # rebuilt: new `issued`, same ids and data
    assert [it.observation["id"] for it in items2] == list(first)
    sent = client.requests_sent
    res = w.write(items2)
    assert [r.outcome for r in res] == [UNCHANGED] * 4
    assert client.requests_sent - sent == 2  # two read batches (bundle size 3), no write
    second = {it.observation["id"]: stored(client, it) for it in items2}
    assert second == first  # same content and the same versions: nothing written
    one_per_identifier(client, items2)
    assert subject_count(client, patient_resource_id(pat)) == 4


# ---- (d) new data for an existing hour -----------------------------------------------------
def test_new_data_for_existing_hour_merges_into_same_observation(client, unique):
    dev, pat = f"hour-{unique}", f"hpat-{unique}"
    ident = IdentityService(client, "Create")
    w = ObservationWriter(client, merge())
    (old,), _ = to_items([hr(dev, "2024-03-01T10:10:00Z", 60, pat)], ident)
    assert [r.outcome for r in w.write([old])] == [CREATED]
    before = stored(client, old)

    (new,), _ = to_items([hr(dev, "2024-03-01T10:40:00Z", 80, pat)], ident)
    assert new.observation["id"] == old.observation["id"]
    assert [r.outcome for r in w.write([new])] == [UPDATED]
    after = stored(client, new)
    assert after["valueSampledData"]["data"] == "E 60 E E 80 E"
    assert after["status"] == "amended"
    assert after["effectivePeriod"] == before["effectivePeriod"] == {
        "start": "2024-03-01T10:00:00.0000000Z", "end": "2024-03-01T10:59:59.9999999Z"}
    assert after["meta"]["versionId"] != before["meta"]["versionId"]
    assert after["issued"] == before["issued"]
    one_per_identifier(client, [new])


# ---- (e) stale version -> 412 -> re-read and merge --------------------------------------
class ConcurrentWriter:
    """Merge wrapper: right after the writer read ``target``, another writer merges its own
    reading into the resource and PUTs it (If-Match), so the writer's version is stale."""

    def __init__(self, inner, other_client, target_id, concurrent_measurement):
        self.inner = inner
        self.other = other_client
        self.target_id = target_id
        template = _MAPPING.template_for("heartrate")
        (self.group,) = observation_groups(template, [concurrent_measurement])
        self.template = template
        self.raced = 0

    def __call__(self, item, existing):
        if item.observation["id"] == self.target_id and not self.raced:
            self.raced += 1
            theirs, changed = merge_observation(self.template, self.group, existing)
            assert changed
            self.other.put(strip(theirs), if_match=existing["meta"]["versionId"])
        return self.inner(item, existing)


def test_stale_version_gets_412_and_is_reread_and_merged(client, fault_proxy, unique, fhir_server_kind):
    dev, pat = f"race-{unique}", f"rpat-{unique}"
    ident = IdentityService(client, "Create")
    seed, _ = to_items([steps(dev, "2024-03-01T09:00:00Z", 5, pat),
                        hr(dev, "2024-03-01T10:10:00Z", 60, pat)], ident)
    ObservationWriter(client, merge()).write(seed)
    items, _ = to_items([steps(dev, "2024-03-01T09:00:00Z", 6, pat),      # update, before
                         hr(dev, "2024-03-01T10:30:00Z", 75, pat),        # the raced one
                         bp(dev, "2024-03-01T10:08:00Z", 120, 80, pat)],  # new
                        ident)
    target = items[1].observation["id"]
    racer = ConcurrentWriter(merge(), client, target, hr(dev, "2024-03-01T10:50:00Z", 90, pat))
    wc = FhirClient(fault_proxy.url, retry_policy=FAST)
    w = ObservationWriter(wc, racer)
    res = w.write(items)
    assert [r.outcome for r in res] == [UPDATED, UPDATED, CREATED]
    assert racer.raced == 1 and w.contention == 1
    # the transaction was refused (HAPI: 409)
    assert ("POST", "/fhir", CONFLICT[fhir_server_kind]) in fault_proxy.log
    final = stored(client, items[1])
    assert final["valueSampledData"]["data"] == "E 60 E 75 E 90"  # theirs and ours
    assert final["status"] == "amended"
    assert stored(client, items[0])["valueQuantity"]["value"] == 6
    assert strip(stored(client, items[2])) == strip(items[2].observation)
    one_per_identifier(client, items)
    wc.close()


# ---- (f) faults through the proxy, for the writer ----------------------------------------
class RotatingAuth(Auth):
    """A bearer token that changes on every ``invalidate()`` (like a real token refresh)."""

    def __init__(self):
        self.n = 1
        self.invalidations = 0

    def headers(self):
        return {"Authorization": f"Bearer tok-{self.n}"}

    def invalidate(self):
        self.n += 1
        self.invalidations += 1


FAULTS = {
    "429_retry_after": [Fault("status", 429, headers={"Retry-After": "3"}, body_contains=TX)],
    "503_burst": [Fault("status", 503, body_contains=BATCH)] +
                 [Fault("status", 503, body_contains=TX) for _ in range(3)],
    "reset_after_applied": [Fault("reset_after", body_contains=TX)],
    "reset_before": [Fault("reset", body_contains=BATCH), Fault("reset", body_contains=TX)],
    "slow_past_timeout": [Fault("delay", seconds=1.0, body_contains=TX)],
    "401_then_fresh_token": [],
}
# Requests per case seen through the proxy (5 without a fault): the retries and 412 re-reads
# each fault costs, at most; a retry storm or a lost bound shows here. slow_past_timeout has two
# more: its 0.5 s read timeout also cuts an unfaulted read on a loaded machine (seen at load 30).
MAX_REQUESTS = {"429_retry_after": 6, "503_burst": 9, "reset_after_applied": 9, "reset_before": 7,
                "slow_past_timeout": 11, "401_then_fresh_token": 6}


@pytest.mark.parametrize("case", list(FAULTS))
def test_writer_faults_nothing_lost_nothing_duplicated(case, client, fault_proxy, unique, fhir_server_kind):
    a, b, c, pat = f"fa-{unique}", f"fb-{unique}", f"fc-{unique}", f"fp-{unique}"
    ident = IdentityService(client, "Create")
    seed, _ = to_items([hr(a, "2024-03-01T10:10:00Z", 60, pat),
                        steps(b, "2024-03-01T10:00:00Z", 500, pat)], ident)
    ObservationWriter(client, merge()).write(seed)
    items, _ = to_items([hr(a, "2024-03-01T10:30:00Z", 75, pat),           # update
                         hr(a, "2024-03-01T11:00:00Z", 65, pat),           # create
                         steps(c, "2024-03-01T10:05:00Z", 42, pat),        # create
                         bp(c, "2024-03-01T10:06:00Z", 118, 79, pat),      # create
                         steps(b, "2024-03-01T10:00:00Z", 500, pat)],      # unchanged
                        ident)
    ids = [it.observation["id"] for it in items]
    before = {s.observation["id"]: stored(client, s) for s in seed}
    want = expected_after(items, before)

    clock = FakeClock()
    auth = RotatingAuth()
    if case == "401_then_fresh_token":
        fault_proxy.require_tokens = {"tok-2"}  # tok-1 has expired
    fault_proxy.add(*FAULTS[case])
    wc = FhirClient(fault_proxy.url, auth=auth, retry_policy=FAST, clock=clock,
                    timeout=(2.0, 0.5))
    res = ObservationWriter(wc, merge(), bundle_size=2).write(items)
    wc.close()

    assert [r.outcome for r in res] == [UPDATED, CREATED, CREATED, CREATED, UNCHANGED]
    assert fault_proxy.pending() == 0  # every fault was hit
    assert {rid: strip(stored(client, it)) for rid, it in zip(ids, items)} == want
    one_per_identifier(client, items)
    assert subject_count(client, patient_resource_id(pat)) == 5
    # bounded by counts, not wall time: the fault-free write's 5 requests plus a few per fault
    assert wc.requests_sent == len(fault_proxy.log) <= MAX_REQUESTS[case]
    assert len(clock.sleeps) <= FAST.max_attempts

    kinds = [k for _m, _p, k in fault_proxy.log]
    if case == "429_retry_after":
        assert 3.0 in clock.sleeps  # the server's Retry-After, not our tiny backoff
        assert kinds.count(429) == 1
    elif case == "503_burst":
        assert kinds.count(503) == 4 and len(clock.sleeps) >= 4
    elif case == "401_then_fresh_token":
        assert auth.invalidations == 1 and wc.auth_refreshes == 1
        assert kinds.count(401) == 1
    elif case in ("reset_after_applied", "slow_past_timeout"):
        # the lost answer's transaction was applied; the retry found the new versions
        assert kinds.count(CONFLICT[fhir_server_kind]) >= 1


def test_retry_budget_exhausted_fails_items_instead_of_hanging(client, fault_proxy, unique):
    dev, pat = f"ex-{unique}", f"expat-{unique}"
    items, _ = to_items([steps(dev, "2024-03-01T10:00:00Z", 1, pat),
                         steps(dev, "2024-03-01T11:00:00Z", 2, pat)],
                        IdentityService(client, "Create"))
    fault_proxy.add(*[Fault("status", 503, method="POST") for _ in range(40)])
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.01)
    clock = FakeClock()
    wc = FhirClient(fault_proxy.url, retry_policy=policy, clock=clock)
    res = ObservationWriter(wc, merge()).write(items)
    wc.close()
    assert [r.outcome for r in res] == [FAILED, FAILED]
    assert all(r.error.status == 503 and r.error.retryable for r in res)
    # the read by id was tried max_attempts times, then both items failed: no more requests
    assert wc.requests_sent == len(fault_proxy.log) == policy.max_attempts
    assert len(clock.sleeps) == policy.max_attempts - 1
    fault_proxy.clear()
    assert [stored(client, it) for it in items] == [None, None]


# ---- Beam pipeline: outputs, dead letters, metrics ------------------------------------------
def _create_identity(base_url):
    return ServerIdentity(lambda: IdentityService(FhirClient(base_url, retry_policy=FAST), "Create"))


def test_pipeline_outputs_dead_letters_and_metrics(fhir_base_url, client, unique):
    p_, q, r, pat = f"pp-{unique}", f"pq-{unique}", f"pr-{unique}", f"ppat-{unique}"
    ident = IdentityService(client, "Create")
    seed, _ = to_items([hr(p_, "2024-03-01T10:10:00Z", 60, pat),
                        steps(p_, "2024-03-01T10:07:00Z", 100, pat)], ident)
    ObservationWriter(client, merge()).write(seed)
    # an Observation at the id steps for device r will get, but with another value type
    (bad,), _ = to_items([steps(r, "2024-03-01T10:00:00Z", 1, pat)], ident)
    wrong = dict(strip(bad.observation), valueString="not a quantity")
    del wrong["valueQuantity"]
    client.put(wrong)

    groups = [
        ("k1", [hr(p_, "2024-03-01T10:30:00Z", 75, pat),              # update
                steps(p_, "2024-03-01T10:07:00Z", 100, pat)]),        # unchanged
        ("k2", [hr(q, "2024-03-01T10:10:00Z", 60, pat), hr(q, "2024-03-01T11:10:00Z", 61, pat),
                steps(q, "2024-03-01T10:00:00Z", 7, pat)]),           # 3 creates
        ("k3", [steps(r, "2024-03-01T10:00:00Z", 1, pat)]),           # merge fails
        ("k4", [steps(f"nopat-{unique}", "2024-03-01T10:00:00Z", 1)]),  # no PatientId
    ]
    mapping = load_fhir_mapping(MAPPING).ensure_valid()
    factory = functools.partial(FhirClient, fhir_base_url, retry_policy=FAST)
    p = beam.Pipeline(runner=FnApiRunner())
    obs = p | beam.Create(groups) | ToObservations(MAPPING, functools.partial(_create_identity,
                                                                                fhir_base_url))
    written = (obs.observations
               | WriteToFhir(factory, MappingMerge(mapping), bundle_size=2, read_batch_size=4))
    assert_that(written.outcomes | beam.Map(lambda o: o["outcome"]),
                equal_to([UPDATED, UNCHANGED, CREATED, CREATED, CREATED, FAILED]),
                label="outcomes")
    assert_that(written.dead_letter | beam.Map(lambda d: (d["stage"], d["error_type"],
                                                          d["payload"]["id"])),
                equal_to([("fhir_write", "NotSupportedException", bad.observation["id"])]),
                label="write_dead")
    assert_that(obs.dead_letter | beam.Map(lambda d: (d["stage"], d["error_type"])),
                equal_to([("identity", "ResourceIdentityNotDefinedException")]),
                label="identity_dead")
    result = p.run()
    result.wait_until_finish()

    totals = {}
    for c in result.metrics().query(MetricsFilter())["counters"]:
        key = (c.key.metric.namespace, c.key.metric.name)
        totals[key] = totals.get(key, 0) + c.committed
    assert {k[1]: v for k, v in totals.items() if k[0] == "FhirResourceSaved"} == {
        "ObservationCreated": 3, "ObservationUpdated": 1, "ObservationNoOperation": 1}
    assert totals[("Errors", "NotSupportedException")] == 1
    assert totals.get(("iomt_fhir", "FHIRResourceContention"), 0) == 0
    merged = client.read("Observation", seed[0].observation["id"]).resource
    assert merged["valueSampledData"]["data"] == "E 60 E 75 E E"
