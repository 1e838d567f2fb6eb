"""Who a measurement group belongs to: the identity strategies ``ToObservations`` takes.

An identity turns a group's device / patient / encounter ids into the logical ids its
Observation references. ``OfflineIdentity`` uses the measurement's own ids (file outputs,
``transform``); ``ServerIdentity`` resolves them against the FHIR server in the reference's
modes or by device use (``transforms.fhir.identity``). The factories are what a pipeline ships
to its workers: the service (and its HTTP session) is built there, once per DoFn instance.

``identity_parts`` is the one question ``convert`` asks: which parts of a group go to whom.
For the reference's modes a group is one part; by device use it is cut at every change of hands
(``transforms.mapping.device_use.split_group``), and readings no period covers are a part of
their own that fails, alone.
"""
import threading
import uuid
from typing import Callable, Dict, Iterator, Optional, Tuple, Union

from transforms.mapping.grouping import MeasurementGroup
from transforms.mapping.identifiers import ResolvedIds
from transforms.mapping.offline import offline_ids

Part = Tuple[MeasurementGroup, Union[ResolvedIds, Exception]]


def identity_parts(identity, group: MeasurementGroup) -> Iterator[Part]:
    """``(part, ids)`` per part of ``group`` and who it belongs to, or ``(part, error)`` for a
    part whose identity cannot be resolved (dead-lettered at stage ``identity``)."""
    parts = getattr(identity, "parts", None)
    if parts is not None:
        yield from parts(group)
        return
    try:
        yield group, identity.resolve(group)
    except Exception as e:  # data problems and bugs alike: that group's dead letter
        yield group, e


class OfflineIdentity:
    """Identity without a server: the measurement's ids are the logical ids."""

    def resolve(self, group: MeasurementGroup) -> ResolvedIds:
        return offline_ids(group)


class ServerIdentity:
    """Identity from a FHIR server via ``IdentityService`` (created lazily, per worker).

    ``on_overlap(n)`` is told how many readings more than one use period covered (a warning
    count: the latest start won)."""

    def __init__(self, service_factory: Callable[[], object],
                 on_overlap: Optional[Callable[[int], None]] = None):
        self._factory = service_factory
        self._service = None
        self._on_overlap = on_overlap

    def _svc(self):
        if self._service is None:
            self._service = self._factory()
        return self._service

    def resolve(self, group: MeasurementGroup) -> ResolvedIds:
        found = self._svc().resolve(group.device_id, group.patient_id, group.encounter_id)
        return ResolvedIds(patient=found.patient, device=found.device, encounter=found.encounter)

    def parts(self, group: MeasurementGroup) -> Iterator[Part]:
        from transforms.mapping.device_use import DeviceUseNotFoundException, split_group

        service = self._svc()
        if not getattr(service, "by_device_use", False):
            try:
                yield group, self.resolve(group)
            except Exception as e:
                yield group, e
            return
        try:
            uses = service.device_uses(group.device_id)
        except Exception as e:
            yield group, e
            return
        split = split_group(group, uses.periods)
        if split.overlaps and self._on_overlap is not None:
            self._on_overlap(split.overlaps)
        if split.uncovered:
            yield (group._replace(measurements=split.uncovered),
                   DeviceUseNotFoundException(f"Device/{uses.device}",
                                              [m.occurrence_time for m in split.uncovered]))
        for patient, part in split.parts:
            try:
                encounter = service.encounter_for(group.encounter_id, patient)
            except Exception as e:
                yield part, e
                continue
            yield part, ResolvedIds(patient=patient, device=uses.device, encounter=encounter)


_SHARED_CACHES: Dict[str, object] = {}
_SHARED_LOCK = threading.Lock()


def shared_cache(token: str, make: Callable[[], object]):
    """The identity cache of one pipeline's identity step in this worker process.

    Why shared: runners build DoFn instances freely (the DirectRunner one per bundle, Dataflow
    after failures and on rebalancing); a cache per instance would be cold at every bundle,
    costing a lookup per group and making the TTL meaningless. ``token`` is made when the
    pipeline is built, so the instances of one pipeline share, and no two pipelines do."""
    with _SHARED_LOCK:
        cache = _SHARED_CACHES.get(token)
        if cache is None:
            cache = _SHARED_CACHES[token] = make()
        return cache


class ServerIdentityFactory:
    """Identity resolution against the FHIR server, in the reference's modes or by device use."""

    def __init__(self, client_factory, mode: str, device_system: str,
                 cache_seconds: Optional[float] = None):
        self.client_factory = client_factory
        self.mode = mode
        self.device_system = device_system
        self.cache_seconds = cache_seconds
        self.cache_token = uuid.uuid4().hex

    def __call__(self):
        from transforms import metrics
        from transforms.fhir.identity import IdentityService, TtlLruCache, default_cache_seconds
        client_factory, mode, system, seconds = (self.client_factory, self.mode, self.device_system,
                                                 self.cache_seconds)
        mode = IdentityService.canonical_mode(mode)
        if seconds is None:
            seconds = default_cache_seconds(mode)
        by_device_use = IdentityService.is_device_use_mode(mode)
        cache = shared_cache(self.cache_token, lambda: TtlLruCache(sliding_seconds=seconds,
                                                                   sliding=not by_device_use))
        overlaps = metrics.counter(metrics.NAMESPACE, "DeviceUseOverlap")
        return ServerIdentity(lambda: IdentityService(client_factory(), mode, system or None, cache=cache),
                              on_overlap=overlaps.inc)
