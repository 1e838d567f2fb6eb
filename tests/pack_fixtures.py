"""The template packs' samples and what they must become (shared by the pack tests).

``EXPECTED`` is written from the sample messages by hand (times converted to UTC, units as
each pack's README says); ``pack_observations`` runs a pack through the same core as
``iomt-fhir normalize`` / ``transform``.
"""
from pipelines import packs
from transforms.mapping.device_templates import load_device_mapping
from transforms.mapping.fhir_templates import load_fhir_mapping
from transforms.mapping.offline import normalize_lines, numbered_lines, observations_for

BP = "bloodpressure"
# (type, patient, device, time (UTC, to the second), (value, UCUM code) | components | SampledData start)
EXPECTED = {
    "openmhealth": [
        ("heartrate", "omh-user-1", "omh-user-1:Polar H10", "2026-03-02T12:15:00", (62, "/min")),
        (BP, "omh-user-1", "omh-user-1:Omron HEM-7600T", "2026-03-02T12:15:30", (("systolic", 118), ("diastolic", 76))),
        ("bodyweight", "omh-user-1", "omh-user-1:Withings Body+", "2026-03-02T11:50:00", (72.5, "kg")),
        # 160 lb x 0.45359237, in binary floating point
        ("bodyweight", "omh-user-2", "omh-user-2:Withings Body+", "2026-03-03T11:52:00", (72.57477920000001, "kg")),
        ("bodyheight", "omh-user-1", "omh-user-1:Seca 213", "2026-03-02T11:51:00", (178, "cm")),
        ("bmi", "omh-user-1", "omh-user-1:Withings Body+", "2026-03-02T11:52:00", (22.9, "kg/m2")),
        ("bodytemperature", "omh-user-1", "omh-user-1:Braun ThermoScan", "2026-03-02T12:20:00", (36.8, "Cel")),
        ("bodytemperature", "omh-user-2", "omh-user-2:Braun ThermoScan", "2026-03-03T12:20:00", (37.5, "Cel")),  # 99.5 F
        ("oxygensaturation", "omh-user-1", "omh-user-1:Nonin 3230", "2026-03-02T12:21:00", (97, "%")),
        ("respiratoryrate", "omh-user-1", "omh-user-1:Nonin 3230", "2026-03-02T12:22:00", (14, "/min")),
        # intervals at their start: start/end, then start + duration (schema 1.0: a bare number)
        ("stepcount", "omh-user-1", "omh-user-1:Fitbit Charge 6", "2026-03-02T13:00:00", (4210, "{steps}")),
        ("stepcount", "omh-user-1", "omh-user-1:Fitbit Charge 6", "2026-03-02T14:00:00", (1880, "{steps}")),
        ("bloodglucose", "omh-user-1", "omh-user-1:Accu-Chek Guide", "2026-03-02T12:00:00", (96, "mg/dL")),
        ("bloodglucose-mmol", "omh-user-2", "omh-user-2:Accu-Chek Guide", "2026-03-03T12:00:00", (5.4, "mmol/L")),
        ("sleepduration", "omh-user-1", "omh-user-1:Oura Ring", "2026-03-02T04:10:00", (7.5, "h")),  # 450 min
    ],
    "apple-health": [
        ("heartrate", "apple-user-1", "apple-user-1:Apple Watch", "2026-03-02T06:15:12", (58, "/min")),
        (BP, "apple-user-1", "apple-user-1:Health Mate", "2026-03-02T06:30:00", (("systolic", 121), ("diastolic", 79))),
        ("bodyweight", "apple-user-1", "apple-user-1:Health Mate", "2026-03-02T05:45:00", (68.2, "kg")),
        ("bodyweight-lb", "apple-user-2", "apple-user-2:Health Mate", "2026-03-02T14:45:00", (181.4, "[lb_av]")),
        ("bodyheight", "apple-user-1", "apple-user-1:Health", "2026-03-01T11:00:00", (171, "cm")),
        ("bodyheight-in", "apple-user-2", "apple-user-2:Health", "2026-03-01T20:00:00", (70, "[in_i]")),
        ("bmi", "apple-user-1", "apple-user-1:Health Mate", "2026-03-02T05:45:00", (23.3, "kg/m2")),
        ("bodytemperature", "apple-user-1", "apple-user-1:Health", "2026-03-02T06:40:00", (36.6, "Cel")),
        ("bodytemperature-f", "apple-user-2", "apple-user-2:Health", "2026-03-02T15:40:00", (98.4, "[degF]")),
        ("oxygensaturation", "apple-user-1", "apple-user-1:Apple Watch", "2026-03-02T02:12:40", (98, "%")),  # 0.98
        ("respiratoryrate", "apple-user-1", "apple-user-1:Apple Watch", "2026-03-02T02:14:00", (15, "/min")),
        ("stepcount", "apple-user-1", "apple-user-1:iPhone", "2026-03-02T07:05:00", (312, "{steps}")),
        ("bloodglucose", "apple-user-1", "apple-user-1:Dexcom G7", "2026-03-02T06:05:00", (102, "mg/dL")),
    ],
    "fitbit": [
        ("heartrate", "7QX3KB", "fitbit-7QX3KB", "2026-03-02T15:00:00", (64, "/min")),
        ("heartrate", "7QX3KB", "fitbit-7QX3KB", "2026-03-02T15:01:00", (66, "/min")),
        ("heartrate", "7QX3KB", "fitbit-7QX3KB", "2026-03-02T15:02:00", (71, "/min")),
        ("stepcount", "7QX3KB", "fitbit-7QX3KB", "2026-03-02T15:00:00", "0 23 34" + " E" * 57),
        ("oxygensaturation", "7QX3KB", "fitbit-7QX3KB", "2026-03-02T10:10:00", (96.1, "%")),
        ("oxygensaturation", "7QX3KB", "fitbit-7QX3KB", "2026-03-02T10:11:00", (95.4, "%")),
        ("bodyweight", "7QX3KB", "fitbit-7QX3KB", "2026-03-02T14:40:12", (74.8, "kg")),
        ("bmi", "7QX3KB", "fitbit-7QX3KB", "2026-03-02T14:40:12", (24.1, "kg/m2")),
    ],
    "withings": [
        ("bodyweight", "4111222", "a1b2c3d4e5", "2026-03-02T07:00:00", (70.45, "kg")),  # 70450 x 10^-3
        ("bodyheight", "4111222", "a1b2c3d4e5", "2026-03-02T07:00:00", (178.5, "cm")),  # 1785 x 10^-3 m
        (BP, "4111222", "f6e7d8c9b0", "2026-03-02T07:15:00", (("systolic", 124), ("diastolic", 81))),
        ("heartrate", "4111222", "f6e7d8c9b0", "2026-03-02T07:15:00", (67, "/min")),
        ("bodytemperature", "4111222", "withings-manual-4111222", "2026-03-02T07:30:00", (36.9, "Cel")),
        ("oxygensaturation", "4111222", "0a9b8c7d6e", "2026-03-02T07:45:00", (97, "%")),
    ],
    "iot-central": [
        ("heartrate", "ic-patient-1", "patch-001", "2026-03-02T12:00:04", (74, "/min")),
        ("respiratoryrate", "ic-patient-1", "patch-001", "2026-03-02T12:00:04", (16, "/min")),
        ("bodytemperature", "ic-patient-1", "patch-001", "2026-03-02T12:00:04", (36.9, "Cel")),
        ("oxygensaturation", "ic-patient-1", "patch-001", "2026-03-02T12:00:09", (98, "%")),
        (BP, "ic-patient-1", "patch-001", "2026-03-02T12:00:09", (("systolic", 117), ("diastolic", 75))),
        ("heartrate", "ic-patient-2", "patch-002", "2026-03-02T12:00:05", (88, "/min")),
        ("oxygensaturation", "ic-patient-2", "patch-002", "2026-03-02T12:00:05", (95, "%")),
    ],
}
LOINC = {"heartrate": "8867-4", BP: "85354-9", "bodyweight": "29463-7", "bodyweight-lb": "29463-7",
         "bodyheight": "8302-2", "bodyheight-in": "8302-2", "bmi": "39156-5",
         "bodytemperature": "8310-5", "bodytemperature-f": "8310-5", "oxygensaturation": "2708-6",
         "respiratoryrate": "9279-1", "stepcount": "55423-8", "bloodglucose": "2339-0",
         "bloodglucose-mmol": "15074-8", "sleepduration": "93832-4"}
PROFILE = {"heartrate": "heartrate", BP: "bp", "bodyweight": "bodyweight", "bodyweight-lb": "bodyweight",
           "bodyheight": "bodyheight", "bodyheight-in": "bodyheight", "bmi": "bmi",
           "bodytemperature": "bodytemp", "bodytemperature-f": "bodytemp",
           "oxygensaturation": "oxygensat", "respiratoryrate": "resprate"}


# further sample files: (pack, file) -> (input format, expected rows as in EXPECTED)
EXPECTED_EXTRA = {
    ("iot-central", "messages-iothub.jsonl"): ("envelope", [
        ("heartrate", "hub-patient-1", "monitor-17", "2026-03-02T12:05:00", (71, "/min")),
        ("respiratoryrate", "hub-patient-1", "monitor-17", "2026-03-02T12:05:00", (15, "/min")),
        ("bodytemperature", "hub-patient-1", "monitor-17", "2026-03-02T12:05:00", (37.1, "Cel")),
        ("oxygensaturation", "hub-patient-1", "monitor-17", "2026-03-02T12:06:00", (96, "%")),
        (BP, "hub-patient-1", "monitor-17", "2026-03-02T12:06:00", (("systolic", 131), ("diastolic", 84))),
    ]),
}


def samples():
    """Every (pack, sample file, input format, expected rows)."""
    out = [(name, "messages.jsonl", "body", EXPECTED[name]) for name in packs.PACKS]
    return out + [(name, f, fmt, rows) for (name, f), (fmt, rows) in EXPECTED_EXTRA.items()]


def pack_observations(name, messages=None, input_format="body"):
    """(Observations, failures) of a pack's samples through the same core as normalize/transform."""
    device = load_device_mapping(packs.read(name, "devicecontent.json"))
    fhir = load_fhir_mapping(packs.read(name, "fhirmapping.json"))
    assert device.valid and fhir.valid, (device.errors, fhir.errors)
    text = packs.read(name, "messages.jsonl") if messages is None else messages
    numbered, failures = [], []
    for line, measurements, exc in normalize_lines(device, numbered_lines(text.split("\n")), input_format):
        if exc is not None:
            failures.append((line, exc))
            continue
        numbered += [(line, m) for m in measurements]
    observations = []
    for obs, failure in observations_for(fhir, numbered):
        if failure is not None:
            failures.append(failure)
        else:
            observations.append(obs)
    return observations, failures


def summary(obs):
    time = obs.get("effectiveDateTime") or obs["effectivePeriod"]["start"]
    if "valueQuantity" in obs:
        value = (obs["valueQuantity"]["value"], obs["valueQuantity"]["code"])
    elif "valueSampledData" in obs:
        value = obs["valueSampledData"]["data"]
    else:
        value = tuple((c["code"]["text"], c["valueQuantity"]["value"]) for c in obs["component"])
    return (obs["code"]["text"], obs["subject"]["reference"][len("Patient/"):],
            obs["device"]["reference"][len("Device/"):], time[:19], value)
