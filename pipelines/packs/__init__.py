"""Template packs: ready mappings for device data that comes in well-known shapes (issue 19).

Why package data: ``iomt-fhir templates``, the mapping debugger's example menu and the tests
read the same files from the installed package, so a pack is tested exactly as users get it.
Each pack is a folder of plain iomt-fhir-format files: ``devicecontent.json``,
``fhirmapping.json``, ``messages.jsonl`` (sample messages, one body a line, written by us from
the source's published documentation) and ``README.md`` (its first line is the title, its
first paragraph the one-line summary ``templates list`` prints).
"""
import json
import os
from importlib import resources
from typing import Dict, List, Tuple

from transforms.mapping.profiles import strip_profiles

#: every pack, in the order ``templates list`` prints them
PACKS = ("openmhealth", "apple-health", "fitbit", "withings", "iot-central")
FILES = ("devicecontent.json", "fhirmapping.json", "messages.jsonl", "README.md")
#: further sample files a pack may have, and the ``--input-format`` they are read with
EXTRA_SAMPLES = {"messages-iothub.jsonl": "envelope"}


class PackError(Exception):
    """An unknown pack or an export that would overwrite files: one line for the user."""


def _dir(name: str):
    if name not in PACKS:
        raise PackError(f"no template pack '{name}' (packs: {', '.join(PACKS)})")
    return resources.files(__package__).joinpath(name)


def files(name: str) -> Tuple[str, ...]:
    """The pack's files: ``FILES`` and the ``EXTRA_SAMPLES`` it has."""
    d = _dir(name)
    return FILES + tuple(f for f in EXTRA_SAMPLES if d.joinpath(f).is_file())


def read(name: str, filename: str) -> str:
    """The text of one of a pack's ``FILES``."""
    return _dir(name).joinpath(filename).read_text(encoding="utf-8")


def summary(name: str) -> Tuple[str, str]:
    """(title, first paragraph as one line) of the pack's README."""
    lines = read(name, "README.md").split("\n")
    title = lines[0].lstrip("# ").strip()
    para: List[str] = []
    for line in lines[1:]:
        if not line.strip():
            if para:
                break
            continue
        para.append(line.strip())
    return title, " ".join(para)


def types(name: str) -> List[Dict[str, str]]:
    """One row per FHIR template: type, LOINC code, unit, profiles (what ``show`` tabulates)."""
    rows = []
    for child in json.loads(read(name, "fhirmapping.json"))["template"]:
        t = child["template"]
        value = t.get("value") or {}
        units = [value.get("code") or value.get("unit") or ""] if value else sorted(
            {c["value"].get("code", "") for c in t.get("components", [])})
        rows.append({"type": t["typeName"],
                     "code": ", ".join(c.get("code", "") for c in t.get("codes", [])),
                     "value": value.get("valueType") or "components",
                     "unit": ", ".join(u for u in units if u),
                     "profiles": ", ".join(p.rsplit("/", 1)[-1] for p in t.get("profiles", []))})
    return rows


def export(name: str, target: str, medtech: bool = False, force: bool = False) -> List[str]:
    """Write the pack's files into ``target`` (created); returns the paths written.

    ``medtech``: the FHIR mapping without our ``profiles`` extension, so MedTech and
    iomt-fhir load it. Existing files are not overwritten unless ``force``.
    """
    names = files(name)
    texts = {f: read(name, f) for f in names}
    if medtech:
        texts["fhirmapping.json"] = json.dumps(
            strip_profiles(json.loads(texts["fhirmapping.json"])), indent=2) + "\n"
    paths = [os.path.join(target, f) for f in names]
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not force:
        raise PackError(f"{', '.join(existing)} already exist(s); use --force to overwrite")
    os.makedirs(target, exist_ok=True)
    for f, path in zip(names, paths):
        with open(path, "w", encoding="utf-8") as out:
            out.write(texts[f])
    return paths
