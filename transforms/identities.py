"""Who a measurement group belongs to: the identity strategies ``ToObservations`` takes.

An identity turns a group's device / patient / encounter ids into the logical ids its
Observation references. ``OfflineIdentity`` uses the measurement's own ids (file outputs,
``transform``); ``ServerIdentity`` resolves them against the FHIR server in the reference's
modes (``transforms.fhir.identity``). The factories are what a pipeline ships to its
workers: the service (and its HTTP session) is built there, once per DoFn instance.
"""
from typing import Callable

from transforms.mapping.grouping import MeasurementGroup
from transforms.mapping.identifiers import ResolvedIds
from transforms.mapping.offline import offline_ids


class OfflineIdentity:
    """Identity without a server: the measurement's ids are the logical ids."""

    def resolve(self, group: MeasurementGroup) -> ResolvedIds:
        return offline_ids(group)


class ServerIdentity:
    """Identity from a FHIR server via ``IdentityService`` (created lazily, per worker)."""

    def __init__(self, service_factory: Callable[[], object]):
        self._factory = service_factory
        self._service = None

    def resolve(self, group: MeasurementGroup) -> ResolvedIds:
        if self._service is None:
            self._service = self._factory()
        found = self._service.resolve(group.device_id, group.patient_id, group.encounter_id)
        return ResolvedIds(patient=found.patient, device=found.device, encounter=found.encounter)


class ServerIdentityFactory:
    """Identity resolution against the FHIR server, in the reference's modes."""

    def __init__(self, client_factory, mode: str, device_system: str):
        self.client_factory = client_factory
        self.mode = mode
        self.device_system = device_system

    def __call__(self):
        from transforms.fhir.identity import IdentityService
        client_factory, mode, system = self.client_factory, self.mode, self.device_system
        return ServerIdentity(lambda: IdentityService(client_factory(), mode, system or None))
