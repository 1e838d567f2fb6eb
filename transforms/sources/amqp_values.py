"""Kafka header bytes -> the value an Event Hubs (AMQP) consumer would have seen.

Why this exists: Event Hubs stores an AMQP producer's application properties (IoT Hub
routes every device message that way) in AMQP's own encoding, and its Kafka endpoint
hands them to Kafka consumers as those raw bytes (the service does not re-encode; see
azure-event-hubs-for-kafka#56). A template reading ``$.Properties.iothub-creation-time-utc``
would otherwise see ``b"\\xa1\\x1c2024-..."`` instead of the string. A Kafka producer's
headers, on the other hand, are plain bytes (UTF-8 text by convention).

Only encodings that cannot be confused with UTF-8 text are decoded: their first byte
(0x80-0xBF) is a UTF-8 continuation byte, which no UTF-8 text starts with, and the
length must match exactly. AMQP's one-byte constructors in the ASCII range ("q" int,
"T" smallint, "A" true, ...) are decoded only when the bytes after them are not
printable text. Anything else is UTF-8 text, or its hex when it is not UTF-8, so a
value is never dropped and never raises.
"""
import struct
import uuid
from typing import Any, Optional

from transforms.mapping import timeutil

# First byte >= 0x80: never the start of UTF-8 text.
_FIXED = {
    0x80: (8, lambda b: struct.unpack(">Q", b)[0]),   # ulong
    0x81: (8, lambda b: struct.unpack(">q", b)[0]),   # long
    0x82: (8, lambda b: struct.unpack(">d", b)[0]),   # double
    0x83: (8, lambda b: timeutil.format_trimmed(      # timestamp (ms since the epoch, UTC)
        timeutil.from_unix_ms(struct.unpack(">q", b)[0]))),
    0x98: (16, lambda b: str(uuid.UUID(bytes=b))),    # uuid
}
_VARIABLE = {  # constructor -> (length size, is text)
    0xA0: (1, False), 0xA1: (1, True), 0xA3: (1, True),   # vbin8, str8-utf8, sym8
    0xB0: (4, False), 0xB1: (4, True), 0xB3: (4, True),   # vbin32, str32-utf8, sym32
}
# ASCII-range constructors: only decoded when what follows is not printable text. The
# one-byte forms (null "@", true "A", false "B", zero "C"/"D") are left as text: a lone
# letter is more likely a Kafka producer's header than an AMQP constant.
_SMALL = {
    0x50: (1, lambda b: b[0]), 0x51: (1, lambda b: struct.unpack(">b", b)[0]),  # ubyte, byte
    0x52: (1, lambda b: b[0]), 0x53: (1, lambda b: b[0]),  # smalluint, smallulong
    0x54: (1, lambda b: struct.unpack(">b", b)[0]),        # smallint
    0x55: (1, lambda b: struct.unpack(">b", b)[0]),        # smalllong
    0x56: (1, lambda b: b[0] != 0),                        # boolean
    0x60: (2, lambda b: struct.unpack(">H", b)[0]), 0x61: (2, lambda b: struct.unpack(">h", b)[0]),
    0x70: (4, lambda b: struct.unpack(">I", b)[0]), 0x71: (4, lambda b: struct.unpack(">i", b)[0]),
    0x72: (4, lambda b: struct.unpack(">f", b)[0]),        # float
}


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex()


def _is_printable(raw: bytes) -> bool:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return text.isprintable()


def _amqp(raw: bytes) -> Optional[tuple]:
    """``(value,)`` when ``raw`` is exactly one AMQP primitive we decode, else ``None``."""
    code, rest = raw[0], raw[1:]
    if code in _FIXED:
        size, decode = _FIXED[code]
        return (decode(rest),) if len(rest) == size else None
    if code in _VARIABLE:
        width, is_text = _VARIABLE[code]
        if len(rest) < width:
            return None
        size = int.from_bytes(rest[:width], "big")
        data = rest[width:]
        if len(data) != size:
            return None
        if not is_text:
            return (_text(data),)
        try:
            return (data.decode("utf-8"),)
        except UnicodeDecodeError:
            return None
    if code in _SMALL:
        size, decode = _SMALL[code]
        if len(rest) != size or _is_printable(rest):
            return None
        return (decode(rest),)
    return None


def header_value(raw: Optional[bytes]) -> Any:
    """A Kafka header value as a JSON-safe ``Properties`` value (see the module docstring)."""
    if raw is None:
        return None
    raw = bytes(raw)
    if not raw:
        return ""
    decoded = _amqp(raw)
    return decoded[0] if decoded is not None else _text(raw)
