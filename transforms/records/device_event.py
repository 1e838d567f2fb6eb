"""The source-neutral device event every reader produces and ``Normalize`` consumes.

Files, Pub/Sub and Event Hubs (Kafka) deliver bytes plus metadata in different ways;
readers map them onto this one shape so normalization has a single code path. It
maps onto the reference's envelope: ``Body`` (parsed ``body``), ``Properties``
(application properties / attributes) and ``SystemProperties`` (broker metadata).
"""
import json
from typing import Any, Dict, NamedTuple, Optional, Union

from transforms.mapping.device_templates import TOO_DEEP, envelope
from transforms.mapping.errors import InvalidDataFormatException


_DECODER = json.JSONDecoder()
_SCAN = _DECODER.scan_once  # json's C scanner: what ``json.loads`` runs, without its two Python frames
_WS = json.decoder.WHITESPACE.match


def _loads(text: str) -> Any:
    """``json.loads(text) if text.strip() else None``, with ``json.loads``' own steps inlined.

    Why: it runs for every message (the profile of a backfill: about a tenth of the per-message
    cost was ``json.loads``' Python-level wrapper). ``JSONDecoder.decode`` is: skip JSON
    whitespace, scan one value, skip whitespace, refuse extra data; the same steps here, so
    the same values and the same failures (``ValueError``). A blank body is ``None`` by
    ``str.strip``'s wider notion of blank, as before: on any failure the slow path decides."""
    idx = _WS(text, 0).end()
    try:
        value, end = _SCAN(text, idx)
    except StopIteration:
        value, end = None, -1
    if end < 0 or _WS(text, end).end() != len(text):
        return json.loads(text) if text.strip() else None  # the exact error or blank
    return value


class DeviceEvent(NamedTuple):
    body: Union[bytes, str]
    properties: Optional[Dict[str, Any]] = None
    system_properties: Optional[Dict[str, Any]] = None
    ingestion_time: Optional[int] = None  # ticks: enqueue / publish time when the source has one
    is_envelope: bool = False  # body is a whole {"Body", "Properties", "SystemProperties"} JSON

    def to_message(self) -> Dict[str, Any]:
        """The message as the reference's templates see it; raises ``InvalidDataFormatException``."""
        raw = self.body
        try:
            if isinstance(raw, bytes):
                # = decode("utf-8-sig") (one leading BOM dropped), without its Python-level codec
                raw = raw.decode("utf-8")
                if raw[:1] == "\ufeff":
                    raw = raw[1:]
            value = _loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise InvalidDataFormatException("The message body is not valid UTF-8 JSON.") from None
        except RecursionError:
            raise InvalidDataFormatException(TOO_DEEP) from None
        if not self.is_envelope:
            return envelope(value, self.properties, self.system_properties)
        if not isinstance(value, dict):
            raise InvalidDataFormatException(
                "An envelope must be a JSON object with Body, Properties and SystemProperties.")
        system = value.get("SystemProperties")
        if self.system_properties and (system is None or isinstance(system, dict)):
            # The reader's entries (the source file) are added to the envelope's own.
            system = {**system, **self.system_properties} if system else self.system_properties
        return envelope(value.get("Body"), value.get("Properties"), system)

    def payload(self) -> Dict[str, Any]:
        """JSON-safe copy of the event for a dead-letter record (body kept verbatim)."""
        body = self.body
        if isinstance(body, bytes):
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError:
                body = body.hex()
        return {"body": body, "properties": self.properties, "system_properties": self.system_properties,
                "ingestion_time": self.ingestion_time, "is_envelope": self.is_envelope}
