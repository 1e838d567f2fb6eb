"""Device archives -> ``DeviceEvent``: JSON lines, JSON-array exports, Event Hubs Capture /
IoT Hub routing Avro. Pure Python (no Beam): the readers take an open binary stream and
yield events, so the Beam read stage (``transforms.sources.files``), the tests and any other
caller share one implementation.

Why each reader looks the way it does:

* JSON lines are split in large chunks (``bytes.split`` in C), not with ``readline``:
  a Beam filesystem stream (GCS, S3, Azure, a decompressor) answers ``readline`` in
  Python, one call per line. Lines stay bytes; ``DeviceEvent.to_message`` decodes them,
  so a line that is not UTF-8 fails alone at normalization instead of failing the read.
* JSON arrays (wearable exports, hundreds of MB) are parsed incrementally with ijson's C
  backend: one element in memory at a time. Each element is re-serialized to compact JSON
  as the event body, so it parses on the same path as every other body and a dead letter
  shows it verbatim.
* Capture / routing Avro records become the envelope the reference's templates were
  written against (see ``capture_record_to_event``).

Every failure that stops a reader is raised as ``ArchiveReadError`` with where it stopped
(byte offset and/or record index) and a message that never holds file content (parser
messages often quote the input, so they are replaced, not passed on).
"""
import base64
import binascii
import bz2
import gzip
import json
import lzma
import re
import zlib
from typing import Any, Dict, Iterator, Mapping, Optional

from transforms.records.device_event import DeviceEvent
from transforms.mapping import timeutil

# The SystemProperties entry that names the file an event was read from (full path or URL
# as matched, e.g. azfs://account/container/ns/hub/0/2024/01/01/00/00/00.avro).
SOURCE_FILE_PROPERTY = "iomt-source-file"

INPUT_FORMATS = ("body", "envelope", "json-array", "capture-avro")
TEXT_FORMATS = ("body", "envelope")

CHUNK_BYTES = 1 << 20


class ArchiveReadError(Exception):
    """A file (or the rest of it) could not be read. ``error_type`` names the cause
    (``FileNotFoundError``, ``EOFError``, ``NotAJsonArray`` ...); the message has no content."""

    def __init__(self, error_type: str, message: str, byte_offset: Optional[int] = None,
                 record_index: Optional[int] = None):
        super().__init__(message)
        self.error_type = error_type
        self.byte_offset = byte_offset
        self.record_index = record_index


# Messages we may pass on: they describe the failure, never quote the data.
_SAFE_MESSAGE_TYPES = (EOFError, zlib.error, lzma.LZMAError)


def http_status(error: BaseException) -> Optional[int]:
    """The HTTP status of a storage client's error (Azure ``status_code``, Google ``code``,
    botocore ``response``), else ``None``."""
    for attr in ("status_code", "code"):
        value = getattr(error, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        value = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(value, int):
            return value
    return None


_STATUS_TYPES = {401: "PermissionError", 403: "PermissionError", 404: "FileNotFoundError"}


def safe_reason(error: BaseException) -> str:
    """A description of ``error`` that holds no file content (paths are not content) and no
    request URL (a SAS token or signed URL would be a secret)."""
    if isinstance(error, ArchiveReadError):
        return str(error)
    status = http_status(error)
    if status is not None:
        return f"the storage service answered HTTP {status} ({type(error).__name__})"
    if isinstance(error, OSError) and not isinstance(error, gzip.BadGzipFile):
        # strerror is the OS's text ("Permission denied"); str(OSError) of a client library
        # may embed a server response, so use it only when there is no strerror.
        return error.strerror or type(error).__name__
    if isinstance(error, _SAFE_MESSAGE_TYPES):
        return str(error)
    if isinstance(error, gzip.BadGzipFile):
        return "not a gzip file"  # gzip's own message quotes the first bytes
    return f"{type(error).__name__} while reading the file"


def stopped(error: BaseException, byte_offset: Optional[int] = None,
            record_index: Optional[int] = None) -> ArchiveReadError:
    if isinstance(error, ArchiveReadError):
        return error
    return ArchiveReadError(error_name(error), safe_reason(error), byte_offset, record_index)


def error_name(error: BaseException) -> str:
    """The error type of a read dead letter: a storage service's 401/403 and 404 under the
    local names (``PermissionError``, ``FileNotFoundError``) so one runbook covers every store."""
    if isinstance(error, zlib.error):
        return "zlib.error"
    status = http_status(error)
    return _STATUS_TYPES.get(status, type(error).__name__) if status is not None else type(error).__name__


# ---------------------------------------------------------------- JSON lines

def read_lines(stream, start: int = 0, end: Optional[int] = None, source_file: Optional[str] = None,
               is_envelope: bool = False) -> Iterator[DeviceEvent]:
    """Events for the non-blank lines that *start* in ``[start, end)`` of ``stream``.

    ``stream`` is positioned at ``start`` by the caller (seekable plain files only; a
    compressed stream is read whole: ``start=0, end=None``). A line belongs to the range
    it starts in, so ranges of one file give every line exactly once. The caller seeks to
    ``start - 1`` for ``start > 0`` and this skips through the first newline."""
    system = {SOURCE_FILE_PROPERTY: source_file} if source_file else None
    pos = start
    index = 0
    carry = b""
    skip_partial = start > 0
    # read1: at most one read of the layer below, so a decompressor that fails (truncated
    # gzip) has handed over everything before the failure instead of dropping a whole chunk.
    read = getattr(stream, "read1", None) or stream.read
    try:
        if skip_partial:
            pos = start - 1
        while True:
            chunk = read(CHUNK_BYTES)
            if not chunk:
                break
            data = carry + chunk if carry else chunk
            if skip_partial:
                cut = data.find(b"\n")
                if cut < 0:
                    pos += len(data)
                    carry = b""
                    continue
                pos += cut + 1
                data = data[cut + 1:]
                skip_partial = False
            lines = data.split(b"\n")
            carry = lines.pop()
            for line in lines:
                if end is not None and pos >= end:
                    return
                pos += len(line) + 1
                index += 1
                if line and not line.isspace():
                    if line[-1:] == b"\r":
                        line = line[:-1]
                    yield DeviceEvent(body=line, system_properties=system, is_envelope=is_envelope)
        if carry and not skip_partial and (end is None or pos < end) and not carry.isspace():
            index += 1
            yield DeviceEvent(body=carry.rstrip(b"\r"), system_properties=system, is_envelope=is_envelope)
    except Exception as e:
        raise stopped(e, byte_offset=pos, record_index=index if start == 0 else None) from None


# ---------------------------------------------------------------- JSON arrays

class _Replay:
    """A read-only stream that first returns ``prefix``, then the rest of ``stream``."""

    def __init__(self, prefix: bytes, stream):
        self._prefix = prefix
        self._stream = stream

    def read(self, n: int = -1) -> bytes:
        if n == 0:  # ijson probes the stream's type with read(0)
            return b""
        if self._prefix:
            head, self._prefix = self._prefix, b""
            return head
        return self._stream.read(n)


_BOM = b"\xef\xbb\xbf"


def read_json_array(stream, source_file: Optional[str] = None) -> Iterator[DeviceEvent]:
    """Events for the elements of the one JSON array in ``stream``, one element in memory.

    Anything but an array at the top raises ``NotAJsonArray`` (an object would otherwise
    yield nothing, silently). A syntax error stops the file: elements before it are kept,
    the error says at which element index the rest was lost (JSON has no resync point)."""
    import ijson  # C backend (yajl2_c) when available

    system = {SOURCE_FILE_PROPERTY: source_file} if source_file else None
    index = 0
    try:
        head = b""
        while True:
            chunk = stream.read(64 * 1024)
            if not chunk:
                break
            head += chunk
            stripped = head[3:] if head.startswith(_BOM) else head
            stripped = stripped.lstrip()
            if stripped:
                break
        stripped = (head[3:] if head.startswith(_BOM) else head).lstrip()
        if not stripped.startswith(b"["):
            raise ArchiveReadError("NotAJsonArray", "the file does not hold a JSON array" +
                                   (" (it is empty)" if not stripped else ""), 0, 0)
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        for element in ijson.items(_Replay(stripped, stream), "item", use_float=True):
            yield DeviceEvent(body=dumps(element), system_properties=system)
            index += 1
    except ArchiveReadError:
        raise
    except Exception as e:
        if type(e).__module__.startswith("ijson"):
            # ijson/yajl messages quote the text around the error: never pass them on.
            raise ArchiveReadError("InvalidJsonArray", f"the JSON array is not valid JSON after element "
                                   f"{index} (elements from there on were not read)",
                                   record_index=index) from None
        raise stopped(e, record_index=index) from None


# ---------------------------------------------------------------- Capture / routing Avro

# IoT Hub message routing (to storage, Avro) names system properties the way its routing
# queries do; the reference's Event Hubs SDK gives them their AMQP names. Map onto those.
ROUTING_SYSTEM_NAMES = {
    "connectionDeviceId": "iothub-connection-device-id",
    "connectionModuleId": "iothub-connection-module-id",
    "connectionAuthMethod": "iothub-connection-auth-method",
    "connectionDeviceGenerationId": "iothub-connection-auth-generation-id",
    "enqueuedTime": "iothub-enqueuedtime",
    "messageSource": "iothub-message-source",
    "interfaceName": "iothub-interface-name",
    "contentType": "content-type",
    "contentEncoding": "content-encoding",
    "messageId": "message-id",
    "correlationId": "correlation-id",
    "userId": "user-id",
    "to": "to",
    "dt-dataschema": "dt-dataschema",
    "dt-subject": "dt-subject",
}
_TIME_NAMES = frozenset({"iothub-enqueuedtime", "x-opt-enqueued-time"})
_B64_RE = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
_CAPTURE_FIELDS = ("Body",)


def _plain(value: Any) -> Any:
    """A Capture map value (long, double, string, bytes, null) as JSON-safe data."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value).hex()
    return value


def _time_text(value: Any) -> Any:
    """A time annotation in the reference's form (Newtonsoft ISO); ms since the epoch if a long."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return timeutil.format_trimmed(timeutil.from_unix_ms(value))
    if isinstance(value, str):
        ticks = timeutil.parse_datetime(value)
        if ticks is not None:
            return timeutil.format_trimmed(ticks)
    return value


def _base64_json(body: bytes) -> Optional[bytes]:
    """The decoded body when ``body`` is base64 of a JSON object/array, else ``None``.

    JSON text never matches the base64 alphabet except bare numbers/literals, and those
    do not decode to ``{`` or ``[``, so a real JSON body is never mistaken for base64."""
    if len(body) % 4 or not _B64_RE.fullmatch(body):
        return None
    try:
        decoded = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None
    head = decoded[3:] if decoded.startswith(_BOM) else decoded
    head = head.lstrip()[:1]
    if head not in (b"{", b"["):
        return None
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return decoded


def capture_record_to_event(record: Mapping[str, Any], source_file: Optional[str] = None) -> DeviceEvent:
    """One Event Hubs Capture / IoT Hub routing Avro record -> ``DeviceEvent``.

    ``Body`` stays bytes (parsed as UTF-8 JSON at normalization, as the reference does);
    ``Properties`` as sent; ``SystemProperties`` under the names the reference's Event Hubs
    SDK gives them: routing's camelCase names mapped (``connectionDeviceId`` ->
    ``iothub-connection-device-id`` ...), ``SequenceNumber``/``Offset``/``EnqueuedTimeUtc``
    as ``x-opt-sequence-number``/``x-opt-offset``/``x-opt-enqueued-time``; time annotations
    in Newtonsoft's ISO form (as the live Kafka path gives them); ``IngestionTimeUtc`` =
    ``EnqueuedTimeUtc``. IoT Hub routing stores a base64 text body when the sender set no
    content type / encoding: such a body is recognised and decoded."""
    system: Dict[str, Any] = {}
    for name, value in (record.get("SystemProperties") or {}).items():
        name = ROUTING_SYSTEM_NAMES.get(name, name)
        value = _plain(value)
        system[name] = _time_text(value) if name in _TIME_NAMES else value
    properties = {name: _plain(value) for name, value in (record.get("Properties") or {}).items()}
    sequence = record.get("SequenceNumber")
    if sequence is not None:
        system["x-opt-sequence-number"] = int(sequence)
    offset = record.get("Offset")
    if offset is not None:
        system["x-opt-offset"] = str(offset)
    ticks = None
    enqueued = record.get("EnqueuedTimeUtc")
    if isinstance(enqueued, str):
        ticks = timeutil.parse_datetime(enqueued)
    elif isinstance(enqueued, int) and not isinstance(enqueued, bool):
        ticks = timeutil.from_unix_ms(enqueued)
    if ticks is not None:
        system["x-opt-enqueued-time"] = timeutil.format_trimmed(ticks)
    if source_file:
        system[SOURCE_FILE_PROPERTY] = source_file
    body = record.get("Body")
    body = b"" if body is None else bytes(body) if not isinstance(body, str) else body.encode("utf-8")
    if body and body[:1] not in b"{[ \t\r\n" and not system.get("content-type") \
            and not system.get("content-encoding"):
        decoded = _base64_json(body)
        if decoded is not None:
            body = decoded
    return DeviceEvent(body=body, properties=properties, system_properties=system, ingestion_time=ticks)


def read_capture_avro(stream, source_file: Optional[str] = None) -> Iterator[DeviceEvent]:
    """Events for the records of one Capture / routing Avro file (any Avro codec fastavro reads).

    A corrupt block stops the file (Avro cannot resync past it in fastavro's reader): the
    error gives the index of the first record not read. A record that does not convert is
    *yielded* as an ``ArchiveReadError`` with its index (the caller dead-letters it alone)
    and reading goes on."""
    import fastavro

    index = 0
    try:
        reader = fastavro.reader(stream)
        fields = {f.get("name") for f in (reader.writer_schema or {}).get("fields", ())} \
            if isinstance(reader.writer_schema, dict) else set()
        if not all(name in fields for name in _CAPTURE_FIELDS):
            raise ArchiveReadError("NotACaptureFile", "the Avro file has no Body field (not an Event Hubs "
                                   "Capture / IoT Hub routing file)", record_index=0)
        for record in reader:
            try:
                yield capture_record_to_event(record, source_file)
            except Exception as e:  # this record only: the next one is read on
                yield ArchiveReadError(type(e).__name__, "the Avro record does not convert to an event: "
                                       + safe_reason(e), record_index=index)
            index += 1
    except ArchiveReadError:
        raise
    except Exception as e:
        raise ArchiveReadError(error_name(e), f"{safe_reason(e)} (Avro records from index {index} on "
                               f"were not read)", record_index=index) from None
