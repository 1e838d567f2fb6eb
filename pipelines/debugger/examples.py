"""The debugger's example picker, built from the repository's ``templates/`` and the template packs.

Why derived and not hand-written: the package ships copies of ``templates/``
(``examples/``, checked equal by the tests) and every picker entry is cut from them
(one entry per measurement type: its device template, its FHIR template and sample
messages that produce it), so the examples never drift from what the README shows.
"""
import json
from functools import lru_cache
from importlib import resources
from typing import Dict, List

from transforms.mapping.device_templates import load_device_mapping
from transforms.mapping.offline import normalize_lines, numbered_lines

FILES = ("devicecontent.json", "fhirmapping.json", "messages.jsonl")
PER_TYPE = 6  # sample messages per single-type example
TOUR_PER_TYPE = 2


def shipped(name: str) -> str:
    return resources.files(__package__).joinpath("examples", name).read_text(encoding="utf-8")


def _subset(mapping: dict, keep) -> str:
    out = dict(mapping)
    out["template"] = [t for t in mapping["template"] if keep(t["template"]["typeName"])]
    return json.dumps(out, indent=2) + "\n"


def _fhir_kind(template: dict) -> str:
    value = template.get("value")
    if value:
        return value["valueType"]
    kinds = sorted({c["value"]["valueType"] for c in template.get("components", [])})
    return " + ".join(kinds) + " components" if kinds else "no value"


@lru_cache(maxsize=1)
def examples() -> List[Dict[str, str]]:
    """``[{id, label, deviceMapping, fhirMapping, messages, inputFormat}]``, the tour first."""
    device_text, fhir_text, sample = (shipped(n) for n in FILES)
    device, fhir = json.loads(device_text), json.loads(fhir_text)
    mapping = load_device_mapping(device_text)
    lines = sample.split("\n")
    by_type: Dict[str, List[int]] = {}
    failing: List[int] = []
    devices: Dict[str, str] = {}
    for number, measurements, exc in normalize_lines(mapping, numbered_lines(lines)):
        if exc is not None:
            failing.append(number)
            continue
        for m in measurements[:1]:  # one device per example: its readings share Observations
            first = devices.setdefault(m.type, m.device_id)
            if m.device_id == first:
                by_type.setdefault(m.type, []).append(number)

    def text(numbers) -> str:
        return "".join(lines[n - 1] + "\n" for n in sorted(numbers))

    tour = [n for numbers in by_type.values() for n in numbers[:TOUR_PER_TYPE]] + failing
    out = [{"id": "tour", "label": "Every kind + two failing messages (templates/)",
            "deviceMapping": device_text, "fhirMapping": fhir_text, "messages": text(tour),
            "inputFormat": "body"}]
    kinds = {t["template"]["typeName"]: _fhir_kind(t["template"]) for t in fhir["template"]}
    for type_name, numbers in by_type.items():
        out.append({"id": type_name, "label": f"{type_name}: {kinds.get(type_name, '?')}",
                    "deviceMapping": _subset(device, lambda t: t == type_name),
                    "fhirMapping": _subset(fhir, lambda t: t == type_name),
                    "messages": text(numbers[:PER_TYPE]), "inputFormat": "body"})
    out.append({"id": "sample", "label": f"Whole sample ({len([l for l in lines if l.strip()])} messages)",
                "deviceMapping": device_text, "fhirMapping": fhir_text, "messages": sample,
                "inputFormat": "body"})
    return out + pack_examples()


def pack_examples() -> List[Dict[str, str]]:
    """One entry per template pack (``iomt-fhir templates``): its mappings and sample messages."""
    from pipelines import packs

    out = []
    for name in packs.PACKS:
        samples = [("messages.jsonl", "body")] + [
            (f, packs.EXTRA_SAMPLES[f]) for f in packs.files(name) if f in packs.EXTRA_SAMPLES]
        for sample, input_format in samples:
            suffix = "" if sample == "messages.jsonl" else f" ({sample}, {input_format}s)"
            out.append({"id": f"pack-{name}" + ("" if not suffix else f"-{sample.split('.')[0]}"),
                        "label": f"Template pack {name}: {packs.summary(name)[0]}{suffix}",
                        "deviceMapping": packs.read(name, "devicecontent.json"),
                        "fhirMapping": packs.read(name, "fhirmapping.json"),
                        "messages": packs.read(name, sample), "inputFormat": input_format})
    return out
