"""FHIR-stage grouping: F11 (measurement groups), F07 (observation groups), every periodInterval."""
import pytest

from conftest import load_json, vector_dir
from transforms.mapping.errors import CorrelationIdNotDefinedException, NotSupportedException
from transforms.mapping.grouping import (CORRELATION_ID, DAILY, HOURLY, SINGLE, MeasurementGroup,
                                         group_key, measurement_groups, observation_groups,
                                         observation_groups_for, parse_period_interval)
from transforms.mapping.measurement import Measurement
from transforms.mapping.timeutil import format_o, parse_datetime


def m(t, props, type_="hr", device="dev", patient=None, encounter=None, corr=None, ingest=None):
    return Measurement(type_, parse_datetime(t), device, tuple(props), patient, encounter, corr,
                       None if ingest is None else parse_datetime(ingest))


def as_json(groups):
    return [{"start": format_o(g.start), "end": format_o(g.end),
             "values": {k: [[format_o(t), v] for t, v in vs] for k, vs in g.values.items()}}
            for g in groups]


# ---------------------------------------------------------------- F11
def test_f11_same_occurrence_time_keeps_latest_ingestion():
    d = vector_dir("F11")
    ms = [Measurement.from_json(x) for x in load_json(d / "event_body_measurement_group.json")]
    expected = load_json(d / "expected.json")["groups"]
    groups = measurement_groups(ms)
    assert len(groups) == len(expected) == 1
    g, e = groups[0], expected[0]
    assert (g.key, g.measure_type, g.device_id, g.patient_id, g.encounter_id, g.correlation_id) == (
        e["key"], e["MeasureType"], e["DeviceId"], e["PatientId"], e["EncounterId"], e["CorrelationId"])
    assert list(g.measurements) == [Measurement.from_json(x) for x in e["Data"]]


def test_measurement_groups_keys_order_and_position_of_replacement():
    a1 = m("2020-01-01T00:00:00Z", [("v", "1")], ingest="2020-01-01T00:00:05Z")
    b = m("2020-01-01T00:00:00Z", [("v", "x")], type_="steps")
    a2 = m("2020-01-01T00:01:00Z", [("v", "2")], ingest="2020-01-01T00:01:05Z")
    a1_late = m("2020-01-01T00:00:00Z", [("v", "9")], ingest="2020-01-01T00:09:00Z")
    a1_early = m("2020-01-01T00:00:00Z", [("v", "0")], ingest="2020-01-01T00:00:01Z")
    c = m("2020-01-01T00:00:00Z", [("v", "c")], patient="p", encounter="e", corr="k")
    groups = measurement_groups([a1, b, a2, a1_late, a1_early, c])
    assert [g.key for g in groups] == ["dev-hr---", "dev-steps---", "dev-hr-p-e-k"]
    # a1 replaced in place by the later-ingested copy; the earlier-ingested one ignored
    assert groups[0].measurements == (a1_late, a2)
    assert group_key(c) == "dev-hr-p-e-k"


# ---------------------------------------------------------------- F07
def test_f07_time_period_groups():
    cases = load_json(vector_dir("F07") / "cases.json")["cases"]
    assert [c["periodInterval"] for c in cases] == [0, 60, 1440]
    for c in cases:
        ms = [m(x["OccurrenceTimeUtc"], [(p["Name"], p["Value"]) for p in x["Properties"]])
              for x in c["measurements"]]
        groups = observation_groups_for(c["periodInterval"], ms)
        expected = [{"start": e["start"], "end": e["end"],
                     "values": {k: [[format_o(parse_datetime(t)), v] for t, v in vs]
                                for k, vs in e["values"].items()}}
                    for e in c["expected_groups"]]
        assert as_json(groups) == expected
        for g, e in zip(groups, c["expected_groups"]):
            if "id_segment" in e:
                assert g.id_segment == e["id_segment"]


# ---------------------------------------------------------------- own cases
def test_single_interval_same_second_different_ms_share_id_segment():
    ms = [m("2019-01-01T00:00:00.100Z", [("a", "1")]), m("2019-01-01T00:00:00.200Z", [("a", "2")])]
    groups = observation_groups_for(SINGLE, ms)
    assert [(format_o(g.start), format_o(g.end)) for g in groups] == [
        ("2019-01-01T00:00:00.1000000Z", "2019-01-01T00:00:00.1000000Z"),
        ("2019-01-01T00:00:00.2000000Z", "2019-01-01T00:00:00.2000000Z")]
    assert [g.id_segment for g in groups] == ["20190101000000Z.20190101000000Z"] * 2


def test_hourly_sorts_and_drops_identical_time_duplicates_first_kept():
    ms = [m("2019-01-01T10:30:00Z", [("a", "late")]),
          m("2019-01-01T10:05:00Z", [("a", "early"), ("b", "b1")]),
          m("2019-01-01T10:30:00Z", [("a", "dup"), ("b", "b2")])]
    (g,) = observation_groups_for(HOURLY, ms)
    assert g.name == "hr"
    assert g.id_segment == "20190101100000Z.20190101105959Z"
    assert g.values == {"a": [(parse_datetime("2019-01-01T10:05:00Z"), "early"),
                              (parse_datetime("2019-01-01T10:30:00Z"), "late")],
                        "b": [(parse_datetime("2019-01-01T10:05:00Z"), "b1"),
                              (parse_datetime("2019-01-01T10:30:00Z"), "b2")]}


def test_daily_boundaries_are_utc_days():
    ms = [m("2019-03-01T23:59:59.9999999Z", [("a", "1")]), m("2019-03-02T00:00:00Z", [("a", "2")])]
    groups = observation_groups_for(DAILY, ms)
    assert [(format_o(g.start), format_o(g.end), g.id_segment) for g in groups] == [
        ("2019-03-01T00:00:00.0000000Z", "2019-03-01T23:59:59.9999999Z",
         "20190301000000Z.20190301235959Z"),
        ("2019-03-02T00:00:00.0000000Z", "2019-03-02T23:59:59.9999999Z",
         "20190302000000Z.20190302235959Z")]


def test_correlation_group_spans_min_max_and_uses_the_id():
    ms = [m("2019-03-01T08:00:03Z", [("mv", "0.2")], corr="sess-42"),
          m("2019-03-01T08:00:00Z", [("mv", "0.1")], corr="sess-42")]
    (g,) = observation_groups_for(CORRELATION_ID, ms)
    assert (format_o(g.start), format_o(g.end), g.id_segment) == (
        "2019-03-01T08:00:00.0000000Z", "2019-03-01T08:00:03.0000000Z", "sess-42")
    assert [v for _, v in g.values["mv"]] == ["0.1", "0.2"]


def test_correlation_without_id_raises():
    with pytest.raises(CorrelationIdNotDefinedException):
        observation_groups_for(CORRELATION_ID, [m("2019-03-01T08:00:00Z", [("mv", "1")])])


@pytest.mark.parametrize("interval", [1, 30, 120, -2])
def test_unsupported_interval_raises(interval):
    with pytest.raises(NotSupportedException) as e:
        observation_groups_for(interval, [m("2019-03-01T08:00:00Z", [("mv", "1")])])
    assert str(e.value) == f"ObservationPeriodInterval {interval} is not supported."


def test_empty_measurements_give_no_groups():
    assert observation_groups_for(HOURLY, []) == []


def test_parse_period_interval_names_and_numbers():
    assert parse_period_interval(None) == 0
    assert [parse_period_interval(x) for x in ("CorrelationId", "single", "HOURLY", "Daily")] == [
        -1, 0, 60, 1440]
    assert parse_period_interval("60") == 60
    assert parse_period_interval(30) == 30  # loads; fails when grouping
    with pytest.raises(ValueError):
        parse_period_interval("weekly")
    with pytest.raises(ValueError):
        parse_period_interval(True)


class _T:
    period_interval = CORRELATION_ID


def test_observation_groups_from_measurement_group_uses_group_fields():
    ms = (m("2019-03-01T08:00:00Z", [("mv", "1")], type_="ECG", corr="c1"),)
    mg = MeasurementGroup("k", "ECG", "dev", None, None, "c1", ms)
    (g,) = observation_groups(_T, mg)
    assert (g.name, g.id_segment) == ("ECG", "c1")
    (g2,) = observation_groups(_T, list(ms))
    assert (g2.name, g2.id_segment) == ("ECG", "c1")
