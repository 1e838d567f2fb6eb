"""Identifiers, resource ids and hashes exactly as the reference computes them (vector F10).

Why exact: migrating users must keep updating the SAME Observation, Patient and
Device resources that iomt-fhir / MedTech created. Those resources are found by
identifier and written with PUT to ids that are SHA-256 hashes of the identifier,
so every string here must match the reference character for character.
"""
import hashlib
import re
from typing import NamedTuple, Optional

from transforms.mapping import timeutil

# FhirImportService.ServiceSystem: system of every Observation identifier and of the
# extra coding the reference appends to Observation.code / component.code.
SERVICE_SYSTEM = "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/"


class ResolvedIds(NamedTuple):
    """Logical ids the identity step resolved (FHIR server ids, or hashes in Create mode)."""

    patient: str
    device: str
    encounter: Optional[str] = None


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def compute_hash_for_identifier(value: str, system: Optional[str] = None) -> str:
    """``IdentifierExtensions.ComputeHashForIdentifier``: sha256 of ``"{system}_{value}"``, lowercase hex.

    A missing system is the empty string, so the Create-mode patient id is
    ``sha256("_" + patientId)``.
    """
    return sha256_hex(f"{system or ''}_{value}")


def observation_identifier_value(ids: ResolvedIds, group_name: str, id_segment: str) -> str:
    """``{patient}.{device}.{groupName}.{idSegment}`` with LOGICAL ids (not device identifiers)."""
    return f"{ids.patient}.{ids.device}.{group_name}.{id_segment}"


def observation_identifier(ids: ResolvedIds, group_name: str, id_segment: str) -> dict:
    return {"system": SERVICE_SYSTEM,
            "value": observation_identifier_value(ids, group_name, id_segment)}


def observation_id(identifier_value: str) -> str:
    """Observation.id used with PUT: hash of the ServiceSystem identifier."""
    return compute_hash_for_identifier(identifier_value, SERVICE_SYSTEM)


# --- Create-mode shell resources (R4DeviceAndPatientCreateIdentityService) ----------------
def patient_resource_id(patient_identifier: str) -> str:
    """Patient identifiers never carry a system in the reference."""
    return compute_hash_for_identifier(patient_identifier, None)


def device_resource_id(device_identifier: str, system: Optional[str] = None) -> str:
    """``system`` = ``ResourceIdentity:DefaultDeviceIdentifierSystem`` (empty -> none)."""
    return compute_hash_for_identifier(device_identifier, system or None)


def _identifier(value: str, system: Optional[str]) -> dict:
    return {"system": system, "value": value} if system else {"value": value}


def patient_shell(patient_identifier: str) -> dict:
    return {"resourceType": "Patient", "id": patient_resource_id(patient_identifier),
            "identifier": [_identifier(patient_identifier, None)]}


def device_shell(device_identifier: str, patient_logical_id: Optional[str],
                 system: Optional[str] = None) -> dict:
    device = {"resourceType": "Device", "id": device_resource_id(device_identifier, system),
              "identifier": [_identifier(device_identifier, system)]}
    if patient_logical_id:
        device["patient"] = {"reference": f"Patient/{patient_logical_id}"}
    return device


# --- search queries ------------------------------------------------------------------------
def identifier_search_value(value: str, system: Optional[str] = None) -> str:
    """Token search value: ``system|value`` or just ``value`` when there is no system."""
    return f"{system}|{value}" if system else value


def search_query(resource_type: str, value: str, system: Optional[str] = None) -> str:
    """e.g. ``Device?identifier=mySystem|deviceId`` (unescaped, as in the vectors)."""
    return f"{resource_type}?identifier={identifier_search_value(value, system)}"


def observation_search_query(identifier_value: str) -> str:
    return search_query("Observation", identifier_value, SERVICE_SYSTEM)


_SEGMENT_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$")


def _segment_to_iso(segment: str) -> Optional[str]:
    m = _SEGMENT_RE.match(segment)
    if m is None:
        return None
    y, mo, d, h, mi, s = m.groups()
    text = f"{y}-{mo}-{d}T{h}:{mi}:{s}Z"
    return text if timeutil.parse_iso(text) is not None else None


def expanded_search_query(identifier_value: str) -> str:
    """``SearchExtensions.ToExpandedSearchQueryParameters`` (not used by the import path).

    A time-segmented identifier ``p.d.type[.more].yyyyMMddHHmmssZ.yyyyMMddHHmmssZ``
    becomes subject/device/code/date parameters; anything else (correlation ids,
    segments that are not exactly 14 digits + Z) stays an identifier search.
    """
    parts = identifier_value.split(".")
    if len(parts) >= 5:
        start = _segment_to_iso(parts[-2])
        end = _segment_to_iso(parts[-1])
        if start and end:
            code = ".".join(parts[2:-2])
            return (f"subject={parts[0]}&device={parts[1]}&code={code}"
                    f"&date=ge{start}&date=le{end}")
    return f"identifier={identifier_value}"


# --- references ----------------------------------------------------------------------------
_ID_RE = re.compile(r"^[A-Za-z0-9_.\-~#]+$")


def reference_id(reference: Optional[str], resource_type: str) -> Optional[str]:
    """``GetId<T>``-style parsing of ``"{Type}/{id}"``; ``None`` when not of that form."""
    if not reference:
        return None
    prefix = resource_type + "/"
    if not reference.startswith(prefix):
        return None
    rid = reference[len(prefix):]
    return rid if _ID_RE.match(rid) else None


# --- partition key -------------------------------------------------------------------------
def deterministic_hash_code(text: str) -> int:
    """``DeterministicHashCodeGenerator``: ``h = h*31 + c`` over UTF-16 code units, int32 wrap."""
    data = text.encode("utf-16-le")
    h = 0
    for k in range(0, len(data), 2):
        h = (h * 31 + (data[k] | (data[k + 1] << 8))) & 0xFFFFFFFF
    return h - 0x100000000 if h & 0x80000000 else h


def partition_key(device_id: str) -> str:
    """Event Hub partition key of a normalized measurement: ``abs(hash(lower(id))) % 256``.

    .NET ``Math.Abs(int.MinValue)`` throws; Python's abs does not, and
    ``2**31 % 256 == 0``, so that (practically unreachable) case yields ``"0"``.
    """
    return str(abs(deterministic_hash_code(device_id.lower())) % 256)
