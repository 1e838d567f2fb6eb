"""CollectMeasurements (the combiner behind GroupMeasurements) and its compact coder."""
import itertools
import typing

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from transforms.group import GroupMeasurements
from transforms.mapping.grouping import measurement_groups
from transforms.mapping.measurement import Measurement
from transforms.group import CollectMeasurements, MeasurementsCoder


def m(t, value, ingestion=None, patient=None, device="d", mtype="hr", correlation=None):
    return Measurement(mtype, t, device, (("hr", value), ("extra", "x")), patient, None, correlation, ingestion)


MS = [m(10, "1"), m(20, "2", ingestion=5), m(20, "3", ingestion=7), m(20, "4", ingestion=6),
      m(30, "5", ingestion=1), m(30, "6"), m(40, "7", patient="")]


def combine(fn, parts):
    accs = [fn.add_inputs(fn.create_accumulator(), part) for part in parts]
    return fn.extract_output(fn.merge_accumulators(accs))


def test_collapse_rule_is_the_reference_groups_whatever_the_split():
    """Same OccurrenceTime: the latest IngestionTime survives; absent counts as earliest."""
    fn = CollectMeasurements()
    (group,) = measurement_groups(MS)  # patient None and "" share a key, as in the reference
    want = sorted(group.measurements)
    for cut in range(len(MS) + 1):
        got = combine(fn, [MS[:cut], MS[cut:]])
        assert sorted(got) == want
        assert sorted(measurement_groups(got)[0].measurements) == want
    assert {x.properties[0][1] for x in combine(fn, [MS])} == {"1", "3", "5", "7"}


def test_coder_round_trips_an_accumulator_exactly():
    fn = CollectMeasurements()
    coder = MeasurementsCoder()
    for acc in (fn.create_accumulator(), fn.add_inputs({}, MS),
                fn.add_inputs({}, [m(1, "a", correlation="c1"), m(2, "b", correlation=None)]),
                fn.add_inputs({}, [m(1, "a", device="d1"), m(2, "b", device="d2")])):  # not one key: still lossless
        back = coder.decode(coder.encode(acc))
        assert back == acc and all(type(v) is Measurement for v in back.values())
        assert [tuple(v) for v in back.values()] == [tuple(v) for v in acc.values()]


def test_coder_is_compact():
    acc = CollectMeasurements().add_inputs({}, [m(t, str(t)) for t in range(1000)])
    pickled = beam.coders.PickleCoder().encode(acc)
    assert len(MeasurementsCoder().encode(acc)) < len(pickled) / 3


def test_batch_grouping_gives_one_list_per_key_and_window():
    ms = [Measurement("hr", (600 + i) * 10_000_000, dev, (("hr", str(i)),), "p-" + dev)
          for i, dev in itertools.product(range(3), ("a", "b"))]
    with beam.Pipeline(runner=FnApiRunner()) as p:
        out = (p | beam.Create(ms) | beam.Map(lambda x: TimestampedValue(x, x.occurrence_time / 1e7))
               | GroupMeasurements(300)
               | beam.MapTuple(lambda k, vs: (k[0], sorted(v.properties[0][1] for v in vs))))
        assert_that(out, equal_to([("a", ["0", "1", "2"]), ("b", ["0", "1", "2"])]))


def test_bounded_precombine_flushes_and_the_shuffle_merges_the_parts():
    from transforms.group import group_key
    from transforms.group import MeasurementSet, PrecombineMeasurements, merge_measurement_sets

    ms = [m(t * 10_000_000, str(t), ingestion=t % 3, device=dev) for t in range(40) for dev in ("a", "b")]
    ms += [m(5 * 10_000_000, "late", ingestion=9, device="a")]  # same time, later ingestion: wins
    with beam.Pipeline(runner=FnApiRunner()) as p:
        out = (p | beam.Create(ms)
               | beam.ParDo(PrecombineMeasurements(300 * 10_000_000, group_key, max_buffered=7))
               .with_output_types(typing.Tuple[typing.Any, MeasurementSet])
               | beam.GroupByKey() | beam.MapTuple(merge_measurement_sets)
               | beam.MapTuple(lambda k, vs: (k[0], len(vs), sorted(v.properties[0][1] for v in vs)[-1])))
        assert_that(out, equal_to([("a", 40, "late"), ("b", 40, "9")]))
    coder = beam.coders.registry.get_coder(MeasurementSet)
    assert isinstance(coder, MeasurementsCoder)
