"""Whole-configuration validation: both mappings, and how they fit together.

Why a separate step: the reference loads mappings lazily and discovers a typo'd
type or value name only when data flows (then drops it, visible only in metrics).
We report every problem of both files, with line numbers, before any data runs:
template errors from each loader, then cross-checks in both directions (a device
type with no FHIR template, a device value no FHIR template uses, a FHIR template no
device template feeds). Cross-check findings are warnings: the reference accepts
such mappings, and a pipeline runs with them, but ``iomt-fhir validate`` fails on them.

As in the reference's ``MappingValidator``, the cross-check runs only when both
files loaded without errors: a template that failed to load would otherwise show up
as a misleading "no matching template" warning on the other side. The first two
warnings use the reference's wording (``MappingValidator.CheckForTemplateCompatibility``)
so that users can search for them.
"""
import re
from typing import Any, List, NamedTuple, Optional, Tuple

from transforms.mapping.device_templates import DeviceMapping, load_device_mapping
from transforms.mapping.template_json import TemplateError

DEVICE = "device"
FHIR = "fhir"

_LINE_RE = re.compile(r"Line (\d+), position (\d+)", re.IGNORECASE)


def _located(e: TemplateError) -> TemplateError:
    """A syntax error reported without a position carries it in its text; use that."""
    if e.line:
        return e
    m = _LINE_RE.search(e.message)
    return e._replace(line=int(m.group(1)), position=int(m.group(2))) if m else e


class Problem(NamedTuple):
    """A ``TemplateError`` tied to the file it was found in.

    Always printed ``FILE:LINE:POSITION: severity: message``; ``0:0`` when the problem
    has no place in the file (e.g. the file cannot be read).
    """

    file: str
    error: TemplateError

    def __str__(self) -> str:
        e = _located(self.error)
        return f"{self.file}:{e.line}:{e.position}: {e.severity}: {e.message}"


def _names(items) -> str:
    return " ,".join(items)  # sic: the reference joins with " ,"


def _fhir_value_names(template) -> List[str]:
    """Value names of a FHIR template in template order (components, then value)."""
    out: List[str] = []
    for c in template.components:
        if c.value.value_name and c.value.value_name not in out:
            out.append(c.value.value_name)
    if template.value is not None and template.value.value_name \
            and template.value.value_name not in out:
        out.append(template.value.value_name)
    return out


def cross_check_by_side(device: DeviceMapping, fhir: Any) -> List[Tuple[str, TemplateError]]:
    out: List[Tuple[str, TemplateError]] = []
    templates = fhir.templates()
    by_key = {t.type_name.lower(): t for t in templates}
    available = _names(t.type_name for t in templates)
    fed = set()
    for t in device.templates:
        key = t.type_name.lower()
        target = by_key.get(key)
        if target is None:
            out.append((DEVICE, TemplateError(
                f"No matching Fhir Template exists for Device Mapping [{t.type_name}]. "
                f"Ensure case matches. Available Fhir Templates: [{available}].",
                t.line, 0, "warning")))
            continue
        fed.add(key)
        used = _fhir_value_names(target)
        for name in t.value_names:
            if name not in used:
                out.append((DEVICE, TemplateError(
                    f"The value [{name}] in Device Mapping [{t.type_name}] is not represented "
                    f"within the Fhir Template of type [{target.type_name}]. Available values "
                    f"are: [{_names(used)}]. No value will appear inside of Observations.",
                    t.line, 0, "warning")))
    for t in templates:
        if t.type_name.lower() not in fed:
            out.append((FHIR, TemplateError(
                f"Fhir Template [{t.type_name}] has no matching Device Mapping; it will never be used",
                t.line, 0, "warning")))
    return out


def cross_check(device: DeviceMapping, fhir: Any) -> List[TemplateError]:
    """Warnings for names that have no counterpart between the two mappings.

    Device-side warnings carry the device template's line, the last kind (a FHIR
    template nothing feeds) the FHIR template's line; ``validate`` says which file.
    """
    return [e for _, e in cross_check_by_side(device, fhir)]


def unreadable(path: str, what: str) -> Optional[TemplateError]:
    """An error when ``path`` cannot be read as a file, else ``None``.

    Checked before loading: the loaders also accept JSON text, so a mistyped path
    would otherwise be reported as invalid JSON.
    """
    try:
        with open(path, "rb"):
            return None
    except OSError as e:
        return TemplateError(f"Unable to read the {what}: {e.strerror or e}")


def load_device(path: str) -> DeviceMapping:
    """The device mapping at ``path``; an unreadable file is one error (never raises)."""
    error = unreadable(path, "device mapping")
    return DeviceMapping([], [error]) if error else load_device_mapping(path)


def load_fhir(path: str):
    """The FHIR mapping at ``path``; an unreadable file is one error (never raises)."""
    from transforms.mapping.fhir_templates import FhirMapping, load_fhir_mapping

    error = unreadable(path, "FHIR mapping")
    return FhirMapping([], [error]) if error else load_fhir_mapping(path)


def _in_file_order(errors: List[TemplateError]) -> List[TemplateError]:
    """Errors by place in the file (stable; those without a place last)."""
    located = [_located(e) for e in errors]
    return sorted(located, key=lambda e: (e.line == 0, e.line, e.position))


def medtech_warnings(fhir: Any) -> List[TemplateError]:
    """Our extensions in a loaded FHIR mapping, which MedTech / iomt-fhir refuse to load.

    Only the ``profiles`` field of CodeValueFhir (``transforms.mapping.profiles``): the
    reference rejects unknown template fields, so such a mapping does not load there.
    """
    return [TemplateError(
        f"Fhir Template [{t.type_name}] uses 'profiles', an iomt-fhir-beam extension: MedTech and "
        "iomt-fhir reject unknown template fields (remove it there, or export a pack with --medtech).",
        t.line, 0, "warning") for t in fhir.templates() if t.profiles]


def problems_of(device: DeviceMapping, fhir: Optional[Any] = None,
                medtech: bool = False) -> List[Tuple[str, TemplateError]]:
    """``(DEVICE | FHIR, located error)`` for loaded mappings: what ``validate`` reports.

    Shared by ``iomt-fhir validate`` (files) and the browser debugger (editor texts).
    ``medtech``: also warn about our extensions (for mappings that must stay MedTech-compatible).
    """
    out = [(DEVICE, e) for e in _in_file_order(device.errors)]
    if fhir is not None:
        out += [(FHIR, e) for e in _in_file_order(fhir.errors)]
        if medtech:
            out += [(FHIR, e) for e in medtech_warnings(fhir)]
        if device.valid and fhir.valid:
            out += [(side, _located(e)) for side, e in cross_check_by_side(device, fhir)]
    return out


def validate(device_path: str, fhir_path: Optional[str] = None,
             medtech: bool = False) -> List[Problem]:
    """Every problem of the device mapping and (if given) the FHIR mapping and their fit."""
    device = load_device(device_path)
    fhir = load_fhir(fhir_path) if fhir_path is not None else None
    files = {DEVICE: device_path, FHIR: fhir_path}
    return [Problem(files[side], e) for side, e in problems_of(device, fhir, medtech)]
