"""Quantity values as the reference parses them: .NET ``decimal.Parse`` (NumberStyles.Number).

Why its own module: the rule is subtle (signs at either end, group separators, no exponent)
and shared by Observation building and the screening of readings (``fhir_values``).
"""
import re
from decimal import Decimal
from typing import Union

_NUMBER_RE = re.compile(
    r"^[ \t\n\v\f\r]*(?P<lead>[+-])?(?P<int>[0-9][0-9,]*)?(?:\.(?P<frac>[0-9]*))?"
    r"(?P<trail>[+-])?[ \t\n\v\f\r]*$")
_DECIMAL_MAX = Decimal("79228162514264337593543950335")


def parse_quantity_value(text: str) -> Union[int, float]:
    """``decimal.Parse(text, InvariantCulture)`` (NumberStyles.Number) -> a JSON number.

    Accepts leading/trailing white space, a leading OR trailing sign, ``,`` group
    separators in the integer part (after the first digit) and one ``.``; no
    exponent, no currency, no parentheses. Raises ``ValueError`` otherwise or on
    overflow of .NET ``decimal``.

    Representation choice: an ``int`` when the text has no fractional digits
    (``"78"``, ``"1,000"``, ``"5."``), so it serializes exactly as the reference's
    decimal does; otherwise a ``float``, which ``json.dumps`` renders with the
    written digits for ordinary readings (``"78.5"`` -> 78.5, ``"78.0"`` -> 78.0).
    Only trailing zeros beyond the first fractional digit (``"78.50"`` -> 78.5)
    and digits beyond float precision (>15-17 significant) are not preserved; the
    numeric value in FHIR terms is the same. Using ``float`` keeps the Observation
    a plain JSON-serializable dict (``Decimal`` is not).
    """
    if not isinstance(text, str):
        raise ValueError(f"not a string: {text!r}")
    m = _NUMBER_RE.match(text)
    if m is None or (m.group("lead") and m.group("trail")):
        raise ValueError(f"invalid decimal: {text!r}")
    int_part = (m.group("int") or "").replace(",", "")
    frac = m.group("frac") or ""
    if not int_part and not frac:
        raise ValueError(f"invalid decimal: {text!r}")
    negative = (m.group("lead") or m.group("trail")) == "-"
    d = Decimal(f"{int_part or '0'}.{frac or '0'}")
    if d > _DECIMAL_MAX:
        raise ValueError(f"value too large for decimal: {text!r}")
    if negative:
        d = -d
    if not frac:
        return int(d)
    return float(d)
