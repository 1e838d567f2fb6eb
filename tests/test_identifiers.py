"""Identifiers, ids, Create-mode shells, search strings, reference parsing, partition keys (F10)."""
import pytest

from conftest import load_json, vector_dir
from transforms.mapping.identifiers import (SERVICE_SYSTEM, ResolvedIds, compute_hash_for_identifier,
                                            deterministic_hash_code, device_resource_id,
                                            device_shell, expanded_search_query,
                                            observation_id, observation_identifier,
                                            observation_identifier_value, observation_search_query,
                                            partition_key, patient_resource_id, patient_shell,
                                            reference_id, search_query)


@pytest.fixture
def f10():
    return load_json(vector_dir("F10") / "expected.json")


def test_service_system():
    assert SERVICE_SYSTEM == "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/"


def test_f10_hash_examples(f10):
    assert len(f10["examples"]) == 4
    for ex in f10["examples"]:
        ident = ex["identifier"]
        assert compute_hash_for_identifier(ident["value"], ident["system"]) == ex["id"]


def test_f10_observation_id(f10):
    ex = f10["examples"][3]
    assert observation_id(ex["identifier"]["value"]) == ex["id"]
    ids = ResolvedIds("pat-logical-1", "dev-logical-1")
    value = observation_identifier_value(ids, "heartrate", "20190101000000Z.20190101005959Z")
    assert value == ex["identifier"]["value"]
    assert observation_identifier(ids, "heartrate", "20190101000000Z.20190101005959Z") == ex["identifier"]


def test_f10_create_mode_shells(f10):
    created = f10["created_resources_create_mode"]
    assert patient_shell("patientId") == created["Patient"]
    assert device_shell("deviceId", patient_resource_id("patientId")) == created["Device"]
    assert device_resource_id("deviceId", "mySystem") == f10["examples"][2]["id"]
    assert device_resource_id("deviceId", "") == f10["examples"][0]["id"]


def test_device_shell_with_system():
    d = device_shell("deviceId", "p1", "mySystem")
    assert d == {"resourceType": "Device",
                 "id": "fd6eb28968a94406c73e4c3b6f05a142f71e3a1a27f3cf9435019cae48069afa",
                 "identifier": [{"system": "mySystem", "value": "deviceId"}],
                 "patient": {"reference": "Patient/p1"}}


def test_f10_search_queries(f10):
    q = {x["what"]: x for x in f10["search_queries"]}
    assert "GET " + search_query("Device", "deviceId") == q["Device lookup"]["query"]
    assert "GET " + search_query("Device", "deviceId", "mySystem") == q["Device lookup"]["with_system"]
    assert "GET " + search_query("Encounter", "eId") == q["Encounter lookup (when EncounterId present)"]["query"]
    assert observation_search_query("p.d.t.s") == f"Observation?identifier={SERVICE_SYSTEM}|p.d.t.s"


def test_f10_reference_parsing(f10):
    assert len(f10["reference_parsing"]) == 3
    for case in f10["reference_parsing"]:
        assert reference_id(case["reference"], "Patient") == case["GetId<Patient>"]
    assert reference_id("Device/123", "Patient") is None
    assert reference_id(None, "Patient") is None
    assert reference_id("Patient/a-b_c.d~e#f", "Patient") == "a-b_c.d~e#f"


def test_f10_expanded_search(f10):
    key = next(k for k in f10 if k.startswith("expanded_search"))
    assert len(f10[key]) == 4
    for case in f10[key]:
        assert expanded_search_query(case["identifier"]) == case["query"]


def test_f10_partition_keys(f10):
    key = next(k for k in f10 if k.startswith("partition_key_hash"))
    assert len(f10[key]) == 5
    for case in f10[key]:
        assert partition_key(case["input"]) == case["result"]


def test_partition_key_lowercases_and_uses_utf16_units():
    assert partition_key("DEVICE123") == "28"
    assert deterministic_hash_code("") == 0
    assert deterministic_hash_code("a") == 97
    # U+1F600 is two UTF-16 code units 0xD83D 0xDE00: 0xD83D*31 + 0xDE00
    assert deterministic_hash_code("\U0001F600") == 0xD83D * 31 + 0xDE00
    h = 0  # int32 overflow wraps like C#
    for ch in "abcdefghijklmnopqrstuvwxyz":
        h = (h * 31 + ord(ch)) & 0xFFFFFFFF
    assert deterministic_hash_code("abcdefghijklmnopqrstuvwxyz") == (h - 2**32 if h >= 2**31 else h)


def test_e02_create_mode_ids():
    d = vector_dir("E02")
    calls = load_json(d / "expected.json")["fhir_calls_on_empty_server"]
    pid = patient_resource_id("patient1")
    did = device_resource_id("device1")
    assert any(c.startswith(f"PUT Patient/{pid}") for c in calls)
    assert any(c.startswith(f"PUT Device/{did}") for c in calls)
    assert pid == "cd3ee1fc63936b0083c968fe962a726d383ab6ee83af53d4f50507ccd646b68a"
    assert did == "e55c4dadeb1050efd66966053edc1a9f921022858367eff94c3fc7660ed1f1ef"
