"""Measurements -> Observations without a FHIR server (the ``transform`` debugger, file outputs).

Why "offline identity": the reference builds Observation identifiers from the
*logical ids* a FHIR server returns for the Device and Patient. Without a server we
use the measurement's own ids as those logical ids, so users see exactly the shape
and grouping their mapping produces. (Against a server, ids come from the identity
step and so do identifiers and resource ids.)
"""
import json
from typing import Any, Iterable, Iterator, List, Optional, Tuple, Union

from transforms.mapping.errors import InvalidDataFormatException, TemplateNotFoundException
from transforms.mapping.fhir_values import screen_values
from transforms.mapping.grouping import MeasurementGroup, measurement_groups, observation_groups
from transforms.mapping.identifiers import ResolvedIds
from transforms.mapping.measurement import Measurement

Failure = Tuple[Any, Exception]  # (where: input line or group key, error)


def numbered_lines(lines: Iterable[Union[str, bytes]]) -> Iterator[Tuple[int, str]]:
    """(1-based line number, text) of each non-blank line (``normalize``'s and the debugger's input).

    Bytes that are not UTF-8 become U+FFFD, as .NET's ``Encoding.UTF8.GetString`` does
    for an Event Hub body: one bad line must not stop the others (nor the run).
    """
    for number, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        if number == 1 and line.startswith("\ufeff"):
            line = line[1:]
        if line.strip():
            yield number, line


def parse_message(line: str, input_format: str):
    """One input line -> the message as the reference sees it; raises InvalidDataFormatException.

    ``input_format`` ``body``: the line is the message body; ``envelope``: a whole
    ``{Body, Properties, SystemProperties}`` object.
    """
    from transforms.mapping.device_templates import TOO_DEEP, envelope

    try:
        value = json.loads(line)
    except ValueError:
        raise InvalidDataFormatException("The message is not valid JSON.") from None
    except RecursionError:
        raise InvalidDataFormatException(TOO_DEEP) from None
    if input_format == "body":
        return envelope(value)
    if not isinstance(value, dict):
        raise InvalidDataFormatException(
            "An envelope line must be a JSON object with Body, Properties and SystemProperties.")
    return envelope(value.get("Body"), value.get("Properties"), value.get("SystemProperties"))


def normalize_lines(mapping, numbered: Iterable[Tuple[int, str]], input_format: str = "body"
                    ) -> Iterator[Tuple[int, Optional[List[Measurement]], Optional[Exception]]]:
    """``(line, measurements, None)`` per message, or ``(line, None, error)`` when it fails.

    What ``iomt-fhir normalize`` prints and what the browser debugger shows come from
    here, so the two cannot differ. Any exception of one line (a bug of ours too) is
    that line's error: the other lines go on.
    """
    for number, line in numbered:
        try:
            yield number, mapping.get_measurements(parse_message(line, input_format)), None
        except Exception as e:
            yield number, None, e


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


def device_use_parts(group: MeasurementGroup, device_use
                     ) -> Iterator[Tuple[MeasurementGroup, Union[ResolvedIds, Exception]]]:
    """A group cut by an offline device-use table (``device_use.DeviceUseTable``): ``(part, ids)``
    per patient who wore the device, ``(readings, error)`` for those no period covers. Without
    a table: the group with its own ids."""
    from transforms.mapping.device_use import (DeviceUseNotDefinedException,
                                               DeviceUseNotFoundException, split_group)

    if device_use is None:
        yield group, offline_ids(group)
        return
    periods = device_use.periods(group.device_id)
    if not periods:
        yield group, DeviceUseNotDefinedException("the device")  # its identifier: not in messages
        return
    split = split_group(group, periods)
    if split.uncovered:
        yield (group._replace(measurements=split.uncovered),
               DeviceUseNotFoundException("the device",
                                          [m.occurrence_time for m in split.uncovered]))
    for patient, part in split.parts:
        yield part, ResolvedIds(patient=patient, device=group.device_id, encounter=group.encounter_id)


def observations_for(mapping, numbered: Iterable[Tuple[int, Measurement]], device_use=None
                     ) -> Iterator[Tuple[Optional[dict], Optional[Failure]]]:
    """``(observation, None)`` per Observation, or ``(None, (line, error))`` per failure.

    ``numbered`` pairs each measurement with its input line; a failed group is
    reported (whole) at the first input line of its measurements, a reading whose
    value cannot be written (``fhir_values.screen_values``) at its own line while
    the rest of its group goes on. Any exception of
    one group is reported that way, so a bad group never stops the others.

    ``device_use`` (a ``device_use.DeviceUseTable``): the patient of each reading is who wore
    its device then, as ``--identity-mode LookupByDeviceUse`` decides on a server (patient
    identifiers stand for logical ids); readings no period covers are failures.
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
        for part, ids in device_use_parts(group, device_use):
            if isinstance(ids, Exception):
                yield None, (_line(part), ids)
                continue
            try:
                observations = observations_of_group(mapping, part, ids)
            except TemplateNotFoundException:
                yield None, (_line(part), _not_found(part.measure_type))
                continue
            except Exception as e:  # MappingError, or a bug of ours: the other groups go on
                yield None, (_line(part), e)
                continue
            for obs in observations:
                yield obs, None
