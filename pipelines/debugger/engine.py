"""One debugger run: mapping texts + test messages -> problems, measurements, Observations.

Why here and not in JavaScript: the page must show exactly what ``iomt-fhir validate``
/ ``normalize`` / ``transform`` would, so this calls the same functions the CLI
calls (``validation.problems_of``, ``offline.normalize_lines``,
``Measurement.from_json`` + ``offline.observations_for``) and adds only what a page
needs to point at things: which message each measurement came from, and SampledData
as (time, value) points.

Pure and side-effect free: texts in, a JSON-ready dict out. Mapping texts are parsed
as text, never taken for paths (the loaders accept a path too), so a request can
never make the server read a file.
"""
import json
from typing import Any, Dict, List, Tuple

from transforms.mapping import template_json, timeutil
from transforms.mapping.device_templates import DeviceMapping, load_device_mapping
from transforms.mapping.errors import InvalidTemplateException
from transforms.mapping.fhir_templates import FhirMapping, load_fhir_mapping
from transforms.mapping.measurement import Measurement
from transforms.mapping.offline import normalize_lines, numbered_lines, observations_for
from transforms.mapping.sampled_data import sampled_data_to_time_values
from transforms.mapping.template_json import TemplateError
from transforms.mapping.validation import DEVICE, FHIR, problems_of

INPUT_FORMATS = ("body", "envelope")
STAGE_NORMALIZATION = "normalization"
STAGE_FHIR_CONVERSION = "fhir_conversion"
STAGE_IDENTITY = "identity"  # a reading no period of the device-use table covers
DEVICE_USE = "deviceUse"  # problems of the device-use table (``file``)
EMPTY_DEVICE = "The device mapping is empty: write one, open a file or pick an example."


class BadRequest(ValueError):
    """The request itself is malformed (not the mappings or messages in it)."""


def _error_type(exc: BaseException) -> str:
    from transforms.records.dead_letter import error_type_of

    return error_type_of(exc)


def _load(text: str, loader, empty):
    """A mapping loaded from editor text; a syntax error is one located problem."""
    try:
        doc = template_json.parse(text)
    except InvalidTemplateException as e:
        return empty([], [TemplateError(str(e))])
    except RecursionError:
        return empty([], [TemplateError("The mapping is nested too deeply to be read.")])
    return loader(doc)


def load_device_text(text: str) -> DeviceMapping:
    return _load(text, load_device_mapping, DeviceMapping)


def load_fhir_text(text: str) -> FhirMapping:
    return _load(text, load_fhir_mapping, FhirMapping)


def _problem(side: str, e: TemplateError) -> Dict[str, Any]:
    return {"file": side, "line": e.line, "column": e.position, "severity": e.severity,
            "message": e.message}


def _iso(ticks: int) -> str:
    return timeutil.format_trimmed(ticks)


def sampled_data_points(observation: dict) -> List[Dict[str, Any]]:
    """Every SampledData of an Observation as (time, value) points, ``E`` slots left out.

    ``path`` says where it is (``valueSampledData`` or ``component[i].valueSampledData``).
    """
    out = []
    start = timeutil.parse_datetime(observation.get("effectivePeriod", {}).get("start", ""))
    places = [("valueSampledData", observation)] + [
        (f"component[{i}].valueSampledData", c) for i, c in enumerate(observation.get("component", []))]
    for path, holder in places:
        sd = holder.get("valueSampledData")
        if not sd or start is None or not sd.get("data"):
            continue
        points = sampled_data_to_time_values(sd["data"], start, sd["period"])
        label = holder.get("code", {}).get("text") if holder is not observation else None
        out.append({"path": path, "name": label, "unit": sd.get("origin", {}).get("unit"),
                    "periodMs": sd["period"], "slots": len(sd["data"].split(" ")),
                    "points": [[_iso(t), v] for t, v in points]})
    return out


def _request_fields(request: Any) -> Tuple[str, str, str, str, str]:
    if not isinstance(request, dict):
        raise BadRequest("The request must be a JSON object.")
    texts = []
    for key in ("deviceMapping", "fhirMapping", "messages"):
        value = request.get(key, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise BadRequest(f"{key} must be a string.")
        texts.append(value)
    device_use = request.get("deviceUse", "")
    if device_use is None:
        device_use = ""
    if not isinstance(device_use, str):
        raise BadRequest("deviceUse must be a string.")
    texts.append(device_use)
    input_format = request.get("inputFormat", "body")
    if input_format not in INPUT_FORMATS:
        raise BadRequest("inputFormat must be \"body\" or \"envelope\".")
    return texts[0], texts[1], texts[2], texts[3], input_format


def run(request: Any) -> Dict[str, Any]:
    """``POST /api/run``: see the README (Mapping debugger in the browser) for the contract.

    ``problems``: ``validate``'s, per editor (``file`` ``device`` | ``fhir``), with line
    and column (1-based; 0 when the problem has no place). ``measurements``: exactly the
    objects ``normalize`` prints, in its order. ``errors``: one per failing message
    (stage ``normalization``) or measurement (stage ``fhir_conversion``), ``index`` =
    the message's line in ``messages`` (1-based, ``normalize``'s line number).
    ``observations``: exactly what ``transform`` prints for those measurements.
    ``deviceUse`` (optional CSV ``device,patient,start,end[,status]``): as ``transform
    --device-use``, each reading goes to who wore its device then; bad rows are problems
    of ``file`` ``deviceUse`` (the good ones still apply).
    Extras for the page: ``measurementIndex`` (the message line of each measurement)
    and ``sampledData`` (per Observation, its SampledData as points).
    """
    device_text, fhir_text, messages, device_use_text, input_format = _request_fields(request)
    device = load_device_text(device_text) if device_text.strip() else None
    fhir = load_fhir_text(fhir_text) if fhir_text.strip() else None
    if device is not None:
        problems = [_problem(side, e) for side, e in problems_of(device, fhir)]
    else:
        problems = [_problem(DEVICE, TemplateError(EMPTY_DEVICE))]
        if fhir is not None:
            problems += [_problem(FHIR, e) for side, e in problems_of(DeviceMapping([], []), fhir)
                         if side == FHIR and e.severity == "error"]
    result: Dict[str, Any] = {"problems": problems, "measurements": [], "errors": [],
                              "observations": [], "measurementIndex": [], "sampledData": []}
    if device is None or not device.valid:
        return result
    numbered: List[Tuple[int, Measurement]] = []
    for line, measurements, exc in normalize_lines(device, numbered_lines(messages.split("\n")),
                                                   input_format):
        if exc is not None:
            result["errors"].append({"index": line, "error": _error_type(exc), "message": str(exc),
                                     "stage": STAGE_NORMALIZATION})
            continue
        for m in measurements:
            printed = m.to_json()
            result["measurements"].append(printed)
            result["measurementIndex"].append(line)
            # What ``transform`` reads back from ``normalize``'s output, not the object itself.
            try:
                numbered.append((line, Measurement.from_json(json.loads(json.dumps(printed)))))
            except Exception as e:  # as ``transform`` reports a line it cannot read
                result["errors"].append({"index": line, "error": _error_type(e),
                                         "message": str(e), "stage": STAGE_FHIR_CONVERSION})
    table = None
    if device_use_text.strip():
        from transforms.mapping.device_use import DeviceUseTable

        table, bad = DeviceUseTable.from_csv(device_use_text)
        problems.extend({"file": DEVICE_USE, "line": line, "column": 0, "severity": "error",
                         "message": str(exc)} for line, exc in bad)
    if fhir is None or not fhir.valid:
        return result
    for observation, failure in observations_for(fhir, numbered, table):
        if failure is not None:
            line, exc = failure
            stage = STAGE_IDENTITY if getattr(exc, "stage", None) == STAGE_IDENTITY else STAGE_FHIR_CONVERSION
            result["errors"].append({"index": line, "error": _error_type(exc), "message": str(exc),
                                     "stage": stage})
            continue
        result["observations"].append(observation)
        result["sampledData"].append(sampled_data_points(observation))
    return result
