"""``ToObservations``: measurement groups -> Observations to write, and the file-output fold.

Thin Beam wrapper over the pure core (``grouping``, ``fhir_templates``, ``merge``).
The FHIR mapping is shipped as text and loaded once per DoFn instance. Identity is a
strategy: offline (the measurement's own ids, for file outputs) or a FHIR-server
resolver built in ``setup`` (Lookup / Create / LookupByDeviceUse, see
``transforms.fhir.identity``); by device use a group is cut where the device changed hands
and each part becomes its wearer's Observations (``transforms.identities.identity_parts``).

A group that cannot be converted (unknown type, several Quantity values in one
period, missing correlation id, device not found...) goes whole to ``dead_letter``
with its measurements, so it can be replayed after the mapping or data is fixed.
Metric names follow the reference (``MeasurementGroup``, ``Measurement``).
"""
from typing import Any, Callable, Iterable, Iterator, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import metrics
from transforms.records.dead_letter import (DEAD_LETTER_TAG, STAGE_FHIR_CONVERSION, STAGE_IDENTITY,
                                    dead_letter, error_type_of)
from transforms.mapping.fhir_templates import build_observation, load_fhir_mapping
from transforms.mapping.fhir_values import screen_values
from transforms.mapping.grouping import measurement_groups, observation_groups
from transforms.mapping.identifiers import ResolvedIds
from transforms.fhir.writer import MappingMerge, WriteItem
from transforms.identities import OfflineIdentity, identity_parts


#: Patient / Device resources of an identity that makes them itself (``transforms.sinks.bulk_ndjson``)
RESOURCES_TAG = "resources"


#: what ``convert`` yields: an Observation to write, a dead letter, a Patient/Device resource
WRITE, FAILED, RESOURCE = "write", "failed", "resource"


def convert(mapping, identity, measurements: Iterable,
            on_group: Optional[Callable[[], None]] = None) -> Iterator[Tuple[str, Any]]:
    """One key's measurements -> ``(WRITE, WriteItem)``, ``(FAILED, (stage, error, group))`` and
    ``(RESOURCE, dict)``, in order: the conversion the DoFn and ``iomt-fhir replay`` share.

    Each failure costs only what it covers: a rejected reading itself, a group that cannot be
    converted or whose identity cannot be resolved that group, and the next group goes on.
    ``on_group`` is called once per group (the ``MeasurementGroup`` counter)."""
    for group in measurement_groups(measurements):
        if on_group is not None:
            on_group()
        try:
            template = mapping.template_for(group.measure_type)
            group, rejected = screen_values(template, group)
            for m, e in rejected:  # a bad reading costs only itself
                yield FAILED, (STAGE_FHIR_CONVERSION, e, group._replace(measurements=(m,)))
            obs_groups = observation_groups(template, group)
        except Exception as e:  # data problems and bugs alike: dead letter, never a stall
            yield FAILED, (STAGE_FHIR_CONVERSION, e, group)
            continue
        if not obs_groups:  # every reading was dead-lettered by screen_values
            continue
        for part, ids in identity_parts(identity, group):
            if isinstance(ids, Exception):
                yield FAILED, (STAGE_IDENTITY, ids, part)
                continue
            try:  # a device that changed hands: each wearer's part has its own Observations
                items = [WriteItem(build_observation(template, og, ids), template.type_name, og)
                         for og in (obs_groups if part is group else observation_groups(template, part))]
            except Exception as e:
                yield FAILED, (STAGE_FHIR_CONVERSION, e, part)
                continue
            for item in items:
                yield WRITE, item
            shells = getattr(identity, "resources", None)
            if shells is not None:  # bulk NDJSON output: the Patient and Device a server run would create
                for resource in shells(part):
                    yield RESOURCE, resource


def group_dead_letter(stage: str, error: BaseException, group) -> dict:
    """The dead-letter record of a group (its measurements, for a replay)."""
    return dead_letter(stage, error, [m.to_json() for m in group.measurements])


class ToObservationsDoFn(beam.DoFn):
    def __init__(self, fhir_mapping_text: str, identity_factory: Optional[Callable[[], object]] = None):
        self._text = fhir_mapping_text
        self._identity_factory = identity_factory or OfflineIdentity
        self._mapping = None
        self._identity = None
        self._groups = metrics.counter(metrics.NAMESPACE, "MeasurementGroup")
        self._measurements = metrics.counter(metrics.NAMESPACE, "Measurement")

    def setup(self):
        self._mapping = load_fhir_mapping(self._text).ensure_valid()
        self._identity = self._identity_factory()

    def process(self, element):
        _, measurements = element
        self._measurements.inc(len(measurements))
        for kind, value in convert(self._mapping, self._identity, measurements, self._groups.inc):
            if kind == WRITE:
                yield value
            elif kind == FAILED:
                stage, error, group = value
                metrics.error_counter(stage, error_type_of(error)).inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, group_dead_letter(stage, error, group))
            else:
                yield beam.pvalue.TaggedOutput(RESOURCES_TAG, value)


class ToObservations(beam.PTransform):
    """PCollection[(key, list[Measurement])] -> outputs ``observations`` (WriteItem), ``dead_letter``
    and ``resources`` (Patient/Device, only from an identity with ``resources``)."""

    def __init__(self, fhir_mapping_text: str, identity_factory: Optional[Callable[[], object]] = None):
        super().__init__()
        self._text = fhir_mapping_text
        self._identity_factory = identity_factory

    def expand(self, groups):
        return groups | beam.ParDo(ToObservationsDoFn(self._text, self._identity_factory)).with_outputs(
            DEAD_LETTER_TAG, RESOURCES_TAG, main="observations")


class FoldByIdDoFn(beam.DoFn):
    """All WriteItems of one Observation id -> the one Observation a server would end with.

    Windows cut an hour or a day into several partial Observations with the same id;
    on a server the writer merges them. For file outputs we apply the same merge here,
    so files hold what the server would hold. Windows partition occurrence times, so the
    fold's result does not depend on the order items arrive in.
    """

    def __init__(self, fhir_mapping_text: str):
        self._text = fhir_mapping_text
        self._merge = None
        self._folded = metrics.counter(metrics.NAMESPACE, "ObservationToFile")

    def setup(self):
        # The writer's merge function, so files and servers fold data the same way.
        self._merge = MappingMerge(load_fhir_mapping(self._text).ensure_valid())

    def process(self, element):
        _, items = element
        items = sorted(items, key=lambda i: (i.group.start, i.group.end))
        if not items:  # an empty pane (Beam 2.77's streaming direct runner fires them): nothing to fold
            return
        current = items[0].observation
        for item in items[1:]:
            current, _ = self._merge(item, current)
        self._folded.inc()
        yield current


class FoldObservationsById(beam.PTransform):
    def __init__(self, fhir_mapping_text: str):
        super().__init__()
        self._text = fhir_mapping_text

    def expand(self, items):
        return (items
                | "ById" >> beam.Map(lambda i: (i.observation["id"], i))
                | "Group" >> beam.GroupByKey()
                | "Fold" >> beam.ParDo(FoldByIdDoFn(self._text)))
