"""GroupMeasurements on a stream: windows, and readings that arrive past the allowed lateness."""
import json

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipeline_fixtures import DEVICE, FHIR
from transforms.records.device_event import DeviceEvent
from transforms.group import GroupMeasurements, RegroupLate
from transforms.mapping import timeutil
from transforms.mapping.measurement import Measurement
from transforms.normalize import Normalize
from transforms.to_observations import ToObservations

T0 = 1772359200  # 2026-03-01T10:00:00Z
DAY = 86400


def event(minute, hr, arrived):
    body = json.dumps({"hr": hr, "dev": "d1", "pat": "p-d1", "at": f"2026-03-01T10:{minute:02d}:00Z"})
    return DeviceEvent(body, ingestion_time=timeutil.from_unix_seconds(arrived))


def run_stream(regroup_late):
    """An on-time reading at 10:01; the watermark moves two days on; then a reading for
    10:03 arrives two days late (a device that uploads what it buffered offline)."""
    stream = (BeamTestStream()
              .add_elements([TimestampedValue(event(1, 60, T0 + 70), T0 + 70)])
              .advance_watermark_to(T0 + 2 * DAY)
              .add_elements([TimestampedValue(event(3, 99, T0 + 2 * DAY), T0 + 2 * DAY)])
              .advance_watermark_to_infinity())
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    p = beam.Pipeline(options=options)
    m = p | stream | Normalize(DEVICE)
    out = (m.measurements
           | GroupMeasurements(300, allowed_lateness_seconds=DAY, regroup_late=regroup_late)
           | ToObservations(FHIR))
    slots = out.observations | beam.Map(lambda item: (item.observation["id"],
                                                      item.observation["valueSampledData"]["data"]))
    return p, slots


def test_without_regrouping_the_group_by_drops_a_reading_older_than_the_lateness():
    """The control: this is the loss ``regroup_late`` exists for."""
    p, slots = run_stream(regroup_late=False)
    assert_that(slots | beam.Map(lambda s: s[1]), equal_to(["60 E E E E E"]))
    p.run().wait_until_finish()


def test_a_reading_arriving_past_the_lateness_is_regrouped_into_its_own_observation():
    p, slots = run_stream(regroup_late=True)
    def check(got):  # both readings, in two panes of one Observation id
        assert sorted(d for _, d in got) == ["60 E E E E E", "99 E E E E E"]
        assert len({i for i, _ in got}) == 1

    assert_that(slots, check)
    p.run().wait_until_finish()


def measurement(at, arrived):
    return Measurement("hr", timeutil.from_unix_seconds(at), "d1", (("hr", "1"),),
                       ingestion_time=None if arrived is None else timeutil.from_unix_seconds(arrived))


@pytest.mark.parametrize("arrived, regrouped", [
    (None, False),  # no ingestion time (files): left alone
    (T0 + 300 + 3600 - 1, False),  # window 10:00-10:05 closed, lateness 2 h: half not yet used
    (T0 + 300 + 3600 + 1, True),  # past half the lateness: re-timestamped to its arrival
])
def test_regroup_late_decides_from_the_window_end_the_lateness_and_the_arrival(arrived, regrouped):
    fn = RegroupLate(300, 7200, clock=lambda: T0)
    m = measurement(T0 + 60, arrived)
    (out,) = list(fn.process(m, timestamp=T0 + 60))
    if regrouped:
        assert isinstance(out, TimestampedValue) and (out.value, out.timestamp) == (m, arrived)
    else:
        assert out is m


def test_regrouped_timestamp_is_never_before_now():
    fn = RegroupLate(300, 0, clock=lambda: T0 + DAY)
    (out,) = list(fn.process(measurement(T0, T0 + 600), timestamp=T0))
    assert out.timestamp == T0 + DAY


def test_regrouped_measurements_are_counted():
    """(Counted on FnApiRunner: the streaming direct runner reports partial counters.)"""
    ms = [measurement(T0 + 60, T0 + 60), measurement(T0 + 60, T0 + 3 * DAY)]
    p = beam.Pipeline(runner=FnApiRunner())
    _ = (p | beam.Create(ms) | beam.Map(lambda m: TimestampedValue(m, T0 + 60))
         | beam.ParDo(RegroupLate(300, DAY)))
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query()["counters"]
    assert [c.committed for c in counters if c.key.metric.name == "LateMeasurementRegrouped"] == [1]
