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

Two modes of ours (not the reference's), for devices that change hands (README "Devices that
change hands"): ``LookupByDeviceUse`` finds the Device as Lookup does, then its
``DeviceUseStatement``s (``DeviceUseStatement?device=Device/{id}``); the patient of a reading is
the subject of the statement whose ``timingPeriod`` covers its time (the rules are
``transforms.mapping.device_use``'s). What is cached is the Device's list of use periods, not a
patient, and it expires ``cache_seconds`` after it was read however busy the device is (an
absolute TTL: a sliding one never expires on a device that keeps sending), so a statement
created while a stream runs takes effect within that time. ``LookupByDeviceUseWithEncounter``
also requires an EncounterId; in both, an encounter found by identifier must be of the patient
chosen for the time (``PatientEncounterMismatchException`` otherwise), so an encounter id in a
message cannot put readings on another patient's record.

Hashes, shell resources and reference parsing are ``transforms.mapping.identifiers``'s.
"""
from __future__ import annotations

import collections
import threading
from typing import NamedTuple, Optional, Tuple

from transforms.fhir.client import FhirClient
from transforms.fhir.retry import SYSTEM_CLOCK, Clock
from transforms.mapping import device_use, identifiers
from transforms.mapping.errors import MappingError

REFERENCE_MODES = ("Create", "Lookup", "LookupWithEncounter")
DEVICE_USE_MODES = ("LookupByDeviceUse", "LookupByDeviceUseWithEncounter")
MODES = REFERENCE_MODES + DEVICE_USE_MODES
#: the reference's cache (sliding) and ours for device-use periods (absolute), in seconds
REFERENCE_CACHE_SECONDS = 7200.0
DEVICE_USE_CACHE_SECONDS = 60.0


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


class PatientEncounterMismatchException(MappingError):
    error_type = "PatientEncounterMismatchException"
    stage = "identity"  # transforms.records.dead_letter.STAGE_IDENTITY

    def __init__(self):
        super().__init__("the encounter is of a different patient than the one wearing the device then")
        self.err_name = "PatientEncounterMismatchException"


def default_cache_seconds(mode: str) -> float:
    """``--identity-cache-seconds`` unset: the reference's 2 h (sliding) for its modes, 60 s
    (absolute) for device use, where staleness means readings on the previous holder."""
    return DEVICE_USE_CACHE_SECONDS if mode in DEVICE_USE_MODES else REFERENCE_CACHE_SECONDS


# ids, shells and reference parsing come from the mapping engine's identifiers module, so
# Observation ids and identity ids share one implementation of the reference's hash rule.
hash_identifier = identifiers.compute_hash_for_identifier
reference_id = identifiers.reference_id
identifier_query = identifiers.identifier_search_value
#: FHIR logical ids the Observation references: (patient, device, encounter)
ResourceIdentity = identifiers.ResolvedIds


class DeviceUses(NamedTuple):
    """What ``LookupByDeviceUse`` caches per device identifier: its logical id and use periods."""

    device: str
    periods: Tuple[device_use.UsePeriod, ...]


class TtlLruCache:
    """Size-bounded cache with sliding expiration (MemoryCache SizeLimit + SlidingExpiration),
    or with ``sliding=False`` an absolute one: an entry expires that long after it was put."""

    def __init__(self, max_size: int = 5000, sliding_seconds: float = 7200.0,
                 clock: Clock = SYSTEM_CLOCK, sliding: bool = True):
        self.max_size = max_size
        self.sliding_seconds = sliding_seconds
        self.sliding = sliding
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
            if self.sliding:
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
    """Resolve a group's identities in one of the reference's three modes, with caching, or
    give a device's use periods (``device_uses``) in the device-use modes."""

    @staticmethod
    def canonical_mode(mode: str) -> str:
        """A mode as given (any case, or the reference's class names) -> its name in ``MODES``."""
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
        return canonical[key]

    @classmethod
    def is_device_use_mode(cls, mode: str) -> bool:
        return cls.canonical_mode(mode) in DEVICE_USE_MODES

    def __init__(self, client: FhirClient, mode: str = "Lookup",
                 default_device_identifier_system: Optional[str] = None,
                 cache: Optional[TtlLruCache] = None, cache_seconds: Optional[float] = None):
        self.mode = self.canonical_mode(mode)
        self.client = client
        self.device_system = default_device_identifier_system or None
        self.by_device_use = self.mode in DEVICE_USE_MODES
        if cache is None:
            seconds = default_cache_seconds(self.mode) if cache_seconds is None else float(cache_seconds)
            cache = TtlLruCache(sliding_seconds=seconds, sliding=not self.by_device_use)
        self.cache = cache
        self._encounters = TtlLruCache(sliding_seconds=cache.sliding_seconds, clock=cache.clock,
                                       sliding=False)

    # -- public --------------------------------------------------------------------------
    def resolve(self, device_id: str, patient_id: Optional[str] = None,
                encounter_id: Optional[str] = None) -> ResourceIdentity:
        """Logical ids for a group; raises the reference's exceptions on data problems.

        Cached by DeviceId only (as the reference), so the first group's encounter sticks
        while the device keeps sending.
        """
        if self.by_device_use:
            raise ValueError(f"{self.mode} resolves per reading time: use device_uses")
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

    def device_uses(self, device_id: str) -> "DeviceUses":
        """The Device's logical id and its counting use periods (cached, absolute TTL).

        Raises ``ResourceIdentityNotDefinedException(Device)`` without a device id,
        ``FhirResourceNotFoundException(Device)`` / ``MultipleResourceFoundException`` as
        Lookup, and ``DeviceUseNotDefinedException`` when no statement counts (cached too: a
        device that keeps sending costs one lookup per TTL, not one per group)."""
        cached = self.uses_of(device_id)
        if not cached.periods:
            raise device_use.DeviceUseNotDefinedException(f"Device/{cached.device}")
        return cached

    def uses_of(self, device_id: str) -> "DeviceUses":
        """``device_uses`` without the error for a device with no counting period."""
        if not device_id:
            raise ResourceIdentityNotDefinedException("Device")
        cached = self.cache.get(device_id)
        if cached is None:
            device = self._find_one("Device", device_id, self.device_system)
            if device is None:
                raise FhirResourceNotFoundException("Device")
            statements = self.client.search("DeviceUseStatement",
                                            {"device": f"Device/{device['id']}", "_count": "100"}, fresh=True)
            cached = DeviceUses(device["id"], tuple(device_use.periods_of_statements(statements)))
            self.cache.put(device_id, cached)
        return cached

    def encounter_for(self, encounter_id: Optional[str], patient: str) -> Optional[str]:
        """The Encounter of a device-use part: required in ``LookupByDeviceUseWithEncounter``,
        looked up when given in both modes, and it must be of ``patient``."""
        if not encounter_id:
            if self.mode == "LookupByDeviceUseWithEncounter":
                raise ResourceIdentityNotDefinedException("Encounter")
            return None
        found = self._encounters.get(encounter_id)
        if found is None:
            found = self._find_one("Encounter", encounter_id, None)
            if found is None:
                raise FhirResourceNotFoundException("Encounter")
            found = (found["id"], reference_id((found.get("subject") or {}).get("reference"), "Patient"))
            self._encounters.put(encounter_id, found)
        if found[1] != patient:
            raise PatientEncounterMismatchException()
        return found[0]

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
        # fresh: this service's own cache decides how long an answer holds, not the server's
        found = self.client.search(resource_type,
                                   {"identifier": identifier_query(value, system), "_count": "2"},
                                   max_pages=1, limit=2, fresh=True)
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
