"""The template packs (issue 19): each pack's samples -> the expected Observations
(pack_fixtures.EXPECTED, written by hand); the ``templates`` command; the debugger's menu."""
import json

import pytest

from pack_fixtures import BP, EXPECTED, LOINC, PROFILE, pack_observations, samples, summary
from pipelines import cli, packs
from pipelines.debugger.examples import examples
from transforms.mapping.fhir_templates import load_fhir_mapping
from transforms.mapping.profiles import BASE

@pytest.mark.parametrize("name, sample, input_format, expected", samples(), ids=lambda v: v if isinstance(v, str) else "")
def test_pack_samples_become_the_expected_observations(name, sample, input_format, expected):
    observations, failures = pack_observations(name, packs.read(name, sample), input_format)
    assert failures == []
    assert sorted(map(summary, observations), key=repr) == sorted(expected, key=repr)
    for obs in observations:
        type_name = obs["code"]["text"]
        codes = [(c["system"], c["code"]) for c in obs["code"]["coding"]]
        assert ("http://loinc.org", LOINC[type_name]) in codes
        profile = PROFILE.get(type_name)
        if profile:  # vital signs: profile, category, UCUM, one time
            assert obs["meta"]["profile"] == [BASE + profile]
            assert obs["category"][0]["coding"][0]["code"] == "vital-signs"
            assert "effectiveDateTime" in obs and "effectivePeriod" not in obs
            quantities = [obs["valueQuantity"]] if "valueQuantity" in obs else \
                [c["valueQuantity"] for c in obs["component"]]
            assert all(q["system"] == "http://unitsofmeasure.org" for q in quantities)
        else:
            assert "meta" not in obs and "effectivePeriod" in obs


def test_iot_hub_time_is_the_creation_time_else_the_enqueued_time():
    observations, _ = pack_observations("iot-central", packs.read("iot-central", "messages-iothub.jsonl"), "envelope")
    assert sorted({o["effectiveDateTime"] for o in observations}) == [
        "2026-03-02T12:05:00.2500000Z", "2026-03-02T12:06:00.4000000Z"]


def test_every_listed_vital_sign_of_the_issue_is_covered_by_openmhealth():
    schemas = {t["template"]["typeMatchExpression"].split("'")[1]
               for t in json.loads(packs.read("openmhealth", "devicecontent.json"))["template"]}
    assert schemas == {"heart-rate", "blood-pressure", "body-weight", "body-height", "body-mass-index",
                       "body-temperature", "oxygen-saturation", "respiratory-rate", "step-count",
                       "blood-glucose", "sleep-duration"}


@pytest.mark.parametrize("name, n, unit_in", [
    ("openmhealth", 2, lambda m: m["body"]["body_weight"].update(value=11, unit="st")),
    ("apple-health", 2, lambda m: m.update(value="11", unit="st")),
    ("apple-health", 0, lambda m: m.update(unit="count/s")),  # heart rate: one unit only
])
def test_a_unit_the_pack_does_not_take_is_a_dead_letter_not_a_wrong_number(name, n, unit_in):
    lines = packs.read(name, "messages.jsonl").split("\n")
    other = json.loads(lines[n])
    unit_in(other)
    observations, failures = pack_observations(name, "\n".join([lines[n + 1], json.dumps(other)]))
    assert len(observations) == 1
    ((line, exc),) = failures
    assert line == 2 and type(exc).__name__ == "IncompatibleDataException"
    assert "Unable to extract required value" in str(exc)


def test_templates_list_show_and_export(tmp_path, capsys):
    assert cli.main(["templates", "list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(packs.PACKS)

    assert cli.main(["templates", "show", "withings"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("# Withings measure groups") and "85354-9" in shown and "mm[Hg]" in shown

    assert cli.main(["templates", "export", "fitbit", str(tmp_path / "fb")]) == 0
    for f in packs.FILES:
        assert (tmp_path / "fb" / f).read_text() == packs.read("fitbit", f)
    assert cli.main(["templates", "export", "iot-central", str(tmp_path / "ic")]) == 0
    assert sorted(p.name for p in (tmp_path / "ic").iterdir()) == sorted(packs.FILES + ("messages-iothub.jsonl",))
    assert cli.main(["templates", "export", "fitbit", str(tmp_path / "fb")]) == 2  # no silent overwrite
    assert "--force" in capsys.readouterr().err
    assert cli.main(["templates", "show", "no-such-pack"]) == 2
    assert "no template pack 'no-such-pack'" in capsys.readouterr().err


@pytest.mark.parametrize("name", packs.PACKS)
def test_medtech_export_has_no_extension_and_validate_says_which_do(tmp_path, capsys, name):
    plain, medtech = tmp_path / "plain", tmp_path / "medtech"
    assert cli.main(["templates", "export", name, str(plain)]) == 0
    assert cli.main(["templates", "export", name, str(medtech), "--medtech"]) == 0
    capsys.readouterr()
    assert "profiles" not in (medtech / "fhirmapping.json").read_text()
    fhir = load_fhir_mapping((medtech / "fhirmapping.json").read_text())
    assert fhir.valid and not any(t.profiles for t in fhir.templates())

    def validate(d, *extra):
        rc = cli.main(["validate", "--device-mapping", str(d / "devicecontent.json"),
                       "--fhir-mapping", str(d / "fhirmapping.json"), *extra])
        return rc, capsys.readouterr().err

    assert validate(plain) == (0, "valid\n")
    assert validate(medtech, "--medtech") == (0, "valid\n")
    rc, err = validate(plain, "--medtech")
    assert rc == 2 and "'profiles', an iomt-fhir-beam extension" in err


def test_the_debugger_menu_offers_every_pack():
    offered = {e["id"]: e for e in examples()}
    for name in packs.PACKS:
        e = offered[f"pack-{name}"]
        assert e["deviceMapping"] == packs.read(name, "devicecontent.json")
        assert e["messages"] == packs.read(name, "messages.jsonl") and e["inputFormat"] == "body"
    hub = offered["pack-iot-central-messages-iothub"]
    assert hub["inputFormat"] == "envelope" and hub["messages"] == packs.read("iot-central", "messages-iothub.jsonl")
