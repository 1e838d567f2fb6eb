"""The mapping debugger's HTTP API (``iomt-fhir debugger``) on a real local port.

Every result kind: valid mappings, invalid ones with line numbers (equal to
``iomt-fhir validate``), cross-check warnings, failing messages, every value type,
envelopes; measurements and Observations equal to what ``iomt-fhir normalize`` /
``transform`` print for the same input. Safety: request size limit, Host check, texts
never taken for paths, nothing of the content logged, nothing loaded from elsewhere.
"""
import fnmatch
import http.client
import json
import pathlib
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from pipelines import cli
from pipelines.debugger import server as debugger_server
from pipelines.debugger.examples import FILES, examples

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
STATIC = ROOT / "pipelines" / "debugger" / "static"

ALL_TYPES_DEVICE = json.dumps({"templateType": "CollectionContent", "template": [{
    "templateType": "JsonPathContent", "template": {
        "typeName": "vitals", "typeMatchExpression": "$..[?(@hr)]", "deviceIdExpression": "$.dev",
        "patientIdExpression": "$.pat", "timestampExpression": "$.at",
        "values": [{"valueName": n, "valueExpression": f"$.{n}", "required": n == "hr"}
                   for n in ("hr", "temp", "note", "posture", "spo2")]}}]}, indent=2)
ALL_TYPES_FHIR = json.dumps({"templateType": "CollectionFhir", "template": [{
    "templateType": "CodeValueFhir", "template": {
        "typeName": "vitals", "periodInterval": 60,
        "codes": [{"code": "vitals", "system": "https://example.org"}],
        "value": {"valueType": "SampledData", "valueName": "hr", "defaultPeriod": 30000, "unit": "bpm"},
        "components": [
            {"codes": [{"code": "temp"}], "value": {"valueType": "Quantity", "valueName": "temp", "unit": "Cel"}},
            {"codes": [{"code": "note"}], "value": {"valueType": "String", "valueName": "note"}},
            {"codes": [{"code": "posture"}], "value": {"valueType": "CodeableConcept", "valueName": "posture",
                                                        "text": "Lying", "codes": [{"code": "lying"}]}},
            {"codes": [{"code": "spo2"}], "value": {"valueType": "SampledData", "valueName": "spo2",
                                                     "defaultPeriod": 60000}}]}}]}, indent=2)
ALL_TYPES_MESSAGES = "\n".join([
    json.dumps({"hr": 61, "spo2": 97, "dev": "d1", "pat": "p1", "at": "2026-01-05T08:00:00Z"}),
    json.dumps({"hr": 62, "dev": "d1", "pat": "p1", "at": "2026-01-05T08:00:30Z"}),
    "",
    json.dumps({"hr": 63, "temp": "37.5", "note": "after walk", "posture": "x", "dev": "d1", "pat": "p1",
                "at": "2026-01-05T09:10:00Z"}),
    "not json",
    json.dumps({"hr": 64, "temp": "NaN", "dev": "d2", "pat": "p2", "at": "2026-01-05T09:00:00Z"}),
    json.dumps({"hr": 65, "dev": "d3", "at": "yesterday"}),
    json.dumps({"other": 1}),
]) + "\n"


@pytest.fixture(scope="module")
def debugger():
    srv = debugger_server.make_server(port=0)
    debugger_server.serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def call(srv, path, body=None, headers=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {"Content-Type": "application/json"} if data is not None else {}
    h.update(headers or {})
    req = urllib.request.Request(srv.url.rstrip("/") + path, data=data, headers=h,
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def api_run(srv, **fields):
    status, _, body = call(srv, "/api/run", fields)
    assert status == 200, body
    return json.loads(body)


def _cli_lines(capsys, argv):
    cli.main(argv)
    out, err = capsys.readouterr()
    return ([json.loads(l) for l in out.splitlines() if l.strip()],
            [json.loads(l) for l in err.splitlines() if l.strip()])


def cli_results(tmp_path, capsys, device, fhir, messages, input_format="body"):
    """What ``normalize | transform`` print for the same texts."""
    (tmp_path / "dm.json").write_text(device)
    (tmp_path / "fm.json").write_text(fhir)
    (tmp_path / "in.jsonl").write_text(messages)
    measurements, norm_errors = _cli_lines(capsys, [
        "normalize", "--device-mapping", str(tmp_path / "dm.json"), "--input", str(tmp_path / "in.jsonl"),
        "--input-format", input_format])
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(m) + "\n" for m in measurements))
    observations, conv_errors = _cli_lines(capsys, [
        "transform", "--fhir-mapping", str(tmp_path / "fm.json"), "--input", str(tmp_path / "m.jsonl")])
    return measurements, norm_errors, observations, conv_errors


def without_issued(observations):
    out = []
    for o in observations:
        o = dict(o)
        assert re.match(r"\d{4}-\d\d-\d\dT", o.pop("issued"))
        out.append(o)
    return out


def assert_same_as_cli(answer, cli_answer):
    measurements, norm_errors, observations, conv_errors = cli_answer
    assert answer["measurements"] == measurements
    assert without_issued(answer["observations"]) == without_issued(observations)
    assert [(e["index"], e["error"], e["message"]) for e in answer["errors"] if e["stage"] == "normalization"] \
        == [(e["line"], e["error"], e["message"]) for e in norm_errors]
    assert [(e["error"], e["message"]) for e in answer["errors"] if e["stage"] == "fhir_conversion"] \
        == [(e["error"], e["message"]) for e in conv_errors]


def test_valid_example_equals_the_cli(debugger, tmp_path, capsys):
    tour = examples()[0]
    answer = api_run(debugger, deviceMapping=tour["deviceMapping"], fhirMapping=tour["fhirMapping"],
                     messages=tour["messages"], inputFormat="body")
    assert answer["problems"] == []
    assert len(answer["observations"]) >= 5 and len(answer["errors"]) == 2
    assert_same_as_cli(answer, cli_results(tmp_path, capsys, tour["deviceMapping"], tour["fhirMapping"],
                                           tour["messages"]))


def test_every_value_type_and_failing_messages(debugger, tmp_path, capsys):
    answer = api_run(debugger, deviceMapping=ALL_TYPES_DEVICE, fhirMapping=ALL_TYPES_FHIR,
                     messages=ALL_TYPES_MESSAGES)
    assert_same_as_cli(answer, cli_results(tmp_path, capsys, ALL_TYPES_DEVICE, ALL_TYPES_FHIR,
                                           ALL_TYPES_MESSAGES))
    assert answer["problems"] == []
    # failing messages point at their line in the messages editor (blank line 3 counts)
    assert [(e["index"], e["stage"], e["error"]) for e in answer["errors"]] == [
        (5, "normalization", "InvalidDataFormatException"),
        (7, "normalization", "IncompatibleDataException"),
        (6, "fhir_conversion", "InvalidQuantityFhirValueException")]
    assert answer["measurementIndex"] == [1, 2, 4, 6]
    by_device = {}
    for o, sd in zip(answer["observations"], answer["sampledData"]):
        by_device.setdefault(o["device"]["reference"], []).append((o, sd))
    (first, sd8), (second, sd9) = sorted(by_device["Device/d1"], key=lambda x: x[0]["effectivePeriod"]["start"])
    assert first["valueSampledData"]["data"].startswith("61 62 E")
    assert [(s["path"], s["points"]) for s in sd8] == [
        ("valueSampledData", [["2026-01-05T08:00:00Z", "61"], ["2026-01-05T08:00:30Z", "62"]]),
        ("component[0].valueSampledData", [["2026-01-05T08:00:00Z", "97"]])]
    assert sd8[0]["slots"] == 120 and sd8[0]["unit"] == "bpm" and sd8[1]["name"] == "spo2"
    comps = {c["code"]["text"]: c for c in second["component"]}
    assert comps["temp"]["valueQuantity"] == {"value": 37.5, "unit": "Cel"}
    assert comps["note"]["valueString"] == "after walk"
    assert comps["posture"]["valueCodeableConcept"] == {"coding": [{"code": "lying"}], "text": "Lying"}
    # the NaN temperature of d2 is left out, its heart rate is kept
    ((d2, _),) = by_device["Device/d2"]
    assert d2["valueSampledData"]["data"].startswith("64 ") and "component" not in d2


def test_envelopes(debugger, tmp_path, capsys):
    device = json.dumps({"templateType": "CollectionContent", "template": [{
        "templateType": "IotJsonPathContent", "template": {
            "typeName": "hr", "typeMatchExpression": "$..[?(@Body.hr)]",
            "values": [{"valueName": "hr", "valueExpression": "$.Body.hr", "required": True}]}}]})
    fhir = ALL_TYPES_FHIR.replace('"vitals"', '"hr"')
    messages = json.dumps({"Body": {"hr": 70}, "Properties": {"iothub-creation-time-utc": "2026-01-05T08:00:00Z"},
                           "SystemProperties": {"iothub-connection-device-id": "dev-7"}}) + "\n[1]\n"
    answer = api_run(debugger, deviceMapping=device, fhirMapping=fhir, messages=messages, inputFormat="envelope")
    assert [m["DeviceId"] for m in answer["measurements"]] == ["dev-7"]
    assert [(e["index"], e["error"]) for e in answer["errors"]] == [(2, "InvalidDataFormatException")]
    assert_same_as_cli(answer, cli_results(tmp_path, capsys, device, fhir, messages, "envelope"))
    body = api_run(debugger, deviceMapping=device, fhirMapping=fhir, messages=messages, inputFormat="body")
    assert body["errors"] == []  # as a body, [1] is a message that matches nothing


def _validate_lines(tmp_path, capsys, device, fhir):
    (tmp_path / "device").write_text(device)
    (tmp_path / "fhir").write_text(fhir)
    cli.main(["validate", "--device-mapping", str(tmp_path / "device"), "--fhir-mapping", str(tmp_path / "fhir")])
    return [l.replace(str(tmp_path) + "/", "") for l in capsys.readouterr().err.splitlines()]


def _problem_lines(answer):
    return [f"{p['file']}:{p['line']}:{p['column']}: {p['severity']}: {p['message']}" for p in answer["problems"]]


def test_invalid_mappings_have_validates_problems_with_lines(debugger, tmp_path, capsys):
    device = ALL_TYPES_DEVICE.replace('"typeMatchExpression"', '"typeMatch"')
    fhir = ALL_TYPES_FHIR.replace('"valueType": "String"', '"valueType": "Text"')
    answer = api_run(debugger, deviceMapping=device, fhirMapping=fhir, messages=ALL_TYPES_MESSAGES)
    assert _problem_lines(answer) == _validate_lines(tmp_path, capsys, device, fhir)
    where = {(p["file"], p["line"]) for p in answer["problems"]}
    assert ("device", 6) in where  # the line of "typeMatch"
    text_line = next(i for i, l in enumerate(fhir.split("\n"), 1) if '"Text"' in l)
    assert [p["line"] for p in answer["problems"] if "'Text'" in p["message"]] == [text_line - 1]  # its "value": {
    assert answer["measurements"] == [] and answer["observations"] == []

    # a JSON syntax error: located, and the device side still runs
    broken = ALL_TYPES_FHIR.replace('"code": "temp"', '"code": "temp",')
    answer = api_run(debugger, deviceMapping=ALL_TYPES_DEVICE, fhirMapping=broken, messages=ALL_TYPES_MESSAGES)
    (p,) = answer["problems"]
    assert (p["file"], p["severity"]) == ("fhir", "error") and p["line"] > 1 and p["column"] > 1
    assert _problem_lines(answer) == _validate_lines(tmp_path, capsys, ALL_TYPES_DEVICE, broken)
    assert len(answer["measurements"]) == 4 and answer["observations"] == []


def test_cross_check_warnings(debugger, tmp_path, capsys):
    device = ALL_TYPES_DEVICE.replace('"vitals"', '"vital"')
    answer = api_run(debugger, deviceMapping=device, fhirMapping=ALL_TYPES_FHIR, messages=ALL_TYPES_MESSAGES)
    assert {(p["file"], p["severity"]) for p in answer["problems"]} == {("device", "warning"), ("fhir", "warning")}
    assert _problem_lines(answer) == _validate_lines(tmp_path, capsys, device, ALL_TYPES_FHIR)
    assert all(p["line"] > 0 for p in answer["problems"])
    # warnings do not stop a run: the unknown type is the reference's TemplateNotFoundException
    assert {e["error"] for e in answer["errors"] if e["stage"] == "fhir_conversion"} == {"TemplateNotFoundException"}


def test_texts_are_never_paths_and_bad_requests_are_refused(debugger):
    path = str(TEMPLATES / "devicecontent.json")
    answer = api_run(debugger, deviceMapping=path, fhirMapping=str(TEMPLATES / "fhirmapping.json"),
                     messages="")
    assert [p["message"].startswith("Invalid JSON") for p in answer["problems"]] == [True, True]
    assert answer["measurements"] == []
    assert call(debugger, "/api/run", raw=b"{nope")[0] == 400
    assert call(debugger, "/api/run", {"deviceMapping": 3})[0] == 400
    assert call(debugger, "/api/run", {"inputFormat": "xml"})[0] == 400
    assert call(debugger, "/api/run", {}, headers={"Content-Type": "text/plain"})[0] == 415
    # refused from its Content-Length, before reading any of it
    conn = http.client.HTTPConnection(*debugger.server_address[:2], timeout=10)
    conn.putrequest("POST", "/api/run")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(debugger_server.MAX_REQUEST_BYTES + 1))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    assert call(debugger, "/api/start", headers={"Host": "evil.example:8765"})[0] == 403
    assert call(debugger, "/static/../server.py")[0] == 404
    deep = api_run(debugger, deviceMapping="[" * 5000, messages="")
    assert deep["problems"][0]["severity"] == "error"


def test_nothing_of_the_content_is_logged(debugger, capfd, caplog):
    marker = "patient-SECRET-4711"
    api_run(debugger, deviceMapping=ALL_TYPES_DEVICE, fhirMapping=ALL_TYPES_FHIR,
            messages=ALL_TYPES_MESSAGES.replace("p1", marker))
    call(debugger, "/api/run", raw=json.dumps({"messages": marker, "inputFormat": 1}).encode())
    out, err = capfd.readouterr()
    assert marker not in out + err + caplog.text
    assert "/api/run" not in err  # no access log either


def test_page_is_served_from_the_package_and_loads_nothing_from_elsewhere(debugger):
    status, headers, body = call(debugger, "/")
    assert status == 200 and b"/static/app.js" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for f in STATIC.iterdir():
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), f.name
        assert not re.search(r"(fetch|import)\(\s*[\"'](https?:)?//", text), f.name
        assert call(debugger, "/static/" + f.name)[0] == 200
    start = json.loads(call(debugger, "/api/start")[2])
    assert start["examples"][0]["id"] == "tour" and start["maxRequestBytes"] == debugger_server.MAX_REQUEST_BYTES


def test_shipped_examples_are_the_templates_and_package_data_lists_them():
    here = ROOT / "pipelines" / "debugger" / "examples"
    for name, original in zip(FILES, ("devicecontent.json", "fhirmapping.json", "sample/messages.jsonl")):
        assert (here / name).read_text() == (TEMPLATES / original).read_text(), name
    setup = (ROOT / "setup.py").read_text()
    patterns = re.search(r'"pipelines\.debugger":\s*\[([^\]]*)\]', setup).group(1)
    patterns = [p.strip().strip('"') for p in patterns.split(",") if p.strip()]
    for f in list(STATIC.iterdir()) + list(here.iterdir()):
        rel = f.relative_to(ROOT / "pipelines" / "debugger").as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel


def test_command_line_files_start_the_editors(tmp_path):
    (tmp_path / "dm.json").write_text(ALL_TYPES_DEVICE)
    args = cli.build_parser().parse_args(["debugger", "--port", "0", "--device-mapping", str(tmp_path / "dm.json")])
    assert (args.host, args.input_format) == ("127.0.0.1", "body")
    assert args.func is debugger_server.cmd_debugger
    srv = debugger_server.make_server(args.host, 0, {"deviceMapping": ALL_TYPES_DEVICE})
    try:
        assert srv.server_address[0] == "127.0.0.1" and srv.url.startswith("http://127.0.0.1:")
        debugger_server.serve_in_thread(srv)
        start = json.loads(call(srv, "/api/start")[2])
        assert start["initial"] == {"deviceMapping": ALL_TYPES_DEVICE}
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_command_prints_its_url_and_serves_the_files_it_was_given(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text(ALL_TYPES_MESSAGES)
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "debugger", "--port", "0",
                             "--messages", str(tmp_path / "in.jsonl"), "--input-format", "envelope"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.match(r"Mapping debugger: (http://127\.0\.0\.1:\d+/) ", line).group(1)
        with urllib.request.urlopen(url + "api/start", timeout=10) as r:
            assert json.loads(r.read())["initial"] == {"messages": ALL_TYPES_MESSAGES, "inputFormat": "envelope"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "in.jsonl" not in proc.stderr.read()
    # a file it cannot read, a port it cannot have: one line, exit 2
    assert cli.main(["debugger", "--device-mapping", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.strip().endswith("No such file or directory")
    busy = debugger_server.make_server(port=0)
    try:
        assert cli.main(["debugger", "--port", str(busy.server_address[1])]) == 2
        assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
    finally:
        busy.server_close()
