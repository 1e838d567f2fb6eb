"""The reference's 8 custom JMESPath functions, with .NET arithmetic and errors.

Why a port and not "natural" Python: templates rely on the C# behaviour of
``Microsoft.Health.Expressions`` (vector N18): two integers use 64-bit ``long``
arithmetic (``divide(40, 50)`` is ``0``, overflow wraps around), a float on either
side switches to ``double`` (IEEE: ``x / 0.0`` is infinity, not an error), integer
``pow`` goes through ``Convert.ToInt64(Math.Pow(..))`` and throws on overflow, and
``fromUnixTimestamp[Ms]`` return Date tokens, not numbers or strings.

Argument types are checked here (not by python-jmespath's signature machinery) so the
messages read like JmesPath.Net's: ``Error: invalid-type, function add expects
argument 1 to be one of the following: Integer|Float``. Arity is checked when the
expression is compiled (``FUNCTION_ARITY``), as JmesPath.Net does at parse time.
"""
import math

from jmespath import functions as _jp_functions
from jmespath.visitor import Options, TreeInterpreter

from transforms.mapping import timeutil
from transforms.mapping.errors import ExpressionEvaluationException
from transforms.mapping.timeutil import DateToken

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
_TWO64 = 1 << 64

# DateTimeOffset.FromUnixTimeSeconds / FromUnixTimeMilliseconds accepted ranges.
_UNIX_SECONDS_MIN = -62135596800
_UNIX_SECONDS_MAX = 253402300799
_UNIX_MS_MIN = _UNIX_SECONDS_MIN * 1000
_UNIX_MS_MAX = _UNIX_SECONDS_MAX * 1000 + 999

_NUMBER = "Integer|Float"
_ANY = {"types": []}  # type checks are done in the functions, with .NET messages


def _wrap64(value: int) -> int:
    """C# ``unchecked`` long arithmetic: wrap into [-2^63, 2^63)."""
    if INT64_MIN <= value <= INT64_MAX:
        return value
    return (value - INT64_MIN) % _TWO64 + INT64_MIN


def _invalid_type(function: str, position: int, expected: str) -> ExpressionEvaluationException:
    return ExpressionEvaluationException(
        f"Error: invalid-type, function {function} expects argument {position} "
        f"to be one of the following: {expected}")


def _check_number(function: str, position: int, value) -> bool:
    """True when ``value`` is a JSON float, False for an integer; raise otherwise."""
    cls = value.__class__
    if cls is float:
        return True
    if cls is int:
        return False
    if isinstance(value, float):
        return True
    if isinstance(value, int) and not isinstance(value, bool):
        return False
    raise _invalid_type(function, position, _NUMBER)


def _check_integer(function: str, position: int, value) -> int:
    if value.__class__ is int or (isinstance(value, int) and not isinstance(value, bool)):
        return int(value)
    raise _invalid_type(function, position, "Integer")


def _check_string(function: str, position: int, value) -> str:
    if isinstance(value, str):
        return value
    raise _invalid_type(function, position, "String")


def dotnet_double_divide(a: float, b: float) -> float:
    """IEEE division as in C#: dividing by (signed) zero gives +-Infinity or NaN."""
    if b == 0.0:
        if a == 0.0 or a != a:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _is_odd_integer(x: float) -> bool:
    return math.isfinite(x) and x == math.floor(x) and math.fmod(x, 2.0) != 0.0


def dotnet_pow(x: float, y: float) -> float:
    """``Math.Pow``: never raises (overflow -> Infinity, domain error -> NaN)."""
    try:
        return math.pow(x, y)
    except OverflowError:
        if x < 0 and _is_odd_integer(y):
            return -math.inf
        return math.inf
    except ValueError:
        if x == 0.0 and y < 0:  # 0 ** negative: infinity, signed for odd exponents
            if _is_odd_integer(y):
                return math.copysign(math.inf, x)
            return math.inf
        return math.nan


def convert_to_int64(value: float) -> int:
    """``Convert.ToInt64(double)``: banker's rounding, OverflowException out of range."""
    if value != value or value in (math.inf, -math.inf):
        raise ExpressionEvaluationException("Value was either too large or too small for an Int64.")
    rounded = round(value)  # Python rounds half to even, like Math.Round
    if not (INT64_MIN <= rounded <= INT64_MAX):
        raise ExpressionEvaluationException("Value was either too large or too small for an Int64.")
    return int(rounded)


def _insert_utf16(original: str, to_insert: str, position: int) -> str:
    """``StringBuilder.Insert`` counts UTF-16 code units, not code points."""
    units = original.encode("utf-16-le", "surrogatepass")
    length = len(units) // 2
    if position < 0 or position > length:
        raise ExpressionEvaluationException(
            "Specified argument was out of the range of valid values. (Parameter 'index')")
    cut = position * 2
    joined = units[:cut] + to_insert.encode("utf-16-le", "surrogatepass") + units[cut:]
    return joined.decode("utf-16-le", "surrogatepass")


class DotNetFunctions(_jp_functions.Functions):
    """JMESPath built-ins plus iomt-fhir's custom functions (names are case-sensitive)."""

    @_jp_functions.signature(_ANY, _ANY)
    def _func_add(self, left, right):
        if _check_number("add", 1, left) | _check_number("add", 2, right):
            return float(left) + float(right)
        return _wrap64(left + right)

    @_jp_functions.signature(_ANY, _ANY)
    def _func_subtract(self, left, right):
        if _check_number("subtract", 1, left) | _check_number("subtract", 2, right):
            return float(left) - float(right)
        return _wrap64(left - right)

    @_jp_functions.signature(_ANY, _ANY)
    def _func_multiply(self, left, right):
        if _check_number("multiply", 1, left) | _check_number("multiply", 2, right):
            return float(left) * float(right)
        return _wrap64(left * right)

    @_jp_functions.signature(_ANY, _ANY)
    def _func_divide(self, left, right):
        if _check_number("divide", 1, left) | _check_number("divide", 2, right):
            return dotnet_double_divide(float(left), float(right))
        if right == 0:
            raise ExpressionEvaluationException("Attempted to divide by zero.")
        if left == INT64_MIN and right == -1:
            raise ExpressionEvaluationException("Arithmetic operation resulted in an overflow.")
        quotient = abs(left) // abs(right)  # C# truncates toward zero
        return quotient if (left < 0) == (right < 0) else -quotient

    @_jp_functions.signature(_ANY, _ANY)
    def _func_pow(self, left, right):
        if _check_number("pow", 1, left) | _check_number("pow", 2, right):
            return dotnet_pow(float(left), float(right))
        return convert_to_int64(dotnet_pow(float(left), float(right)))

    @_jp_functions.signature(_ANY, _ANY, _ANY)
    def _func_insertString(self, original, to_insert, position):  # noqa: N802 (reference name)
        original = _check_string("insertString", 1, original)
        to_insert = _check_string("insertString", 2, to_insert)
        position = _check_integer("insertString", 3, position)
        if original.isascii():
            if position < 0 or position > len(original):
                raise ExpressionEvaluationException(
                    "Specified argument was out of the range of valid values. (Parameter 'index')")
            return original[:position] + to_insert + original[position:]
        return _insert_utf16(original, to_insert, position)

    @_jp_functions.signature(_ANY)
    def _func_fromUnixTimestamp(self, seconds):  # noqa: N802
        seconds = _check_integer("fromUnixTimestamp", 1, seconds)
        if not (_UNIX_SECONDS_MIN <= seconds <= _UNIX_SECONDS_MAX):
            raise ExpressionEvaluationException(
                f"Valid values are between {_UNIX_SECONDS_MIN} and {_UNIX_SECONDS_MAX}, inclusive. "
                "(Parameter 'seconds')")
        return DateToken(timeutil.from_unix_seconds(seconds))

    @_jp_functions.signature(_ANY)
    def _func_fromUnixTimestampMs(self, milliseconds):  # noqa: N802
        milliseconds = _check_integer("fromUnixTimestampMs", 1, milliseconds)
        if not (_UNIX_MS_MIN <= milliseconds <= _UNIX_MS_MAX):
            raise ExpressionEvaluationException(
                f"Valid values are between {_UNIX_MS_MIN} and {_UNIX_MS_MAX}, inclusive. "
                "(Parameter 'milliseconds')")
        return DateToken(timeutil.from_unix_ms(milliseconds))


CUSTOM_FUNCTION_NAMES = ("add", "subtract", "multiply", "divide", "pow", "insertString",
                         "fromUnixTimestamp", "fromUnixTimestampMs")

FUNCTIONS = DotNetFunctions()


def _arity(signature):
    """(minimum, maximum or None) number of arguments of a registered function."""
    if signature and signature[-1].get("variadic"):
        return len(signature), None
    return len(signature), len(signature)


# name -> (min, max) arguments, used at compile time.
FUNCTION_ARITY = {name: _arity(entry["signature"]) for name, entry in FUNCTIONS.FUNCTION_TABLE.items()}

# One interpreter for every expression: TreeInterpreter keeps no per-search state, and
# building one per call (what ``ParsedResult.search`` does) costs time on the hot path.
INTERPRETER = TreeInterpreter(Options(custom_functions=FUNCTIONS))
