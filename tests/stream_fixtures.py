"""The stream windowing scenarios (TestStream) that run on every local streaming runner.

Why shared: the same scenario must give the same panes on BundleBasedDirectRunner and on Prism
(tests/test_streams_on_runners.py). Each scenario builds its pipeline for a runner's options and
writes what came out (pane timing, Observation id index, SampledData) to a file with a plain DoFn:
Beam's assert_that adds a streaming Reshuffle that not every runner implements the same way.
"""
import json
from typing import Callable, Dict, List

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.transforms.window import TimestampedValue

from pipeline_fixtures import DEVICE, FHIR, msg
from transforms.group import GroupMeasurements
from transforms.mapping import timeutil
from transforms.normalize import Normalize
from transforms.records.device_event import DeviceEvent
from transforms.to_observations import ToObservations

T0 = 1772359200  # 2026-03-01T10:00:00Z
DAY = 86400


class AppendPane(beam.DoFn):
    """Writes [pane timing, Observation id, SampledData] as a JSON line, or the element as is."""

    def __init__(self, path, observations=True):
        self._path = str(path)
        self._observations = observations

    def process(self, element, pane=beam.DoFn.PaneInfoParam):
        if self._observations:
            element = [pane.timing, element.observation["id"], element.observation["valueSampledData"]["data"]]
        with open(self._path, "a", encoding="utf-8") as f:
            f.write(json.dumps(element) + "\n")
        return []


def _arrived(minute, hr, arrived, dev="d1"):
    body = json.dumps({"hr": hr, "dev": dev, "pat": "p-" + dev, "at": f"2026-03-01T10:{minute:02d}:00Z"})
    return DeviceEvent(body, ingestion_time=timeutil.from_unix_seconds(arrived))


def on_time_windows():
    """Two 5-minute windows, each fires once when the watermark passes it; a broken message."""
    stream = (BeamTestStream()
              .add_elements([TimestampedValue(DeviceEvent(msg(1, 60)), T0 + 60),
                             TimestampedValue(DeviceEvent(msg(2, 61)), T0 + 120)])
              .advance_watermark_to(T0 + 300)
              .add_elements([TimestampedValue(DeviceEvent(msg(7, 70)), T0 + 420),
                             TimestampedValue(DeviceEvent("{broken"), T0 + 430)])
              .advance_watermark_to_infinity())
    return stream, dict(allowed_lateness_seconds=0)


def late_pane():
    """Allowed lateness of a day: a reading behind the watermark comes out as a late pane."""
    stream = (BeamTestStream()
              .add_elements([TimestampedValue(DeviceEvent(msg(1, 60)), T0 + 60),
                             TimestampedValue(DeviceEvent(msg(2, 61)), T0 + 120)])
              .advance_watermark_to(T0 + 3600)
              .add_elements([TimestampedValue(DeviceEvent(msg(3, 99)), T0 + 180)])  # late
              .advance_watermark_to_infinity())
    return stream, dict(allowed_lateness_seconds=DAY)


def early_firing():
    """An early pane 10 s (processing time) after the first reading, then the on-time pane."""
    stream = (BeamTestStream()
              .add_elements([TimestampedValue(DeviceEvent(msg(1, 60)), T0 + 60)])
              .advance_processing_time(20)
              .advance_watermark_to(T0 + 120)
              .add_elements([TimestampedValue(DeviceEvent(msg(2, 61)), T0 + 130)])
              .advance_watermark_to_infinity())
    return stream, dict(allowed_lateness_seconds=DAY, early_firing_seconds=10)


def _two_days_late(regroup):
    """An on-time reading at 10:01; the watermark moves two days on; then a reading for 10:03
    arrives two days late (a device uploading what it buffered offline)."""
    stream = (BeamTestStream()
              .add_elements([TimestampedValue(_arrived(1, 60, T0 + 70), T0 + 70)])
              .advance_watermark_to(T0 + 2 * DAY)
              .add_elements([TimestampedValue(_arrived(3, 99, T0 + 2 * DAY), T0 + 2 * DAY)])
              .advance_watermark_to_infinity())
    return stream, dict(allowed_lateness_seconds=DAY, regroup_late=regroup)


def regrouped():
    return _two_days_late(True)


def dropped_without_regrouping():
    return _two_days_late(False)


SCENARIOS: Dict[str, Callable] = {f.__name__: f for f in (
    on_time_windows, late_pane, early_firing, regrouped, dropped_without_regrouping)}


def run(name: str, argv: List[str], tmp_path) -> Dict[str, list]:
    """Run scenario ``name`` with pipeline ``argv``; what came out, sorted, with ids as indexes."""
    stream, group_args = SCENARIOS[name]()
    with beam.Pipeline(options=PipelineOptions(argv + ["--streaming"])) as p:
        m = p | stream | Normalize(DEVICE)
        out = m.measurements | GroupMeasurements(300, **group_args) | ToObservations(FHIR)
        _ = out.observations | "Observations" >> beam.ParDo(AppendPane(tmp_path / "obs"))
        _ = (m.dead_letter | beam.Map(lambda r: [r["stage"], r["error_type"]])
             | "DeadLetters" >> beam.ParDo(AppendPane(tmp_path / "dead", observations=False)))
    read = {k: [json.loads(line) for line in (tmp_path / k).read_text().splitlines()]
            if (tmp_path / k).exists() else [] for k in ("obs", "dead")}
    ids = sorted({row[1] for row in read["obs"]})
    read["obs"] = sorted([timing, ids.index(i), data] for timing, i, data in read["obs"])
    return read
