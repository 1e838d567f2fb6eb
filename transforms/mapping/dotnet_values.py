"""Value conversions exactly as the reference performs them on a selected JSON token.

Why: the reference reads every extracted value with Newtonsoft's ``token.Value<string>()``
or ``token.Value<DateTime?>()``. Their results end up in measurement properties,
Observation values and ids, so they must match to the character: ``37.0`` becomes
``"37"``, ``True`` is capitalised, an ISO string that the JSON reader turned into a Date
token comes back as ``"MM/dd/yyyy HH:mm:ss"``.

Data here is what ``json.loads`` returns, possibly holding ``timeutil.DateToken``.
"""
import math
from typing import Optional

from transforms.mapping import timeutil
from transforms.mapping.timeutil import DateToken


def format_double(value: float) -> str:
    """.NET Core 3.0+ ``double.ToString(CultureInfo.InvariantCulture)``.

    .NET prints the shortest round-trip digits (the same digits as Python's ``repr``)
    in "G" layout: scientific notation when the decimal exponent is >= 15 or < -4,
    with an upper-case ``E``, explicit sign and at least two exponent digits
    (``1E+15``, ``1E-05``, ``1.2345678901234568E+17``); fixed notation otherwise,
    without a trailing ``.0`` (``37.0`` -> ``"37"``).
    """
    if value != value:
        return "NaN"
    if value == math.inf:
        return "Infinity"
    if value == -math.inf:
        return "-Infinity"
    text = repr(value)
    negative = text[0] == "-"
    if negative:
        text = text[1:]
    mantissa, _, exponent = text.partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = int_part + frac_part
    # scale = position of the decimal point relative to the first digit of ``digits``
    scale = len(int_part) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    scale -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    sign = "-" if negative else ""
    if not digits:
        return sign + "0"  # .NET Core 3.0+ prints negative zero as "-0"
    if scale > 15 or scale < -3:
        exp = scale - 1
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mant}E{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    if scale <= 0:
        return f"{sign}0.{'0' * -scale}{digits}"
    if scale >= len(digits):
        return sign + digits + "0" * (scale - len(digits))
    return f"{sign}{digits[:scale]}.{digits[scale:]}"


def to_dotnet_string(value) -> Optional[str]:
    """Newtonsoft ``token.Value<string>()`` (``Convert.ChangeType`` with the invariant culture).

    A string shaped like an ISO 8601 date is what Newtonsoft's reader
    (``DateParseHandling.DateTime``) would already have turned into a Date token, so
    it converts like one. Objects and arrays cannot be converted: ``TypeError``.
    """
    if value is None:
        return None
    cls = value.__class__
    if cls is str:
        if timeutil.looks_like_iso_date(value):
            ticks = timeutil.parse_iso(value)
            if ticks is not None:
                return timeutil.format_invariant(ticks)
        return value
    if cls is bool:
        return "True" if value else "False"
    if cls is int:
        return str(value)
    if cls is float:
        return format_double(value)
    if cls is DateToken:
        return timeutil.format_invariant(value.ticks)
    if isinstance(value, (dict, list)):
        raise TypeError(f"Can not convert {'Object' if isinstance(value, dict) else 'Array'} to String.")
    # subclasses of the basic types (rare): same rules
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return format_double(float(value))
    if isinstance(value, str):
        return to_dotnet_string(str(value))
    raise TypeError(f"Can not convert {type(value).__name__} to String.")


def to_ticks(value) -> Optional[int]:
    """Newtonsoft ``token.Value<DateTime?>()`` as ticks since the Unix epoch (UTC).

    Date tokens are taken as they are; strings go through ``DateTime.Parse`` rules
    (``timeutil.parse_datetime``) and raise ``ValueError`` when they are not a date;
    numbers, booleans, objects and arrays raise ``TypeError`` ("Can not convert
    Integer to DateTime?") — epoch numbers need ``fromUnixTimestamp`` in JMESPath.
    """
    if value is None:
        return None
    if value.__class__ is DateToken:
        return value.ticks
    if isinstance(value, str):
        ticks = timeutil.parse_datetime(value)
        if ticks is None:
            raise ValueError(f"String '{value}' was not recognized as a valid DateTime.")
        return ticks
    kind = {bool: "Boolean", int: "Integer", float: "Float", dict: "Object", list: "Array"}.get(
        value.__class__, type(value).__name__)
    raise TypeError(f"Can not convert {kind} to DateTime?.")
