"""The pipeline's FHIR write step: Beam over the pure :class:`ObservationWriter`.

``WriteToFhir``: ``PCollection[WriteItem]`` -> outputs ``outcomes`` (``{"id", "outcome"}`` per
item) and ``dead_letter`` (stage ``fhir_write``, the reason and the Observation).

**One writer per Observation.** Two panes of one Observation (early firings then a late
pane, windows shorter than the Observation's period, a backlog) must never be written at
the same time: when the Observation does not exist yet, both would ``PUT`` it without a
version and the second would overwrite the first (panes are DISCARDING). So the items are
re-windowed into the global window and keyed by a stable hash of the Observation id modulo
``shards``; :class:`WriteObservationsFn` is a *stateful* DoFn on that key, and it writes
inside its own process/timer callback. A runner processes one key on one worker at a time,
so one id is written by one writer at a time, by construction.

- Why the global window: state is per key *and window*; two windows (a window shorter than
  the Observation's period, or a late reading re-timestamped to its arrival) can hold the
  same id.
- Why not ``GroupIntoBatches.WithShardedKey``: its shard is the worker thread, so the same
  id can be in two shards on two threads. Why not ``GroupIntoBatches`` followed by the
  writer: the batch would leave the keyed step before it is written.

**Batching.** A shard's items wait in bag state until ``flush_size`` = max(bundle size, read
batch size) of them are there, then are written in ``process``; on a stream a
processing-time timer writes what waits ``flush_seconds`` (default 1 s) after the first of
them arrived, so a pane is written promptly; an event-time timer at the first item's
timestamp writes the rest when the watermark passes it (the end of the input in batch). Distinct ids in one flush go in several bundles at once
(``max_in_flight``), and distinct shards are written by different workers in parallel.
State is the runner's, so an item accepted by this step survives a worker crash (the runner
retries; the merge makes rewrites idempotent).

**Backpressure.** A write blocks while the client rides out an outage or throttling
(``transforms.fhir.client``): the runner gives this thread no new work meanwhile, so
memory stays bounded by ``flush_size`` items per shard.
"""
from __future__ import annotations

import time
import zlib
from typing import Callable, Optional

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import combiners, window
from apache_beam.transforms.userstate import (BagStateSpec, CombiningValueStateSpec, TimerSpec,
                                              on_timer)
from apache_beam.transforms.timeutil import TimeDomain

from transforms.records.dead_letter import DEAD_LETTER_TAG, error_type_of, write_failure
from transforms import metrics
from transforms.fhir.client import FhirClient
# re-exported: the writer's names, for callers of this module
from transforms.fhir.writer import (CREATED, FAILED, METRIC_SAVED, UNCHANGED, UPDATED,  # noqa: F401
                                    ContentionError, MappingMerge, MergeFn, ObservationWriter,
                                    WriteItem, WriteOutcome)
from transforms.fhir.observation_cache import ObservationCache

#: default number of write keys: the write step's parallelism (one id -> one key)
DEFAULT_SHARDS = 16
#: default wait before a stream's partial batch is written
DEFAULT_FLUSH_SECONDS = 1.0


def shard_of(observation_id: str, shards: int) -> int:
    """Stable across processes and runs (``hash()`` of a str is salted per process)."""
    return zlib.crc32(str(observation_id).encode("utf-8")) % shards


def _as_item(item) -> WriteItem:
    if isinstance(item, WriteItem):
        return item
    return WriteItem(*item) if isinstance(item, tuple) else WriteItem(item)


class WriteObservationsFn(beam.DoFn):
    """Stateful writer on ``(shard, WriteItem)``; see the module docstring.

    ``client_factory`` builds the :class:`FhirClient` in ``setup`` (sessions are not
    picklable). ``flush_seconds`` > 0 (streams) sets the processing-time flush; ``clock``
    is the processing-time source for it. Under TestStream the DirectRunner's processing
    time is virtual and starts at 0: pass ``clock=lambda: 0.0``, else the timer only fires
    at the end, and the DirectRunner drops what a timer emits once the watermark is at
    infinity (it does not hold the watermark for timers as production runners do).
    """

    ITEMS = BagStateSpec("items", PickleCoder())
    COUNT = CombiningValueStateSpec("count", VarIntCoder(), combiners.CountCombineFn())
    WATERMARK = TimerSpec("watermark", TimeDomain.WATERMARK)
    FLUSH = TimerSpec("flush", TimeDomain.REAL_TIME)

    def __init__(self, client_factory: Callable[[], FhirClient], merge: MergeFn,
                 bundle_size: int = 50, max_conflict_retries: int = 2,
                 bundle_type: str = "transaction", read_batch_size: Optional[int] = None,
                 max_in_flight: int = 2, observation_cache_size: int = 5000,
                 observation_cache_seconds: float = 3600.0, flush_seconds: float = 0.0,
                 clock: Callable[[], float] = time.time):
        self.client_factory = client_factory
        self.merge = merge
        self.bundle_size = bundle_size
        #: ids per batch of reads; a flush holds max(bundle_size, read_batch_size) items,
        #: so a larger read batch means fewer read round trips (each costs ~1 ms of fixed
        #: overhead on the local server) while transactions keep bundle_size. Servers cap
        #: batch entries too (Azure 500), so it is a separate knob.
        self.read_batch_size = read_batch_size or bundle_size
        self.flush_size = max(bundle_size, self.read_batch_size)
        self.max_conflict_retries = max_conflict_retries
        self.bundle_type = bundle_type
        #: transaction bundles in flight at once per flush (see ObservationWriter)
        self.max_in_flight = max_in_flight
        #: Observations kept per DoFn instance so updates skip the read (0 = none)
        self.observation_cache_size = observation_cache_size
        self.observation_cache_seconds = observation_cache_seconds
        self.flush_seconds = flush_seconds
        self.clock = clock
        self.saved = {k: Metrics.counter("FhirResourceSaved", v) for k, v in METRIC_SAVED.items()}
        self.contention = Metrics.counter(metrics.NAMESPACE, "FHIRResourceContention")
        #: the name Beam's IOs use, which Dataflow's autoscaler reads as "throttled"
        self.throttled = Metrics.counter(metrics.NAMESPACE, "cumulativeThrottlingSeconds")

    def setup(self):
        self.client = self.client_factory()
        self.writer = ObservationWriter(
            self.client, self.merge, self.bundle_size, read_batch_size=self.read_batch_size,
            max_conflict_retries=self.max_conflict_retries, bundle_type=self.bundle_type,
            on_contention=self.contention.inc, max_in_flight=self.max_in_flight,
            cache=ObservationCache(self.observation_cache_size, self.observation_cache_seconds))
        self._throttled_reported = 0

    def process(self, element, w=beam.DoFn.WindowParam, ts=beam.DoFn.TimestampParam,
                items=beam.DoFn.StateParam(ITEMS), count=beam.DoFn.StateParam(COUNT),
                watermark=beam.DoFn.TimerParam(WATERMARK),
                flush=beam.DoFn.TimerParam(FLUSH)):
        _shard, item = element
        items.add(_as_item(item))
        count.add(1)
        n = count.read()
        if n == 1:
            # Event time of the batch's first item: the watermark passes it at the end of
            # the input (batch) or once its window closes (stream). An event-time timer
            # holds this step's output watermark, so what it emits is never late
            # downstream (a timer at the global window's end would emit behind it).
            watermark.set(min(ts, w.max_timestamp()))
            if self.flush_seconds > 0:
                flush.set(self.clock() + self.flush_seconds)
        if n >= self.flush_size:
            yield from self._flush(items, count, flush)

    @on_timer(FLUSH)
    def on_flush(self, items=beam.DoFn.StateParam(ITEMS), count=beam.DoFn.StateParam(COUNT)):
        # The timer that fired needs no clearing: Prism 2.77 fires a processing-time timer that
        # is cleared, so clearing it here looped forever (a batch job on Prism never finished).
        yield from self._flush(items, count, None)

    @on_timer(WATERMARK)
    def on_watermark(self, items=beam.DoFn.StateParam(ITEMS), count=beam.DoFn.StateParam(COUNT),
                      flush=beam.DoFn.TimerParam(FLUSH)):
        yield from self._flush(items, count, flush)

    def teardown(self):
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.close()
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    def _flush(self, items, count, flush):
        """Write what is buffered; ``flush``: the processing-time timer to clear, or None."""
        buffered = list(items.read())
        items.clear()
        count.clear()
        if flush is not None and self.flush_seconds > 0:  # never set otherwise (batch)
            flush.clear()
        if not buffered:
            return
        # the write happens here, inside the key's callback: see "One writer per Observation"
        results = self.writer.write(buffered)
        throttled = int(self.client.throttled_seconds)
        if throttled > self._throttled_reported:
            self.throttled.inc(throttled - self._throttled_reported)
            self._throttled_reported = throttled
        for item, res in zip(buffered, results):
            if res.outcome == FAILED:
                Metrics.counter("Errors", error_type_of(res.error)).inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, write_failure(
                    res.error, item.observation, item.template_name, item.group))
            else:
                self.saved[res.outcome].inc()
            yield {"id": item.observation.get("id"), "outcome": res.outcome}


class WriteToFhir(beam.PTransform):
    """WriteItems -> FHIR server; outputs ``outcomes`` and ``dead_letter`` (global window).

    Keyword arguments are :class:`WriteObservationsFn`'s; ``shards`` is the number of
    write keys (the step's parallelism)."""

    def __init__(self, client_factory: Callable[[], FhirClient], merge: MergeFn,
                 shards: int = DEFAULT_SHARDS, **writer_kwargs):
        super().__init__()
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self.client_factory = client_factory
        self.merge = merge
        self.shards = shards
        self.writer_kwargs = writer_kwargs

    def expand(self, items):
        shards = self.shards
        return (items
                | "OneWindow" >> beam.WindowInto(window.GlobalWindows())
                | "ById" >> beam.Map(lambda it: (shard_of(_as_item(it).observation["id"], shards), it))
                | "Write" >> beam.ParDo(WriteObservationsFn(
                    self.client_factory, self.merge, **self.writer_kwargs))
                .with_outputs(DEAD_LETTER_TAG, main="outcomes"))
