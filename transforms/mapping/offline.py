"""Measurements -> Observations without a FHIR server (the ``transform`` debugger, file outputs).

Why "offline identity": the reference builds Observation identifiers from the
*logical ids* a FHIR server returns for the Device and Patient. Without a server we
use the measurement's own ids as those logical ids, so users see exactly the shape
and grouping their mapping produces. (Against a server, ids come from the identity
step and so do identifiers and resource ids.)
"""
from typing import Any, Iterable, Iterator, Optional, Tuple

from transforms.mapping.errors import TemplateNotFoundException
from transforms.mapping.fhir_values import screen_values
from transforms.mapping.grouping import MeasurementGroup, measurement_groups, observation_groups
from transforms.mapping.identifiers import ResolvedIds
from transforms.mapping.measurement import Measurement

Failure = Tuple[Any, Exception]  # (where: input line or group key, error)


def _not_found(type_name: str) -> TemplateNotFoundException:
    """The reference validator's wording (the exception itself only carries the type name)."""
    exc = TemplateNotFoundException(f"No Fhir Template exists with the type name [{type_name}].")
    exc.type_name = type_name
    return exc


def offline_ids(group: MeasurementGroup) -> ResolvedIds:
    return ResolvedIds(patient=group.patient_id or "", device=group.device_id,
                       encounter=group.encounter_id)


def observations_of_group(mapping, group: MeasurementGroup, ids: ResolvedIds,
                          issued_ticks: Optional[int] = None) -> list:
    """All Observations of one measurement group; raises the group's ``MappingError``.

    A group is all-or-nothing: if one of its observation groups cannot be converted,
    none is returned, so a dead-lettered group can be replayed whole.
    """
    from transforms.mapping.fhir_templates import build_observation

    template = mapping.template_for(group.measure_type)
    return [build_observation(template, og, ids, issued_ticks)
            for og in observation_groups(template, group)]


def observations_for(mapping, numbered: Iterable[Tuple[int, Measurement]]
                     ) -> Iterator[Tuple[Optional[dict], Optional[Failure]]]:
    """``(observation, None)`` per Observation, or ``(None, (line, error))`` per failure.

    ``numbered`` pairs each measurement with its input line; a failed group is
    reported (whole) at the first input line of its measurements, a reading whose
    value cannot be written (``fhir_values.screen_values``) at its own line while
    the rest of its group goes on. Any exception of
    one group is reported that way, so a bad group never stops the others.
    """
    line_of = {}
    items = []

    def _line(group: MeasurementGroup) -> int:
        return min(line_of.get(id(m), 0) for m in group.measurements)

    for line, m in numbered:
        line_of.setdefault(id(m), line)
        items.append(m)
    for group in measurement_groups(items):
        try:
            group, rejected = screen_values(mapping.template_for(group.measure_type), group)
        except TemplateNotFoundException:
            yield None, (_line(group), _not_found(group.measure_type))
            continue
        for m, exc in rejected:  # one bad reading costs only itself
            yield None, (line_of.get(id(m), 0), exc)
        try:
            observations = observations_of_group(mapping, group, offline_ids(group))
        except TemplateNotFoundException:
            yield None, (_line(group), _not_found(group.measure_type))
            continue
        except Exception as e:  # MappingError, or a bug of ours: the other groups go on
            yield None, (_line(group), e)
            continue
        for obs in observations:
            yield obs, None
