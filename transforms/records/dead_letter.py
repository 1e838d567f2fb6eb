"""One record shape for everything that could not be normalized, grouped, converted or written.

Why one shape: operators replay dead letters after fixing a mapping or the data, so
every stage must keep the complete input (the raw message, the measurements, the
Observation) together with where and why it failed. The record goes to a dead-letter
sink the user configures (it holds message content, i.e. possibly PHI) and is never
logged. ``error_type`` uses the reference's exception names so existing runbooks apply.
"""
from typing import Any, Dict, Optional

DEAD_LETTER_TAG = "dead_letter"

STAGE_READ = "read"  # a file (or one record of it) that could not be read; payload: where, never content
STAGE_NORMALIZATION = "normalization"
STAGE_GROUPING = "grouping"
STAGE_FHIR_CONVERSION = "fhir_conversion"
STAGE_IDENTITY = "identity"
STAGE_FHIR_WRITE = "fhir_write"
#: every stage, in pipeline order
STAGES = (STAGE_READ, STAGE_NORMALIZATION, STAGE_GROUPING, STAGE_FHIR_CONVERSION, STAGE_IDENTITY,
          STAGE_FHIR_WRITE)
#: stages whose dead letters mean the infrastructure failed (exit 1), not the data
INFRASTRUCTURE_STAGES = (STAGE_FHIR_WRITE, STAGE_IDENTITY)


def dead_letter(stage: str, error: BaseException, payload: Any,
                attributes: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A JSON-serializable dead-letter record. ``payload`` is the failed input, unchanged."""
    return {
        "stage": stage,
        "error_type": error_type_of(error),
        "message": str(error),
        "payload": payload,
        "attributes": attributes or {},
    }


def error_type_of(error: BaseException) -> str:
    return getattr(error, "error_type", None) or type(error).__name__


def observation_group_json(group) -> Optional[Dict[str, Any]]:
    """An ``ObservationGroup`` as JSON, kept with a failed write so a replay can merge the
    same data into what the server holds then (the Observation alone cannot be merged)."""
    if group is None or not hasattr(group, "values"):
        return None
    return {"name": group.name, "start": group.start, "end": group.end, "id_segment": group.id_segment,
            "values": {k: [[t, v] for t, v in tvs] for k, tvs in group.values.items()}}


def observation_group_from_json(obj: Optional[Dict[str, Any]]):
    from transforms.mapping.grouping import ObservationGroup

    if not obj:
        return None
    return ObservationGroup(obj["name"], int(obj["start"]), int(obj["end"]), obj["id_segment"],
                            {k: [(int(t), v) for t, v in tvs] for k, tvs in obj["values"].items()})


def write_failure(error: BaseException, observation: dict, template_name: Optional[str], group) -> Dict[str, Any]:
    """The ``fhir_write`` dead-letter record: the Observation, the status, and what a replay
    needs to merge it (``template_name``, ``group``)."""
    return dead_letter(STAGE_FHIR_WRITE, error, observation,
                       {"status": getattr(error, "status", None), "template_name": template_name,
                        "group": observation_group_json(group)})
