"""Template expressions (JSONPath / JMESPath) compiled once, evaluated per message.

Why this layer: every device message runs every template's expressions, so the cost
per call dominates normalization. ``compile_expression`` parses once, then picks the
cheapest evaluator that gives the reference's result for that shape:

* a plain key chain (``$.matchedToken.heartRate``, ``$['x'].y``, ``$.a[0]``, JMESPath
  ``matchedToken.device``) is a tuple of keys walked with ``[]`` lookups;
* ``$..[?(@a && @b.c)]`` (existence tests joined by ``&&``/``||``) is a direct
  recursive scan over dicts with precompiled predicate closures;
* anything else goes through the general Newtonsoft JSONPath evaluator
  (``jsonpath_newtonsoft``) or python-jmespath with the .NET custom functions
  (``jmespath_functions``).

Both paths give the same results (tested). Semantics mirror iomt-fhir's
``JsonPathExpressionEvaluator`` / ``JmesPathExpressionEvaluator``:

* ``select_tokens`` returns all matches in document order (type-match expressions);
* ``select_token`` returns the single match or ``NOT_FOUND``; several matches raise
  ``TemplateExpressionException``. A JSON ``null`` found by JSONPath is a token
  (returned as ``None``); for JMESPath a ``null`` result means "not found".

Why jsonpath-ng is not on the evaluation path: it implements another JSONPath dialect
and differs from Newtonsoft on every shape the fast path does not already cover
(``$..name`` order, ``$..*`` without the root, ``[*]`` on objects, ``.*`` on arrays,
negative indexes, filter grammar and comparisons); see ``jsonpath_newtonsoft``.

Expressions are immutable and stateless, so compiled ones are cached and shared, and
they pickle as ``(text, language)`` (Beam ships DoFns to workers by pickling).
"""
import jmespath
from jmespath import exceptions as _jmespath_exceptions

from transforms.mapping import jsonpath_newtonsoft as _jp
from transforms.mapping.errors import ExpressionEvaluationException, TemplateExpressionException
from transforms.mapping.jmespath_functions import FUNCTION_ARITY, INTERPRETER

__all__ = ["NOT_FOUND", "Expression", "compile_expression", "JSON_PATH", "JMES_PATH"]

JSON_PATH = "JsonPath"
JMES_PATH = "JmesPath"
_LANGUAGES = {"jsonpath": JSON_PATH, "jmespath": JMES_PATH}


class _NotFound:
    """Sentinel: the expression matched nothing (unlike a JSON null, returned as None)."""

    __slots__ = ()
    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self):
        return "NOT_FOUND"

    def __bool__(self):
        return False

    def __reduce__(self):
        return (_NotFound, ())


NOT_FOUND = _NotFound()

_JSONPATH_MULTIPLE = "Path returned multiple tokens."
_JSONPATH_LOOKUP_ERRORS = (KeyError, TypeError, IndexError)


class Expression:
    """A compiled template expression. Subclasses implement the two selections."""

    __slots__ = ("text", "language")

    def __init__(self, text: str, language: str):
        self.text = text
        self.language = language

    def select_tokens(self, data) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    def select_token(self, data):  # pragma: no cover - abstract
        raise NotImplementedError

    def __reduce__(self):
        return (compile_expression, (self.text, self.language))

    def __repr__(self):
        return f"{type(self).__name__}({self.language}: {self.text!r})"


# --- JSONPath ---------------------------------------------------------------------------
class _JsonPathStrChain(Expression):
    """Only object keys: ``data[k1][k2]...``; any lookup failure means not found.

    With string keys a failed lookup is exactly KeyError (missing) or TypeError
    (list, string, number, null, date on the way), so try/except is both correct
    and the fastest walk.
    """

    __slots__ = ("keys",)

    def __init__(self, text, keys):
        super().__init__(text, JSON_PATH)
        self.keys = keys

    def select_token(self, data):
        try:
            for k in self.keys:
                data = data[k]
        except _JSONPATH_LOOKUP_ERRORS:
            return NOT_FOUND
        return data

    def select_tokens(self, data) -> list:
        try:
            for k in self.keys:
                data = data[k]
        except _JSONPATH_LOOKUP_ERRORS:
            return []
        return [data]


def token_selector(expression: "Expression"):
    """A plain function equal to ``expression.select_token``.

    Why: a device template's values are mostly ``$.matchedToken.x`` (two keys), selected
    for every measurement; a closure over the two keys skips the method call and the loop
    (``tests/test_expressions.py`` compares it with ``select_token``)."""
    if expression.__class__ is _JsonPathStrChain and len(expression.keys) == 2:
        first, second = expression.keys

        def select(data):
            try:
                return data[first][second]
            except _JSONPATH_LOOKUP_ERRORS:
                return NOT_FOUND
        return select
    return expression.select_token


class _JsonPathMixedChain(Expression):
    """Object keys and non-negative array indexes (``$.a[0].b``): indexes only apply to lists."""

    __slots__ = ("keys",)

    def __init__(self, text, keys):
        super().__init__(text, JSON_PATH)
        self.keys = keys

    def select_token(self, data):
        for k in self.keys:
            if k.__class__ is str:
                if not isinstance(data, dict) or k not in data:
                    return NOT_FOUND
            elif not isinstance(data, list) or k >= len(data):
                return NOT_FOUND
            data = data[k]
        return data

    def select_tokens(self, data) -> list:
        value = self.select_token(data)
        return [] if value is NOT_FOUND else [value]


class _JsonPathScanExists(Expression):
    """``$..[?(@a && @b.c)]``, ``$..[?(@event == 'worn')]``: recursive scan of dicts with a
    precompiled predicate."""

    __slots__ = ("predicate",)

    def __init__(self, text, predicate):
        super().__init__(text, JSON_PATH)
        self.predicate = predicate

    def select_tokens(self, data) -> list:
        try:
            return _jp.scan_dicts(data, self.predicate)
        except _jp.JsonPathRuntimeError as e:  # a comparison Newtonsoft refuses, as the general path
            raise ExpressionEvaluationException(
                f"Error evaluating JsonPath expression {self.text}: {e}") from e

    def select_token(self, data):
        found = self.select_tokens(data)
        if not found:
            return NOT_FOUND
        if len(found) > 1:
            raise TemplateExpressionException(_JSONPATH_MULTIPLE)
        return found[0]


class _JsonPathGeneral(Expression):
    """Any other Newtonsoft path: the filter list applied in turn."""

    __slots__ = ("filters",)

    def __init__(self, text, filters):
        super().__init__(text, JSON_PATH)
        self.filters = filters

    def select_tokens(self, data) -> list:
        try:
            return _jp.evaluate(self.filters, data, data)
        except _jp.JsonPathRuntimeError as e:
            raise ExpressionEvaluationException(
                f"Error evaluating JsonPath expression {self.text}: {e}") from e

    def select_token(self, data):
        found = self.select_tokens(data)
        if not found:
            return NOT_FOUND
        if len(found) > 1:
            raise TemplateExpressionException(_JSONPATH_MULTIPLE)
        return found[0]


def _compile_jsonpath(text: str, fast: bool) -> Expression:
    try:
        filters = _jp.parse(text)
    except _jp.JsonPathSyntaxError as e:
        raise TemplateExpressionException(
            f"The following JsonPath expression could not be parsed: {text}. {e}") from e
    if fast:
        keys = _jp.key_chain(filters)
        if keys is not None:
            if all(k.__class__ is str for k in keys):
                return _JsonPathStrChain(text, keys)
            return _JsonPathMixedChain(text, keys)
        predicate = _jp.scan_exists_predicate(filters)
        if predicate is not None:
            return _JsonPathScanExists(text, predicate)
    return _JsonPathGeneral(text, filters)


# --- JMESPath ---------------------------------------------------------------------------
_PROJECTIONS = frozenset(("projection", "value_projection", "filter_projection"))


def _is_projection(node) -> bool:
    """Whether JmesPath.Net marks the result as a projection (several tokens).

    Projections (``[*]``, ``[?..]``, ``.*``, ``[]``, slices) are; so is a pipe or
    sub-expression ending in one. A plain expression returning an array (``Body``,
    ``[a, b]``, ``sort(x)``) is one token: the array.
    """
    kind = node.get("type")
    if kind in _PROJECTIONS:
        return True
    if kind in ("pipe", "subexpression"):
        return _is_projection(node["children"][-1])
    return False


def _field_chain(node):
    """Keys of ``a.b.c`` (only field nodes), or None."""
    kind = node.get("type")
    if kind == "field":
        return (node["value"],)
    if kind == "subexpression":
        keys = []
        for child in node["children"]:
            sub = _field_chain(child)
            if sub is None:
                return None
            keys.extend(sub)
        return tuple(keys)
    return None


def _check_functions(node, text):
    """Unknown functions and wrong arity fail at parse time in JmesPath.Net."""
    if isinstance(node, dict):
        if node.get("type") == "function_expression":
            name = node.get("value")
            arity = FUNCTION_ARITY.get(name)
            count = len(node.get("children", ()))
            if arity is None:
                raise TemplateExpressionException(
                    f"The following JmesPath expression could not be parsed: {text}. "
                    f"Error: unknown-function, no function named {name} has been registered.")
            low, high = arity
            if count < low or (high is not None and count > high):
                raise TemplateExpressionException(
                    f"The following JmesPath expression could not be parsed: {text}. "
                    f"Error: invalid-arity, the function {name} expects "
                    f"{low if high == low else f'at least {low}'} argument(s), {count} given.")
        for child in node.get("children", ()):
            _check_functions(child, text)


class _JmesPathFieldChain(Expression):
    """``a.b.c``: dict lookups; anything else on the way (or a null result) is not found."""

    __slots__ = ("keys",)

    def __init__(self, text, keys):
        super().__init__(text, JMES_PATH)
        self.keys = keys

    def select_token(self, data):
        try:
            for k in self.keys:
                data = data[k]
        except _JSONPATH_LOOKUP_ERRORS:
            return NOT_FOUND
        return NOT_FOUND if data is None else data

    def select_tokens(self, data) -> list:
        try:
            for k in self.keys:
                data = data[k]
        except _JSONPATH_LOOKUP_ERRORS:
            return []
        return [] if data is None else [data]


class _JmesPathGeneral(Expression):
    """Any JMESPath: python-jmespath's tree interpreter with the .NET custom functions."""

    __slots__ = ("ast", "projection")

    def __init__(self, text, ast):
        super().__init__(text, JMES_PATH)
        self.ast = ast
        self.projection = _is_projection(ast)

    def _search(self, data):
        try:
            return INTERPRETER.visit(self.ast, data)
        except _jmespath_exceptions.JMESPathError as e:
            raise ExpressionEvaluationException(
                f"Error evaluating JmesPath expression {self.text}: {e}") from e

    def select_tokens(self, data) -> list:
        result = self._search(data)
        if self.projection:
            return list(result) if isinstance(result, list) else []
        return [] if result is None else [result]

    def select_token(self, data):
        result = self._search(data)
        if self.projection:
            if not isinstance(result, list) or not result:
                return NOT_FOUND
            if len(result) > 1:
                raise TemplateExpressionException(
                    f"Multiple tokens were returned using expression {self.text}")
            result = result[0]
        return NOT_FOUND if result is None else result


def _compile_jmespath(text: str, fast: bool) -> Expression:
    try:
        ast = jmespath.compile(text).parsed
    except Exception as e:  # LexerError, ParseError, IncompleteExpressionError, ...
        raise TemplateExpressionException(
            f"The following JmesPath expression could not be parsed: {text}") from e
    _check_functions(ast, text)
    if fast:
        keys = _field_chain(ast)
        if keys is not None:
            return _JmesPathFieldChain(text, keys)
    return _JmesPathGeneral(text, ast)


# --- public entry point -------------------------------------------------------------------
_CACHE = {}
_CACHE_LIMIT = 10_000


def _normalize_language(language) -> str:
    if language is None:
        return JSON_PATH
    normalized = _LANGUAGES.get(str(language).strip().lower())
    if normalized is None:
        raise TemplateExpressionException(f"Unsupported expression language: {language}")
    return normalized


def _compile(text, language, fast: bool) -> Expression:
    if not isinstance(text, str):
        raise TemplateExpressionException(f"Expression must be a string, got {type(text).__name__}")
    if language == JMES_PATH:
        return _compile_jmespath(text, fast)
    return _compile_jsonpath(text, fast)


def compile_expression(text: str, language: str = JSON_PATH) -> Expression:
    """Compile ``text`` in ``language`` ("JsonPath" / "JmesPath", case-insensitive).

    Raises ``TemplateExpressionException`` for an expression that does not parse, or
    that calls an unknown JMESPath function / a known one with the wrong number of
    arguments.
    """
    language = _normalize_language(language)
    key = (text, language)
    expression = _CACHE.get(key)
    if expression is None:
        expression = _compile(text, language, fast=True)
        if len(_CACHE) < _CACHE_LIMIT:
            _CACHE[key] = expression
    return expression


def compile_general(text: str, language: str = JSON_PATH) -> Expression:
    """Compile without the fast paths (reference evaluator), for equivalence tests and debugging."""
    return _compile(text, _normalize_language(language), fast=False)
