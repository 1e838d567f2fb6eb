"""Screening numeric readings before they become FHIR values: one bad reading costs only itself.

Why: device values are strings as the reference writes them, and a device (or a
JMESPath ``to_number``) can produce ``NaN``, ``Infinity`` or ``1e309``. The reference
copies SampledData tokens verbatim, so such a value ends up in
``valueSampledData.data`` (``"71 NaN 1e309"``) and servers store it; a Quantity that
does not parse fails the reference's whole group (``InvalidQuantityFhirValueException``),
taking a valid reading of the same device and period down with it.

Here, before observation groups are cut, every value that a SampledData or Quantity
template would write is checked. A measurement with a bad value is taken out of the
group (its bad properties removed; dropped when nothing the template uses is left)
and returned with the reference's error type, so the caller dead-letters that one
measurement (stage ``fhir_conversion``) and builds the Observation from the rest.

What counts as valid:

* SampledData: a FHIR ``decimal`` (``-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?``)
  that is finite as an IEEE-754 double (JSON readers turn ``1e309`` into infinity), or
  one of SampledData's codes ``E`` / ``U`` / ``L``. Error type ``FhirDataMappingException``
  (the reference has no check here; that is its error type for data that does not fit
  the FHIR mapping's value).
* Quantity: what the reference's ``decimal.Parse`` accepts (``parse_quantity_value``),
  which already refuses NaN, infinities and exponents. Error type
  ``InvalidQuantityFhirValueException`` with the reference's message.

Error messages name the value, never the reading (a value could be arbitrarily long).
"""
import math
import re
from typing import Dict, List, Tuple

from transforms.mapping.errors import (FhirDataMappingException, InvalidQuantityFhirValueException,
                                       MappingError)
from transforms.mapping.fhir_templates import parse_quantity_value
from transforms.mapping.grouping import MeasurementGroup
from transforms.mapping.measurement import Measurement

_FHIR_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\Z")
# Plain decimals of at most 28 integer digits are valid for both kinds (a finite double,
# within .NET decimal's range). Device readings repeat (heart rates, SpO2...), so the
# ones seen are remembered: the common case is one set lookup per value.
_PLAIN = re.compile(r"-?(?:0|[1-9][0-9]{0,27})(?:\.[0-9]+)?\Z")
_SEEN_PLAIN: set = set()
_SEEN_MAX = 16384
SAMPLED_DATA_CODES = frozenset(("E", "U", "L"))
# Below this length a decimal without exponent is always a finite double (max ~1.8e308).
_SHORT = 300

Rejected = Tuple[Measurement, MappingError]


def is_fhir_decimal(text: str) -> bool:
    """A FHIR ``decimal`` that a JSON reader can hold as a finite number."""
    if _FHIR_DECIMAL.match(text) is None:
        return False
    if len(text) < _SHORT and "e" not in text and "E" not in text:
        return True
    return math.isfinite(float(text))


def is_sampled_data_token(text: str) -> bool:
    return text in SAMPLED_DATA_CODES or is_fhir_decimal(text)


def _is_quantity(text: str) -> bool:
    try:
        parse_quantity_value(text)
    except ValueError:
        return False
    return True


def numeric_kinds(template) -> Dict[str, str]:
    """Value name -> ``SampledData`` | ``Quantity`` for the template's numeric values."""
    kinds: Dict[str, str] = {}
    values = [template.value] + [c.value for c in template.components]
    for vt in values:
        if vt is not None and vt.value_name and vt.value_type in ("SampledData", "Quantity"):
            # A name used by both kinds must pass both checks: Quantity's is the stricter one.
            if kinds.get(vt.value_name) != "Quantity":
                kinds[vt.value_name] = vt.value_type
    return kinds


def _error(kind: str, name: str, raw: str) -> MappingError:
    if kind == "Quantity":
        # The reference's wording (QuantityFhirValueProcessor).
        return InvalidQuantityFhirValueException(f"Error encountered processing value: {raw}.")
    return FhirDataMappingException(
        f"Value [{name}] is not a FHIR decimal (NaN, infinities and numbers beyond the range of "
        f"a double cannot be written to SampledData); the reading is left out of its Observation, "
        f"the others are kept.")


def _all_plain(group: MeasurementGroup, kinds: Dict[str, str]) -> bool:
    seen, plain = _SEEN_PLAIN, _PLAIN.match
    for m in group.measurements:
        for name, value in m.properties:
            if value in seen or name not in kinds:
                continue
            if plain(value) is None:
                return False
            if len(seen) < _SEEN_MAX:
                seen.add(value)
    return True


def screen_values(template, group: MeasurementGroup) -> Tuple[MeasurementGroup, List[Rejected]]:
    """``(group without bad readings, [(measurement, error)])`` for one measurement group.

    The measurement in a rejection is the original, whole (for replay). The returned
    group is ``group`` itself when nothing was wrong (the common case costs one check
    per numeric value).
    """
    kinds = numeric_kinds(template)
    if not kinds:
        return group, []
    if _all_plain(group, kinds):
        return group, []
    rejected: List[Rejected] = []
    kept: List[Measurement] = []
    changed = False
    for m in group.measurements:
        bad = None
        for name, value in m.properties:
            kind = kinds.get(name)
            if kind is None:
                continue
            ok = _is_quantity(value) if kind == "Quantity" else is_sampled_data_token(value)
            if not ok:
                bad = bad or []
                bad.append((name, kind, value))
        if bad is None:
            kept.append(m)
            continue
        changed = True
        name, kind, value = bad[0]
        rejected.append((m, _error(kind, name, value)))
        names = {b[0] for b in bad}
        rest = tuple(p for p in m.properties if p[0] not in names)
        if any(p[0] in template.value_names for p in rest):
            kept.append(m._replace(properties=rest))
    if not changed:
        return group, []
    return group._replace(measurements=tuple(kept)), rejected
