"""Resource identity resolution, as iomt-fhir's ``*IdentityService`` (semantics §4).

Turns a measurement group's device/patient/encounter *identifiers* into FHIR logical ids:

- ``Lookup``: ``Device?identifier=[system|]deviceId`` (exactly one), its Patient from
  ``Device.patient`` (``Patient/{id}``), ``Encounter?identifier=encounterId`` when given.
  The group's PatientId is ignored.
- ``LookupWithEncounter``: the same, and an EncounterId is required.
- ``Create``: Lookup; when the Device or its Patient is missing, ensure a Patient (search
  by identifier, else ``PUT Patient/{sha256("_"+PatientId)}``) and a Device (search, else
  ``PUT Device/{sha256(system+"_"+DeviceId)}`` linked to it). PUT with a deterministic id
  (not POST) is what makes concurrent workers converge on one resource.

Results are cached per DeviceId (as the reference: size 5000, sliding 2 h), so Device ->
Patient re-assignments are only seen after the entry idles out. Errors are the reference's
exception types; they are data problems, dead-lettered with ``error_type``, never retried.
Server trouble is not: the lookups go through the pipeline's :class:`FhirClient`, which
retries transient failures for the outage budget (``--fhir-outage-seconds``) while the
calling thread blocks, exactly as the writer's requests do.

Hashes, shell resources and reference parsing are ``transforms.mapping.identifiers``'s.
"""
from __future__ import annotations

import collections
import threading
from typing import Optional

from transforms.fhir.client import FhirClient
from transforms.fhir.retry import SYSTEM_CLOCK, Clock
from transforms.mapping import identifiers
from transforms.mapping.errors import MappingError

MODES = ("Create", "Lookup", "LookupWithEncounter")


# --- errors (names and ErrName telemetry as the reference) ------------------------------
class FhirResourceNotFoundException(MappingError):
    error_type = "FhirResourceNotFoundException"
    stage = "identity"  # transforms.records.dead_letter.STAGE_IDENTITY

    def __init__(self, resource_type: str):
        super().__init__(f"{resource_type} not found")
        self.resource_type = resource_type
        #: the reference's metric name (ErrName), e.g. DeviceNotFoundException
        self.err_name = f"{resource_type}NotFoundException"


class MultipleResourceFoundException(MappingError):
    error_type = "MultipleResourceFoundException"
    stage = "identity"  # transforms.records.dead_letter.STAGE_IDENTITY

    def __init__(self, resource_type: str, count: int = 2):
        super().__init__(f"multiple {resource_type} resources found for one identifier")
        self.resource_type = resource_type
        self.count = count
        self.err_name = f"Multiple{resource_type}FoundException"


class ResourceIdentityNotDefinedException(MappingError):
    error_type = "ResourceIdentityNotDefinedException"
    stage = "identity"  # transforms.records.dead_letter.STAGE_IDENTITY

    def __init__(self, resource_type: str):
        super().__init__(f"{resource_type} identity not defined in the measurement group")
        self.resource_type = resource_type
        self.err_name = f"{resource_type}IdentityNotDefinedException"


class PatientDeviceMismatchException(MappingError):
    error_type = "PatientDeviceMismatchException"
    stage = "identity"  # transforms.records.dead_letter.STAGE_IDENTITY

    def __init__(self):
        super().__init__("device is linked to a different patient")
        self.err_name = "PatientDeviceMismatchException"


# ids, shells and reference parsing come from the mapping engine's identifiers module, so
# Observation ids and identity ids share one implementation of the reference's hash rule.
hash_identifier = identifiers.compute_hash_for_identifier
reference_id = identifiers.reference_id
identifier_query = identifiers.identifier_search_value
#: FHIR logical ids the Observation references: (patient, device, encounter)
ResourceIdentity = identifiers.ResolvedIds


class TtlLruCache:
    """Size-bounded cache with sliding expiration (MemoryCache SizeLimit + SlidingExpiration)."""

    def __init__(self, max_size: int = 5000, sliding_seconds: float = 7200.0,
                 clock: Clock = SYSTEM_CLOCK):
        self.max_size = max_size
        self.sliding_seconds = sliding_seconds
        self.clock = clock
        self._data: "collections.OrderedDict[str, tuple[object, float]]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str):
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            now = self.clock.monotonic()
            value, last = item
            if now - last > self.sliding_seconds:
                del self._data[key]
                return None
            self._data[key] = (value, now)
            self._data.move_to_end(key)
            return value

    def put(self, key: str, value) -> None:
        with self._lock:
            self._data[key] = (value, self.clock.monotonic())
            self._data.move_to_end(key)
            while len(self._data) > self.max_size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class IdentityService:
    """Resolve a group's identities in one of the reference's three modes, with caching."""

    def __init__(self, client: FhirClient, mode: str = "Lookup",
                 default_device_identifier_system: Optional[str] = None,
                 cache: Optional[TtlLruCache] = None):
        canonical = {m.lower(): m for m in MODES}
        # the reference also accepts its class names; the mode word is the useful part
        key = mode.strip().lower()
        for alias, m in (("r4deviceandpatientcreateidentityservice", "Create"),
                         ("r4deviceandpatientlookupidentityservice", "Lookup"),
                         ("r4deviceandpatientwithencounterlookupidentityservice",
                          "LookupWithEncounter")):
            canonical[alias] = m
        if key not in canonical:
            raise ValueError(f"unknown resource identity mode {mode!r} (one of {MODES})")
        self.mode = canonical[key]
        self.client = client
        self.device_system = default_device_identifier_system or None
        self.cache = cache if cache is not None else TtlLruCache()

    # -- public --------------------------------------------------------------------------
    def resolve(self, device_id: str, patient_id: Optional[str] = None,
                encounter_id: Optional[str] = None) -> ResourceIdentity:
        """Logical ids for a group; raises the reference's exceptions on data problems.

        Cached by DeviceId only (as the reference), so the first group's encounter sticks
        while the device keeps sending.
        """
        if not device_id:
            raise ResourceIdentityNotDefinedException("Device")
        if self.mode == "LookupWithEncounter" and not encounter_id:
            raise ResourceIdentityNotDefinedException("Encounter")
        cached = self.cache.get(device_id)
        if cached is not None:
            return cached
        if self.mode == "Create":
            ident = self._create(device_id, patient_id, encounter_id)
        else:
            ident = self._lookup(device_id, encounter_id)
        self.cache.put(device_id, ident)
        return ident

    # -- modes ---------------------------------------------------------------------------
    def _lookup(self, device_id: str, encounter_id: Optional[str]) -> ResourceIdentity:
        device = self._find_one("Device", device_id, self.device_system)
        if device is None:
            raise FhirResourceNotFoundException("Device")
        patient = reference_id((device.get("patient") or {}).get("reference"), "Patient")
        if patient is None:
            raise FhirResourceNotFoundException("Patient")
        encounter = None
        if encounter_id:
            found = self._find_one("Encounter", encounter_id, None)
            if found is None:
                raise FhirResourceNotFoundException("Encounter")
            encounter = found["id"]
        return ResourceIdentity(patient, device["id"], encounter)

    def _create(self, device_id: str, patient_id: Optional[str],
                encounter_id: Optional[str]) -> ResourceIdentity:
        try:
            return self._lookup(device_id, encounter_id)
        except FhirResourceNotFoundException as err:
            if err.resource_type not in ("Device", "Patient"):
                raise
        if not patient_id:
            raise ResourceIdentityNotDefinedException("Patient")
        patient = self._ensure("Patient", patient_id, None,
                               lambda: identifiers.patient_shell(patient_id))
        patient_ref = f"Patient/{patient['id']}"
        device = self._ensure("Device", device_id, self.device_system,
                              lambda: identifiers.device_shell(device_id, patient["id"],
                                                               self.device_system))
        linked = (device.get("patient") or {}).get("reference")
        if not linked:
            device = dict(device, patient={"reference": patient_ref})
            device.pop("meta", None)
            self.client.put(device)
        elif reference_id(linked, "Patient") != patient["id"]:
            raise PatientDeviceMismatchException()
        # the reference does not resolve the encounter on this path
        return ResourceIdentity(patient["id"], device["id"], None)

    # -- helpers -------------------------------------------------------------------------
    def _find_one(self, resource_type: str, value: str, system: Optional[str]) -> Optional[dict]:
        found = self.client.search(resource_type,
                                   {"identifier": identifier_query(value, system), "_count": "2"},
                                   max_pages=1, limit=2)
        if len(found) > 1:
            raise MultipleResourceFoundException(resource_type, len(found))
        return found[0] if found else None

    def _ensure(self, resource_type: str, value: str, system: Optional[str], build) -> dict:
        existing = self._find_one(resource_type, value, system)
        if existing is not None:
            return existing
        resource = build()
        saved = self.client.put(resource)
        return saved.resource or resource
