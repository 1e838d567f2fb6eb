"""The pure device-use rules (``transforms.mapping.device_use``): periods from statements, the
inclusive-at-precision boundaries, the latest-start overlap rule, group splitting, the CSV table
and ``transform --device-use`` (the offline path the debugger shares)."""
import json

import pytest

from transforms.mapping import timeutil
from transforms.mapping.device_use import (DeviceUseNotFoundException, DeviceUseTable, PeriodRow, UsePeriod,
                                           choose, instant_range, period_of_statement, read_period_rows,
                                           split_group)
from transforms.mapping.errors import InvalidDataFormatException
from transforms.mapping.fhir_templates import load_fhir_mapping
from transforms.mapping.grouping import measurement_groups
from transforms.mapping.measurement import Measurement
from transforms.mapping.offline import observations_for
from pipeline_fixtures import FHIR


def t(text):
    return timeutil.parse_iso(text)


def statement(status="active", start=None, end=None, subject="Patient/a", sid="s1", **extra):
    timing = {k: v for k, v in (("start", start), ("end", end)) if v}
    return dict({"resourceType": "DeviceUseStatement", "id": sid, "status": status,
                 "subject": {"reference": subject}, "device": {"reference": "Device/d"},
                 "timingPeriod": timing}, **extra)


def test_precision_ranges_ends_inclusive():
    assert instant_range("2026-03-01T10:30:00Z") == (t("2026-03-01T10:30:00Z"), t("2026-03-01T10:30:00.9999999Z"))
    assert instant_range("2026-03-01") == (t("2026-03-01T00:00:00Z"), t("2026-03-01T23:59:59.9999999Z"))
    assert instant_range("2026-02") == (t("2026-02-01T00:00:00Z"), t("2026-02-28T23:59:59.9999999Z"))
    assert instant_range("2026-03-01T10:30:00.5Z") == (t("2026-03-01T10:30:00.5Z"), t("2026-03-01T10:30:00.5999999Z"))
    assert instant_range("2026-03-01T12:30:00+02:00")[0] == t("2026-03-01T10:30:00Z")
    for bad in ("2026-03-01T10:30:00", "yesterday", "2026-13-01", "", None):
        assert instant_range(bad) is None


@pytest.mark.parametrize("status,counts", [("active", True), ("completed", True), ("intended", True),
                                           ("entered-in-error", False), ("stopped", False),
                                           ("on-hold", False), ("", False)])
def test_statuses(status, counts):
    assert (period_of_statement(statement(status, "2026-03-01T10:00:00Z")) is not None) is counts


def test_statement_shapes():
    p = period_of_statement(statement(start="2026-03-01T10:00:00Z", end="2026-03-01T11:00:00Z"))
    assert p == UsePeriod("a", t("2026-03-01T10:00:00Z"), t("2026-03-01T11:00:00.9999999Z"),
                          t("2026-03-01T11:00:00Z"), "s1")
    open_ended = period_of_statement(statement())
    assert (open_ended.start, open_ended.end) == (timeutil.MIN_TICKS, timeutil.MAX_TICKS)
    assert period_of_statement(statement(subject="Group/g")) is None  # only a Patient wears a device
    assert period_of_statement(statement(start="2026-03-02", end="2026-03-01")) is None  # ends before start
    no_timing = statement()
    del no_timing["timingPeriod"]
    assert period_of_statement(no_timing) is None
    day = period_of_statement(dict(no_timing, timingDateTime="2026-03-01"))
    assert (day.start, day.end) == instant_range("2026-03-01")


A = UsePeriod("a", t("2026-03-01T00:00:00Z"), t("2026-03-01T10:30:00.9999999Z"), t("2026-03-01T10:30:00Z"), "s1")
B = UsePeriod("b", t("2026-03-01T10:30:00Z"), timeutil.MAX_TICKS, timeutil.MAX_TICKS, "s2")


def test_handover_instant_goes_to_the_new_holder_without_a_warning():
    assert choose([A, B], t("2026-03-01T10:29:59.9999999Z")) == (A, False)
    assert choose([A, B], t("2026-03-01T10:30:00Z")) == (B, False)
    assert choose([A, B], t("2026-03-01T10:30:00.5Z")) == (B, False)  # A's end covers its second
    assert choose([A, B], t("2026-02-28T23:59:59Z")) == (None, False)


def test_overlap_latest_start_wins_and_warns():
    long_c = UsePeriod("c", t("2026-03-01T09:00:00Z"), timeutil.MAX_TICKS, timeutil.MAX_TICKS, "s3")
    assert choose([A, long_c], t("2026-03-01T09:30:00Z")) == (long_c, True)
    assert choose([long_c, A], t("2026-03-01T08:30:00Z")) == (A, False)
    same = UsePeriod("z", A.start, A.end, A.end_at, "s9")
    assert choose([same, A], t("2026-03-01T09:00:00Z")) == (same, True)  # tie: larger statement id
    assert choose([A, same], t("2026-03-01T09:00:00Z")) == (same, True)


def m(when, value="60", device="d1", patient="p-from-message"):
    return Measurement("heartrate", t(when), device, (("hr", value),), patient)


def test_split_group_at_the_handover():
    group, = measurement_groups([m("2026-03-01T10:10:00Z", "1"), m("2026-03-01T10:40:00Z", "2"),
                                 m("2026-02-28T10:00:00Z", "3"), m("2026-03-01T10:20:00Z", "4")])
    split = split_group(group, [A, B])
    assert [(p, [x.properties[0][1] for x in g.measurements]) for p, g in split.parts] == [
        ("a", ["1", "4"]), ("b", ["2"])]
    assert all(g.patient_id == p for p, g in split.parts)
    assert [x.properties[0][1] for x in split.uncovered] == ["3"]
    assert split.overlaps == 0
    err = DeviceUseNotFoundException("Device/x", [x.occurrence_time for x in split.uncovered])
    assert (err.stage, err.error_type) == ("identity", "DeviceUseNotFoundException")
    assert "Device/x" in str(err) and "2026-02-28T10:00:00Z" in str(err) and "p-from-message" not in str(err)


def test_period_rows_csv():
    rows = read_period_rows("device,patient,start,end,status\n"
                            "d1,a,2026-03-01T00:00:00Z,2026-03-01T10:30:00Z,\n"
                            "d1,b,2026-03-01T10:30:00Z,,\n"
                            "d1,,2026-03-01,,\n"
                            "d1,c,soon,,\n"
                            "d1,c,2026-03-01,,maybe\n"
                            "d2,x,,,entered-in-error\n")
    assert rows[0] == (2, PeriodRow("d1", "a", "2026-03-01T00:00:00Z", "2026-03-01T10:30:00Z", ""))
    assert rows[0][1].effective_status == "completed" and rows[1][1].effective_status == "active"
    assert [n for n, r in rows if isinstance(r, InvalidDataFormatException)] == [4, 5, 6]
    headerless = read_period_rows("d1,a,2026-03-01T00:00:00Z,\n")
    assert headerless == [(1, PeriodRow("d1", "a", "2026-03-01T00:00:00Z", ""))]
    table = DeviceUseTable(r for _, r in rows if isinstance(r, PeriodRow))
    assert len(table) == 2 and table.periods("d2") is None  # entered-in-error does not count


def test_transform_with_a_device_use_table_splits_the_hour():
    """The offline path (``transform --device-use``, the debugger): one hour, two wearers, two
    Observations each with its own readings; a reading before every period is a failure."""
    table, bad = DeviceUseTable.from_csv("d1,a,2026-03-01T00:00:00Z,2026-03-01T10:30:00Z\n"
                                         "d1,b,2026-03-01T10:30:00Z,\n")
    assert not bad
    mapping = load_fhir_mapping(FHIR)
    numbered = list(enumerate([m("2026-03-01T10:00:00Z", "60"), m("2026-03-01T10:20:00Z", "61"),
                               m("2026-03-01T10:40:00Z", "70"), m("2026-02-01T10:00:00Z", "99")], 1))
    out = list(observations_for(mapping, numbered, table))
    observations = [o for o, f in out if o is not None]
    failures = [f for o, f in out if f is not None]
    by_subject = {o["subject"]["reference"]: o for o in observations}
    assert sorted(by_subject) == ["Patient/a", "Patient/b"]
    assert by_subject["Patient/a"]["valueSampledData"]["data"] == "60 E 61 E E E"
    assert by_subject["Patient/b"]["valueSampledData"]["data"] == "E E E E 70 E"
    assert by_subject["Patient/a"]["id"] != by_subject["Patient/b"]["id"]
    assert by_subject["Patient/a"]["identifier"][0]["value"].startswith("a.d1.heartrate.")
    assert [(line, type(e).__name__) for line, e in failures] == [(4, "DeviceUseNotFoundException")]
    # without a table: the message's patient, one Observation for the hour
    plain = [o for o, f in observations_for(mapping, numbered[:3]) if o]
    assert [o["subject"]["reference"] for o in plain] == ["Patient/p-from-message"]
    assert json.dumps(plain[0]).count("70") >= 1


def test_debugger_takes_a_device_use_table():
    from pipelines.debugger.engine import run
    from pipeline_fixtures import DEVICE

    messages = "\n".join(json.dumps({"hr": hr, "dev": "d1", "pat": "p-msg", "at": at}) for hr, at in (
        (60, "2026-03-01T10:00:00Z"), (70, "2026-03-01T10:40:00Z"), (99, "2026-02-01T10:00:00Z")))
    table = "device,patient,start,end\nd1,a,2026-03-01,2026-03-01T10:30:00Z\nd1,b,2026-03-01T10:30:00Z,\nd1,,,\n"
    answer = run({"deviceMapping": DEVICE, "fhirMapping": FHIR, "messages": messages, "deviceUse": table})
    assert [(o["subject"]["reference"], o["valueSampledData"]["data"]) for o in answer["observations"]] == [
        ("Patient/a", "60 E E E E E"), ("Patient/b", "E E E E 70 E")]
    assert [(e["index"], e["stage"], e["error"]) for e in answer["errors"]] == [
        (3, "identity", "DeviceUseNotFoundException")]
    assert [(p["file"], p["line"]) for p in answer["problems"]] == [("deviceUse", 4)]
    plain = run({"deviceMapping": DEVICE, "fhirMapping": FHIR, "messages": messages})
    assert {o["subject"]["reference"] for o in plain["observations"]} == {"Patient/p-msg"}


def test_transform_command_takes_device_use(tmp_path, capsys):
    from pipelines import cli

    (tmp_path / "fm.json").write_text(FHIR)
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x.to_json()) for x in (
        m("2026-03-01T10:00:00Z", "60"), m("2026-03-01T10:40:00Z", "70"))) + "\n")
    (tmp_path / "use.csv").write_text("d1,a,2026-03-01T00:00:00Z,2026-03-01T10:30:00Z\nd1,b,2026-03-01T10:30:00Z,\n")
    args = ["transform", "--fhir-mapping", str(tmp_path / "fm.json"), "--input", str(tmp_path / "m.jsonl")]
    assert cli.main(args + ["--device-use", str(tmp_path / "use.csv")]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(o["subject"]["reference"], o["valueSampledData"]["data"]) for o in out] == [
        ("Patient/a", "60 E E E E E"), ("Patient/b", "E E E E 70 E")]
    (tmp_path / "use.csv").write_text("d1,a,not a time,\n")
    with pytest.raises(SystemExit) as refused:  # as the other mapping commands refuse their inputs
        cli.main(args + ["--device-use", str(tmp_path / "use.csv")])
    assert refused.value.code == 2
    assert "use.csv:1: error: a device use row's period is unusable" in capsys.readouterr().err


def test_judging_an_observation_after_a_correction():
    from transforms.fhir.writer import without_server_meta
    from transforms.mapping import device_use_audit as audit
    from transforms.mapping.identifiers import SERVICE_SYSTEM

    obs = {"resourceType": "Observation", "id": "o1", "status": "final",
           "meta": {"versionId": "7", "lastUpdated": "2026-03-02T00:00:00Z", "profile": ["urn:p"]},
           "identifier": [{"system": SERVICE_SYSTEM, "value": "a.d1.heartrate.x"}],
           "subject": {"reference": "Patient/a"},
           "effectivePeriod": {"start": "2026-03-01T10:00:00.0000000Z", "end": "2026-03-01T10:59:59.9999999Z"},
           "valueSampledData": {"origin": {"value": 0}, "period": 600000, "dimensions": 1,
                                "data": "60 E 61 E 70 71"}}
    verdict = audit.judge(obs, [A, B])
    assert verdict[:3] == (audit.PARTLY, 4, 2)
    sent = without_server_meta(verdict.corrected)
    assert sent["valueSampledData"]["data"] == "60 E 61 E E E" and sent["status"] == "amended"
    assert sent["meta"] == {"profile": ["urn:p"]}  # the Observation's own meta stays
    assert obs["valueSampledData"]["data"] == "60 E 61 E 70 71"  # judged, not changed
    assert audit.judge(obs, [B]).finding == audit.WHOLLY
    assert audit.judge(obs, [B]).corrected["status"] == "entered-in-error"
    assert audit.judge(obs, [UsePeriod("a")]).finding == audit.CORRECT
    assert audit.judge(dict(obs, identifier=[{"system": "urn:other", "value": "x"}]), [B]).finding == audit.NOT_OURS
    assert audit.judge(dict(obs, status="entered-in-error"), [B]).finding == audit.WITHDRAWN
    instant = dict(obs, effectivePeriod={"start": "2026-03-01T10:45:00Z", "end": "2026-03-01T10:45:00Z"})
    del instant["valueSampledData"]
    assert audit.judge(instant, [A, B]).finding == audit.WHOLLY


def test_a_slot_cut_by_the_handover_is_right_on_both_sides():
    """Handover at 10:35 inside the 10:30 slot: A's reading at 10:32 and B's at 10:36 are both in
    that slot of their own Observation; neither is misattributed (nor blanked by --correct)."""
    from transforms.mapping import device_use_audit as audit
    from transforms.mapping.identifiers import SERVICE_SYSTEM

    a = UsePeriod("a", t("2026-03-01T00:00:00Z"), t("2026-03-01T10:35:00.9999999Z"), t("2026-03-01T10:35:00Z"))
    b = UsePeriod("b", t("2026-03-01T10:35:00Z"))
    mapping = load_fhir_mapping(FHIR)
    table = DeviceUseTable([PeriodRow("d1", "a", "2026-03-01T00:00:00Z", "2026-03-01T10:35:00Z"),
                            PeriodRow("d1", "b", "2026-03-01T10:35:00Z")])
    out = [o for o, f in observations_for(mapping, list(enumerate(
        [m("2026-03-01T10:32:00Z", "1"), m("2026-03-01T10:36:00Z", "2"), m("2026-03-01T10:50:00Z", "3")], 1)), table)]
    assert [(o["subject"]["reference"], o["valueSampledData"]["data"]) for o in out] == [
        ("Patient/a", "E E E 1 E E"), ("Patient/b", "E E E 2 E 3")]
    for o in out:
        o["identifier"] = [{"system": SERVICE_SYSTEM, "value": o["identifier"][0]["value"]}]
        assert audit.judge(o, [a, b]).finding == audit.CORRECT
    # the same Observations against periods where B took over at 10:45: B's 10:30 slot is wrong
    late = [UsePeriod("a", a.start, t("2026-03-01T10:45:00.9999999Z"), t("2026-03-01T10:45:00Z")),
            UsePeriod("b", t("2026-03-01T10:45:00Z"))]
    verdict = audit.judge(out[1], late)
    assert verdict[:3] == (audit.PARTLY, 2, 1) and verdict.corrected["valueSampledData"]["data"] == "E E E E E 3"
