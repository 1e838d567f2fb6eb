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
from transforms.mapping.errors import (IncompatibleDataException, InvalidTemplateException,
                                       TemplateExpressionException)
from transforms.mapping.expressions import NOT_FOUND, Expression, compile_expression
from transforms.mapping.measurement import Measurement
from transforms.mapping.template_json import TemplateError

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


def _extract(spec: FieldSpec, token: Any, convert) -> Any:
    """The reference's ``EvalExpression``: first usable value of the spec's expressions."""
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

    @property
    def value_names(self) -> List[str]:
        return [v.name for v in self.values]

    def get_measurements(self, message: Any, ingestion_time: Optional[int] = None) -> List[Measurement]:
        out = []
        matches = self.type_match.select_tokens(message)
        if not matches:
            return out
        base = dict(message) if self.wraps_match and isinstance(message, dict) else None
        for match in matches:
            if self.wraps_match:
                token = base if base is not None else {}
                token["matchedToken"] = match
            else:
                token = match
            out.append(self._measurement(token, ingestion_time))
        return out

    def _measurement(self, token: Any, ingestion_time: Optional[int]) -> Measurement:
        device_id = _extract(self.device, token, to_dotnet_string)
        occurrence = _extract(self.timestamp, token, to_ticks)
        correlation = _extract(self.correlation, token, to_dotnet_string) if self.correlation else None
        patient = _extract(self.patient, token, to_dotnet_string) if self.patient else None
        encounter = _extract(self.encounter, token, to_dotnet_string) if self.encounter else None
        props = []
        for spec in self.values:
            v = _extract(spec, token, to_dotnet_string)
            if v is not None:
                props.append((spec.name, v))
        return Measurement(self.type_name, occurrence, device_id, tuple(props), patient,
                           encounter, correlation, ingestion_time)


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

    def __init__(self, templates: List[ContentTemplate], errors: List[TemplateError]):
        self.templates = templates
        self.errors = errors

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
        for template in self.templates:
            out.extend(template.get_measurements(message, ingestion_time))
        return out


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

