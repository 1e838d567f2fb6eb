"""Server profiles: the writer defaults per FHIR server product, from the CapabilityStatement
or ``--fhir-server-kind``; what the user gives always wins (README "FHIR servers").

One test per profile checks the settings it resolves to; HAPI and Medplum's router are also
asked live (their real CapabilityStatements), through ``iomt-fhir check``'s preflight.
"""
import pytest

from pipelines.options import IomtFhirOptions, writer_settings
from pipelines.run import preflight
from transforms.fhir.server_profiles import KINDS, PROFILES, detect, resolve
from apache_beam.options.pipeline_options import PipelineOptions


def cap(name, interactions=("transaction", "batch", "search-system")):
    return {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "software": {"name": name},
            "rest": [{"mode": "server", "interaction": [{"code": c} for c in interactions]}]}


# (software.name as each product states it, kind, bundle_size, read_batch_size, bundle_type, rate)
CASES = [
    ("Microsoft FHIR Server", "azure", 50, 500, "transaction", 0.0),
    ("Cloud Healthcare API", "google", 50, 500, "transaction", 0.0),
    ("AWS HealthLake", "healthlake", 150, 150, "transaction", 10.0),
    ("HAPI FHIR Server", "hapi", 50, 500, "transaction", 0.0),
    ("medplum fhir-router MemoryRepository", "medplum", 50, 500, "transaction", 0.0),
    ("Some Vendor FHIR", "generic", 50, 500, "transaction", 0.0),
]


@pytest.mark.parametrize("name,kind,size,reads,btype,rate", CASES, ids=[c[1] for c in CASES])
def test_each_profile_resolves_to_its_settings(name, kind, size, reads, btype, rate):
    assert detect(cap(name)) == kind
    s = resolve("auto", cap(name))
    assert (s.kind, s.bundle_size, s.read_batch_size, s.bundle_type, s.max_requests_per_second) == (
        kind, size, reads, btype, rate)
    # stated by the user, without a CapabilityStatement (--skip-preflight)
    assert resolve(kind)[:5] == s[:5]
    assert s.bundle_size <= {"healthlake": 160, "azure": 500, "google": 4500}.get(kind, 50)
    assert s.read_batch_size <= {"healthlake": 160, "azure": 500}.get(kind, 500)


def test_user_options_always_win():
    s = resolve("healthlake", cap("AWS HealthLake"), bundle_size=20, read_batch_size=30, bundle_type="batch",
                max_requests_per_second=0)
    assert s[:5] == ("healthlake", 20, 30, "batch", 0)
    assert "bundle_size=20 (option)" in s.describe() and "max_requests_per_second=0 (option)" in s.describe()
    # the kind named by the user wins over what the server says it is
    assert resolve("healthlake", cap("HAPI FHIR Server")).kind == "healthlake"
    opts = PipelineOptions(["--fhir-server-kind=healthlake", "--bundle-size=60"]).view_as(IomtFhirOptions)
    assert writer_settings(opts, cap("HAPI FHIR Server"))[:5] == ("healthlake", 60, 150, "transaction", 10.0)


def test_a_server_without_transactions_gets_batches():
    """The older Azure API for FHIR names itself as the FHIR service does, but states batch only."""
    s = resolve("auto", cap("Microsoft FHIR Server", ("batch", "search-system")))
    assert (s.kind, s.bundle_type) == ("azure", "batch")
    assert "the server states batch, not transaction" in s.describe()
    assert resolve("auto", cap("Microsoft FHIR Server", ("batch",)), bundle_type="transaction").bundle_type == "transaction"


def test_unknown_kind_and_publisher_fallback():
    with pytest.raises(ValueError):
        resolve("cosmos")
    assert detect({"publisher": "Amazon HealthLake"}) == "healthlake"
    assert detect(None) == "generic" and set(PROFILES) == set(KINDS) - {"auto"}


class Args:
    fhir_auth, identity_mode, device_identifier_system, fhir_server_kind = "none", "Create", "", "auto"

    def __init__(self, url):
        self.fhir_url = url


@pytest.mark.fhir_server
@pytest.mark.both_fhir_servers
def test_live_servers_are_recognised(fhir_base_url, fhir_server_kind):
    got = {}
    lines = preflight.check_launch(Args(fhir_base_url), got)
    want = PROFILES[fhir_server_kind].product
    assert detect(got) == fhir_server_kind
    assert any(line.startswith(f"{want} profile: bundle_size=50") for line in lines), lines
