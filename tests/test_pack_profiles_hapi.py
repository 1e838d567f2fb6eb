"""Every Observation the template packs produce, validated by HL7's own rules: HAPI FHIR's
validator with the R4 core definitions (scripts/java/profile-validator), offline, against the
profiles each Observation declares (non-vital-sign Observations against the base resource).

One JVM run for everything (pack Observations and the broken copies below): ~20-30 s, most of
it the validator's start-up. The broken copies show the check can fail: each removes or spoils
one element a vital-signs profile requires and must be reported as an error.
"""
import copy

import pytest

from pipelines import packs
from profile_validator import errors, validate
from pack_fixtures import pack_observations, samples
from transforms.mapping.identifiers import compute_hash_for_identifier

# the JVM run: ~10-30 s; up to 140 s was seen on this 2-core box under a load average of 15
pytestmark = pytest.mark.timeout(300)


def _without(key):
    def f(obs):
        del obs[key]
    return f


def _set_unit(code):
    def f(obs):
        obs["valueQuantity"]["code"] = code
    return f


def _drop_loinc(obs):
    obs["code"]["coding"] = [c for c in obs["code"]["coding"] if c["system"] != "http://loinc.org"]


def _drop_unit_system(obs):
    del obs["valueQuantity"]["system"]


def _drop_diastolic(obs):
    obs["component"] = obs["component"][:1]


def _period_as_the_reference_writes_it(obs):
    t = obs.pop("effectiveDateTime")
    obs["effectivePeriod"] = {"start": t, "end": t}


# (pack, type of the Observation to break, how, a phrase of the expected error)
BROKEN = [
    ("openmhealth", "heartrate", _without("category"), "VSCat"),
    ("openmhealth", "heartrate", _drop_loinc, "HeartRateCode"),
    ("openmhealth", "heartrate", _set_unit("bpm"), "/min"),
    ("openmhealth", "heartrate", _drop_unit_system, "valueQuantity.system"),
    ("openmhealth", "heartrate", _without("subject"), "Observation.subject"),
    ("withings", "bodyweight", _without("effectiveDateTime"), "Observation.effective[x]"),
    ("withings", "bodyweight", _set_unit("[stone_av]"), "ucum-bodyweight"),
    ("iot-central", "bloodpressure", _drop_diastolic, "DiastolicBP"),
    ("apple-health", "bodytemperature-f", _set_unit("degF"), "degF"),
    # why profiled readings carry effectiveDateTime: vs-1 fails on an instant Period
    ("fitbit", "heartrate", _period_as_the_reference_writes_it, "vs-1"),
]


def as_written_in_create_mode(obs):
    """Offline, references hold the messages' ids (``transform``); a run in Create mode writes
    the Patient's and Device's logical ids, SHA-256 of the identifiers: validate that shape."""
    for key, kind in (("subject", "Patient"), ("device", "Device")):
        ident = obs[key]["reference"][len(kind) + 1:]
        obs[key]["reference"] = f"{kind}/{compute_hash_for_identifier(ident)}"
    return obs


@pytest.fixture(scope="module")
def results():
    items, originals = [], {}
    for name, sample, input_format, _ in samples():
        observations, failures = pack_observations(name, packs.read(name, sample), input_format)
        assert failures == []
        for i, obs in enumerate(map(as_written_in_create_mode, observations)):
            profiles = obs.get("meta", {}).get("profile", [])
            items.append((f"{name}/{sample}/{i}/{obs['code']['text']}", profiles, obs))
            originals.setdefault((name, obs["code"]["text"]), (profiles, obs))
    for n, (name, type_name, breaks, _) in enumerate(BROKEN):
        profiles, obs = originals[(name, type_name)]
        broken = copy.deepcopy(obs)
        breaks(broken)
        items.append((f"broken/{n}", profiles, broken))
    return items, validate(items)


def test_every_pack_observation_passes_its_declared_profiles(results):
    items, found = results
    pack_items = [i for i in items if not i[0].startswith("broken/")]
    assert len(pack_items) == 54  # every Observation of the five packs' samples
    assert sum(1 for _, profiles, _ in pack_items if profiles) == 46
    failed = {name: errors(found[name]) for name, _, _ in pack_items if errors(found[name])}
    assert failed == {}


@pytest.mark.parametrize("n", range(len(BROKEN)), ids=[f"{b[0]}-{b[1]}-{b[2].__name__}" for b in BROKEN])
def test_an_observation_missing_a_required_element_fails(results, n):
    _, found = results
    reported = errors(found[f"broken/{n}"])
    assert reported, "HAPI accepted an Observation the profile forbids"
    phrase = BROKEN[n][3]
    assert any(phrase in f"{loc} {msg}" for _, loc, msg in reported), reported
