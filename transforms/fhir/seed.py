"""Seeding a FHIR server with the Patients and Devices that ``--identity-mode Lookup`` needs.

Why: in Lookup mode (the reference's ``R4DeviceAndPatientLookupIdentityService``) the
pipeline creates nothing; it finds ``Device?identifier=[system|]deviceId`` (exactly one),
takes its Patient from ``Device.patient`` and, when a measurement has an EncounterId,
``Encounter?identifier=encounterId``. Anything missing dead-letters the group as
``FhirResourceNotFoundException``. This module makes a server hold exactly that for a list
of devices, so a clinic (or a test, or the simulator's devices) can run Lookup mode at once.

What it writes, per row ``(device id, patient id[, encounter id])``:

* the Patient found by ``Patient?identifier=patientId``, else a new one shaped and id'd as
  Create mode's shell (``PUT Patient/{sha256("_"+patientId)}``) so both modes agree;
* the Device found by ``Device?identifier=[system|]deviceId``, else Create mode's shell linked
  to the Patient; an existing Device without ``patient`` is linked (``If-Match`` its version);
  one linked to a *different* Patient is an error for that row unless ``relink`` (a device
  handed to another patient), because silently moving a device moves its future readings;
* with an encounter id, the Encounter found by identifier, else a minimal in-progress
  virtual Encounter of that Patient (``PUT Encounter/{sha256("_"+encounterId)}``).

Device use periods (``--identity-mode LookupByDeviceUse``), per row ``device,patient,start,end
[,status]`` (``transforms.mapping.device_use.PeriodRow``): the Patient as above, the Device found
by identifier else Create mode's shell *without* a patient link (who wears it is the periods'
business), and one ``DeviceUseStatement`` per (device, patient, start), at the deterministic id
``sha256("{DEVICE_USE_SYSTEM}_{system}|{device}|{patient}|{start}")`` with that value as its
identifier (system ``DEVICE_USE_SYSTEM``): created, or updated (``If-Match``) when its end or
status changed (closing an ongoing period, retiring a wrong one as ``entered-in-error``), else
left alone. Statements this connector did not write are never changed.

Idempotent: everything is searched first and only what is missing or different is written,
so a second run writes nothing; deterministic ids make concurrent seeders converge. One bad
row costs only itself (its error is reported with its line number, never its identifiers).
No Beam here: the CLI (``iomt-fhir seed``) and tests share it.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from transforms.fhir.client import FhirClient, FhirError
from transforms.fhir.identity import MultipleResourceFoundException, PatientDeviceMismatchException
from transforms.mapping import identifiers, timeutil
from transforms.mapping.device_use import PeriodRow
from transforms.mapping.errors import InvalidDataFormatException, MappingError

#: column / key names accepted for each field (the simulator's dicts use the first spelling)
FIELDS = {"device_id": ("device_id", "deviceid", "device"),
          "patient_id": ("patient_id", "patientid", "patient"),
          "encounter_id": ("encounter_id", "encounterid", "encounter")}
ENCOUNTER_CLASS = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR",
                   "display": "virtual"}  # remote monitoring; Encounter.class is required in R4


#: identifier system of the DeviceUseStatements ``seed`` writes (ours to update, nobody else's)
DEVICE_USE_SYSTEM = identifiers.SERVICE_SYSTEM + "device-use"


def device_use_identifier(row: PeriodRow, device_system: Optional[str]) -> str:
    """``{system}|{device}|{patient}|{start}`` with the start as an instant (``""`` when open):
    the same period written twice, in any notation of its start, is one statement."""
    start = timeutil.format_trimmed(row.bounds()[0]) if row.start else ""
    return f"{device_system or ''}|{row.device_id}|{row.patient_id}|{start}"


def device_use_statement(row: PeriodRow, patient: str, device: str, device_system: Optional[str]) -> dict:
    value = device_use_identifier(row, device_system)
    timing = {k: v for k, v in (("start", row.start), ("end", row.end)) if v}
    return {"resourceType": "DeviceUseStatement",
            "id": identifiers.compute_hash_for_identifier(value, DEVICE_USE_SYSTEM),
            "identifier": [{"system": DEVICE_USE_SYSTEM, "value": value}],
            "status": row.effective_status, "subject": {"reference": f"Patient/{patient}"},
            "device": {"reference": f"Device/{device}"}, "timingPeriod": timing}


class DeviceRow(NamedTuple):
    device_id: str
    patient_id: str
    encounter_id: Optional[str] = None


@dataclass
class SeedReport:
    """Counts per resource type and outcome (``created``, ``linked``, ``unchanged``), and the
    failed rows as ``(line, error type, message)``; messages hold no identifiers."""

    counts: Dict[str, Dict[str, int]] = field(default_factory=dict)
    errors: List[Tuple[int, str, str]] = field(default_factory=list)

    def count(self, resource_type: str, outcome: str) -> None:
        by_outcome = self.counts.setdefault(resource_type, {})
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1

    @property
    def writes(self) -> int:
        return sum(n for by in self.counts.values() for o, n in by.items() if o != "unchanged")

    def summary(self) -> str:
        parts = [f"{rtype} " + " ".join(f"{o}={n}" for o, n in sorted(by.items()))
                 for rtype, by in sorted(self.counts.items())]
        return "seed: " + "; ".join(parts + [f"errors={len(self.errors)}"])


# ---------------------------------------------------------------------------- reading rows

def _pick(record: Dict[str, object], name: str) -> Optional[str]:
    lowered = {str(k).strip().lower(): v for k, v in record.items()}
    for key in FIELDS[name]:
        value = lowered.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def row_from_record(record: Dict[str, object]) -> DeviceRow:
    """A JSON object or CSV row (by column name) -> a row; InvalidDataFormatException if unusable."""
    device, patient = _pick(record, "device_id"), _pick(record, "patient_id")
    if not device or not patient:
        raise InvalidDataFormatException("a device row needs a device id and a patient id")
    return DeviceRow(device, patient, _pick(record, "encounter_id"))


def read_rows(text: str) -> Iterator[Tuple[int, object]]:
    """``(line, DeviceRow or MappingError)`` for every non-blank line of a devices file.

    JSON lines (each ``{"device_id", "patient_id", "encounter_id"?}``) when the first non-blank
    character is ``{``; else CSV: with a header naming the columns, or without one as
    ``device id, patient id[, encounter id]``."""
    text = text.lstrip("\ufeff")
    if text.lstrip().startswith("{"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
                if not isinstance(value, dict):
                    raise ValueError
                yield number, row_from_record(value)
            except ValueError:
                yield number, InvalidDataFormatException("a JSON-lines device row must be a JSON object")
            except MappingError as err:
                yield number, err
        return
    rows = [(n, r) for n, r in enumerate(csv.reader(io.StringIO(text)), 1) if any(c.strip() for c in r)]
    header = None
    names = set(FIELDS["device_id"] + FIELDS["patient_id"])
    if rows and any(c.strip().lower() in names for c in rows[0][1]):
        header = [c.strip() for c in rows[0][1]]
        rows = rows[1:]
    for number, cells in rows:
        try:
            if header:
                yield number, row_from_record(dict(zip(header, cells)))
            else:
                yield number, row_from_record(dict(zip(("device_id", "patient_id", "encounter_id"), cells)))
        except MappingError as err:
            yield number, err


# ---------------------------------------------------------------------------- seeding

class Seeder:
    """Ensures rows on one server; caches what it found so shared patients are read once."""

    def __init__(self, client: FhirClient, device_identifier_system: Optional[str] = None,
                 relink: bool = False):
        self.client = client
        self.system = device_identifier_system or None
        self.relink = relink
        self._patients: Dict[str, str] = {}  # patient identifier -> logical id

    def _find_one(self, resource_type: str, value: str, system: Optional[str]) -> Optional[dict]:
        # exactly the query Lookup mode sends (transforms.fhir.identity)
        found = self.client.search(resource_type,
                                   {"identifier": identifiers.identifier_search_value(value, system),
                                    "_count": "2"}, max_pages=1, limit=2, fresh=True)
        if len(found) > 1:
            raise MultipleResourceFoundException(resource_type, len(found))
        return found[0] if found else None

    def _patient(self, patient_id: str, report: SeedReport) -> str:
        if patient_id in self._patients:
            return self._patients[patient_id]
        existing = self._find_one("Patient", patient_id, None)
        if existing is not None:
            report.count("Patient", "unchanged")
            logical = existing["id"]
        else:
            shell = identifiers.patient_shell(patient_id)
            saved = self.client.put(shell)
            report.count("Patient", "created")
            logical = (saved.resource or shell)["id"]
        self._patients[patient_id] = logical
        return logical

    def _device(self, device_id: str, patient: str, report: SeedReport) -> None:
        existing = self._find_one("Device", device_id, self.system)
        if existing is None:
            self.client.put(identifiers.device_shell(device_id, patient, self.system))
            report.count("Device", "created")
            return
        linked = identifiers.reference_id((existing.get("patient") or {}).get("reference"), "Patient")
        if linked == patient:
            report.count("Device", "unchanged")
            return
        if linked is not None and not self.relink:
            raise PatientDeviceMismatchException()
        updated = dict(existing, patient={"reference": f"Patient/{patient}"})
        version = (updated.pop("meta", None) or {}).get("versionId")
        self.client.put(updated, if_match=version)
        report.count("Device", "linked" if linked is None else "relinked")

    def _encounter(self, encounter_id: str, patient: str, report: SeedReport) -> None:
        if self._find_one("Encounter", encounter_id, None) is not None:
            report.count("Encounter", "unchanged")
            return
        self.client.put({"resourceType": "Encounter", "id": identifiers.compute_hash_for_identifier(encounter_id),
                         "identifier": [{"value": encounter_id}], "status": "in-progress",
                         "class": ENCOUNTER_CLASS, "subject": {"reference": f"Patient/{patient}"}})
        report.count("Encounter", "created")

    def _unlinked_device(self, device_id: str, report: SeedReport) -> str:
        existing = self._find_one("Device", device_id, self.system)
        if existing is not None:
            report.count("Device", "unchanged")
            return existing["id"]
        shell = identifiers.device_shell(device_id, None, self.system)
        saved = self.client.put(shell)
        report.count("Device", "created")
        return (saved.resource or shell)["id"]

    def seed_period(self, row: PeriodRow, report: SeedReport) -> None:
        patient = self._patient(row.patient_id, report)
        device = self._unlinked_device(row.device_id, report)
        wanted = device_use_statement(row, patient, device, self.system)
        found = self.client.read("DeviceUseStatement", wanted["id"])
        existing = found.resource if found is not None else None
        if existing is None:
            self.client.put(wanted)
            report.count("DeviceUseStatement", "created")
            return
        version = (existing.get("meta") or {}).get("versionId")
        if all(existing.get(k) == v for k, v in wanted.items()):
            report.count("DeviceUseStatement", "unchanged")
            return
        self.client.put(wanted, if_match=version)
        report.count("DeviceUseStatement", "updated")

    def seed_row(self, row, report: SeedReport) -> None:
        if isinstance(row, PeriodRow):
            self.seed_period(row, report)
            return
        patient = self._patient(row.patient_id, report)
        self._device(row.device_id, patient, report)
        if row.encounter_id:
            self._encounter(row.encounter_id, patient, report)

    def seed(self, rows: Iterable[Tuple[int, object]]) -> SeedReport:
        """Seed every row; a failing row is recorded and the others go on."""
        report = SeedReport()
        for number, row in rows:
            if isinstance(row, Exception):
                report.errors.append((number, getattr(row, "error_type", type(row).__name__), str(row)))
                continue
            try:
                self.seed_row(row, report)
            except MappingError as err:
                report.errors.append((number, err.error_type, str(err)))
            except FhirError as err:  # messages name the interaction and status, never ids
                report.errors.append((number, type(err).__name__, str(err)))
        return report
