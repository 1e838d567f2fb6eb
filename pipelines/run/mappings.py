"""The mappings a run uses: read from any Beam filesystem, checked before anything runs.

Shared by ``iomt-fhir run`` and ``iomt-fhir replay``: an invalid mapping stops the launch
with every problem listed (no message content, only template names and positions), and
the cross-check warnings the reference accepts are returned for the caller to log.
"""
from typing import List

from apache_beam.io.filesystems import FileSystems

from pipelines.launch_errors import LaunchError
from transforms.mapping import validation
from transforms.mapping.device_templates import load_device_mapping
from transforms.mapping.fhir_templates import load_fhir_mapping


class InvalidMappings(Exception):
    """The mappings have errors; the message lists every one (no message content, only templates)."""


def read_text(path: str) -> str:
    with FileSystems.open(path) as f:
        return f.read().decode("utf-8-sig")


def check_mappings(device_text: str, fhir_text: str, device_name: str = "device mapping",
                   fhir_name: str = "FHIR mapping") -> List[str]:
    """Refuse invalid mappings; return cross-check warnings (the reference accepts those)."""
    device = load_device_mapping(device_text)
    fhir = load_fhir_mapping(fhir_text)
    problems = [f"{device_name}: {e}" for e in device.errors] + [f"{fhir_name}: {e}" for e in fhir.errors]
    if problems:
        raise InvalidMappings("Invalid mappings:\n" + "\n".join(problems))
    names = {validation.DEVICE: device_name, validation.FHIR: fhir_name}
    return [f"{names[side]}: {w}" for side, w in validation.cross_check_by_side(device, fhir)]


def read_mapping(flag: str, path: str) -> str:
    """The mapping file's text; a missing, unreadable or non-UTF-8 file is one launch line."""
    try:
        return read_text(path)
    except UnicodeDecodeError as e:
        raise LaunchError(f"{flag} {path}: not UTF-8 text (byte {e.start})") from None
    except Exception as e:  # FileNotFoundError, BeamIOError (other filesystems), PermissionError ...
        causes = list(getattr(e, "exception_details", None) or {}) and list(e.exception_details.values())
        cause = causes[0] if causes else e
        reason = getattr(cause, "strerror", None) or f"{type(cause).__name__}: {cause}"
        raise LaunchError(f"{flag} {path}: cannot read the mapping: {reason}") from None
