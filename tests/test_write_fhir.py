"""The Observation writer against the real local FHIR server (and through the fault proxy)."""
import functools
import threading

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
import pytest
import requests
from apache_beam.testing.util import assert_that, equal_to

from fault_proxy import Fault
from transforms.fhir.client import FhirClient
from transforms.fhir.observation_cache import ObservationCache
from transforms.fhir.retry import RetryPolicy
from transforms.mapping.errors import NotSupportedException
from transforms.fhir.writer import (CREATED, FAILED, UNCHANGED, UPDATED, ObservationWriter,
                                    WriteItem)
from transforms.sinks.fhir_server import WriteToFhir

pytestmark = pytest.mark.fhir_server
FAST = RetryPolicy(max_attempts=5, initial_backoff=0.01, max_backoff=0.05, max_total_seconds=10)


def obs(oid, values):
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"text": "hr"}, "valueString": ",".join(sorted(values))}


def union_merge(item, existing):
    """Stand-in for the mapping merge: set-union of comma-separated values."""
    if "bad" in item.observation["valueString"]:
        raise NotSupportedException("Element existingValue expected to be of type SampledData")
    merged = dict(existing)
    vals = set(existing["valueString"].split(",")) | set(item.observation["valueString"].split(","))
    merged["valueString"] = ",".join(sorted(vals))
    merged["status"] = existing["status"] if vals == set(existing["valueString"].split(",")) else "amended"
    return merged, merged != existing


@pytest.fixture
def client(fhir_base_url):
    c = FhirClient(fhir_base_url, retry_policy=FAST)
    yield c
    c.close()


def server_state(client, ids):
    out = {}
    for i in ids:
        r = client.read("Observation", i)
        out[i] = (r.resource["valueString"], r.version_id) if r else None
    return out


def test_create_then_idempotent_rewrite_then_merge(client, unique):
    ids = [f"w-{unique}-{i}" for i in range(5)]
    w = ObservationWriter(client, union_merge, bundle_size=2)
    res = w.write([WriteItem(obs(i, ["1"])) for i in ids])
    assert [r.outcome for r in res] == [CREATED] * 5
    before = server_state(client, ids)
    res = w.write([WriteItem(obs(i, ["1"])) for i in ids])
    assert [r.outcome for r in res] == [UNCHANGED] * 5
    assert server_state(client, ids) == before  # same versions: nothing written
    res = w.write([WriteItem(obs(ids[0], ["2"])), WriteItem(obs(ids[1], ["1"]))])
    assert [r.outcome for r in res] == [UPDATED, UNCHANGED]
    assert client.read("Observation", ids[0]).resource["valueString"] == "1,2"
    assert client.read("Observation", ids[0]).resource["status"] == "amended"


def test_same_id_twice_in_one_flush_merges_both(client, unique):
    oid = f"d-{unique}"
    res = ObservationWriter(client, union_merge).write(
        [WriteItem(obs(oid, ["1"])), WriteItem(obs(oid, ["2"]))])
    assert [r.outcome for r in res] == [CREATED, CREATED]
    assert client.read("Observation", oid).resource["valueString"] == "1,2"


def test_stale_version_412_is_reread_and_merged(client, unique):
    oid = f"s-{unique}"
    client.put(obs(oid, ["1"]))
    raced = {"done": False}

    def racing_merge(item, existing):
        if not raced["done"]:  # another worker writes between our read and our PUT
            raced["done"] = True
            other = dict(existing, valueString="1,9")
            other.pop("meta")
            client.put(other, if_match=existing["meta"]["versionId"])
        return union_merge(item, existing)
    w = ObservationWriter(client, racing_merge)
    res = w.write([WriteItem(obs(oid, ["2"])), WriteItem(obs(f"s2-{unique}", ["5"]))])
    assert [r.outcome for r in res] == [UPDATED, CREATED]
    assert client.read("Observation", oid).resource["valueString"] == "1,2,9"
    assert w.contention == 1


class BarrierClient(FhirClient):
    """Each transaction waits until ``parties`` transactions are under way at once: a
    writer that sends one bundle at a time breaks the barrier (after ``timeout``)."""

    def __init__(self, *a, parties=2, timeout=5.0, **kw):
        super().__init__(*a, **kw)
        self.barrier = threading.Barrier(parties, timeout=timeout)

    def transaction(self, entries):
        self.barrier.wait()
        return super().transaction(entries)


def test_bundles_go_out_concurrently_and_outcomes_keep_item_order(fhir_base_url, client, unique):
    client.put(obs(f"c-{unique}-1", ["1"]))
    c = BarrierClient(fhir_base_url, retry_policy=FAST, parties=3)
    w = ObservationWriter(c, union_merge, bundle_size=2, max_in_flight=3)
    ids = [f"c-{unique}-{i}" for i in range(7)]
    items = [WriteItem(obs(i, ["2"])) for i in ids]
    items[4] = WriteItem(obs(ids[4], ["bad"]))  # new id: "bad" only matters to a merge
    items.append(WriteItem(obs(ids[1], ["bad"])))  # existing id: the merge fails
    res = w.write(items)
    # ids 0,2..6 are new: 3 bundles of 2 plans, in flight at once (the barrier passed);
    # id 1 fails in the merge, both of its items with it
    assert [r.outcome for r in res] == [CREATED, FAILED] + [CREATED] * 5 + [FAILED]
    assert [r.item for r in res] == items
    assert server_state(client, ids)[ids[0]][0] == "2"
    assert server_state(client, ids)[ids[1]][0] == "1"
    w.close()
    assert w._pool is None
    c.close()


def test_one_in_flight_sends_bundles_one_after_the_other(fhir_base_url, unique):
    c = BarrierClient(fhir_base_url, retry_policy=FAST, parties=2, timeout=0.5)
    w = ObservationWriter(c, union_merge, bundle_size=2, max_in_flight=1)
    with pytest.raises(threading.BrokenBarrierError):
        w.write([WriteItem(obs(f"o-{unique}-{i}", ["1"])) for i in range(4)])
    assert w._pool is None  # no threads were started
    c.close()


def test_cache_skips_the_read_for_an_observation_written_before(client, unique):
    oid = f"k-{unique}"
    w = ObservationWriter(client, union_merge, cache=ObservationCache())
    assert [r.outcome for r in w.write([WriteItem(obs(oid, ["1"]))])] == [CREATED]
    sent = client.requests_sent
    assert [r.outcome for r in w.write([WriteItem(obs(oid, ["2"]))])] == [UPDATED]
    assert client.requests_sent - sent == 1  # the PUT only: merged into the cached version
    sent = client.requests_sent
    assert [r.outcome for r in w.write([WriteItem(obs(oid, ["1", "2"]))])] == [UNCHANGED]
    assert client.requests_sent == sent  # nothing read, nothing written
    assert client.read("Observation", oid).resource["valueString"] == "1,2"


def test_stale_cache_gets_412_then_rereads_and_keeps_the_other_writers_change(client, unique):
    oid = f"k2-{unique}"
    w = ObservationWriter(client, union_merge, cache=ObservationCache())
    w.write([WriteItem(obs(oid, ["1"]))])
    current = client.read("Observation", oid)
    other = dict(current.resource, valueString="1,9")
    other.pop("meta")
    client.put(other, if_match=current.version_id)  # someone else, after our write
    res = w.write([WriteItem(obs(oid, ["2"]))])
    assert [r.outcome for r in res] == [UPDATED]
    assert client.read("Observation", oid).resource["valueString"] == "1,2,9"
    assert w.contention == 1
    assert w.cache.get(oid)["valueString"] == "1,2,9"


def test_deleted_since_cached_is_created_again(client, fhir_base_url, unique):
    oid = f"k3-{unique}"
    w = ObservationWriter(client, union_merge, cache=ObservationCache())
    w.write([WriteItem(obs(oid, ["1"]))])
    assert requests.delete(f"{fhir_base_url}/Observation/{oid}", timeout=10).ok
    res = w.write([WriteItem(obs(oid, ["2"])), WriteItem(obs(f"k4-{unique}", ["3"]))])
    assert [r.outcome for r in res] == [CREATED, CREATED]
    assert client.read("Observation", oid).resource["valueString"] == "2"


def test_failures_are_per_item(client, unique):
    client.put(obs(f"b-{unique}", ["1"]))
    res = ObservationWriter(client, union_merge).write(
        [WriteItem(obs(f"b-{unique}", ["bad"])), WriteItem(obs(f"g-{unique}", ["1"]))])
    assert [r.outcome for r in res] == [FAILED, CREATED]
    assert res[0].error.error_type == "NotSupportedException"


@pytest.mark.parametrize("in_flight", [1, 3])
def test_faults_nothing_lost_nothing_duplicated(fault_proxy, client, unique, in_flight):
    ids = [f"f-{unique}-{i}" for i in range(6)]
    c = FhirClient(fault_proxy.url, retry_policy=FAST, timeout=(2, 0.5))
    tx, batch = b'"transaction"', b'"batch"'
    fault_proxy.add(Fault("status", 503, body_contains=batch),  # the batched reads
                    Fault("reset", body_contains=batch),
                    Fault("status", 503, body_contains=tx), Fault("status", 503, body_contains=tx),
                    Fault("status", 429, headers={"Retry-After": "0"}, body_contains=tx),
                    Fault("reset_after", body_contains=tx),  # applied, answer lost
                    Fault("delay", seconds=1.0, body_contains=tx))  # past the 0.5 s timeout
    w = ObservationWriter(c, union_merge, bundle_size=3, max_in_flight=in_flight)
    res = w.write([WriteItem(obs(i, ["1"])) for i in ids])
    w.close()
    assert all(r.outcome in (CREATED, UNCHANGED) for r in res)
    assert fault_proxy.pending() == 0
    assert {i: v for i, (v, _) in server_state(client, ids).items()} == {i: "1" for i in ids}
    for i in ids:
        assert len(client.search("Observation", {"_id": i})) == 1


def test_beam_dofn_outputs_and_dead_letters(fhir_base_url, client, unique):
    client.put(obs(f"bb-{unique}", ["1"]))
    items = [WriteItem(obs(f"n-{unique}-{i}", ["1"])) for i in range(3)]
    items.append(WriteItem(obs(f"bb-{unique}", ["bad"])))
    factory = functools.partial(FhirClient, fhir_base_url, retry_policy=FAST)
    with beam.Pipeline(runner=FnApiRunner()) as p:
        out = (p | beam.Create(items)
               | WriteToFhir(factory, union_merge, bundle_size=2))
        assert_that(out.outcomes | beam.Map(lambda r: r["outcome"]),
                    equal_to([CREATED] * 3 + [FAILED]), label="outcomes")
        assert_that(out.dead_letter | beam.Map(lambda d: (d["stage"], d["error_type"],
                                                          d["payload"]["id"])),
                    equal_to([("fhir_write", "NotSupportedException", f"bb-{unique}")]),
                    label="dead")


def test_two_panes_of_one_new_observation_at_once_keep_both_readings(fault_proxy, client, unique):
    """Two panes of one new Observation reach the write step at the same time (two bundles on
    two workers). The proxy holds the reads until both writers' reads have arrived, so without
    one writer per id both see "absent" and both create; the second PUT overwrites the first.
    WriteToFhir keys by id, so one writer writes both panes (one read, the merge, one write)."""
    import threading

    oid = f"race-{unique}"
    reads_meet = threading.Barrier(2, timeout=3)
    fault_proxy.add(*[Fault("hold", barrier=reads_meet, body_contains=b'"batch"') for _ in range(2)])
    factory = functools.partial(FhirClient, fault_proxy.url, retry_policy=FAST)
    panes = [("pane-1", WriteItem(obs(oid, ["1"]))), ("pane-2", WriteItem(obs(oid, ["2"])))]
    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    with beam.Pipeline(runner=FnApiRunner(), options=options) as p:
        out = (p | beam.Create(panes) | "Panes" >> beam.GroupByKey()  # two keys: two bundles
               | beam.FlatMap(lambda kv: kv[1])
               | WriteToFhir(factory, union_merge, shards=4))
        assert_that(out.outcomes | beam.Map(lambda r: r["outcome"]), equal_to([CREATED] * 2))
    assert client.read("Observation", oid).resource["valueString"] == "1,2"


def test_stream_writes_a_pane_after_flush_seconds_without_waiting_for_more(client, fhir_base_url,
                                                                           unique):
    """On a stream a shard's partial batch is written ``flush_seconds`` after its first item:
    pane 1 is on the server (created) before pane 2 arrives (updated). Processing time is
    TestStream's virtual clock (it starts at 0), given to the writer as its clock; the
    watermark stays before the items' event time until the end."""
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue

    oid = f"flush-{unique}"
    factory = functools.partial(FhirClient, fhir_base_url, retry_policy=FAST)
    stream = (TestStream()
              .add_elements([TimestampedValue(WriteItem(obs(oid, ["1"])), 1772359200)])
              .advance_processing_time(2)
              .add_elements([TimestampedValue(WriteItem(obs(oid, ["2"])), 1772359200)])
              .advance_processing_time(2)
              .advance_watermark_to_infinity())
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as p:
        out = p | stream | WriteToFhir(factory, union_merge, flush_seconds=1.0, clock=lambda: 0.0)
        assert_that(out.outcomes | beam.Map(lambda r: r["outcome"]), equal_to([CREATED, UPDATED]))
    assert client.read("Observation", oid).resource["valueString"] == "1,2"


@pytest.mark.parametrize("status, method", [(422, "PUT"), (400, "POST"), (404, "POST")])
def test_permanent_errors_dead_letter_at_once_under_the_outage_budget(fault_proxy, unique,
                                                                    status, method):
    """The outage budget is for transient failures only: a 422 on the write, a 400 or 404 on
    the batched read by id fail the item at once (no retry), even with 300 s to spend."""
    from clock_fixtures import FakeClock
    fault_proxy.add(Fault("status", status, method=method))
    clock = FakeClock()
    c = FhirClient(fault_proxy.url, retry_policy=RetryPolicy.for_outage(300), clock=clock)
    (res,) = ObservationWriter(c, union_merge).write([WriteItem(obs(f"perm-{unique}", ["1"]))])
    c.close()
    assert res.outcome == FAILED and res.error.status == status and not res.error.retryable
    assert clock.sleeps == []  # no wait for a retry
    assert len(fault_proxy.log) == (1 if method == "POST" else 2)  # no second attempt


def test_time_throttled_is_reported_as_beams_throttling_counter(fault_proxy, client, unique):
    """A server refusing with 429 + Retry-After: the write step reports the time it waited as
    ``cumulativeThrottlingSeconds`` (the counter name Dataflow's autoscaler reads)."""
    from apache_beam.metrics.metric import MetricsFilter
    fault_proxy.add(Fault("status", 429, headers={"Retry-After": "1"}, method="POST"),
                    Fault("status", 429, headers={"Retry-After": "1"}, method="PUT"))
    factory = functools.partial(FhirClient, fault_proxy.url, retry_policy=RetryPolicy.for_outage(30))
    p = beam.Pipeline(runner=FnApiRunner())
    _ = p | beam.Create([WriteItem(obs(f"thr-{unique}", ["1"]))]) | WriteToFhir(factory, union_merge)
    result = p.run()
    result.wait_until_finish()
    (counter,) = result.metrics().query(MetricsFilter().with_name("cumulativeThrottlingSeconds"))["counters"]
    assert counter.committed >= 2
    assert client.read("Observation", f"thr-{unique}").resource["valueString"] == "1"
