"""Options given to ``iomt-fhir run`` reach the step that uses them, through the launcher
(``pipelines.run.launch``), the graph (``pipelines.iomt_to_fhir.build``) and the pickling a
runner does before a worker's ``setup``: the pipeline ``launch.main`` would run is taken at
``Pipeline.run`` and inspected instead of run (nothing is contacted; preflight is skipped).

Why: each option was parsed and documented, but a flag dropped between the parser and the
DoFn (a keyword not passed on) changes nothing visible on a small run, so no other test
would notice it.
"""
import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.pipeline import PipelineVisitor
from apache_beam.transforms import trigger

from conftest import REPO
from pipelines.run import launch
from transforms.sinks.fhir_server import WriteObservationsFn

BASE = ["--runner=FnApiRunner", f"--device-mapping={REPO / 'templates' / 'devicecontent.json'}",
        f"--fhir-mapping={REPO / 'templates' / 'fhirmapping.json'}", "--skip-preflight"]
NOBODY = "http://127.0.0.1:9/fhir"  # never contacted: the pipeline is built, not run


class _Stop(Exception):
    pass


@pytest.fixture
def launched(monkeypatch, tmp_path):
    """``launched(args)``: the pipeline ``launch.main(BASE + args)`` would run."""
    taken = []

    def take(self, *args, **kwargs):
        taken.append(self)
        raise _Stop("taken at Pipeline.run")

    monkeypatch.setattr(beam.Pipeline, "run", take)

    def launch_(args):
        rc = launch.main(BASE + [f"--dead-letter={tmp_path / 'dead'}"] + args)
        assert taken, f"launch.main returned {rc} before running a pipeline"
        return taken[-1]
    return launch_


def leaf_transforms(p):
    found = []

    class Visitor(PipelineVisitor):
        def visit_transform(self, node):
            found.append(node)
    p.visit(Visitor())
    return found


def worker_writer(p):
    """The pipeline's FHIR write DoFn as a worker gets it: unpickled, then set up."""
    [fn] = [n.transform.fn for n in leaf_transforms(p)
            if isinstance(getattr(n.transform, "fn", None), WriteObservationsFn)]
    fn = pickler.loads(pickler.dumps(fn))
    fn.setup()
    return fn


def group_trigger(p):
    [node] = [n for n in leaf_transforms(p)
              if n.full_label.startswith("Group/") and isinstance(n.transform, beam.WindowInto)]
    return node.transform.windowing.triggerfn


def early_delay(when) -> float:
    """The early firing's processing-time delay of the Group step's trigger (AfterWatermark
    wraps its ``early`` trigger in Repeatedly; triggers have no ``==``)."""
    assert isinstance(when, trigger.AfterWatermark) and isinstance(when.early, trigger.Repeatedly)
    assert isinstance(when.early.underlying, trigger.AfterProcessingTime)
    return when.early.underlying.delay


def test_writer_options_reach_the_writer(launched, tmp_path):
    p = launched([f"--input={REPO / 'templates' / 'sample' / '*.jsonl'}", f"--fhir-url={NOBODY}",
                  "--bundle-size=7", "--read-batch-size=11", "--max-in-flight=3",
                  "--observation-cache-size=0", "--max-fhir-requests-per-second=5"])
    fn = worker_writer(p)
    try:
        w = fn.writer
        assert (w.bundle_size, w.read_batch_size, w.max_in_flight) == (7, 11, 3)
        assert w.cache.max_entries == 0  # the cache is off: every update reads first
        assert fn.client.throttle.limiter.interval == pytest.approx(1 / 5)
    finally:
        fn.teardown()


def test_writer_defaults(launched):
    fn = worker_writer(launched([f"--input={REPO / 'templates' / 'sample' / '*.jsonl'}", f"--fhir-url={NOBODY}"]))
    try:
        w = fn.writer
        assert (w.bundle_size, w.read_batch_size, w.max_in_flight, w.cache.max_entries) == (50, 500, 2, 5000)
        assert fn.client.throttle.limiter is None  # no rate cap unless asked
    finally:
        fn.teardown()


STREAM = ["--pubsub-subscription=projects/iomt-test/subscriptions/devices"]


def test_a_stream_fires_early_every_5_s_by_default(launched, tmp_path):
    p = launched(STREAM + [f"--output={tmp_path / 'obs'}"])
    assert early_delay(group_trigger(p)) == 5  # README "History": p95 within 10 s, fewest versions


def test_early_firing_seconds_reach_the_trigger(launched, tmp_path):
    p = launched(STREAM + [f"--output={tmp_path / 'obs'}", "--early-firing-seconds=10"])
    assert early_delay(group_trigger(p)) == 10


def test_files_have_no_early_firing(launched, tmp_path):
    p = launched([f"--input={REPO / 'templates' / 'sample' / '*.jsonl'}", f"--output={tmp_path / 'obs'}"])
    assert not any(isinstance(n.transform, beam.WindowInto) for n in leaf_transforms(p)
                   if n.full_label.startswith("Group/"))  # one pane per window, no trigger
