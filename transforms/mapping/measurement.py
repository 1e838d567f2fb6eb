"""The normalized measurement: what one device-mapping match produces.

Shape and JSON form follow the reference's ``Measurement`` class so that the
normalize output of our CLI can be compared with (and fed like) iomt-fhir's
normalized Event Hub messages. Times are ticks (see ``timeutil``); property values
are always strings, as in the reference.
"""
from typing import Any, Dict, NamedTuple, Optional, Tuple

from transforms.mapping import timeutil
from transforms.mapping.errors import IncompatibleDataException


class Measurement(NamedTuple):
    type: str
    occurrence_time: int  # ticks since the Unix epoch, UTC
    device_id: str
    properties: Tuple[Tuple[str, str], ...]  # (Name, Value) in template order
    patient_id: Optional[str] = None
    encounter_id: Optional[str] = None
    correlation_id: Optional[str] = None
    ingestion_time: Optional[int] = None  # ticks; set from the source's enqueue time

    def to_json(self) -> Dict[str, Any]:
        """The reference's PascalCase JSON (absent ids are ``None``)."""
        return {
            "Type": self.type,
            "OccurrenceTimeUtc": timeutil.format_trimmed(self.occurrence_time),
            "IngestionTimeUtc": (None if self.ingestion_time is None
                                 else timeutil.format_trimmed(self.ingestion_time)),
            "DeviceId": self.device_id,
            "PatientId": self.patient_id,
            "EncounterId": self.encounter_id,
            "CorrelationId": self.correlation_id,
            "Properties": [{"Name": n, "Value": v} for n, v in self.properties],
        }

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> "Measurement":
        """Read the JSON form (ours or the reference's); raises ``IncompatibleDataException``."""
        if not isinstance(obj, dict):
            raise IncompatibleDataException("A measurement must be a JSON object.")

        def time(name, required):
            raw = obj.get(name)
            if raw is None:
                if required:
                    raise IncompatibleDataException(f"Measurement has no {name}.")
                return None
            ticks = timeutil.parse_datetime(raw) if isinstance(raw, str) else None
            if ticks is None:
                raise IncompatibleDataException(f"Measurement {name} is not a valid date/time.")
            return ticks

        mtype = obj.get("Type")
        device = obj.get("DeviceId")
        if not isinstance(mtype, str) or not mtype:
            raise IncompatibleDataException("Measurement has no Type.")
        if not isinstance(device, str) or not device:
            raise IncompatibleDataException("Measurement has no DeviceId.")
        raw_props = obj.get("Properties")
        if raw_props is None:
            raw_props = []
        if not isinstance(raw_props, list):
            raise IncompatibleDataException("Measurement Properties must be an array.")
        props = []
        for p in raw_props:
            if not isinstance(p, dict) or not isinstance(p.get("Name"), str):
                raise IncompatibleDataException("Measurement property must have a Name.")
            value = p.get("Value")
            if value is None or isinstance(value, (dict, list)):
                # The reference never writes a property without a string value.
                raise IncompatibleDataException(
                    f"Measurement property [{p['Name']}] must have a string Value.")
            props.append((p["Name"], value if isinstance(value, str) else str(value)))

        def opt(name):
            v = obj.get(name)
            return None if v is None else str(v)

        return cls(
            type=mtype,
            occurrence_time=time("OccurrenceTimeUtc", True),
            device_id=device,
            properties=tuple(props),
            patient_id=opt("PatientId"),
            encounter_id=opt("EncounterId"),
            correlation_id=opt("CorrelationId"),
            ingestion_time=time("IngestionTimeUtc", False),
        )
