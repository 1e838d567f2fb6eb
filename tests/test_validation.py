"""``transforms.mapping.validation``: validate() and cross_check() (own mappings + vectors F12, N15)."""
import json

import pytest
from conftest import load_json, vector_dir

from transforms.mapping.device_templates import load_device_mapping
from transforms.mapping.fhir_templates import load_fhir_mapping
from transforms.mapping.template_json import TemplateError
from transforms.mapping.validation import Problem, cross_check, validate


def device(*templates) -> str:
    """A CollectionContent text, one JsonPathContent per (type, [value names]), one per line."""
    items = []
    for type_name, values in templates:
        items.append(json.dumps({"templateType": "JsonPathContent", "template": {
            "typeName": type_name, "typeMatchExpression": f"$..[?(@{type_name})]",
            "deviceIdExpression": "$.d", "timestampExpression": "$.t",
            "values": [{"required": True, "valueExpression": f"$.{v}", "valueName": v}
                       for v in values]}}))
    return '{"templateType": "CollectionContent", "template": [\n' + ",\n".join(items) + "\n]}\n"


def fhir(*templates) -> str:
    """A CollectionFhir text, one CodeValueFhir per (type, value name or None, [component names])."""
    items = []
    for type_name, value, components in templates:
        t = {"typeName": type_name, "codes": [{"code": "c", "system": "s"}]}
        if value:
            t["value"] = {"valueType": "String", "valueName": value}
        if components:
            t["components"] = [{"codes": [], "value": {"valueType": "String", "valueName": c}}
                               for c in components]
        items.append(json.dumps({"templateType": "CodeValueFhir", "template": t}))
    return '{"templateType": "CollectionFhir", "template": [\n' + ",\n".join(items) + "\n]}\n"


def check(dev_text: str, fhir_text: str):
    d, f = load_device_mapping(dev_text), load_fhir_mapping(fhir_text)
    assert d.valid and f.valid, (d.errors, f.errors)
    return cross_check(d, f)


# --------------------------------------------------------------------------------------------
# cross_check
# --------------------------------------------------------------------------------------------
def test_cross_check_all_matched_is_silent():
    assert check(device(("hr", ["hr"]), ("bp", ["sys", "dia"])),
                 fhir(("hr", "hr", []), ("bp", None, ["dia", "sys"]))) == []


def test_cross_check_type_names_match_case_insensitively():
    # The reference's FhirLookupTemplate is a case-insensitive dictionary.
    assert check(device(("HeartRate", ["hr"])), fhir(("heartrate", "hr", []))) == []


def test_cross_check_value_names_are_case_sensitive():
    warnings = check(device(("hr", ["HR"])), fhir(("hr", "hr", [])))
    assert warnings == [TemplateError(
        "The value [HR] in Device Mapping [hr] is not represented within the Fhir Template of "
        "type [hr]. Available values are: [hr]. No value will appear inside of Observations.",
        2, 0, "warning")]


def test_cross_check_missing_fhir_template():
    warnings = check(device(("hr", ["hr"]), ("spo2", ["spo2"])), fhir(("hr", "hr", [])))
    assert warnings == [TemplateError(
        "No matching Fhir Template exists for Device Mapping [spo2]. Ensure case matches. "
        "Available Fhir Templates: [hr].", 3, 0, "warning")]


def test_cross_check_fhir_template_nothing_feeds():
    warnings = check(device(("hr", ["hr"])), fhir(("hr", "hr", []), ("temp", "t", [])))
    assert warnings == [TemplateError(
        "Fhir Template [temp] has no matching Device Mapping; it will never be used",
        3, 0, "warning")]


def test_cross_check_value_and_components_both_count():
    # A template with both a value and components writes both into the Observation, so a
    # device value used by either is represented. (The reference's validator looks only at
    # the components then, and would warn about a value the Observation does carry.)
    assert check(device(("bp", ["mean", "sys"])), fhir(("bp", "mean", ["sys"]))) == []


def test_cross_check_lists_available_values_in_template_order():
    warnings = check(device(("bp", ["x"])), fhir(("bp", None, ["sys", "dia", "pulse"])))
    assert len(warnings) == 1
    assert "Available values are: [sys ,dia ,pulse]." in warnings[0].message


def test_cross_check_several_problems_in_device_order():
    warnings = check(device(("a", ["a1", "a2"]), ("b", ["b1"]), ("c", ["c1"])),
                     fhir(("c", "zz", []), ("a", "a2", [])))
    assert [(w.line, w.message.split(".")[0]) for w in warnings] == [
        (2, "The value [a1] in Device Mapping [a] is not represented within the Fhir Template of type [a]"),
        (3, "No matching Fhir Template exists for Device Mapping [b]"),
        (4, "The value [c1] in Device Mapping [c] is not represented within the Fhir Template of type [c]"),
    ]
    assert all(w.severity == "warning" for w in warnings)


# --------------------------------------------------------------------------------------------
# validate()
# --------------------------------------------------------------------------------------------
def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_validate_valid_pair_has_no_problems(tmp_path):
    dm = write(tmp_path, "dm.json", device(("hr", ["hr"])))
    fm = write(tmp_path, "fm.json", fhir(("hr", "hr", [])))
    assert validate(dm, fm) == []
    assert validate(dm) == []


def test_validate_problems_name_their_file(tmp_path):
    dm = write(tmp_path, "dm.json", device(("hr", ["hr"]), ("spo2", ["spo2"])))
    fm = write(tmp_path, "fm.json", fhir(("hr", "hr", []), ("temp", "t", [])))
    problems = validate(dm, fm)
    assert [str(p) for p in problems] == [
        f"{dm}:3:0: warning: No matching Fhir Template exists for Device Mapping [spo2]. "
        "Ensure case matches. Available Fhir Templates: [hr ,temp].",
        f"{fm}:3:0: warning: Fhir Template [temp] has no matching Device Mapping; it will never be used",
    ]
    assert [p.file for p in problems] == [dm, fm]


def test_validate_no_cross_check_when_a_mapping_has_errors(tmp_path):
    # The FHIR hr template has an unknown field, so it is not registered; a cross-check
    # would then wrongly say "No matching Fhir Template ... [hr]".
    dm = write(tmp_path, "dm.json", device(("hr", ["hr"])))
    bad = fhir(("hr", "hr", [])).replace('"typeName": "hr"', '"typeName": "hr", "oops": 1')
    fm = write(tmp_path, "fm.json", bad)
    problems = validate(dm, fm)
    assert len(problems) == 1
    assert problems[0].file == fm
    assert problems[0].error.severity == "error"
    assert problems[0].error.message == \
        "Could not find member 'oops' on object of type 'CodeValueFhirTemplate'."
    assert problems[0].error.line == 2


def test_validate_errors_in_both_files_sorted_by_line(tmp_path):
    dm_text = device(("a", ["a"]), ("b", ["b"])).replace('"deviceIdExpression": "$.d", ', "")
    dm = write(tmp_path, "dm.json", dm_text)
    fm = write(tmp_path, "fm.json", '{"templateType": "CollectionFhir", "template": [\n'
                                    '{"templateType": "Nope", "template": {}},\n'
                                    '{"templateType": "CodeValueFhir", "template": {"codes": []}}\n]}')
    got = [(p.file, p.error.line, p.error.message) for p in validate(dm, fm)]
    assert got == [
        (dm, 2, "Required property 'DeviceIdExpression' not found in JSON."),
        (dm, 3, "Required property 'DeviceIdExpression' not found in JSON."),
        (fm, 2, "No match found for template type Nope."),
        (fm, 3, "Required property 'TypeName' not found in JSON."),
    ]


def test_validate_syntax_error_gets_its_line_and_position(tmp_path):
    dm = write(tmp_path, "dm.json", '{\n  "templateType": "CollectionContent",\n  "template": [,]\n}')
    (p,) = validate(dm)
    assert (p.error.line, p.error.position, p.error.severity) == (3, 16, "error")
    assert str(p).startswith(f"{dm}:3:16: error: Invalid JSON: ")


def test_validate_unreadable_files(tmp_path):
    problems = validate(str(tmp_path / "a.json"), str(tmp_path))  # missing file; a directory
    assert [(p.file, p.error.line, p.error.severity) for p in problems] == [
        (str(tmp_path / "a.json"), 0, "error"), (str(tmp_path), 0, "error")]
    assert problems[0].error.message == "Unable to read the device mapping: No such file or directory"
    assert problems[1].error.message.startswith("Unable to read the FHIR mapping: ")


def test_problem_str_format():
    assert str(Problem("f.json", TemplateError("boom", 4, 7))) == "f.json:4:7: error: boom"
    assert str(Problem("f.json", TemplateError("w", 2, 0, "warning"))) == "f.json:2:0: warning: w"
    assert str(Problem("f.json", TemplateError("x"))) == "f.json:0:0: error: x"
    assert str(Problem("f.json", TemplateError("Invalid JSON: bad. Line 5, position 9."))) == \
        "f.json:5:9: error: Invalid JSON: bad. Line 5, position 9."


def test_bundled_templates_validate(tmp_path):
    from conftest import REPO

    assert validate(str(REPO / "templates" / "devicecontent.json"),
                    str(REPO / "templates" / "fhirmapping.json")) == []


# --------------------------------------------------------------------------------------------
# Vector F12 (MappingValidatorTests): template warnings
# --------------------------------------------------------------------------------------------
def f12(name):
    d = vector_dir("F12")
    return str(d / "devicecontent.json"), str(d / name)


def test_f12_valid_pair():
    assert validate(*f12("fhirmapping.json")) == []


def test_f12_missing_type_warning():
    dm, fm = f12("fhirmapping_missing_type.json")
    problems = validate(dm, fm)
    device_warnings = [p.error.message for p in problems if p.file == dm]
    assert len(device_warnings) == 1
    assert "No matching Fhir Template exists for Device Mapping [bloodpressure]" in device_warnings[0]
    assert device_warnings[0] == (
        "No matching Fhir Template exists for Device Mapping [bloodpressure]. Ensure case matches. "
        "Available Fhir Templates: [heartrate ,bloodpressureBadTypeName].")
    # Our extra check, on the FHIR file: the misnamed template is fed by nothing.
    assert [(p.error.message, p.error.severity) for p in problems if p.file == fm] == [
        ("Fhir Template [bloodpressureBadTypeName] has no matching Device Mapping; "
         "it will never be used", "warning")]
    assert all(p.error.severity == "warning" for p in problems)


def test_f12_wrong_value_name_warning():
    dm, fm = f12("fhirmapping_wrong_valuename.json")
    problems = validate(dm, fm)
    assert len(problems) == 1
    assert problems[0].file == dm and problems[0].error.severity == "warning"
    assert problems[0].error.message.startswith(
        "The value [systolic] in Device Mapping [bloodpressure] is not represented within the Fhir Template")
    assert problems[0].error.message == (
        "The value [systolic] in Device Mapping [bloodpressure] is not represented within the Fhir "
        "Template of type [bloodpressure]. Available values are: [diastolic ,systolicBadValueName]. "
        "No value will appear inside of Observations.")
    assert problems[0].error.line == 22  # the bloodpressure template object


def test_f12_expected_warning_texts_come_from_the_vector():
    d = vector_dir("F12")
    cases = {c["fhir"]: c for c in load_json(d / "expected.json")["cases"] if "fhir" in c}
    for name, key, match in (("fhirmapping_missing_type.json", "template_warnings_contain", str.__contains__),
                             ("fhirmapping_wrong_valuename.json", "template_warnings_startwith",
                              str.startswith)):
        messages = [p.error.message for p in validate(str(d / "devicecontent.json"), str(d / name))]
        for wanted in cases[name][key]:
            assert any(match(m, wanted) for m in messages), (wanted, messages)


# --------------------------------------------------------------------------------------------
# Vector N15: device mapping validation errors with lines (MappingValidatorTests)
# --------------------------------------------------------------------------------------------
def test_n15_device_errors_with_lines():
    d = vector_dir("N15")
    expected = load_json(d / "expected.json")["devicecontent_invalid.json"]
    problems = validate(str(d / "devicecontent_invalid.json"))
    assert [p.error.message for p in problems] == expected["errors_contain"]
    assert [p.error.line for p in problems] == expected["error_lines (MappingValidatorTests)"]
    assert all(p.error.severity == "error" for p in problems)


@pytest.mark.parametrize("name", ["devicecontent_wrong_root_type.json", "devicecontent_no_array.json",
                                  "devicecontent_bad_json.txt"])
def test_n15_invalid_device_files(name):
    d = vector_dir("N15")
    expected = load_json(d / "expected.json")[name]
    problems = validate(str(d / name))
    assert problems and not expected["valid"]
    for wanted in expected.get("errors_contain", []):
        assert any(wanted in p.error.message for p in problems), (wanted, problems)
    assert all(p.error.line > 0 for p in problems)


def test_n15_empty_collection_is_valid():
    d = vector_dir("N15")
    assert validate(str(d / "devicecontent_empty_ok.json")) == []
