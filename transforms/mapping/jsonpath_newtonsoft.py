"""JSONPath with Newtonsoft.Json ``SelectToken`` / ``SelectTokens`` semantics.

Why not an RFC 9535 / Goessner engine as is: iomt-fhir templates were written against
Newtonsoft, whose dialect differs in ways that change results:

* ``$..[?(<expr>)]`` (QueryScanFilter) tests the start token *itself* and all its
  descendants in document (pre-)order, so a root object with ``heartrate`` matches
  ``$..[?(@heartrate)]``;
* ``@heartrate`` (no dot) is a path like ``@.heartrate``; a bare path is an *existence*
  test, true even when the value is ``null``;
* ``$..name`` yields in pre-order (jsonpath-ng yields a level's own match first);
  ``$..*`` includes the start token; ``[*]`` only enumerates arrays and ``.*`` only
  objects; a negative array index is an error, not "from the end";
* ``&&`` / ``||`` have no precedence and no grouping parentheses: each change of
  operator nests the rest of the expression (``a && b || c`` is ``a && (b || c)``);
* comparisons follow ``JValue.Compare`` (string coercion of the left side, numeric
  tolerance ``MathUtils.ApproxEquals``, ``null`` sorts first...).

jsonpath-ng (a project dependency) implements the other dialect for exactly those
shapes, so evaluation is our own; see ``expressions.py`` for how it is still used.

The parser below follows Newtonsoft's ``JPath`` character scanner so that the same
strings are accepted or rejected. ``parse()`` returns a list of *filters*; each filter
is a small object with ``apply(root, current) -> list``. Lists (not generators) keep
per-call overhead low.

Not representable: Newtonsoft's ``JProperty`` tokens (an object's children in a
``[?()]`` filter, or descendants of a scan). They only ever match degenerate filters
such as ``[?(@)]`` or ``[?(@ != 1)]`` and are skipped here.
"""
import math
import re

from transforms.mapping import timeutil
from transforms.mapping.errors import ExpressionEvaluationException
from transforms.mapping.timeutil import DateToken

_CONTAINERS = (dict, list)


class JsonPathSyntaxError(ValueError):
    """Newtonsoft's ``JsonException`` raised while parsing a path."""


class JsonPathRuntimeError(ValueError):
    """A .NET exception raised while evaluating (bad index, failed conversion...)."""


# ---------------------------------------------------------------------------------------
# filters (Newtonsoft PathFilter subclasses)
# ---------------------------------------------------------------------------------------
class FieldFilter:
    """``.name`` / ``['name']``; ``name=None`` is ``.*`` (values of an object only)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def apply(self, root, current):
        name = self.name
        out = []
        for t in current:
            if isinstance(t, dict):
                if name is None:
                    out.extend(t.values())
                elif name in t:
                    out.append(t[name])
        return out


class FieldMultipleFilter:
    """``['a','b']``: the listed names, in the listed order."""

    __slots__ = ("names",)

    def __init__(self, names):
        self.names = tuple(names)

    def apply(self, root, current):
        out = []
        for t in current:
            if isinstance(t, dict):
                for name in self.names:
                    if name in t:
                        out.append(t[name])
        return out


def _scan_name(node, name, out):
    """Pre-order walk yielding the value of every property called ``name``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == name:
                out.append(value)
            if isinstance(value, _CONTAINERS):
                _scan_name(value, name, out)
    else:
        for value in node:
            if isinstance(value, _CONTAINERS):
                _scan_name(value, name, out)


def _scan_names(node, names, out):
    if isinstance(node, dict):
        for key, value in node.items():
            for name in names:
                if key == name:
                    out.append(value)
            if isinstance(value, _CONTAINERS):
                _scan_names(value, names, out)
    else:
        for value in node:
            if isinstance(value, _CONTAINERS):
                _scan_names(value, names, out)


def _descendants(node, out):
    """Every value below ``node`` in pre-order (Newtonsoft ``Descendants`` minus JProperty)."""
    children = node.values() if isinstance(node, dict) else node
    for value in children:
        out.append(value)
        if isinstance(value, _CONTAINERS):
            _descendants(value, out)


class ScanFilter:
    """``..name``; ``..*`` (name None) yields the start token and all its descendants."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def apply(self, root, current):
        out = []
        for t in current:
            if self.name is None:
                out.append(t)
                if isinstance(t, _CONTAINERS):
                    _descendants(t, out)
            elif isinstance(t, _CONTAINERS):
                _scan_name(t, self.name, out)
        return out


class ScanMultipleFilter:
    """``..['a','b']``."""

    __slots__ = ("names",)

    def __init__(self, names):
        self.names = tuple(names)

    def apply(self, root, current):
        out = []
        for t in current:
            if isinstance(t, _CONTAINERS):
                _scan_names(t, self.names, out)
        return out


def _index_out_of_range():
    return JsonPathRuntimeError(
        "Index was out of range. Must be non-negative and less than the size of the collection. "
        "(Parameter 'index')")


class ArrayIndexFilter:
    """``[n]``; ``index=None`` is ``[*]`` (elements of an array only)."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index

    def apply(self, root, current):
        index = self.index
        out = []
        for t in current:
            if isinstance(t, list):
                if index is None:
                    out.extend(t)
                elif index < 0:
                    raise _index_out_of_range()  # JArray[-1] throws in .NET
                elif index < len(t):
                    out.append(t[index])
        return out


class ArrayMultipleIndexFilter:
    """``[0,2]``."""

    __slots__ = ("indexes",)

    def __init__(self, indexes):
        self.indexes = tuple(indexes)

    def apply(self, root, current):
        out = []
        for t in current:
            if isinstance(t, list):
                for index in self.indexes:
                    if index < 0:
                        raise _index_out_of_range()
                    if index < len(t):
                        out.append(t[index])
        return out


class ArraySliceFilter:
    """``[start:end:step]`` with Newtonsoft's clamping rules."""

    __slots__ = ("start", "end", "step")

    def __init__(self, start, end, step):
        self.start, self.end, self.step = start, end, step

    def apply(self, root, current):
        out = []
        step = 1 if self.step is None else self.step
        for t in current:
            if not isinstance(t, list):
                continue
            count = len(t)
            start = self.start if self.start is not None else (0 if step > 0 else count - 1)
            stop = self.end if self.end is not None else (count if step > 0 else -1)
            if self.start is not None and self.start < 0:
                start = count + start
            if self.end is not None and self.end < 0:
                stop = count + stop
            if step > 0:
                start = min(max(start, 0), count)
            else:
                start = min(start, count - 1)
            stop = min(max(stop, -1), count)
            i = start
            if step > 0:
                while i < stop:
                    out.append(t[i])
                    i += step
            else:
                while i > stop:
                    out.append(t[i])
                    i += step
        return out


class RootFilter:
    """``$`` inside a filter expression: the token ``SelectToken`` was called on."""

    __slots__ = ()

    def apply(self, root, current):
        return [root]


class QueryFilter:
    """``[?(expr)]``: the children of each token that satisfy ``expr``.

    An object's children are JProperty tokens in Newtonsoft, which no ordinary
    predicate matches, so only array elements are tested.
    """

    __slots__ = ("expression", "predicate")

    def __init__(self, expression):
        self.expression = expression
        self.predicate = expression.compile()

    def apply(self, root, current):
        pred = self.predicate
        out = []
        for t in current:
            if isinstance(t, list):
                for v in t:
                    if pred(root, v):
                        out.append(v)
        return out


class QueryScanFilter:
    """``..[?(expr)]``: the token itself and every descendant, pre-order, that satisfy ``expr``."""

    __slots__ = ("expression", "predicate")

    def __init__(self, expression):
        self.expression = expression
        self.predicate = expression.compile()

    def apply(self, root, current):
        pred = self.predicate
        out = []
        for t in current:
            if isinstance(t, _CONTAINERS):
                candidates = [t]
                _descendants(t, candidates)
                for d in candidates:
                    if pred(root, d):
                        out.append(d)
            elif pred(root, t):
                out.append(t)
        return out


def evaluate(filters, root, token):
    """``JPath.Evaluate``: apply the filters in turn to ``[token]``."""
    current = [token]
    for f in filters:
        current = f.apply(root, current)
        if not current:
            break
    return current


# ---------------------------------------------------------------------------------------
# filter expressions (Newtonsoft QueryExpression)
# ---------------------------------------------------------------------------------------
EXISTS, EQ, NE, LT, LE, GT, GE, REGEX, STRICT_EQ, STRICT_NE = (
    "exists", "==", "!=", "<", "<=", ">", ">=", "=~", "===", "!==")


class Literal:
    """A constant side of a comparison (a Newtonsoft ``JValue``)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return f"Literal({self.value!r})"


class BooleanExpression:
    """``left <op> right``, or a bare ``left`` (existence)."""

    __slots__ = ("op", "left", "right")

    def __init__(self, op, left, right):
        self.op, self.left, self.right = op, left, right

    def compile(self):
        op, left, right = self.op, self.left, self.right
        get_left = _side(left)
        if op == EXISTS:
            if isinstance(left, Literal):
                return lambda root, t: True
            return lambda root, t: bool(get_left(root, t))
        get_right = _side(right)

        def predicate(root, t):
            lefts = get_left(root, t)
            if not lefts:
                return False
            rights = get_right(root, t)
            for lv in lefts:
                for rv in rights:
                    if _match_tokens(op, lv, rv):
                        return True
            return False
        return predicate


class CompositeExpression:
    """``&&`` / ``||`` over a flat list (Newtonsoft's CompositeExpression)."""

    __slots__ = ("op", "expressions")

    def __init__(self, op):
        self.op = op
        self.expressions = []

    def compile(self):
        preds = [e.compile() for e in self.expressions]
        if self.op == "&&":
            if len(preds) == 2:
                a, b = preds
                return lambda root, t: a(root, t) and b(root, t)
            return lambda root, t: all(p(root, t) for p in preds)
        if len(preds) == 2:
            a, b = preds
            return lambda root, t: a(root, t) or b(root, t)
        return lambda root, t: any(p(root, t) for p in preds)


def _side(side):
    if isinstance(side, Literal):
        values = [side.value]
        return lambda root, t: values
    filters = side
    if not filters:
        return lambda root, t: [t]
    return lambda root, t: evaluate(filters, root, t)


# --- JValue comparison semantics ---------------------------------------------------------
def _jtype(v):
    """Newtonsoft JTokenType of a value, or None for containers (not a JValue)."""
    cls = v.__class__
    if cls is str:
        return "String"
    if cls is int:
        return "Integer"
    if cls is float:
        return "Float"
    if cls is bool:
        return "Boolean"
    if v is None:
        return "Null"
    if cls is DateToken:
        return "Date"
    if isinstance(v, (dict, list)):
        return None
    if isinstance(v, bool):
        return "Boolean"
    if isinstance(v, int):
        return "Integer"
    if isinstance(v, float):
        return "Float"
    if isinstance(v, str):
        return "String"
    return None


def _format_error():
    return JsonPathRuntimeError("Input string was not in a correct format.")


def _invalid_cast(source, target):
    return JsonPathRuntimeError(f"Invalid cast from '{source}' to '{target}'.")


_INT_RE = re.compile(r"\s*[+-]?\d+\s*\Z")


def _to_int64(v):
    """``Convert.ToInt64(object, InvariantCulture)``."""
    cls = v.__class__
    if cls is int:
        return v
    if cls is bool:
        return 1 if v else 0
    if cls is str:
        if not _INT_RE.match(v):
            raise _format_error()
        return int(v)
    if cls is float:
        if v != v or v in (math.inf, -math.inf):
            raise JsonPathRuntimeError("Value was either too large or too small for an Int64.")
        return int(round(v))
    raise _invalid_cast(_jtype(v), "Int64")


def _to_double(v):
    """``Convert.ToDouble(object, InvariantCulture)``."""
    cls = v.__class__
    if cls is float or cls is int:
        return float(v)
    if cls is bool:
        return 1.0 if v else 0.0
    if cls is str:
        text = v.strip().replace(",", "")
        low = text.lower()
        if low in ("nan", "infinity", "-infinity", "+infinity", "∞", "-∞"):
            return {"nan": math.nan, "infinity": math.inf, "+infinity": math.inf,
                    "-infinity": -math.inf, "∞": math.inf, "-∞": -math.inf}[low]
        if low in ("inf", "-inf", "+inf") or "_" in text:
            raise _format_error()
        try:
            return float(text)
        except ValueError:
            raise _format_error() from None
    raise _invalid_cast(_jtype(v), "Double")


def _to_boolean(v):
    """``Convert.ToBoolean(object, InvariantCulture)``."""
    cls = v.__class__
    if cls is bool:
        return v
    if cls is int or cls is float:
        return v != 0
    if cls is str:
        text = v.strip().lower()
        if text == "true":
            return True
        if text == "false":
            return False
        raise JsonPathRuntimeError(f"String '{v}' was not recognized as a valid Boolean.")
    raise _invalid_cast(_jtype(v), "Boolean")


def _to_ticks(v):
    """``Convert.ToDateTime(object, InvariantCulture)``."""
    if v.__class__ is DateToken:
        return v.ticks
    if isinstance(v, str):
        ticks = timeutil.parse_datetime(v)
        if ticks is None:
            raise JsonPathRuntimeError(f"String '{v}' was not recognized as a valid DateTime.")
        return ticks
    raise _invalid_cast(_jtype(v), "DateTime")


def _cmp(a, b):
    return (a > b) - (a < b)


def _compare_double(a, b):
    """``CompareFloat``: ``MathUtils.ApproxEquals`` then ``double.CompareTo`` (NaN first)."""
    d1, d2 = _to_double(a), _to_double(b)
    if d1 == d2:
        return 0
    tolerance = (abs(d1) + abs(d2) + 10.0) * 2.2204460492503131e-016
    diff = d1 - d2
    if -tolerance < diff < tolerance:
        return 0
    if d1 < d2:
        return -1
    if d1 > d2:
        return 1
    if d1 != d1:
        return 0 if d2 != d2 else -1
    return 1


def _compare(value_type, a, b):
    """``JValue.Compare(JTokenType, object, object)``."""
    if a is None and b is None:
        return 0
    if b is None:
        return 1
    if a is None:
        return -1
    if value_type == "Integer":
        if a.__class__ is float or b.__class__ is float:
            return _compare_double(a, b)
        return _cmp(_to_int64(a), _to_int64(b))
    if value_type == "Float":
        return _compare_double(a, b)
    if value_type == "String":
        return _cmp(a if isinstance(a, str) else str(a), b if isinstance(b, str) else str(b))
    if value_type == "Boolean":
        return _cmp(_to_boolean(a), _to_boolean(b))
    if value_type == "Date":
        return _cmp(_to_ticks(a), _to_ticks(b))
    raise JsonPathRuntimeError(f"Unexpected value type: {value_type}")


def _compare_to(a, ta, b, tb):
    """``JValue.CompareTo``: a string left side is compared as the right side's type."""
    value_type = tb if (ta == "String" and tb != ta) else ta
    return _compare(value_type, a, b)


def _values_equal(a, ta, b, tb):
    """``JValue.Equals`` (same token type and ``Compare == 0``)."""
    if a is b:
        return True
    return ta == tb and _compare(ta, a, b) == 0


def _equals_with_string_coercion(a, ta, b, tb):
    if _values_equal(a, ta, b, tb):
        return True
    if (ta == "Integer" and tb == "Float") or (ta == "Float" and tb == "Integer"):
        return _compare(ta, a, b) == 0
    if tb != "String":
        return False
    if ta == "Date":
        return timeutil.format_trimmed(a.ticks) == b
    return False


def _equals_strict(a, ta, b, tb):
    if (ta == "Integer" and tb == "Float") or (ta == "Float" and tb == "Integer"):
        return _compare(ta, a, b) == 0
    if ta != tb:
        return False
    return _values_equal(a, ta, b, tb)


_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


def _regex_equals(a, ta, b, tb):
    if ta != "String" or tb != "String":
        return False
    cut = b.rfind("/")
    pattern, options = b[1:cut], b[cut + 1:]
    flags = 0
    for ch in options:
        flags |= _REGEX_FLAGS.get(ch, 0)
    return re.search(pattern, a, flags) is not None


def _match_tokens(op, lv, rv):
    """``BooleanQueryExpression.MatchTokens``."""
    ta, tb = _jtype(lv), _jtype(rv)
    if ta is None or tb is None:
        # a container on either side: only "not equals" holds
        return op == NE
    if op == EQ:
        return _equals_with_string_coercion(lv, ta, rv, tb)
    if op == NE:
        return not _equals_with_string_coercion(lv, ta, rv, tb)
    if op == STRICT_EQ:
        return _equals_strict(lv, ta, rv, tb)
    if op == STRICT_NE:
        return not _equals_strict(lv, ta, rv, tb)
    if op == REGEX:
        return _regex_equals(lv, ta, rv, tb)
    c = _compare_to(lv, ta, rv, tb)
    if op == GT:
        return c > 0
    if op == GE:
        return c >= 0
    if op == LT:
        return c < 0
    if op == LE:
        return c <= 0
    return False


# ---------------------------------------------------------------------------------------
# parser (mirrors Newtonsoft JPath character by character)
# ---------------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text):
        self.s = text
        self.i = 0
        self.filters = []

    # -- helpers
    def _err(self, message):
        return JsonPathSyntaxError(message)

    def _eat_ws(self):
        s, n = self.s, len(self.s)
        while self.i < n and s[self.i] == " ":
            self.i += 1

    def _ensure(self, message):
        if self.i >= len(self.s):
            raise self._err(message)

    def _match(self, word):
        if self.s.startswith(word, self.i):
            self.i += len(word)
            return True
        return False

    # -- main
    def parse_main(self):
        s = self.s
        start = self.i
        self._eat_ws()
        if self.i == len(s):
            return self.filters
        if s[self.i] == "$":
            if len(s) == 1:
                return self.filters
            # only "$." and "$[" start at the root; otherwise "$x" is a property name
            if self.i + 1 < len(s) and s[self.i + 1] in ".[":
                self.i += 1
                start = self.i
        if not self._parse_path(self.filters, start, False):
            last = self.i
            self._eat_ws()
            if self.i < len(s):
                raise self._err(f"Unexpected character while parsing path: {s[last]}")
        return self.filters

    @staticmethod
    def _path_filter(member, scan):
        if member == "*":
            member = None
        return ScanFilter(member) if scan else FieldFilter(member)

    def _parse_path(self, filters, part_start, query):
        s, n = self.s, len(self.s)
        scan = following_indexer = following_dot = ended = False
        while self.i < n and not ended:
            c = s[self.i]
            if c in "[(":
                if self.i > part_start:
                    filters.append(self._path_filter(s[part_start:self.i], scan))
                    scan = False
                filters.append(self._parse_indexer(c, scan))
                scan = False
                self.i += 1
                part_start = self.i
                following_indexer, following_dot = True, False
            elif c in "])":
                ended = True
            elif c == " ":
                ended = True
            elif c == ".":
                if self.i > part_start:
                    filters.append(self._path_filter(s[part_start:self.i], scan))
                    scan = False
                if self.i + 1 < n and s[self.i + 1] == ".":
                    scan = True
                    self.i += 1
                self.i += 1
                part_start = self.i
                following_indexer, following_dot = False, True
            elif query and c in "=<!>|&":
                ended = True
            else:
                if following_indexer:
                    raise self._err(f"Unexpected character following indexer: {c}")
                self.i += 1
        at_end = self.i == n
        if self.i > part_start:
            member = s[part_start:self.i].rstrip()
            filters.append(self._path_filter(member, scan))
        elif following_dot and (at_end or query):
            raise self._err("Unexpected end while parsing path.")
        return at_end

    def _parse_indexer(self, open_char, scan):
        self.i += 1
        close = "]" if open_char == "[" else ")"
        self._ensure("Path ended with open indexer.")
        self._eat_ws()
        self._ensure("Path ended with open indexer.")
        c = self.s[self.i]
        if c == "'":
            return self._parse_quoted_field(close, scan)
        if c == "?":
            return self._parse_query(close, scan)
        return self._parse_array_indexer(close)

    def _to_int32(self, text):
        if not text.isascii() or "_" in text:
            raise self._err("Input string was not in a correct format.")
        try:
            value = int(text)
        except ValueError:
            raise self._err("Input string was not in a correct format.") from None
        if not (-(1 << 31) <= value < (1 << 31)):
            raise self._err("Value was either too large or too small for an Int32.")
        return value

    def _parse_array_indexer(self, close):
        s, n = self.s, len(self.s)
        start = self.i
        end = None
        indexes = None
        colons = 0
        start_index = end_index = step = None
        while self.i < n:
            c = s[self.i]
            if c == " ":
                end = self.i
                self._eat_ws()
                continue
            if c == close:
                length = (end if end is not None else self.i) - start
                if indexes is not None:
                    if length == 0:
                        raise self._err("Array index expected.")
                    indexes.append(self._to_int32(s[start:start + length]))
                    return ArrayMultipleIndexFilter(indexes)
                if colons > 0:
                    if length > 0:
                        value = self._to_int32(s[start:start + length])
                        if colons == 1:
                            end_index = value
                        else:
                            step = value
                    if step == 0:
                        raise self._err("Step cannot be zero.")
                    return ArraySliceFilter(start_index, end_index, step)
                if length == 0:
                    raise self._err("Array index expected.")
                return ArrayIndexFilter(self._to_int32(s[start:start + length]))
            if c == ",":
                length = (end if end is not None else self.i) - start
                if length == 0:
                    raise self._err("Array index expected.")
                if indexes is None:
                    indexes = []
                indexes.append(self._to_int32(s[start:start + length]))
                self.i += 1
                self._eat_ws()
                start = self.i
                end = None
            elif c == "*":
                self.i += 1
                self._ensure("Path ended with open indexer.")
                self._eat_ws()
                self._ensure("Path ended with open indexer.")
                if s[self.i] != close:
                    raise self._err(f"Unexpected character while parsing path indexer: {c}")
                return ArrayIndexFilter(None)
            elif c == ":":
                length = (end if end is not None else self.i) - start
                if length > 0:
                    value = self._to_int32(s[start:start + length])
                    if colons == 0:
                        start_index = value
                    elif colons == 1:
                        end_index = value
                    else:
                        step = value
                colons += 1
                self.i += 1
                self._eat_ws()
                start = self.i
                end = None
            elif not c.isdecimal() and c != "-":
                raise self._err(f"Unexpected character while parsing path indexer: {c}")
            else:
                if end is not None:
                    raise self._err(f"Unexpected character while parsing path indexer: {c}")
                self.i += 1
        raise self._err("Path ended with open indexer.")

    def _read_quoted_string(self):
        s, n = self.s, len(self.s)
        out = []
        self.i += 1
        while self.i < n:
            c = s[self.i]
            if c == "\\" and self.i + 1 < n:
                self.i += 1
                c = s[self.i]
                resolved = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r",
                            "\\": "\\", '"': '"', "'": "'", "/": "/"}.get(c)
                if resolved is None:
                    raise self._err(f"Unknown escape character: \\{c}")
                out.append(resolved)
                self.i += 1
            elif c == "'":
                self.i += 1
                return "".join(out)
            else:
                out.append(c)
                self.i += 1
        raise self._err("Path ended with an open string.")

    def _parse_quoted_field(self, close, scan):
        s, n = self.s, len(self.s)
        fields = None
        while self.i < n:
            field = self._read_quoted_string()
            self._eat_ws()
            self._ensure("Path ended with open indexer.")
            c = s[self.i]
            if c == close:
                if fields is not None:
                    fields.append(field)
                    return ScanMultipleFilter(fields) if scan else FieldMultipleFilter(fields)
                return ScanFilter(field) if scan else FieldFilter(field)
            if c == ",":
                self.i += 1
                self._eat_ws()
                if fields is None:
                    fields = []
                fields.append(field)
            else:
                raise self._err(f"Unexpected character while parsing path indexer: {c}")
        raise self._err("Path ended with open indexer.")

    def _parse_query(self, close, scan):
        self.i += 1
        self._ensure("Path ended with open indexer.")
        if self.s[self.i] != "(":
            raise self._err(f"Unexpected character while parsing path indexer: {self.s[self.i]}")
        self.i += 1
        expression = self._parse_expression()
        self.i += 1
        self._ensure("Path ended with open indexer.")
        self._eat_ws()
        self._ensure("Path ended with open indexer.")
        if self.s[self.i] != close:
            raise self._err(f"Unexpected character while parsing path indexer: {self.s[self.i]}")
        return QueryScanFilter(expression) if scan else QueryFilter(expression)

    def _try_parse_path_side(self):
        c = self.s[self.i]
        if c == "$":
            path = [RootFilter()]
        elif c == "@":
            path = []
        else:
            return None
        self.i += 1
        if self._parse_path(path, self.i, True):
            raise self._err("Path ended with open query.")
        return path

    _NO_VALUE = object()

    def _try_parse_value(self):
        s, n = self.s, len(self.s)
        c = s[self.i]
        if c == "'":
            return self._read_quoted_string()
        if c.isdecimal() or c == "-":
            start = self.i
            self.i += 1
            while self.i < n:
                if s[self.i] in " )":
                    text = s[start:self.i]
                    if not text.isascii() or "_" in text:
                        return self._NO_VALUE
                    try:
                        if any(ch in text for ch in ".Ee"):
                            return float(text.replace(",", ""))
                        value = int(text)
                        if not (-(1 << 63) <= value < (1 << 63)):
                            return self._NO_VALUE
                        return value
                    except ValueError:
                        return self._NO_VALUE
                self.i += 1
            return self._NO_VALUE
        if c == "t" and self._match("true"):
            return True
        if c == "f" and self._match("false"):
            return False
        if c == "n" and self._match("null"):
            return None
        if c == "/":
            return self._read_regex()
        return self._NO_VALUE

    def _read_regex(self):
        s, n = self.s, len(self.s)
        start = self.i
        self.i += 1
        while self.i < n:
            c = s[self.i]
            if c == "\\" and self.i + 1 < n:
                self.i += 2
            elif c == "/":
                self.i += 1
                while self.i < n and s[self.i].isalpha():
                    self.i += 1
                return s[start:self.i]
            else:
                self.i += 1
        raise self._err("Path ended with an open regex.")

    def _unexpected_query_char(self):
        return self._err(f"Unexpected character while parsing path query: {self.s[self.i]}")

    def _parse_side(self):
        self._eat_ws()
        self._ensure("Path ended with open query.")
        path = self._try_parse_path_side()
        if path is not None:
            self._eat_ws()
            self._ensure("Path ended with open query.")
            return path
        value = self._try_parse_value()
        if value is not self._NO_VALUE:
            self._eat_ws()
            self._ensure("Path ended with open query.")
            return Literal(value)
        raise self._unexpected_query_char()

    def _parse_operator(self):
        if self.i + 1 >= len(self.s):
            raise self._err("Path ended with open query.")
        for word, op in (("===", STRICT_EQ), ("==", EQ), ("=~", REGEX), ("!==", STRICT_NE),
                         ("!=", NE), ("<>", NE), ("<=", LE), ("<", LT), (">=", GE), (">", GT)):
            if self._match(word):
                return op
        raise self._err("Could not read query operator.")

    def _parse_expression(self):
        s = self.s
        root = None
        parent = None
        while self.i < len(s):
            left = self._parse_side()
            right = None
            if s[self.i] in ")|&":
                op = EXISTS
            else:
                op = self._parse_operator()
                right = self._parse_side()
            expression = BooleanExpression(op, left, right)
            c = s[self.i]
            if c == ")":
                if parent is not None:
                    parent.expressions.append(expression)
                    return root
                return expression
            if c == "&":
                if not self._match("&&"):
                    raise self._unexpected_query_char()
                if parent is None or parent.op != "&&":
                    composite = CompositeExpression("&&")
                    if parent is not None:
                        parent.expressions.append(composite)
                    parent = composite
                    if root is None:
                        root = parent
                parent.expressions.append(expression)
            elif c == "|":
                if not self._match("||"):
                    raise self._unexpected_query_char()
                if parent is None or parent.op != "||":
                    composite = CompositeExpression("||")
                    if parent is not None:
                        parent.expressions.append(composite)
                    parent = composite
                    if root is None:
                        root = parent
                parent.expressions.append(expression)
        raise self._err("Path ended with open query.")


def parse(text: str) -> list:
    """Filters of a Newtonsoft JSONPath; ``JsonPathSyntaxError`` when Newtonsoft would throw."""
    if text is None:
        raise JsonPathSyntaxError("Path is null.")
    try:
        return _Parser(text).parse_main()
    except IndexError:  # defensive: a scanner read past the end
        raise JsonPathSyntaxError("Path ended unexpectedly.") from None


# ---------------------------------------------------------------------------------------
# shape analysis for the fast paths
# ---------------------------------------------------------------------------------------
def key_chain(filters):
    """Tuple of keys (str for fields, non-negative int for indexes) or None.

    A path made only of ``.name`` / ``['name']`` / ``[n]`` selects at most one token
    and can be walked with plain ``[]`` lookups.
    """
    keys = []
    for f in filters:
        cls = f.__class__
        if cls is FieldFilter and f.name is not None:
            keys.append(f.name)
        elif cls is ArrayIndexFilter and f.index is not None and f.index >= 0:
            keys.append(f.index)
        else:
            return None
    return tuple(keys)


def _exists_dict_predicate(expression):
    """Predicate over a *dict* for an expression made only of existence tests of
    ``@``-relative field chains joined by ``&&``/``||``; None for anything else."""
    if isinstance(expression, CompositeExpression):
        parts = [_exists_dict_predicate(e) for e in expression.expressions]
        if any(p is None for p in parts):
            return None
        if expression.op == "&&":
            if len(parts) == 2:
                a, b = parts
                return lambda d: a(d) and b(d)
            return lambda d: all(p(d) for p in parts)
        if len(parts) == 2:
            a, b = parts
            return lambda d: a(d) or b(d)
        return lambda d: any(p(d) for p in parts)
    if not isinstance(expression, BooleanExpression):
        return None
    if expression.op != EXISTS:
        return _compare_dict_predicate(expression)
    if isinstance(expression.left, Literal):
        return None
    keys = key_chain(expression.left)
    if not keys or any(k.__class__ is not str for k in keys):
        return None
    if len(keys) == 1:
        key = keys[0]
        return lambda d: key in d
    head, last = keys[:-1], keys[-1]

    def nested(d):
        for k in head:
            d = d.get(k)
            if not isinstance(d, dict):
                return False
        return last in d
    return nested


def _compare_dict_predicate(expression):
    """``@.name <op> literal`` (e.g. ``$..[?(@event == 'worn')]``) over a *dict*; None otherwise.

    The general path evaluates ``@.name`` on every descendant (leaves and lists too) and
    matches with ``_match_tokens``; only a dict holding ``name`` selects anything, and then
    exactly ``[d[name]]``, so this tests the same with one lookup.
    """
    left, right, op = expression.left, expression.right, expression.op
    if isinstance(left, Literal) or not isinstance(right, Literal):
        return None
    keys = key_chain(left)
    if not keys or len(keys) != 1 or keys[0].__class__ is not str:
        return None
    key, value = keys[0], right.value
    return lambda d: key in d and _match_tokens(op, d[key], value)


_LEAF_TYPES = frozenset((str, int, float, bool, type(None), DateToken))


def _scan_dict(node, pred, out):
    """Pre-order: test the dict itself, then walk its values.

    Exact class checks first (json.loads only makes dict/list/str/int/float/bool/None),
    ``isinstance`` only for unusual classes: this walk runs for every message.
    """
    if pred(node):
        out.append(node)
    for v in node.values():
        t = v.__class__
        if t is dict:
            _scan_dict(v, pred, out)
        elif t is list:
            _scan_list(v, pred, out)
        elif t not in _LEAF_TYPES:
            if isinstance(v, dict):
                _scan_dict(v, pred, out)
            elif isinstance(v, list):
                _scan_list(v, pred, out)


def _scan_list(node, pred, out):
    for v in node:
        t = v.__class__
        if t is dict:
            _scan_dict(v, pred, out)
        elif t is list:
            _scan_list(v, pred, out)
        elif t not in _LEAF_TYPES:
            if isinstance(v, dict):
                _scan_dict(v, pred, out)
            elif isinstance(v, list):
                _scan_list(v, pred, out)


def scan_exists_predicate(filters):
    """For ``$..[?(@a && @b.c)]``-shaped paths: a dict predicate for a direct scan, else None.

    Only dicts can satisfy an existence test of a field chain (FieldFilter matches
    objects only), so the scan tests dicts and merely walks through lists.
    """
    if len(filters) != 1 or filters[0].__class__ is not QueryScanFilter:
        return None
    return _exists_dict_predicate(filters[0].expression)


def scan_dicts(data, pred):
    """Matches of a scan-exists filter applied to ``data`` (see ``scan_exists_predicate``)."""
    out = []
    if isinstance(data, dict):
        _scan_dict(data, pred, out)
    elif isinstance(data, list):
        _scan_list(data, pred, out)
    return out
