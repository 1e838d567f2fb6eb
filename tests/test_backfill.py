"""``ReadNormalizeGroup`` (files, batch) gives the groups and dead letters of the element path
(read -> ``Normalize`` -> ``GroupMeasurements``), whatever the ranges and flushes."""
import json
import pathlib

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipelines.simulator.devices import archive_lines
from transforms.backfill import ReadNormalizeGroup
from transforms.group import GroupMeasurements
from transforms.normalize import Normalize
from transforms.records.dead_letter import DEAD_LETTER_TAG
from transforms.sources.files import ReadArchiveFiles

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEVICE_MAPPING = (ROOT / "templates" / "devicecontent.json").read_text()
WINDOW = 3600


def lines():
    """Simulated readings over 3 hours (every template's type) with bad lines among them:
    not JSON, a reading without a timestamp, a value that is not a date, a blank line."""
    good = archive_lines(6, 180, "2026-01-05T00:00:00Z", 3)
    bad = ["{broken", json.dumps({"heartRate": "70", "deviceId": "d1", "patientId": "p1"}),
           json.dumps({"heartRate": "70", "deviceId": "d1", "endDate": "yesterday"}), "   "]
    out = []
    for i, line in enumerate(good):
        out.append(line)
        if i % 97 == 0:
            out.append(bad[(i // 97) % len(bad)])
    return out


def _groups_as_json(groups):
    return groups | beam.MapTuple(lambda key, ms: json.dumps(
        [list(key), sorted(m.to_json()["OccurrenceTimeUtc"] + repr(m.properties) for m in ms)]))


def run(path, batch: bool, **batch_args):
    """(groups, dead letters) as sorted JSON strings."""
    out_dir = path.parent / ("batch" if batch else "elements") / str(len(batch_args))
    with beam.Pipeline(runner=FnApiRunner()) as p:
        if batch:
            out = p | ReadNormalizeGroup(str(path), "body", DEVICE_MAPPING, WINDOW, **batch_args)
            groups, dead = out["groups"], out[DEAD_LETTER_TAG]
        else:
            read = p | ReadArchiveFiles(str(path), "body")
            normalized = read.events | Normalize(DEVICE_MAPPING)
            groups = normalized.measurements | GroupMeasurements(WINDOW)
            dead = (read[DEAD_LETTER_TAG], normalized[DEAD_LETTER_TAG]) | beam.Flatten()
        _ = _groups_as_json(groups) | "WriteGroups" >> beam.io.WriteToText(str(out_dir / "groups"))
        _ = (dead | "DeadJson" >> beam.Map(json.dumps, sort_keys=True)
             | "WriteDead" >> beam.io.WriteToText(str(out_dir / "dead")))
    return tuple(sorted(line for f in sorted(out_dir.glob(name + "*")) for line in f.read_text().splitlines())
                 for name in ("groups", "dead"))


@pytest.mark.parametrize("batch_args", [
    {},                                                 # one range, no flush
    {"range_bytes": 4096, "max_buffered": 50},          # many ranges, a flush every 50 readings
])
def test_same_groups_and_dead_letters_as_the_element_path(tmp_path, batch_args):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines()) + "\n")
    groups, dead = run(path, batch=False)
    assert len(groups) > 30 and len(dead) > 5  # the data exercises groups, windows and dead letters
    assert {json.loads(d)["stage"] for d in dead} == {"normalization"}
    assert run(path, batch=True, **batch_args) == (groups, dead)


def test_a_file_that_cannot_be_read_is_one_read_dead_letter(tmp_path):
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    groups, dead = run(path, batch=True)
    assert groups == []
    assert [json.loads(d)["stage"] for d in dead] == ["read"]
    assert (groups, dead) == run(path, batch=False)


FHIR_MAPPING = (ROOT / "templates" / "fhirmapping.json").read_text()
DAY = 86400  # the example FHIR mapping's longest period: the launcher's window for it


def observations(path, fold: bool, **batch_args):
    """Observation JSON lines (``issued``, the build time, left out), sorted, and dead letters."""
    from transforms.to_observations import FoldObservationsById, ToObservations

    out_dir = path.parent / ("fold" if fold else "shuffle") / str(len(batch_args))
    with beam.Pipeline(runner=FnApiRunner()) as p:
        if fold:
            out = p | ReadNormalizeGroup(str(path), "body", DEVICE_MAPPING, DAY, fold_fhir_mapping=FHIR_MAPPING,
                                         **batch_args)
            obs, dead = out["observations"], out[DEAD_LETTER_TAG]
        else:
            out = p | ReadNormalizeGroup(str(path), "body", DEVICE_MAPPING, DAY, **batch_args)
            converted = out["groups"] | ToObservations(FHIR_MAPPING)
            obs = converted.observations | FoldObservationsById(FHIR_MAPPING)
            dead = (out[DEAD_LETTER_TAG], converted[DEAD_LETTER_TAG]) | beam.Flatten()
        _ = (obs | "Json" >> beam.Map(lambda o: json.dumps({k: v for k, v in o.items() if k != "issued"},
                                                              sort_keys=True))
             | "WriteObs" >> beam.io.WriteToText(str(out_dir / "obs")))
        _ = (dead | "DeadJson" >> beam.Map(json.dumps, sort_keys=True)
             | "WriteDead" >> beam.io.WriteToText(str(out_dir / "dead")))
    return tuple(sorted(line for f in sorted(out_dir.glob(name + "*")) for line in f.read_text().splitlines())
                 for name in ("obs", "dead"))


def test_converting_and_folding_per_fold_key_gives_the_observations_of_the_fold_shuffle(tmp_path):
    """Daily windows (the mapping's longest period), ranges and flushes that split every group."""
    from transforms.backfill import folds_locally
    from transforms.group import window_for_mapping
    from transforms.mapping.fhir_templates import load_fhir_mapping

    assert folds_locally(DAY, window_for_mapping(load_fhir_mapping(FHIR_MAPPING)))
    assert not folds_locally(WINDOW, window_for_mapping(load_fhir_mapping(FHIR_MAPPING)))
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines()) + "\n")
    obs, dead = observations(path, fold=False, range_bytes=4096, max_buffered=50)
    assert len(obs) > 50 and len(dead) > 5
    assert observations(path, fold=True, range_bytes=4096, max_buffered=50) == (obs, dead)
