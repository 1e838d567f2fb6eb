"""Device mappings (``devicecontent.json``): loading and normalization into measurements.

This mirrors the reference's content templates so that users' files work unchanged:

* ``CollectionContent`` holds an ordered list of ``JsonPathContent``,
  ``IotJsonPathContent``, ``IotCentralJsonPathContent`` and ``CalculatedContent``
  templates; every message is run through all of them, in order.
* Loading is strict like Newtonsoft's (unknown fields are errors, names match
  case-insensitively, ``"true"`` is a boolean) and collects every problem with its line.
  Expressions are compiled here, once, never per message.
* Extraction per match follows ``MeasurementExtractor``: device id, timestamp,
  correlation id (required when defined), patient and encounter ids, then values.

One message is all-or-nothing: if any match of any template fails, the message
fails as a whole with the first error (the reference fails the whole event too), so
a dead-lettered message can be fixed and replayed without half of it already written.
Error messages name fields and expressions, never values (they may be PHI).
"""
from typing import Any, Dict, List, Optional, Sequence

from transforms.mapping import template_json as tj
from transforms.mapping.dotnet_values import to_dotnet_string, to_ticks
from transforms.mapping.errors import (IncompatibleDataException, InvalidDataFormatException,
                                       InvalidTemplateException,
                                       TemplateExpressionException)
from transforms.mapping.expressions import NOT_FOUND, Expression, compile_expression, token_selector
from transforms.mapping.measurement import Measurement
from transforms.mapping.template_json import TemplateError
from transforms.mapping.type_match_index import guard_of, message_keys

_new_measurement = tuple.__new__

# Longest device, patient, encounter or correlation id a message may carry. Ids end up in
# FHIR searches (Lookup: Device?identifier=...), references and Observation identifiers;
# servers cap them (FHIR logical ids: 64 characters; Azure's token index: 256; IoT Hub
# device ids: 128), and a megabyte id only fails later, as a reset connection. 256 leaves
# room for every real id scheme while refusing the absurd at normalization.
MAX_ID_LENGTH = 256
_ID_FIELDS = ("device id", "timestamp", "correlation id", "patient id", "encounter id")
TOO_DEEP = "The message is nested too deeply to be read."


def _too_long(field: int) -> str:
    return (f"The {_ID_FIELDS[field]} is longer than {MAX_ID_LENGTH} characters, the longest id "
            "accepted (FHIR servers cap identifier length).")

JSONPATH = "JsonPath"
JMESPATH = "JmesPath"

# target name -> accepted templateType spellings (lower case); see semantics §1.1.
_COLLECTION = ("collectioncontent", "collectioncontenttemplate")
_CHILD_TYPES = {
    "jsonpathcontent": "JsonPathContentTemplate",
    "jsonpathcontenttemplate": "JsonPathContentTemplate",
    "iotjsonpathcontent": "IotJsonPathContentTemplate",
    "iotjsonpathcontenttemplate": "IotJsonPathContentTemplate",
    "iotcentraljsonpathcontent": "IotCentralJsonPathContent",  # only this spelling (reference quirk)
    "calculatedcontent": "CalculatedContent",  # only this spelling (reference quirk)
}

_IOT_DEVICE = compile_expression("$.SystemProperties.iothub-connection-device-id")
_IOT_TIMES = (compile_expression("$.Properties.iothub-creation-time-utc"),
              compile_expression("$.SystemProperties.iothub-enqueuedtime"))
_CENTRAL_DEVICE = compile_expression("$.deviceId")
_CENTRAL_TIME = compile_expression("$.enqueuedTime")


class FieldSpec:
    """One field to extract: its reference name, its expressions (tried in order), requiredness."""

    __slots__ = ("name", "expressions", "required", "where")

    def __init__(self, name: str, expressions: Sequence[Expression], required: bool, where: str):
        self.name = name
        self.expressions = tuple(expressions)
        self.required = required
        self.where = where  # "Line Number: L, Position: P. " of the template, for messages


def _extract_slow(spec: FieldSpec, token: Any, convert) -> Any:
    """The reference's ``EvalExpression`` in full: first usable value, else its error messages."""
    problems: List[str] = []
    for expr in spec.expressions:
        found = expr.select_token(token)
        if found is NOT_FOUND:
            continue
        try:
            value = convert(found)
        except (TypeError, ValueError, OverflowError):
            problems.append(f"Encountered an error while extracting value for [{spec.name}] "
                            f"using expression {expr.text}")
            continue
        if spec.required and (value is None or (isinstance(value, str) and not value.strip())):
            problems.append(f"A null or empty value was supplied for the required field [{spec.name}]")
            continue
        return value
    if spec.required:
        if problems:
            raise IncompatibleDataException(
                f"{spec.where}Unable to extract required value for [{spec.name}]: " + "; ".join(problems))
        using = ",".join(e.text for e in spec.expressions)
        raise IncompatibleDataException(
            f"{spec.where}Unable to extract required value for [{spec.name}] using {using}")
    return None


class ContentTemplate:
    """One loaded device template, ready to run. Subclasses differ only in how the
    per-match token is built (the match itself, or the message plus ``matchedToken``)."""

    kind = "ContentTemplate"
    wraps_match = False  # CalculatedContent evaluates against {message..., matchedToken: match}

    def __init__(self, type_name: str, type_match: Expression, device: FieldSpec,
                 timestamp: FieldSpec, patient: Optional[FieldSpec], encounter: Optional[FieldSpec],
                 correlation: Optional[FieldSpec], values: Sequence[FieldSpec], line: int):
        self.type_name = type_name
        self.type_match = type_match
        self.device = device
        self.timestamp = timestamp
        self.patient = patient
        self.encounter = encounter
        self.correlation = correlation
        self.values = tuple(values)
        self.line = line
        self._plan = None

    @property
    def value_names(self) -> List[str]:
        return [v.name for v in self.values]

    def get_measurements(self, message: Any, ingestion_time: Optional[int] = None) -> List[Measurement]:
        out = []
        matches = self.type_match.select_tokens(message)
        if not matches:
            return out
        if not self.wraps_match:
            for match in matches:
                out.append(self._measurement(match, ingestion_time))
            return out
        # CalculatedContent: expressions see the message plus ``matchedToken``. The
        # reference reuses one clone and swaps matchedToken per match; we borrow the
        # message itself and put it back as it was (no copy per message).
        token = message if isinstance(message, dict) else {}
        had, previous = "matchedToken" in token, token.get("matchedToken")
        try:
            for match in matches:
                token["matchedToken"] = match
                out.append(self._measurement(token, ingestion_time))
        finally:
            if had:
                token["matchedToken"] = previous
            else:
                token.pop("matchedToken", None)
        return out

    def _build_plan(self):
        """Flat (select, convert, required, spec) steps in the reference's extraction order.

        Compiled once per template so the per-match loop below has no further calls
        than the selectors and converters themselves (this runs for every match).
        """
        specs = [(self.device, to_dotnet_string), (self.timestamp, to_ticks),
                 (self.correlation, to_dotnet_string), (self.patient, to_dotnet_string),
                 (self.encounter, to_dotnet_string)] + [(v, to_dotnet_string) for v in self.values]
        plan = []
        for spec, convert in specs:
            if spec is None:
                plan.append(None)
            else:
                single = token_selector(spec.expressions[0]) if len(spec.expressions) == 1 else None
                plan.append((single, convert, spec.required, spec))
        return tuple(plan)

    def _measurement(self, token: Any, ingestion_time: Optional[int]) -> Measurement:
        plan = self._plan
        if plan is None:
            plan = self._plan = self._build_plan()
        got = [None, None, None, None, None]  # device, time, correlation, patient, encounter
        props = []
        i = 0
        for step in plan:
            if step is not None:
                select, convert, required, spec = step
                value = None
                if select is not None:
                    found = select(token)
                    if found is not NOT_FOUND:
                        try:
                            value = convert(found)
                        except (TypeError, ValueError, OverflowError):
                            value = None
                        if value is not None and required and value.__class__ is str and not value.strip():
                            value = None
                    if value is None and (required or found is not NOT_FOUND):
                        value = _extract_slow(spec, token, convert)
                else:
                    value = _extract_slow(spec, token, convert)
                if i < 5:
                    got[i] = value
                elif value is not None:
                    props.append((spec.name, value))
            i += 1
        for value in got:
            if value is not None and value.__class__ is str and len(value) > MAX_ID_LENGTH:
                raise IncompatibleDataException(_too_long(got.index(value)))
        # tuple.__new__ skips NamedTuple's Python-level __new__ (hot path); same field order.
        return _new_measurement(Measurement, (self.type_name, got[1], got[0], tuple(props),
                                              got[3], got[4], got[2], ingestion_time))


class JsonPathContentTemplate(ContentTemplate):
    kind = "JsonPathContentTemplate"


class IotJsonPathContentTemplate(ContentTemplate):
    kind = "IotJsonPathContentTemplate"


class IotCentralJsonPathContentTemplate(ContentTemplate):
    kind = "IotCentralJsonPathContent"


class CalculatedContentTemplate(ContentTemplate):
    kind = "CalculatedContent"
    wraps_match = True


class DeviceMapping:
    """A loaded ``CollectionContent``: the good templates plus every problem found.

    Like the reference's template context, templates that failed to load are left
    out and the rest still work; ``valid`` says whether the file had no problem at all.
    The pipeline and CLI refuse an invalid mapping (the reference's ``EnsureValid``).
    """

    def __init__(self, templates: List[ContentTemplate], errors: List[TemplateError],
                 use_index: bool = True):
        self.templates = templates
        self.errors = errors
        # (template, guard or None) per template: ``type_match_index`` (False: no index, for
        # the equivalence tests of the fast path)
        self._guarded = None
        self.use_index = use_index

    @property
    def valid(self) -> bool:
        return not any(e.severity == "error" for e in self.errors)

    def ensure_valid(self) -> "DeviceMapping":
        if not self.valid:
            raise InvalidTemplateException(
                "Validation errors:\n" + "\n".join(str(e) for e in self.errors))
        return self

    def get_measurements(self, message: Any, ingestion_time: Optional[int] = None) -> List[Measurement]:
        """All measurements of one message, in template order then match order."""
        out: List[Measurement] = []
        guarded = self._guarded
        if guarded is None:
            guarded = self._guarded = self._guards()
        try:
            keys = message_keys(message) if guarded[0] else None
            for template, guard in guarded[1]:
                if guard is not None and keys is not None and not guard(keys):
                    continue  # its type match cannot select anything from this message
                out.extend(template.get_measurements(message, ingestion_time))
        except RecursionError:
            # A body nested deeper than the expressions can walk: the reference's error
            # type for an unreadable message, so runbooks keyed on it apply.
            raise InvalidDataFormatException(TOO_DEEP) from None
        return out

    def _guards(self):
        """(any guard?, ((template, guard or None), ...)): the type-match index."""
        pairs = tuple((t, guard_of(t.type_match) if self.use_index else None) for t in self.templates)
        return any(g is not None for _, g in pairs), pairs


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------
class _Loader:
    def __init__(self, doc: tj.JsonDoc):
        self.doc = doc
        self.errors: List[TemplateError] = []

    def load(self) -> DeviceMapping:
        root = self.doc.value
        if not isinstance(root, dict):
            self.errors.append(TemplateError("Expected an object for the device mapping.", 1, 1))
            return DeviceMapping([], self.errors)
        r = tj.StrictObject(self.doc, root, "TemplateContainer", self.errors)
        ttype = r.get("templateType", tj.as_string)
        body = r.raw("template")
        r.finish()
        if not isinstance(ttype, str) or ttype.lower() not in _COLLECTION:
            r.error(f"Expected TemplateType value CollectionContentTemplate, actual {ttype}.",
                    r.key_of("templateType"))
            return DeviceMapping([], self.errors)
        if not isinstance(body, list):
            r.error("Expected an array for the template property value for template type "
                    "CollectionContentTemplate.", r.key_of("template"))
            return DeviceMapping([], self.errors)
        templates = []
        for child in body:
            t = self.child(child)
            if t is not None:
                templates.append(t)
        return DeviceMapping(templates, self.errors)

    def child(self, node: Any) -> Optional[ContentTemplate]:
        if not isinstance(node, dict):
            line, pos = self.doc.pos(node) if isinstance(node, list) else (0, 0)
            self.errors.append(TemplateError("Expected an object for each template.", line, pos))
            return None
        r = tj.StrictObject(self.doc, node, "TemplateContainer", self.errors)
        ttype = r.get("templateType", tj.as_string)
        body = r.raw("template")
        r.finish()
        target = _CHILD_TYPES.get(ttype.lower()) if isinstance(ttype, str) else None
        if target is None:
            r.error(f"No match found for template type {ttype}.", r.key_of("templateType"))
            return None
        if not isinstance(body, dict):
            r.error(f"Expected an object for the template property value for template type {target}.",
                    r.key_of("template"))
            return None
        return self.template(target, body)

    def expression(self, r: tj.StrictObject, name: str, required: bool, calculated: bool,
                   default_language: str) -> Optional[List[Expression]]:
        """Read and compile one expression field; ``None`` when absent (or broken, with an error)."""
        raw = r.raw(name)
        if raw is tj.MISSING or raw is None:
            if required:
                r.error(f"Required property '{name[0].upper() + name[1:]}' not found in JSON.")
            return None
        key = r.key_of(name)
        language = JSONPATH
        if isinstance(raw, dict) and calculated:
            lowered = {k.lower(): v for k, v in raw.items()}
            text = lowered.get("value")
            lang = lowered.get("language")
            if not isinstance(text, str):
                r.error(f"Required property 'Value' not found in JSON for expression '{name}'.", key)
                return None
            if lang is None:
                language = default_language
            elif isinstance(lang, str) and lang.lower() in ("jsonpath", "jmespath"):
                language = JSONPATH if lang.lower() == "jsonpath" else JMESPATH
            else:
                r.error(f"Unknown expression language '{lang}' for '{name}' (JsonPath or JmesPath).", key)
                return None
        elif isinstance(raw, str):
            text = raw
            language = default_language if calculated else JSONPATH
        else:
            r.error(f"Error converting value for '{name}': expected an expression string"
                    + (" or {\"value\", \"language\"} object." if calculated else "."), key)
            return None
        try:
            return [compile_expression(text, language)]
        except TemplateExpressionException as e:
            r.error(f"{name}: {e}", key)
            return None

    def template(self, target: str, node: dict) -> Optional[ContentTemplate]:
        calculated = target == "CalculatedContent"
        iot = target == "IotJsonPathContentTemplate"
        central = target == "IotCentralJsonPathContent"
        r = tj.StrictObject(self.doc, node, target, self.errors)
        line, pos = r.where
        where = f"Line Number: {line}, Position: {pos}. "
        default_language = JSONPATH
        if calculated:
            lang = r.get("defaultExpressionLanguage", tj.as_string)
            if lang is not None:
                if lang.lower() in ("jsonpath", "jmespath"):
                    default_language = JSONPATH if lang.lower() == "jsonpath" else JMESPATH
                else:
                    r.error(f"Unknown defaultExpressionLanguage '{lang}' (JsonPath or JmesPath).",
                            r.key_of("defaultExpressionLanguage"))

        def expr(name, required=False):
            return self.expression(r, name, required, calculated, default_language)

        type_name = r.get("typeName", tj.as_string, required=True)
        if type_name is not None and not type_name.strip():
            r.error("Empty type name is not allowed.", r.key_of("typeName"))
        type_match = expr("typeMatchExpression", required=True)
        if iot or central:
            # The reference ignores these fields ([JsonIgnore]) and uses fixed expressions.
            r.raw("deviceIdExpression")
            r.raw("timestampExpression")
            device_exprs = [_IOT_DEVICE] if iot else [_CENTRAL_DEVICE]
            time_exprs = list(_IOT_TIMES) if iot else [_CENTRAL_TIME]
        else:
            device_exprs = expr("deviceIdExpression", required=True)
            time_exprs = expr("timestampExpression", required=True)
        patient = expr("patientIdExpression")
        encounter = expr("encounterIdExpression")
        correlation = expr("correlationIdExpression")

        values: List[FieldSpec] = []
        raw_values = r.raw("values")
        if raw_values is tj.MISSING or raw_values is None:
            if calculated:
                # The reference's factory dereferences Values and fails (NullReferenceException);
                # we say what is wrong instead.
                r.error("Required property 'Values' not found in JSON.")
        elif not isinstance(raw_values, list):
            r.error("Error converting value for 'values': expected an array.", r.key_of("values"))
        else:
            for item in raw_values:
                spec = self.value(item, calculated, default_language, where)
                if spec is not None:
                    values.append(spec)
        r.finish()
        if not r.ok:
            return None
        cls = {"JsonPathContentTemplate": JsonPathContentTemplate,
               "IotJsonPathContentTemplate": IotJsonPathContentTemplate,
               "IotCentralJsonPathContent": IotCentralJsonPathContentTemplate,
               "CalculatedContent": CalculatedContentTemplate}[target]
        return cls(
            type_name=type_name,
            type_match=type_match[0],
            device=FieldSpec("DeviceIdExpression", device_exprs, True, where),
            timestamp=FieldSpec("TimestampExpression", time_exprs, True, where),
            patient=FieldSpec("PatientIdExpression", patient, False, where) if patient else None,
            encounter=FieldSpec("EncounterIdExpression", encounter, False, where) if encounter else None,
            correlation=(FieldSpec("CorrelationIdExpression", correlation, True, where)
                         if correlation else None),
            values=values,
            line=line,
        )

    def value(self, node: Any, calculated: bool, default_language: str,
              where: str) -> Optional[FieldSpec]:
        if not isinstance(node, dict):
            self.errors.append(TemplateError("Expected an object for each entry of 'values'.", 0, 0))
            return None
        r = tj.StrictObject(self.doc, node, "CalculatedFunctionValueExpression" if calculated
                            else "JsonPathValueExpression", self.errors)
        name = r.get("valueName", tj.as_string, required=True)
        if name is not None and not name.strip():
            r.error("Empty value name is not allowed.", r.key_of("valueName"))
        exprs = self.expression(r, "valueExpression", True, calculated, default_language)
        required = r.get("required", tj.as_bool, default=False)
        r.finish()
        if not r.ok or exprs is None:
            return None
        return FieldSpec(name, exprs, required, where)


def load_device_mapping(source: Any) -> DeviceMapping:
    """Load a device mapping from a ``JsonDoc``, JSON text, or file path.

    Never raises for problems in the mapping: they are collected in ``.errors``
    (JSON syntax errors included), so callers can report all of them at once.
    """
    try:
        if isinstance(source, tj.JsonDoc):
            doc = source
        elif isinstance(source, str) and source.lstrip("\ufeff \t\r\n").startswith("{"):
            doc = tj.parse(source)
        else:
            doc = tj.load(str(source))
    except InvalidTemplateException as e:
        return DeviceMapping([], [TemplateError(str(e))])
    return _Loader(doc).load()


def envelope(body: Any, properties: Optional[Dict[str, Any]] = None,
             system_properties: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A device message as the reference sees it (``EventMessageJObjectConverter``)."""
    return {"Body": body, "Properties": properties or {}, "SystemProperties": system_properties or {}}

