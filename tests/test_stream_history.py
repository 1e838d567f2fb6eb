"""How many versions a stream stores per Observation on HAPI FHIR's JPA server (issue 17).

Every PUT that changes an Observation is a new version, kept forever by HAPI (and Azure,
Google, HealthLake). A device streaming one reading a second into an hourly Observation makes
the writer update that Observation once per early firing: at most one version per
``--early-firing-seconds`` (README "Latency" and "FHIR servers"). This test streams readings
for about 20 s through the Pub/Sub emulator into HAPI at the default early firing, counts
``_history``, and checks the count is bounded by the early firing (prints versions per hour).
"""
import json
import math
import time
import uuid

import apache_beam as beam
import pytest
import requests
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.iomt_to_fhir import build
from pipelines.options import IomtFhirOptions
from pipeline_fixtures import DEVICE
from pubsub_fixtures import RUNNER, run_until
from transforms.mapping import identifiers

pytestmark = [pytest.mark.pubsub_emulator, pytest.mark.fhir_server, pytest.mark.hapi_server]

READINGS = 20  # one a second
NO_CACHE = {"Cache-Control": "no-cache"}

HOURLY = json.dumps({"templateType": "CollectionFhir", "template": [{
    "templateType": "CodeValueFhir", "template": {
        "typeName": "heartrate", "periodInterval": 60,
        "codes": [{"code": "8867-4", "system": "http://loinc.org", "display": "Heart rate"}],
        "value": {"valueType": "SampledData", "valueName": "hr", "defaultPeriod": 1000, "unit": "/min"}}}]})


def test_versions_per_observation_are_bounded_by_the_early_firing(channel, hapi_base_url, unique):
    opts = PipelineOptions(RUNNER + [f"--pubsub-subscription={channel.subscription}", f"--fhir-url={hapi_base_url}",
                                     "--identity-mode=Create", "--device-identifier-system=urn:hist"])
    early = opts.view_as(IomtFhirOptions).early_firing_seconds
    p = beam.Pipeline(options=opts)
    build(p, opts.view_as(IomtFhirOptions), DEVICE, HOURLY, streaming=True)
    dev = f"hist-{unique}"
    device_id = identifiers.device_resource_id(dev, "urn:hist")
    sent = []

    def observations():
        r = requests.get(f"{hapi_base_url}/Observation", params={"device": f"Device/{device_id}"},
                         headers=NO_CACHE, timeout=10)
        r.raise_for_status()
        return [e["resource"] for e in r.json().get("entry") or []]

    def done():
        # one a second at least (readings closer than the 1 s SampledData period share a slot)
        if len(sent) < READINGS and (not sent or time.time() - sent[-1] >= 1.05):
            now = time.time()
            at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
            channel.publish(json.dumps({"dev": dev, "pat": "p-" + dev, "at": at, "hr": 60 + len(sent)}).encode())
            sent.append(now)
            return False
        if len(sent) < READINGS:
            return False
        values = sum(len([v for v in o["valueSampledData"]["data"].split() if v != "E"]) for o in observations())
        return values >= READINGS

    run_until(p, channel, done, timeout=READINGS + 90)
    elapsed = sent[-1] - sent[0] if sent else 0
    found = observations()
    values = sum(len([v for v in o["valueSampledData"]["data"].split() if v != "E"]) for o in found)
    assert values == READINGS, (f"{values} of {READINGS} readings on the server", [o["valueSampledData"]["data"].replace("E ", "") for o in found], [round(t % 3600, 2) for t in sent])
    versions = 0
    for o in found:
        h = requests.get(f"{hapi_base_url}/Observation/{o['id']}/_history", headers=NO_CACHE, timeout=10).json()
        versions += h.get("total", len(h.get("entry") or []))
        assert o["meta"]["versionId"] == str(h.get("total"))
    # one version per early firing at most (+1 for the first write, +1 per Observation when an
    # hour boundary falls inside the test), and more than one: the stream updates as it goes
    bound = math.ceil(elapsed / early) + 1 + len(found)
    assert 2 <= versions <= bound, (versions, bound)
    print(f"history: early firing {early} s: {versions} versions over {elapsed:.0f} s of readings, "
          f"{versions / max(elapsed, 1) * 3600:.0f} per hour of a continuously streaming device "
          f"(bound {3600 / early:.0f})")
