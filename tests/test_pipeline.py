"""The assembled pipeline on Beam runners that work offline: FnApiRunner (batch),
BundleBasedDirectRunner with --streaming (TestStream), and against the real local FHIR
server. Data is written here; runners are always named explicitly."""
import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
import pytest
import requests
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipelines.run import launch
from pipelines.options import IomtFhirOptions, writer_settings
from transforms.records.device_event import DeviceEvent
from transforms.group import GroupMeasurements
from transforms.normalize import Normalize
from transforms.to_observations import ToObservations
from pipeline_fixtures import DEVICE, FHIR, msg, read_lines, write_inputs

# the tests that use a FHIR server run on Medplum's router and on HAPI FHIR's JPA server
# (tests/fhir_fixtures.py): the same outcome is expected from both
pytestmark = pytest.mark.both_fhir_servers


def test_batch_files_one_observation_per_id_and_dead_letters(tmp_path):
    d = write_inputs(tmp_path)
    rc = launch.main([
        "--runner=FnApiRunner", f"--device-mapping={d / 'dm.json'}", f"--fhir-mapping={d / 'fm.json'}",
        f"--input={d / 'in.jsonl'}", f"--output={d / 'obs'}", f"--dead-letter={d / 'dead'}",
        "--window-seconds=300", "--single-file-outputs"])
    assert rc == 0
    obs = sorted(read_lines(d / "obs.jsonl"), key=lambda o: o["device"]["reference"])
    assert [(o["device"]["reference"], o["valueSampledData"]["data"]) for o in obs] == [
        ("Device/d1", "60 61 62 E E 65"), ("Device/d2", "70 E E E E E")]
    assert len({o["id"] for o in obs}) == 2
    dead = sorted(read_lines(d / "dead.jsonl"), key=lambda r: r["error_type"])
    assert [(r["stage"], r["error_type"]) for r in dead] == [
        ("normalization", "IncompatibleDataException"), ("normalization", "InvalidDataFormatException")]
    assert dead[1]["payload"]["body"] == "{broken"  # the input is kept whole for replay


def test_invalid_mapping_stops_the_launch_with_every_problem(tmp_path, capsys):
    d = write_inputs(tmp_path)
    (d / "dm.json").write_text(DEVICE.replace('"typeMatchExpression"', '"typeMatch"'))
    rc = launch.main(["--runner=FnApiRunner", f"--device-mapping={d / 'dm.json'}",
                            f"--fhir-mapping={d / 'fm.json'}", f"--input={d / 'in.jsonl'}",
                            f"--output={d / 'obs'}", f"--dead-letter={d / 'dead'}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Could not find member 'typeMatch'" in err and "TypeMatchExpression" in err
    assert not (d / "obs.jsonl").exists()


def test_unknown_type_goes_to_dead_letter_with_its_measurements():
    fhir_other = FHIR.replace('"typeName": "heartrate"', '"typeName": "spo2"')
    with beam.Pipeline(runner=FnApiRunner()) as p:
        events = p | beam.Create([DeviceEvent(msg(0, 60))])
        m = events | Normalize(DEVICE)
        out = m.measurements | GroupMeasurements(300) | ToObservations(fhir_other)
        assert_that(out.observations, equal_to([]), label="none")
        assert_that(out.dead_letter | beam.Map(lambda r: (r["stage"], r["error_type"], len(r["payload"]))),
                    equal_to([("fhir_conversion", "TemplateNotFoundException", 1)]), label="dead")


def test_streaming_windows_fire_and_late_data_is_not_dropped():
    """Event-time windows on a stream; an element behind the watermark still comes out
    (a late pane), so it merges into its Observation instead of being silently dropped."""
    t0 = 1772359200  # 2026-03-01T10:00:00Z
    stream = (BeamTestStream()
              .add_elements([TimestampedValue(DeviceEvent(msg(1, 60)), t0 + 60),
                             TimestampedValue(DeviceEvent(msg(2, 61)), t0 + 120)])
              .advance_watermark_to(t0 + 3600)
              .add_elements([TimestampedValue(DeviceEvent(msg(3, 99)), t0 + 180)])  # late
              .advance_watermark_to_infinity())
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as p:
        m = p | stream | Normalize(DEVICE)
        out = m.measurements | GroupMeasurements(300, allowed_lateness_seconds=86400) | ToObservations(FHIR)
        slots = out.observations | beam.Map(lambda item: item.observation["valueSampledData"]["data"])
        # on-time pane: 10:01 and 10:02 share the first 10-minute slot, last value wins;
        # late pane: the 10:03 reading, which the writer merges into the same Observation.
        assert_that(slots, equal_to(["61 E E E E E", "99 E E E E E"]))


@pytest.mark.fhir_server
def test_pipeline_to_fhir_server_replay_changes_nothing(tmp_path, fhir_base_url):
    d = write_inputs(tmp_path, [msg(m, 50 + m, "pipe-dev-%s" % tmp_path.name[-6:]) for m in (0, 10, 20, 30)])
    args = ["--runner=FnApiRunner", f"--device-mapping={d / 'dm.json'}", f"--fhir-mapping={d / 'fm.json'}",
            f"--input={d / 'in.jsonl'}", f"--fhir-url={fhir_base_url}", "--identity-mode=Create",
            f"--dead-letter={d / 'dead'}", "--window-seconds=600", "--single-file-outputs"]
    device = "pipe-dev-%s" % tmp_path.name[-6:]

    def state():
        dev = requests.get(f"{fhir_base_url}/Device", params={"identifier": device}, timeout=10).json()
        (dev_id,) = [e["resource"]["id"] for e in dev.get("entry", [])]
        found = requests.get(f"{fhir_base_url}/Observation", params={"device": f"Device/{dev_id}"},
                             timeout=10).json().get("entry", [])
        return [(e["resource"]["id"], e["resource"]["status"], e["resource"]["valueSampledData"]["data"],
                 e["resource"]["meta"]["versionId"]) for e in found]

    assert launch.main(args) == 0
    first = state()
    assert len(first) == 1 and first[0][2] == "50 60 70 80 E E"
    assert launch.main(args) == 0
    assert state() == first  # same resource, same version: nothing was written again
    assert read_lines(d / "dead.jsonl") == []


def test_options_parse_dash_and_underscore_forms():
    o = PipelineOptions(["--device-mapping=a", "--fhir_mapping=b", "--dead-letter=c", "--bundle-size=7"]
                        ).view_as(IomtFhirOptions)
    assert (o.device_mapping, o.fhir_mapping, o.dead_letter, o.bundle_size, o.identity_mode) == ("a", "b", "c", 7, "Create")


def test_writer_sizes_default_and_must_be_positive(tmp_path, capsys):
    o = PipelineOptions([]).view_as(IomtFhirOptions)
    assert (o.max_in_flight, o.observation_cache_size) == (2, 5000)
    # bundle and read batch sizes: the server's profile unless given (an unknown server's here)
    s = writer_settings(o)
    assert (s.bundle_size, s.read_batch_size, s.bundle_type, s.max_requests_per_second) == (50, 500, "transaction", 0)
    d = write_inputs(tmp_path)
    rc = launch.main(["--runner=FnApiRunner", f"--device-mapping={d / 'dm.json'}",
                            f"--fhir-mapping={d / 'fm.json'}", f"--input={d / 'in.jsonl'}",
                            f"--output={d / 'obs'}", f"--dead-letter={d / 'dead'}",
                            "--max-in-flight=0", "--bundle-size=0", "--observation-cache-size=-1"])
    assert rc == 2
    assert capsys.readouterr().err.strip() == ("iomt-fhir: error: --bundle-size must be at least 1; --max-in-flight must be "
                                               "at least 1; --observation-cache-size must be at least 0")
    assert not (d / "obs.jsonl").exists()


def test_default_window_follows_the_longest_observation_period():
    from transforms.group import window_for_mapping
    from transforms.mapping.fhir_templates import load_fhir_mapping
    assert window_for_mapping(load_fhir_mapping(FHIR)) == 3600
    daily = FHIR.replace('"periodInterval": 60', '"periodInterval": 1440')
    assert window_for_mapping(load_fhir_mapping(daily)) == 86400
    single = FHIR.replace('"periodInterval": 60', '"periodInterval": 0')
    assert window_for_mapping(load_fhir_mapping(single)) == 300
