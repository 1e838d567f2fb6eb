"""What a live stream's messages should become on the FHIR server, and what they did become.

Shared by the stream end-to-end tests (Pub/Sub, Kafka, Event Hubs), ``scripts/soak_stream`` and
the stream load benchmark: the example mapping with
one Observation per reading (``fhir_mapping_text``), so each reading is findable on its own;
``reading`` reduces an Observation to what it says (independent of server ids), so the pure
mapping core's offline result (``transforms.mapping.offline``) and the server's Observations
compare as multisets: a reading missing is lost, one counted twice was written twice.
"""
import collections
import json
import pathlib
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import requests

from transforms.mapping import identifiers
from transforms.mapping.device_templates import load_device_mapping
from transforms.mapping.fhir_templates import load_fhir_mapping
from transforms.mapping.offline import observations_for

REPO = pathlib.Path(__file__).resolve().parents[2]


def fhir_mapping_text() -> str:
    """The example mapping with every type one Observation per reading, so each reading is
    findable on its own (the example's minute/hour SampledData slots merge readings by design)."""
    mapping = json.loads((REPO / "templates" / "fhirmapping.json").read_text(encoding="utf-8"))
    for entry in mapping["template"]:
        t = entry["template"]
        t["periodInterval"] = 0
        if (t.get("value") or {}).get("valueType") == "SampledData":
            sd = t["value"]
            # the unit as text only: "count/min" is no UCUM code (HAPI's validator refuses it as one)
            t["value"] = {"valueType": "Quantity", "valueName": sd["valueName"], "unit": sd.get("unit", "1")}
    return json.dumps(mapping)


def reading(obs: dict, device_of: dict) -> tuple:
    """What an Observation says, independent of server ids and bookkeeping."""
    device = obs["device"]["reference"].split("/", 1)[1]
    when = obs.get("effectiveDateTime") or json.dumps(obs.get("effectivePeriod"), sort_keys=True)
    value = {k: obs[k] for k in ("valueQuantity", "valueCodeableConcept", "valueString") if k in obs}
    components = sorted(json.dumps({k: c[k] for k in c if k.startswith("value") or k == "code"}, sort_keys=True)
                        for c in obs.get("component") or [])
    code = sorted(c.get("code") for c in obs["code"]["coding"])
    return (device_of.get(device, device), when, json.dumps(value, sort_keys=True), tuple(components), tuple(code))


def expected_readings(device_text: str, fhir_text: str, messages: Iterable[Tuple[object, Callable]]
                      ) -> Tuple[collections.Counter, List[object]]:
    """``(readings the good messages should become, ids of the messages normalization refuses)``.

    ``messages``: ``(id, to_event)`` pairs, ``to_event()`` giving the message's ``DeviceEvent``."""
    device_mapping, fhir_mapping = load_device_mapping(device_text), load_fhir_mapping(fhir_text)
    assert device_mapping.valid and fhir_mapping.valid
    numbered, bad = [], []
    for n, (mid, to_event) in enumerate(messages):
        event = to_event()
        try:
            measurements = device_mapping.get_measurements(event.to_message(), event.ingestion_time)
        except Exception:  # the pipeline dead-letters these (normalization)
            bad.append(mid)
            continue
        numbered += [(n, m) for m in measurements]
    offline = list(observations_for(fhir_mapping, numbered))
    assert all(failure is None for _, failure in offline)
    want = collections.Counter(reading(dict(o, device={"reference": "Device/" + o["device"]["reference"]
                                                        .split("/", 1)[1]}), {}) for o, _ in offline)
    return want, bad


def device_ids(device_names: Iterable[str], system: Optional[str]) -> Dict[str, str]:
    """Device resource id (Create mode, ``--device-identifier-system``) -> device identifier."""
    return {identifiers.device_resource_id(d, system): d for d in device_names}


def server_readings(base: str, device_of: Dict[str, str], timeout: float = 10.0) -> collections.Counter:
    """The readings the server's Observations of these devices hold (one search per device;
    ``timeout`` per search: a server still catching up on a soak's writes answers slowly)."""
    got = collections.Counter()
    session = requests.Session()
    for resource_id in device_of:
        r = session.get(f"{base}/Observation", params={"device": f"Device/{resource_id}", "_count": "1000"},
                         timeout=timeout)
        r.raise_for_status()
        got.update(reading(e["resource"], device_of) for e in r.json().get("entry", []))
    return got


def compare(want: collections.Counter, got: collections.Counter) -> Optional[str]:
    """None when every reading is on the server exactly once; else what is lost or doubled
    (its examples hold readings: for a test's made-up messages, never for a log)."""
    if got == want and all(n == 1 for n in got.values()):
        return None
    return (f"{sum((want - got).values())} readings lost, e.g. {list(want - got)[:2]}; "
            f"{sum((got - want).values())} extra or duplicated, e.g. {list(got - want)[:2]}")
