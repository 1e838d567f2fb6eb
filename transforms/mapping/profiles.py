"""The ``profiles`` field of a CodeValueFhir template (our extension): HL7's vital-signs profiles.

Why: servers and apps that check profiles (FHIR R4's vital-signs profiles, US Core on top of
them) reject Observations without the vital-signs category, the profile's LOINC code and a
UCUM unit, and MedTech's CodeValueFhir cannot declare a profile. A template that lists
``"profiles": [URL, ...]`` gets ``meta.profile`` on its Observations, and is checked when the
mapping loads: every rule of the profile the template decides must hold, so a mapping that
cannot produce a conforming Observation is refused before any data flows.

What the check covers (from the R4 StructureDefinitions, ``hl7.org/fhir/R4/observation-vitalsigns``):
category ``vital-signs``; the profile's LOINC code among the template's codes; a Quantity value
with the UCUM system and a unit code the profile allows (blood pressure: no value, systolic and
diastolic components in ``mm[Hg]``); ``periodInterval`` 0. The last one is ours: the vital-signs
invariant vs-1 fails on an ``effectivePeriod`` in HL7's own validator, so a profiled template
writes ``effectiveDateTime`` (one reading, one time) instead of the reference's instant Period.
``subject`` is the data's: an Observation without a patient cannot conform, so building one
for a profiled template is a ``FhirDataMappingException`` (a dead letter), never a silent
non-conforming write.

MedTech and iomt-fhir reject an unknown template field, so a mapping with ``profiles`` does not
load there; ``iomt-fhir validate --medtech`` reports it and ``iomt-fhir templates export
--medtech`` writes a pack without it.
"""
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from transforms.mapping.errors import FhirDataMappingException

BASE = "http://hl7.org/fhir/StructureDefinition/"
VITALSIGNS = BASE + "vitalsigns"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
VITAL_SIGNS = "vital-signs"

# The UCUM codes of the R4 value sets the profiles bind (required) or fix.
_BODY_WEIGHT = ("kg", "g", "[lb_av]")  # ucum-bodyweight
_BODY_LENGTH = ("cm", "[in_i]")  # ucum-bodylength
_BODY_TEMP = ("Cel", "[degF]")  # ucum-bodytemp
_VITALS_COMMON = ("%", "cm", "[in_i]", "kg", "g", "[lb_av]", "Cel", "[degF]", "mm[Hg]", "/min",
                  "kg/m2", "m2")  # ucum-vitals-common


class Profile(NamedTuple):
    """What one vital-signs profile asks of an Observation that a template decides."""

    name: str
    code: Optional[str]  # the LOINC code the profile fixes; None: any (the vitalsigns base)
    units: Tuple[str, ...]  # UCUM codes allowed for valueQuantity; () = no value (bp)
    components: Tuple[Tuple[str, str], ...] = ()  # (LOINC code, UCUM code) required components


PROFILES: Dict[str, Profile] = {BASE + p.name: p for p in (
    Profile("vitalsigns", None, _VITALS_COMMON),
    Profile("heartrate", "8867-4", ("/min",)),
    Profile("resprate", "9279-1", ("/min",)),
    Profile("oxygensat", "2708-6", ("%",)),
    Profile("bodytemp", "8310-5", _BODY_TEMP),
    Profile("bodyheight", "8302-2", _BODY_LENGTH),
    Profile("headcircum", "9843-4", _BODY_LENGTH),
    Profile("bodyweight", "29463-7", _BODY_WEIGHT),
    Profile("bmi", "39156-5", ("kg/m2",)),
    Profile("bp", "85354-9", (), (("8480-6", "mm[Hg]"), ("8462-4", "mm[Hg]"))),
)}


def as_profiles(value: Any) -> Tuple[str, ...]:
    """The field's converter: a list of canonical URLs (strings)."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise TypeError("expected an array of profile URLs")
    return tuple(v.strip() for v in value)


def _has_code(codings: Sequence[dict], system: str, code: str) -> bool:
    return any(c.get("system") == system and c.get("code") == code for c in codings)


def _quantity_problem(value, units: Tuple[str, ...], what: str) -> Optional[str]:
    if value is None or value.value_type != "Quantity":
        return f"{what} needs a Quantity value"
    if value.system != UCUM:
        return f"{what} needs the UCUM system '{UCUM}' on its Quantity"
    if value.code not in units:
        return f"{what} needs a UCUM unit code among {', '.join(units)} (got {value.code!r})"
    if not value.unit:
        return f"{what} needs a unit text on its Quantity"
    return None


def problems(template) -> List[str]:
    """Why ``template`` (a loaded CodeValueTemplate) cannot satisfy its profiles; [] when it can."""
    out: List[str] = []
    for url in template.profiles:
        profile = PROFILES.get(url)
        if profile is None:
            out.append(f"Unknown profile '{url}'. Known: {', '.join(sorted(PROFILES))}.")
            continue
        where = f"Profile '{profile.name}'"
        if not any(_has_code(c.get("coding", ()), CATEGORY_SYSTEM, VITAL_SIGNS)
                   for c in template.categories):
            out.append(f"{where} needs a category coding {CATEGORY_SYSTEM}|{VITAL_SIGNS}.")
        if profile.code and not _has_code(template.codings, LOINC, profile.code):
            out.append(f"{where} needs the code {LOINC}|{profile.code}.")
        if template.period_interval != 0:
            out.append(f"{where} needs periodInterval 0 (one reading per Observation, "
                       "written with effectiveDateTime).")
        if profile.components:
            if template.value is not None:
                out.append(f"{where} allows no value; its readings are components.")
            for code, unit in profile.components:
                comp = next((c for c in template.components if _has_code(c.codings, LOINC, code)),
                            None)
                if comp is None:
                    out.append(f"{where} needs a component with the code {LOINC}|{code}.")
                    continue
                problem = _quantity_problem(comp.value, (unit,), f"{where}, component {code},")
                if problem:
                    out.append(problem + ".")
        elif profile.units:
            problem = _quantity_problem(template.value, profile.units, where)
            if problem:
                out.append(problem + ".")
    return out


def instant(template, start: int, end: int) -> bool:
    """Whether an Observation of ``template`` over [start, end] is written with effectiveDateTime."""
    return bool(template.profiles) and start == end


def require_subject(template, patient: Optional[str]) -> None:
    """A profiled Observation needs a subject: refuse (dead letter) rather than write it without."""
    if template.profiles and not patient:
        raise FhirDataMappingException(
            f"Template '{template.type_name}' declares profiles, which require a subject, "
            "but the measurement has no patient.")


def with_meta_profile(template, obs: dict) -> dict:
    """``obs`` with the template's profiles in ``meta.profile`` (others kept), in place."""
    if template.profiles:
        meta = dict(obs.get("meta") or {})
        have = list(meta.get("profile") or [])
        meta["profile"] = have + [p for p in template.profiles if p not in have]
        obs["meta"] = meta
    return obs


def strip_profiles(fhir_mapping: dict) -> dict:
    """A parsed ``fhirmapping.json`` without ``profiles`` fields: what MedTech loads."""
    out = dict(fhir_mapping)
    out["template"] = []
    for child in fhir_mapping.get("template", []):
        child = dict(child)
        child["template"] = {k: v for k, v in child.get("template", {}).items()
                             if k.lower() != "profiles"}
        out["template"].append(child)
    return out
