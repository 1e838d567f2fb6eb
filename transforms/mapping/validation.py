"""Whole-configuration validation: both mappings, and how they fit together.

Why a separate step: the reference loads mappings lazily and discovers a typo'd
type or value name only when data flows (then drops it, visible only in metrics).
We report every problem of both files, with line numbers, before any data runs:
template errors from each loader, then cross-checks in both directions (a device
type with no FHIR template, a device value no FHIR template uses, a FHIR template no
device template feeds). Cross-check findings are warnings: the reference accepts
such mappings, and a pipeline runs with them, but ``iomt-fhir validate`` fails on them.
"""
from typing import Any, List, NamedTuple, Optional

from transforms.mapping.device_templates import DeviceMapping, load_device_mapping
from transforms.mapping.template_json import TemplateError


class Problem(NamedTuple):
    """A ``TemplateError`` tied to the file it was found in."""

    file: str
    error: TemplateError

    def __str__(self) -> str:
        e = self.error
        where = f"{self.file}:{e.line}:{e.position}" if e.line else self.file
        return f"{where}: {e.severity}: {e.message}"


def cross_check(device: DeviceMapping, fhir: Any) -> List[TemplateError]:
    """Warnings for names that have no counterpart between the two mappings."""
    out: List[TemplateError] = []
    fhir_types = {t.lower(): t for t in fhir.type_names()}
    fed = set()
    for t in device.templates:
        key = t.type_name.lower()
        if key not in fhir_types:
            out.append(TemplateError(
                f"No matching Fhir Template exists for Device Mapping [{t.type_name}]",
                t.line, 0, "warning"))
            continue
        fed.add(key)
        used = fhir.value_names(t.type_name)
        for name in t.value_names:
            if name not in used:
                out.append(TemplateError(
                    f"The value [{name}] in Device Mapping [{t.type_name}] is not represented "
                    f"within the Fhir Template", t.line, 0, "warning"))
    for key, name in fhir_types.items():
        if key not in fed:
            out.append(TemplateError(
                f"Fhir Template [{name}] has no matching Device Mapping; it will never be used",
                0, 0, "warning"))
    return out


def validate(device_path: str, fhir_path: Optional[str] = None) -> List[Problem]:
    """Every problem of the device mapping and (if given) the FHIR mapping and their fit."""
    from transforms.mapping.fhir_templates import load_fhir_mapping

    device = load_device_mapping(device_path)
    problems = [Problem(device_path, e) for e in device.errors]
    if fhir_path is not None:
        fhir = load_fhir_mapping(fhir_path)
        problems += [Problem(fhir_path, e) for e in fhir.errors]
        problems += [Problem(device_path, e) for e in cross_check(device, fhir)]
    return problems
