"""Safe writer settings per FHIR server product: bundle size, read batch, bundle type, rate.

Why: the servers users write to differ in limits the writer must stay under, and a wrong
guess costs a whole backfill (every bundle refused) or a quota (every request throttled):

- AWS HealthLake refuses bundles of more than 160 entries (reads by id go in batch bundles
  too) and allows 10 bundle requests per second per data store (20 per account);
- the Azure Health Data Services FHIR service allows 500 entries per bundle; the older Azure
  API for FHIR has no transactions at all (batch only);
- Google's Cloud Healthcare API allows 4,500 entries per executeBundle, quotas per project;
- HAPI FHIR and Medplum have no such product limit (Medplum's router: 50 updates per bundle).

The profile comes from the CapabilityStatement's ``software.name`` (``detect``) unless the
user names it (``--fhir-server-kind``), and an option the user gives always wins over it
(``resolve``). A server whose CapabilityStatement lists batch but not transaction gets batch
bundles whatever its product. The README's "FHIR servers" table gives each value's source.
Pure: no Beam, no I/O.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

#: --fhir-server-kind values; "auto" reads the CapabilityStatement
KINDS = ("auto", "azure", "google", "healthlake", "hapi", "medplum", "generic")


class ServerProfile(NamedTuple):
    kind: str
    product: str
    bundle_size: int
    read_batch_size: int
    bundle_type: str  # transaction | batch
    #: requests per second per worker process; 0 = no cap (429s are throttled adaptively)
    max_requests_per_second: float


PROFILES = {
    "azure": ServerProfile("azure", "Azure Health Data Services FHIR service", 50, 500, "transaction", 0.0),
    "google": ServerProfile("google", "Google Cloud Healthcare API", 50, 500, "transaction", 0.0),
    "healthlake": ServerProfile("healthlake", "AWS HealthLake", 150, 150, "transaction", 10.0),
    "hapi": ServerProfile("hapi", "HAPI FHIR", 50, 500, "transaction", 0.0),
    "medplum": ServerProfile("medplum", "Medplum", 50, 500, "transaction", 0.0),
    "generic": ServerProfile("generic", "an unrecognised FHIR server", 50, 500, "transaction", 0.0),
}

#: lower-case words of software.name (or publisher) -> kind, first match wins
_SIGNATURES = (
    ("healthlake", "healthlake"),
    ("cloud healthcare", "google"),
    ("google", "google"),
    ("microsoft fhir server", "azure"),
    ("azure", "azure"),
    ("hapi", "hapi"),
    ("medplum", "medplum"),
)


def detect(capabilities: Optional[dict]) -> str:
    """The kind a CapabilityStatement names (``software.name``, else ``publisher``), or
    ``generic``."""
    cap = capabilities or {}
    text = " ".join(str(x) for x in ((cap.get("software") or {}).get("name"), cap.get("publisher")) if x).lower()
    for words, kind in _SIGNATURES:
        if words in text:
            return kind
    return "generic"


def _system_interactions(capabilities: Optional[dict]) -> Optional[set]:
    """The system-level interactions the server states (None when it states none)."""
    codes = set()
    for rest in (capabilities or {}).get("rest") or []:
        if rest.get("mode", "server") != "server":
            continue
        for i in rest.get("interaction") or []:
            if i.get("code"):
                codes.add(i["code"])
    return codes or None


class WriterSettings(NamedTuple):
    kind: str
    bundle_size: int
    read_batch_size: int
    bundle_type: str
    max_requests_per_second: float
    #: why each value is what it is, for the launch log ("bundle_size=50 (profile hapi)")
    reasons: tuple

    def describe(self) -> str:
        return f"{PROFILES[self.kind].product} profile: " + ", ".join(self.reasons)


def resolve(kind: str, capabilities: Optional[dict] = None, bundle_size: Optional[int] = None,
            read_batch_size: Optional[int] = None, bundle_type: Optional[str] = None,
            max_requests_per_second: Optional[float] = None) -> WriterSettings:
    """The writer's settings: what the user gave (not None) wins, else the profile's; a
    profile's transaction becomes batch when the CapabilityStatement offers batch only."""
    if kind in (None, "", "auto"):
        kind = detect(capabilities)
    if kind not in PROFILES:
        raise ValueError(f"unknown FHIR server kind {kind!r} (one of {', '.join(KINDS)})")
    profile = PROFILES[kind]
    reasons = []

    def pick(name, given, default, why=None):
        if given is not None:
            reasons.append(f"{name}={given} (option)")
            return given
        reasons.append(f"{name}={default} ({why or 'profile ' + kind})")
        return default

    size = pick("bundle_size", bundle_size, profile.bundle_size)
    reads = pick("read_batch_size", read_batch_size, profile.read_batch_size)
    default_type, why = profile.bundle_type, None
    stated = _system_interactions(capabilities)
    if default_type == "transaction" and stated is not None and "transaction" not in stated and "batch" in stated:
        default_type, why = "batch", "the server states batch, not transaction"
    btype = pick("bundle_type", bundle_type, default_type, why)
    rate = pick("max_requests_per_second", max_requests_per_second, profile.max_requests_per_second)
    return WriterSettings(kind, size, reads, btype, rate, tuple(reasons))
