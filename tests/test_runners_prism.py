"""The pipeline on Prism, Beam's portable runner in Go, as scripts/setup-prism cached it (v2.62,
the apache-beam pin): the batch backfill end to end against the local FHIR server, and the
stream part Prism 2.62 can run (TestStream, event-time windows, on-time panes).

Prism 2.62 refuses, at submission, windowing with allowed lateness or late/early firings: the
stream pipeline's (see README "Runners"). Newer Prism runs them but needs the SDK's worker id
on every FnAPI stream, which Python SDK 2.62 does not send on its state stream
(apache/beam#33450): so the streaming job stays on the other runners until Beam is upgraded,
and the last test here says so by failing when that changes.
"""
import json

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.transforms.window import TimestampedValue

from pipelines.run import java_artifacts
from pipelines.run.runners import fill_cached_runner_artifacts
import runner_e2e
from pipeline_fixtures import DEVICE, FHIR, msg
from transforms.records.device_event import DeviceEvent
from transforms.group import GroupMeasurements
from transforms.normalize import Normalize
from transforms.to_observations import ToObservations

pytestmark = pytest.mark.prism

T0 = 1772359200  # 2026-03-01T10:00:00Z


@pytest.fixture(scope="module", autouse=True)
def prism_cached():
    if java_artifacts.prism_binary() is None:
        pytest.fail("no cached Prism for this Beam version: run scripts/setup (scripts/setup-prism)")


def prism_options(*extra):
    """PrismRunner as a user names it; the launcher adds the cached --prism_location."""
    argv = fill_cached_runner_artifacts(["--runner=PrismRunner", *extra])
    assert "--prism_location=" + java_artifacts.prism_binary() in argv
    return PipelineOptions(argv)


@pytest.mark.fhir_server
@pytest.mark.timeout(180)  # ~16 s idle: two runs on Prism
def test_backfill_on_prism_matches_fnapi_and_a_replay_writes_nothing(tmp_path, fhir_base_url, unique, capsys):
    seconds = runner_e2e.check_backfill(["--runner=PrismRunner"], tmp_path, fhir_base_url, unique)
    with capsys.disabled():
        print(f"\n[prism] first run {seconds['first']:.1f}s, replay {seconds['replay']:.1f}s")


class AppendTo(beam.DoFn):
    """Writes each element as a JSON line (the check runs after the job: Beam's assert_that
    adds a streaming Reshuffle that Prism 2.62 does not implement)."""

    def __init__(self, path):
        self._path = str(path)

    def process(self, element):
        with open(self._path, "a", encoding="utf-8") as f:
            f.write(json.dumps(element) + "\n")
        return []


def test_teststream_event_time_windows_fire_on_prism(tmp_path):
    """Two 5-minute windows; each fires when the watermark passes it, with its readings."""
    stream = (BeamTestStream()
              .add_elements([TimestampedValue(DeviceEvent(msg(1, 60)), T0 + 60),
                             TimestampedValue(DeviceEvent(msg(2, 61)), T0 + 120)])
              .advance_watermark_to(T0 + 300)
              .add_elements([TimestampedValue(DeviceEvent(msg(7, 70)), T0 + 420),
                             TimestampedValue(DeviceEvent("{broken"), T0 + 430)])
              .advance_watermark_to_infinity())
    with beam.Pipeline(options=prism_options("--streaming")) as p:
        m = p | stream | Normalize(DEVICE)
        out = m.measurements | GroupMeasurements(300, allowed_lateness_seconds=0) | ToObservations(FHIR)
        _ = (out.observations | beam.Map(lambda item: item.observation["valueSampledData"]["data"])
             | "Observations" >> beam.ParDo(AppendTo(tmp_path / "obs")))
        _ = (m.dead_letter | beam.Map(lambda r: (r["stage"], r["error_type"]))
             | "DeadLetters" >> beam.ParDo(AppendTo(tmp_path / "dead")))
    # one Observation per window (5-minute windows, 10-minute SampledData slots): 10:02 wins
    # over 10:01 in the first; 10:07 is its own window but the same 10:00-10:10 slot
    assert sorted(runner_e2e.read_lines(tmp_path / "obs")) == ["61 E E E E E", "70 E E E E E"]
    assert runner_e2e.read_lines(tmp_path / "dead") == [["normalization", "InvalidDataFormatException"]]


def test_prism_2_62_refuses_the_stream_windowing_at_submission():
    """Lateness + late firings (the stream job's windowing) are refused up front, not run wrong.
    When this fails, Prism runs them: move the stream tests onto Prism and update the README."""
    stream = (BeamTestStream()
              .add_elements([TimestampedValue(DeviceEvent(msg(1, 60)), T0 + 60)])
              .advance_watermark_to_infinity())
    p = beam.Pipeline(options=prism_options("--streaming"))
    _ = (p | stream | Normalize(DEVICE)).measurements | GroupMeasurements(
        300, allowed_lateness_seconds=86400, early_firing_seconds=10) | ToObservations(FHIR)
    with pytest.raises(Exception, match="unsupported feature .*WindowingStrategy.AllowedLateness"):
        p.run().wait_until_finish()
