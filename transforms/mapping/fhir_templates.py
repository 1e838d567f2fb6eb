"""FHIR mapping (``fhirmapping.json``: ``CollectionFhir`` of ``CodeValueFhir``) and Observation building.

Why this mirrors the reference so closely: users migrate from iomt-fhir / Azure
MedTech with their mapping files unchanged and expect the SAME Observations
(identifier, SHA-256 id, code, period, SampledData string) so the resources they
already have keep being updated instead of duplicated.

Loading collects every problem (with the line of the template object's ``{``)
rather than raising, so a user sees all mistakes at once; a mapping with any
error is invalid and must not be used (the reference's ``EnsureValid``).
Everything that does not depend on the data (codings, categories, component
codes, slot width) is precomputed per template, because ``build_observation``
runs once per observation group on the pipeline's hot path.
"""
import os
import pathlib
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

from transforms.mapping import profiles as vital_profiles, template_json, timeutil
from transforms.mapping.decimal_text import parse_quantity_value
from transforms.mapping.errors import (FhirDataMappingException, InvalidQuantityFhirValueException,
                                       InvalidTemplateException, TemplateNotFoundException)
from transforms.mapping.grouping import (MeasurementGroup, ObservationGroup, measurement_groups,
                                         observation_groups, parse_period_interval)
from transforms.mapping.identifiers import (SERVICE_SYSTEM, ResolvedIds, observation_id,
                                            observation_identifier_value)
from transforms.mapping.sampled_data import build_sampled_data, period_ticks
from transforms.mapping.template_json import (JsonDoc, StrictObject, TemplateError, as_list,
                                              as_object, as_string)

__all__ = [
    "FhirMapping", "CodeValueTemplate", "ComponentTemplate", "ValueTemplate", "ResolvedIds",
    "load_fhir_mapping", "build_observation", "create_value", "parse_quantity_value",
    "observation_groups", "measurement_groups", "ObservationGroup", "MeasurementGroup",
    "VALUE_KEYS",
]

ROOT_TYPE = "CollectionFhirTemplate"
CHILD_TYPE = "CodeValueFhirTemplate"

# valueType (case-insensitive) -> canonical name; and the Observation/component key of each.
_VALUE_TYPES = {"sampleddata": "SampledData", "quantity": "Quantity", "string": "String",
                "codeableconcept": "CodeableConcept"}
VALUE_KEYS = {"SampledData": "valueSampledData", "Quantity": "valueQuantity",
              "String": "valueString", "CodeableConcept": "valueCodeableConcept"}


def _match_template_name(given: Any, target: str) -> bool:
    """``TemplateContainer.MatchTemplateName``: ``X`` or ``X + "Template"`` equals the target."""
    if not isinstance(given, str):
        return False
    t = target.lower()
    g = given.lower()
    return g == t or g + "template" == t


def _coding(code: Optional[str], system: Optional[str], display: Optional[str]) -> dict:
    """A Coding in FHIR element order (system, code, display); absent parts omitted."""
    c = {}
    if system is not None:
        c["system"] = system
    if code is not None:
        c["code"] = code
    if display is not None:
        c["display"] = display
    return c


def _copy_codings(codings: Sequence[dict]) -> List[dict]:
    return [dict(c) for c in codings]


def _copy_concept(concept: dict) -> dict:
    out = dict(concept)
    if "coding" in out:
        out["coding"] = _copy_codings(out["coding"])
    return out


class ValueTemplate:
    """A ``value`` object: SampledData / Quantity / String / CodeableConcept."""

    __slots__ = ("value_type", "value_name", "unit", "system", "code", "default_period",
                 "step_ticks", "text", "codings", "key", "_concept")

    def __init__(self, value_type: str, value_name: Optional[str], unit=None, system=None,
                 code=None, default_period=None, text=None, codings=()):
        self.value_type = value_type
        self.value_name = value_name
        self.unit = unit
        self.system = system
        self.code = code
        self.default_period = default_period
        self.step_ticks = (period_ticks(default_period)
                           if value_type == "SampledData" and default_period is not None else None)
        self.text = text
        self.codings = tuple(codings)
        self.key = VALUE_KEYS[value_type]
        concept = {}
        if value_type == "CodeableConcept":
            if self.codings:
                concept["coding"] = list(self.codings)
            if text is not None:
                concept["text"] = text
        self._concept = concept

    def __repr__(self):
        return f"ValueTemplate({self.value_type}, {self.value_name!r})"


class ComponentTemplate(NamedTuple):
    codings: Tuple[dict, ...]
    value: ValueTemplate
    code: dict  # precomputed component code: codes + ServiceSystem coding, text = valueName


class CodeValueTemplate:
    """One ``CodeValueFhir`` template with everything data-independent precomputed."""

    __slots__ = ("type_name", "period_interval", "codings", "categories", "value",
                 "components", "line", "value_names", "profiles")

    def __init__(self, type_name: str, period_interval: int, codings: Sequence[dict],
                 categories: Optional[Sequence[dict]], value: Optional[ValueTemplate],
                 components: Sequence[ComponentTemplate], line: int = 0,
                 profiles: Sequence[str] = ()):
        self.type_name = type_name
        self.period_interval = period_interval
        self.codings = tuple(codings)
        self.categories = tuple(categories) if categories else ()
        self.value = value
        self.components = tuple(components)
        self.line = line
        self.profiles = tuple(profiles)  # our extension: meta.profile (transforms.mapping.profiles)
        names = set()
        if value is not None and value.value_name:
            names.add(value.value_name)
        for c in self.components:
            if c.value.value_name:
                names.add(c.value.value_name)
        self.value_names = frozenset(names)

    def code_for(self, name: str) -> dict:
        """``ResolveCode``: template codes + {ServiceSystem, name, name}, text = name."""
        coding = _copy_codings(self.codings)
        coding.append({"system": SERVICE_SYSTEM, "code": name, "display": name})
        return {"coding": coding, "text": name}

    def category_list(self) -> Optional[List[dict]]:
        """``ResolveCategory`` (fresh copies), or ``None`` when the template has none."""
        if not self.categories:
            return None
        return [_copy_concept(c) for c in self.categories]

    def __repr__(self):
        return f"CodeValueTemplate({self.type_name!r}, periodInterval={self.period_interval})"


def _component_code(value_name: str, codings: Sequence[dict]) -> dict:
    coding = _copy_codings(codings)
    coding.append({"system": SERVICE_SYSTEM, "code": value_name, "display": value_name})
    return {"coding": coding, "text": value_name}


class FhirMapping:
    """A loaded ``CollectionFhir`` mapping: valid templates by (case-insensitive) type name."""

    def __init__(self, templates: Sequence[CodeValueTemplate], errors: List[TemplateError]):
        self.errors: List[TemplateError] = errors
        self._templates: Dict[str, CodeValueTemplate] = {}
        self._order: List[CodeValueTemplate] = []
        for t in templates:
            self._templates[t.type_name.lower()] = t
            self._order.append(t)

    @property
    def valid(self) -> bool:
        return not any(e.severity == "error" for e in self.errors)

    def template_for(self, type_name: str) -> CodeValueTemplate:
        t = self._templates.get(type_name.lower()) if isinstance(type_name, str) else None
        if t is None:
            exc = TemplateNotFoundException(str(type_name))
            exc.type_name = type_name
            raise exc
        return t

    def has_template(self, type_name: str) -> bool:
        return isinstance(type_name, str) and type_name.lower() in self._templates

    def type_names(self) -> List[str]:
        return [t.type_name for t in self._order]

    def templates(self) -> List[CodeValueTemplate]:
        return list(self._order)

    def value_names(self, type_name: str) -> Set[str]:
        return set(self.template_for(type_name).value_names)

    def ensure_valid(self) -> "FhirMapping":
        """Raise like the reference's ``EnsureValid`` when any error was collected."""
        if not self.valid:
            raise InvalidTemplateException(
                "Validation errors:\n" + "\n".join(str(e) for e in self.errors))
        return self


# --- loading -------------------------------------------------------------------------------
_LINE_RE = re.compile(r"Line (\d+), position (\d+)")


def _to_doc(source: Any) -> JsonDoc:
    if isinstance(source, JsonDoc):
        return source
    if isinstance(source, pathlib.PurePath):
        return template_json.load(str(source))
    if isinstance(source, bytes):
        source = source.decode("utf-8-sig")
    if isinstance(source, str):
        stripped = source.lstrip("\ufeff \t\r\n")
        if stripped[:1] in ("{", "[") or not os.path.exists(source):
            return template_json.parse(source)
        return template_json.load(source)
    # An already-parsed JSON value: no positions available.
    return JsonDoc(source, {}, {})


def load_fhir_mapping(source: Any) -> FhirMapping:
    """Load a FHIR mapping from a ``JsonDoc``, JSON text, a path, or a parsed value.

    Never raises for template problems: they are collected in ``.errors``
    (``.valid`` is False). Templates with problems are skipped; the rest are
    registered so a validator can still report on them.
    """
    errors: List[TemplateError] = []
    try:
        doc = _to_doc(source)
    except InvalidTemplateException as e:
        m = _LINE_RE.search(e.message)
        line, pos = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        errors.append(TemplateError(e.message, line, pos))
        return FhirMapping([], errors)
    except OSError as e:
        errors.append(TemplateError(f"Unable to read the FHIR mapping: {e}"))
        return FhirMapping([], errors)

    root = doc.value
    if not isinstance(root, dict):
        errors.append(TemplateError(
            f"Expected an object for the root of a {ROOT_TYPE} mapping.", *doc.pos(root)))
        return FhirMapping([], errors)
    lower = {k.lower(): k for k in root}
    root_type = root.get(lower["templatetype"]) if "templatetype" in lower else None
    if not _match_template_name(root_type, ROOT_TYPE):
        errors.append(TemplateError(
            f"Expected TemplateType value {ROOT_TYPE}, actual {root_type}.", *doc.pos(root)))
        return FhirMapping([], errors)
    children = root.get(lower["template"]) if "template" in lower else None
    if not isinstance(children, list):
        errors.append(TemplateError(
            f"Expected an array for the template property value for template type {ROOT_TYPE}.",
            *doc.pos(root)))
        return FhirMapping([], errors)

    registered: List[CodeValueTemplate] = []
    seen: Dict[str, CodeValueTemplate] = {}
    for child in children:
        t = _load_child(doc, child, errors)
        if t is None:
            continue
        key = t.type_name.lower()
        if key in seen:
            errors.append(TemplateError(
                f"Duplicate template defined for type name: '{t.type_name}'", t.line,
                _template_pos(doc, child)[1]))
            continue
        seen[key] = t
        registered.append(t)
    return FhirMapping(registered, errors)


def _template_pos(doc: JsonDoc, child: Any) -> Tuple[int, int]:
    if isinstance(child, dict):
        for k, v in child.items():
            if k.lower() == "template" and isinstance(v, dict):
                return doc.pos(v)
    return doc.pos(child)


def _load_child(doc: JsonDoc, child: Any, errors: List[TemplateError]) -> Optional[CodeValueTemplate]:
    if not isinstance(child, dict):
        errors.append(TemplateError(
            "Expected an object for each entry of the template array.", *doc.pos(child)))
        return None
    lower = {k.lower(): k for k in child}
    child_type = child.get(lower["templatetype"]) if "templatetype" in lower else None
    if not _match_template_name(child_type, CHILD_TYPE):
        errors.append(TemplateError(f"No match found for template type {child_type}.",
                                    *doc.pos(child)))
        return None
    node = child.get(lower["template"]) if "template" in lower else None
    if not isinstance(node, dict):
        errors.append(TemplateError(
            f"Expected an object for the template property value for template type {CHILD_TYPE}.",
            *doc.pos(child)))
        return None
    return _load_template(doc, node, errors)


def _load_template(doc: JsonDoc, node: dict, errors: List[TemplateError]) -> Optional[CodeValueTemplate]:
    before = len(errors)
    so = StrictObject(doc, node, CHILD_TYPE, errors)
    type_name = so.get("typeName", as_string, required=True)
    period = so.get("periodInterval", parse_period_interval, default=0)
    codes_raw = so.get("codes", as_list, required=True)
    category_raw = so.get("category", as_list)
    value_raw = so.get("value", as_object)
    components_raw = so.get("components", as_list)
    profiles = so.get("profiles", vital_profiles.as_profiles, default=())
    so.finish()

    codings = _load_codes(doc, codes_raw or [], errors)
    categories = None
    if category_raw:
        categories = []
        for c in category_raw:
            concept = _load_concept(doc, c, errors)
            if concept is not None:
                categories.append(concept)
    value = None
    if value_raw is not None:
        value = _load_value(doc, value_raw, errors, in_component=False)
    components = []
    for comp in components_raw or []:
        ct = _load_component(doc, comp, errors)
        if ct is not None:
            components.append(ct)

    line, pos = doc.pos(node)
    if type_name is not None and not type_name.strip():
        errors.append(TemplateError("Empty type name is not allowed", line, pos))
    if len(errors) != before:
        return None
    t = CodeValueTemplate(type_name, period, codings, categories, value, components, line, profiles)
    errors.extend(TemplateError(m, line, pos) for m in vital_profiles.problems(t))
    return None if len(errors) != before else t


def _load_codes(doc: JsonDoc, raw: list, errors: List[TemplateError]) -> List[dict]:
    out = []
    for item in raw:
        if not isinstance(item, dict):
            errors.append(TemplateError("Expected an object for each code.", *doc.pos(raw)))
            continue
        so = StrictObject(doc, item, "FhirCode", errors)
        code = so.get("code", as_string)
        system = so.get("system", as_string)
        display = so.get("display", as_string)
        so.finish()
        out.append(_coding(code, system, display))
    return out


def _load_concept(doc: JsonDoc, item: Any, errors: List[TemplateError]) -> Optional[dict]:
    """A category entry ``{text, codes}`` -> CodeableConcept dict (coding, text)."""
    if not isinstance(item, dict):
        errors.append(TemplateError("Expected an object for each category.", *doc.pos(item)))
        return None
    so = StrictObject(doc, item, "FhirCodeableConcept", errors)
    text = so.get("text", as_string)
    codes = so.get("codes", as_list)
    so.finish()
    concept = {}
    if codes is not None:
        concept["coding"] = _load_codes(doc, codes, errors)
    if text is not None:
        concept["text"] = text
    return concept


def _load_component(doc: JsonDoc, item: Any, errors: List[TemplateError]) -> Optional[ComponentTemplate]:
    if not isinstance(item, dict):
        errors.append(TemplateError("Expected an object for each component.", *doc.pos(item)))
        return None
    before = len(errors)
    so = StrictObject(doc, item, "CodeValueMapping", errors)
    codes = so.get("codes", as_list, required=True)
    value_raw = so.get("value", as_object, required=True)
    so.finish()
    codings = _load_codes(doc, codes or [], errors)
    value = _load_value(doc, value_raw, errors, in_component=True) if value_raw is not None else None
    if len(errors) != before or value is None:
        return None
    return ComponentTemplate(tuple(codings), value, _component_code(value.value_name, codings))


def _as_period(value: Any):
    """``defaultPeriod`` (decimal milliseconds); numeric strings converted like Newtonsoft."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"could not convert {value!r} to decimal")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"could not convert {value!r} to decimal") from None
        return int(d) if d == d.to_integral_value() and "." not in value else float(d)
    raise ValueError(f"could not convert {value!r} to decimal")


def _load_value(doc: JsonDoc, node: dict, errors: List[TemplateError],
                in_component: bool) -> Optional[ValueTemplate]:
    """A FHIR value object. Unknown keys are ignored here, as in the reference."""
    line, pos = doc.pos(node)
    fields = {k.lower(): v for k, v in node.items()}

    def text(name: str) -> Optional[str]:
        try:
            return as_string(fields.get(name.lower()))
        except TypeError as e:
            errors.append(TemplateError(f"Error converting value for '{name}': {e}",
                                        *doc.key_pos(node, _orig_key(node, name))))
            return None

    raw_type = fields.get("valuetype")
    if raw_type is None:
        errors.append(TemplateError("Required property 'ValueType' not found in JSON.", line, pos))
        return None
    value_type = _VALUE_TYPES.get(str(raw_type).lower())
    if value_type is None:
        errors.append(TemplateError(
            f"Unsupported valueType '{raw_type}'. Expected SampledData, Quantity, String or "
            "CodeableConcept.", line, pos))
        return None
    value_name = text("valueName")
    if in_component and (value_name is None or not value_name.strip()):
        errors.append(TemplateError("A component value requires a valueName.", line, pos))
        return None
    if value_type == "SampledData":
        period = fields.get("defaultperiod")
        if period is None:
            errors.append(TemplateError(
                f"SampledData value '{value_name}' requires a defaultPeriod (milliseconds).",
                line, pos))
            return None
        try:
            period = _as_period(period)
            if period <= 0:
                raise ValueError(f"defaultPeriod must be positive, got {period}")
            period_ticks(period)
        except ValueError as e:
            errors.append(TemplateError(f"Error converting value for 'defaultPeriod': {e}",
                                        *doc.key_pos(node, _orig_key(node, "defaultPeriod"))))
            return None
        return ValueTemplate(value_type, value_name, unit=text("unit"), default_period=period)
    if value_type == "Quantity":
        return ValueTemplate(value_type, value_name, unit=text("unit"), system=text("system"),
                             code=text("code"))
    if value_type == "String":
        return ValueTemplate(value_type, value_name)
    codes = fields.get("codes")
    codings = []
    if codes is not None:
        if not isinstance(codes, list):
            errors.append(TemplateError("Error converting value for 'codes': expected an array",
                                        *doc.key_pos(node, _orig_key(node, "codes"))))
            return None
        codings = _load_codes(doc, codes, errors)
    return ValueTemplate(value_type, value_name, text=text("text"), codings=codings)


def _orig_key(node: dict, name: str) -> str:
    for k in node:
        if k.lower() == name.lower():
            return k
    return name


# --- Observation building ------------------------------------------------------------------
def _quantity(vt: ValueTemplate, values: Sequence[Tuple[int, str]]) -> dict:
    if len(values) != 1:
        raise InvalidQuantityFhirValueException(f"Expected 1 value. Received {len(values)}.")
    raw = values[0][1]
    try:
        number = parse_quantity_value(raw)
    except ValueError:
        raise InvalidQuantityFhirValueException(
            f"Error encountered processing value: {raw}.") from None
    q = {"value": number}
    if vt.unit is not None:
        q["unit"] = vt.unit
    if vt.system is not None:
        q["system"] = vt.system
    if vt.code is not None:
        q["code"] = vt.code
    return q


def create_value(vt: ValueTemplate, values: Sequence[Tuple[int, str]], start: int, end: int):
    """``CreateValue`` of the value processors: the value[x] content for one value template.

    ``start``/``end`` are the slot range for SampledData (the observation period).
    """
    kind = vt.value_type
    if kind == "SampledData":
        origin = {"value": 0}
        if vt.unit is not None:
            origin["unit"] = vt.unit
        return {"origin": origin, "period": vt.default_period, "dimensions": 1,
                "data": build_sampled_data(values, start, end, vt.default_period)}
    if kind == "Quantity":
        return _quantity(vt, values)
    if kind == "String":
        if len(values) != 1:
            # Reference: FhirString(values.Single()) -> InvalidOperationException.
            raise FhirDataMappingException(
                f"Expected 1 value for String value '{vt.value_name}'. Received {len(values)}.")
        return values[0][1]
    return _copy_concept(vt._concept)


def format_issued(ticks: Optional[int] = None) -> str:
    return timeutil.format_o(timeutil.now_ticks() if ticks is None else ticks)


def build_observation(template: CodeValueTemplate, group: ObservationGroup, ids: ResolvedIds,
                      issued_ticks: Optional[int] = None) -> dict:
    """A new Observation for one observation group (``GenerateObservation`` + ``CreateObservationImpl``).

    Raises ``InvalidQuantityFhirValueException`` / ``FhirDataMappingException`` when
    the group's values do not fit the template's value types.
    """
    identifier_value = observation_identifier_value(ids, group.name, group.id_segment)
    obs: Dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id(identifier_value),
        "identifier": [{"system": SERVICE_SYSTEM, "value": identifier_value}],
        "status": "final",
        "code": template.code_for(group.name),
    }
    if template.categories:
        obs["category"] = template.category_list()
    vital_profiles.require_subject(template, ids.patient)
    vital_profiles.with_meta_profile(template, obs)
    if ids.patient:
        obs["subject"] = {"reference": f"Patient/{ids.patient}"}
    if vital_profiles.instant(template, group.start, group.end):
        obs["effectiveDateTime"] = timeutil.format_o(group.start)
    else:
        obs["effectivePeriod"] = {"start": timeutil.format_o(group.start),
                                  "end": timeutil.format_o(group.end)}
    obs["issued"] = format_issued(issued_ticks)
    if ids.device:
        obs["device"] = {"reference": f"Device/{ids.device}"}
    if ids.encounter:
        obs["encounter"] = {"reference": f"Encounter/{ids.encounter}"}

    values = group.values
    vt = template.value
    if vt is not None and vt.value_name and vt.value_name.strip():
        data = values.get(vt.value_name)
        if data is not None:
            obs[vt.key] = create_value(vt, data, group.start, group.end)
    if template.components:
        comps = []
        for ct in template.components:
            data = values.get(ct.value.value_name)
            if data is not None:
                comps.append({"code": _copy_concept(ct.code),
                              ct.value.key: create_value(ct.value, data, group.start, group.end)})
        if comps:
            obs["component"] = comps
    return obs
