"""Mapping files as JSON with line numbers, and strict, case-insensitive field reading.

Why our own reader: the reference reports every template problem with the JSON line
and position (Newtonsoft ``IJsonLineInfo``), matches field names case-insensitively
and rejects unknown fields. Python's ``json`` keeps no positions, so mapping files
(small, read once at start) go through this small recursive-descent parser that
records where each object and key starts. Device messages never do: they use
``json.loads`` on the hot path.
"""
import bisect
import json
import re
from json.decoder import scanstring
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from transforms.mapping.errors import InvalidTemplateException

_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?")
_WS = re.compile(r"[ \t\n\r]*")


class TemplateError(NamedTuple):
    """One problem in a mapping file, with where it is (1-based; 0 when unknown)."""

    message: str
    line: int = 0
    position: int = 0
    severity: str = "error"  # or "warning" (cross-checks that do not stop a run)

    def __str__(self) -> str:
        if self.line:
            return f"line {self.line}, position {self.position}: {self.message}"
        return self.message


class JsonDoc:
    """A parsed JSON document plus the (line, position) of each object, array and key."""

    def __init__(self, value: Any, positions: Dict[int, Tuple[int, int]],
                 key_positions: Dict[int, Dict[str, Tuple[int, int]]]):
        self.value = value
        self._positions = positions
        self._key_positions = key_positions

    def pos(self, node: Any) -> Tuple[int, int]:
        return self._positions.get(id(node), (0, 0))

    def key_pos(self, node: Any, key: str) -> Tuple[int, int]:
        return self._key_positions.get(id(node), {}).get(key, self.pos(node))


class _Parser:
    def __init__(self, text: str):
        self.s = text
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.positions: Dict[int, Tuple[int, int]] = {}
        self.key_positions: Dict[int, Dict[str, Tuple[int, int]]] = {}

    def where(self, idx: int) -> Tuple[int, int]:
        line = bisect.bisect_right(self.line_starts, idx)
        return line, idx - self.line_starts[line - 1] + 1

    def fail(self, idx: int, what: str):
        line, pos = self.where(idx)
        raise InvalidTemplateException(f"Invalid JSON: {what}. Line {line}, position {pos}.")

    def ws(self, i: int) -> int:
        return _WS.match(self.s, i).end()

    def value(self, i: int) -> Tuple[Any, int]:
        i = self.ws(i)
        if i >= len(self.s):
            self.fail(i, "unexpected end of content")
        c = self.s[i]
        if c == "{":
            return self.obj(i)
        if c == "[":
            return self.arr(i)
        if c == '"':
            try:
                return scanstring(self.s, i + 1, True)
            except json.JSONDecodeError as e:
                self.fail(e.pos, e.msg)
        for lit, val in (("true", True), ("false", False), ("null", None)):
            if self.s.startswith(lit, i):
                return val, i + len(lit)
        m = _NUMBER.match(self.s, i)
        if m:
            text = m.group(0)
            return (float(text) if m.group(1) or m.group(2) else int(text)), m.end()
        self.fail(i, f"unexpected character {c!r}")

    def obj(self, start: int) -> Tuple[dict, int]:
        out: Dict[str, Any] = {}
        keys: Dict[str, Tuple[int, int]] = {}
        self.positions[id(out)] = self.where(start)
        self.key_positions[id(out)] = keys
        i = self.ws(start + 1)
        if i < len(self.s) and self.s[i] == "}":
            return out, i + 1
        while True:
            i = self.ws(i)
            if i >= len(self.s) or self.s[i] != '"':
                self.fail(i, "expected a property name")
            key_at = i
            key, i = self.value(i)
            i = self.ws(i)
            if i >= len(self.s) or self.s[i] != ":":
                self.fail(i, "expected ':'")
            val, i = self.value(i + 1)
            out[key] = val
            keys[key] = self.where(key_at)
            i = self.ws(i)
            if i < len(self.s) and self.s[i] == ",":
                i += 1
                continue
            if i < len(self.s) and self.s[i] == "}":
                return out, i + 1
            self.fail(i, "expected ',' or '}'")

    def arr(self, start: int) -> Tuple[list, int]:
        out: List[Any] = []
        self.positions[id(out)] = self.where(start)
        i = self.ws(start + 1)
        if i < len(self.s) and self.s[i] == "]":
            return out, i + 1
        while True:
            val, i = self.value(i)
            out.append(val)
            i = self.ws(i)
            if i < len(self.s) and self.s[i] == ",":
                i += 1
                continue
            if i < len(self.s) and self.s[i] == "]":
                return out, i + 1
            self.fail(i, "expected ',' or ']'")


def parse(text: str) -> JsonDoc:
    """Parse a mapping file's text; syntax errors raise ``InvalidTemplateException`` with line/position."""
    if text.startswith("\ufeff"):
        text = text[1:]
    p = _Parser(text)
    value, end = p.value(0)
    end = p.ws(end)
    if end != len(text):
        p.fail(end, "additional text after the JSON content")
    return JsonDoc(value, p.positions, p.key_positions)


def load(path: str) -> JsonDoc:
    with open(path, encoding="utf-8-sig") as f:
        return parse(f.read())


_MISSING = object()


class StrictObject:
    """Reads one template object as Newtonsoft's strict deserializer would.

    Field names match case-insensitively; every field read is ticked off and
    ``finish()`` reports the rest as unknown. Problems are appended to ``errors``
    rather than raised, so a whole file's problems are reported at once.
    """

    def __init__(self, doc: JsonDoc, node: Any, type_name: str, errors: List[TemplateError],
                 where: Optional[Tuple[int, int]] = None):
        self.doc = doc
        self.node = node
        self.type_name = type_name
        self.errors = errors
        self.ok = True
        self.where = where or doc.pos(node)
        self._lower = {k.lower(): k for k in node} if isinstance(node, dict) else {}
        self._seen = set()

    def error(self, message: str, key: Optional[str] = None) -> None:
        line, pos = self.doc.key_pos(self.node, key) if key else self.where
        self.errors.append(TemplateError(message, line, pos))
        self.ok = False

    def raw(self, name: str) -> Any:
        """The field's raw JSON value, or ``_MISSING``."""
        key = self._lower.get(name.lower())
        if key is None:
            return _MISSING
        self._seen.add(key)
        return self.node[key]

    def key_of(self, name: str) -> Optional[str]:
        return self._lower.get(name.lower())

    def has(self, name: str) -> bool:
        return name.lower() in self._lower

    def get(self, name: str, kind: Callable[[Any], Any], required: bool = False,
            default: Any = None) -> Any:
        """Field ``name`` converted with ``kind`` (one of the converters below)."""
        value = self.raw(name)
        if value is _MISSING:
            if required:
                self.error(f"Required property '{name[0].upper() + name[1:]}' not found in JSON.")
            return default
        try:
            return kind(value)
        except (TypeError, ValueError) as e:
            self.error(f"Error converting value for '{name}': {e}", self.key_of(name))
            return default

    def finish(self) -> None:
        for key in self.node:
            if key not in self._seen:
                self.error(f"Could not find member '{key}' on object of type '{self.type_name}'.", key)


# --- converters mirroring Newtonsoft's conversions ------------------------------------------
def as_string(value: Any) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return str(value)
    raise TypeError(f"expected a string, got {type(value).__name__}")


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, int):
        return value != 0
    raise ValueError(f"could not convert {value!r} to boolean")


def as_list(value: Any) -> list:
    if isinstance(value, list):
        return value
    raise TypeError("expected an array")


def as_object(value: Any) -> dict:
    if isinstance(value, dict):
        return value
    raise TypeError("expected an object")


MISSING = _MISSING
