"""Bulk NDJSON output: the first load of a huge archive as files a FHIR bulk import reads.

Why: sending years of device history through transaction bundles costs a request per
50 Observations; every FHIR service has a bulk import that reads NDJSON files of one
resource type each (Azure ``$import``, Google Cloud Healthcare ``import``, HealthLake,
HAPI ``$import``). ``--output DIR --output-format fhir-ndjson --identity-mode Create``
writes ``DIR/Observation.ndjson``, ``DIR/Patient.ndjson`` and ``DIR/Device.ndjson``.

The ids and references are those a Create-mode run against an empty server gives
(``transforms.fhir.identity``): Patient ``sha256("_" + PatientId)``, Device
``sha256(system + "_" + DeviceId)`` linked to its Patient, Observations with the
reference's SHA-256 ids built from those logical ids, one final Observation per id
(the same fold as the file output). So after the import, later runs in Create mode find
these resources by identifier and merge into the same Observations.

Limits, as on a server: a group without a PatientId cannot create its Patient and is
dead-lettered (``identity``, ``ResourceIdentityNotDefinedException``). A device that
changes patient inside the archive: on a server the first group to arrive links the
Device (arrival order); here the Device links to the smallest of its patients' ids, and
each Observation references its own group's Patient.
"""
import json
from typing import Iterable, List, Optional, Tuple

import apache_beam as beam

from transforms.fhir.identity import ResourceIdentityNotDefinedException
from transforms.mapping import identifiers
from transforms.mapping.grouping import MeasurementGroup
from transforms.mapping.identifiers import ResolvedIds

RESOURCE_TYPES = ("Observation", "Patient", "Device")


class CreateModeIds:
    """Create mode's ids without a server (the archive is the first load: nothing exists yet)."""

    def __init__(self, device_identifier_system: Optional[str] = None):
        self._system = device_identifier_system or None

    def resolve(self, group: MeasurementGroup) -> ResolvedIds:
        if not group.device_id:
            raise ResourceIdentityNotDefinedException("Device")
        if not group.patient_id:
            raise ResourceIdentityNotDefinedException("Patient")
        # the reference does not resolve the encounter on the create path
        return ResolvedIds(identifiers.patient_resource_id(group.patient_id),
                           identifiers.device_resource_id(group.device_id, self._system), None)

    def resources(self, group: MeasurementGroup) -> List[dict]:
        """The shell Patient and Device a Create-mode server run makes for this group."""
        patient = identifiers.patient_shell(group.patient_id)
        return [patient, identifiers.device_shell(group.device_id, patient["id"], self._system)]


class CreateModeIdsFactory:
    """Picklable factory for ``ToObservations`` (identity objects are built per worker)."""

    def __init__(self, device_identifier_system: Optional[str] = None):
        self.device_identifier_system = device_identifier_system

    def __call__(self) -> CreateModeIds:
        return CreateModeIds(self.device_identifier_system)


def _resource_key(resource: dict) -> Tuple[str, dict]:
    return f"{resource['resourceType']}/{resource['id']}", resource


def _one_resource(versions: Iterable[dict]) -> dict:
    """One resource per id: all equal for a Patient; for a Device, the smallest patient link."""
    return min(versions, key=lambda r: json.dumps(r, sort_keys=True))


class DistinctResources(beam.PTransform):
    """PCollection[Patient/Device dict] -> one per ``type/id`` (global window)."""

    def expand(self, resources):
        return (resources
                | "GlobalWindow" >> beam.WindowInto(beam.transforms.window.GlobalWindows())
                | "ById" >> beam.Map(_resource_key)
                | "One" >> beam.CombinePerKey(_one_resource)
                | "Values" >> beam.Values())


def ndjson_path(output: str, resource_type: str) -> str:
    """``DIR/Observation.ndjson``: ``--output`` names the directory (bulk imports read by type)."""
    return f"{output.rstrip('/')}/{resource_type}.ndjson"


def _ndjson_line(resource: dict) -> str:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"))


def write_ndjson(resources, output: str, resource_type: str):
    """One ``DIR/<Type>.ndjson`` file of one resource per line."""
    return (resources
            | f"{resource_type}ToNdjson" >> beam.Map(_ndjson_line)
            | f"Write{resource_type}" >> beam.io.WriteToText(
                ndjson_path(output, resource_type), num_shards=1, shard_name_template=""))


def by_type(resources, resource_type: str):
    return resources | f"Only{resource_type}" >> beam.Filter(
        lambda r, t=resource_type: r.get("resourceType") == t)


def write_bulk(write_items, resources, output: str, fhir_mapping_text: str):
    """Observations (one final per id, folded across windows) and the distinct Patients / Devices."""
    from transforms.to_observations import FoldObservationsById

    observations = (write_items
                    | "BulkOneWindow" >> beam.WindowInto(beam.transforms.window.GlobalWindows())
                    | "BulkFoldById" >> FoldObservationsById(fhir_mapping_text))
    write_ndjson(observations, output, "Observation")
    distinct = resources | "DistinctResources" >> DistinctResources()
    for resource_type in ("Patient", "Device"):
        write_ndjson(by_type(distinct, resource_type), output, resource_type)
