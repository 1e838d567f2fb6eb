"""Create-or-merge Observations on a FHIR server in transaction bundles (semantics §5).

:class:`ObservationWriter` is plain Python (no Beam), shared by the pipeline's write step
(``transforms.sinks.fhir_server``), the CLI and the tests: given Observations-to-write it reads
the current versions by id (batched), merges with the mapping engine's merge, PUTs what
changed with ``If-Match`` of the version read, and returns exactly one outcome per item:
created / updated / unchanged / failed.

It assumes that nobody else creates the same Observation at the same moment: a new
Observation is PUT without a precondition (FHIR R4 has none for "create only if
absent"). The pipeline makes that true by routing every id to one keyed write step.

Created vs updated is decided from what was read before writing, not from the status code
(servers differ: the local Medplum server answers 200 to a PUT that creates).

Bundles hold distinct Observations, so up to ``max_in_flight`` of them go out at once (worker
threads; 1 = one after the other), and a batch of reads overlaps the bundles already sent.
With an :class:`ObservationCache`, an Observation read or written before is merged into
its cached version without a read (a stream's next pane); ``If-Match`` of that version
keeps it safe, and a 412 re-reads. A versioned PUT answered 404/410 (deleted since) re-reads
too, and the Observation is created again, as the reference does.

Conflicts (409/412, including a whole transaction failing because one entry was stale)
re-read and re-merge, at most ``max_conflict_retries`` more rounds (the reference: 2).

A failed transaction is re-sent once as a *batch* of the same entries, so one bad Observation
is dead-lettered alone instead of taking its bundle with it. Why a batch: servers that commit
a transaction whole or not at all (HAPI, Azure) roll back all 49 neighbours of one entry they
refuse (a reference to a deleted Patient, a client id they do not allow), and a batch answers
entry by entry, so a bad bundle costs two requests, not one per entry. Only when the batch is
refused as a whole too (a size limit, a server without batch) are the entries sent one by one.
Servers that do not roll back (Medplum's router) may have written some entries of the failed
transaction: the batch then meets their new versions (409/412), and the re-read finds what
this writer sent (see ``_plan``), so nothing is written twice.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from transforms.fhir.bundles import chunks, put_entry, read_many
from transforms.fhir.client import EntryResult, FhirClient, FhirError, FhirVersionConflict
from transforms.fhir.observation_cache import ObservationCache

log = logging.getLogger(__name__)

CREATED, UPDATED, UNCHANGED, FAILED = "created", "updated", "unchanged", "failed"
METRIC_SAVED = {CREATED: "ObservationCreated", UPDATED: "ObservationUpdated",
                UNCHANGED: "ObservationNoOperation"}


class WriteItem(NamedTuple):
    """One Observation to write. ``observation`` is the freshly built resource (used as is
    when nothing exists); ``template_name``/``group`` let the merge function fold the same
    data into an existing Observation."""

    observation: dict
    template_name: Optional[str] = None
    group: Any = None


class WriteOutcome(NamedTuple):
    item: WriteItem
    outcome: str  # created | updated | unchanged | failed
    error: Optional[BaseException] = None
    resource: Optional[dict] = None  # what the server holds now (when known)


#: (item, existing) -> (merged, changed)
MergeFn = Callable[[WriteItem, dict], Tuple[dict, bool]]


class MappingMerge:
    """The mapping engine's ``merge_observation`` with the template looked up by name.

    Picklable (holds the loaded mapping), so it can be handed to the DoFn."""

    def __init__(self, fhir_mapping, new_value_wins: Optional[bool] = None):
        self.fhir_mapping = fhir_mapping
        self.new_value_wins = new_value_wins

    def __call__(self, item: WriteItem, existing: dict) -> Tuple[dict, bool]:
        from transforms.mapping.merge import merge_observation
        template = self.fhir_mapping.template_for(item.template_name)
        return merge_observation(template, item.group, existing, self.new_value_wins)


class ContentionError(FhirError):
    """Still conflicting (409/412) after the bounded re-read/merge rounds."""

    error_type = "FHIRResourceContention"


@dataclasses.dataclass
class _Plan:
    rid: str
    items: List[WriteItem]
    resource: dict
    version: Optional[str]
    kind: str  # CREATED or UPDATED


class ObservationWriter:
    def __init__(self, client: FhirClient, merge: MergeFn, bundle_size: int = 50,
                 read_batch_size: Optional[int] = None, max_conflict_retries: int = 2,
                 bundle_type: str = "transaction",
                 on_contention: Optional[Callable[[int], None]] = None,
                 max_in_flight: int = 1, cache: Optional[ObservationCache] = None):
        if bundle_type not in ("transaction", "batch"):
            raise ValueError("bundle_type must be transaction or batch")
        self.client = client
        self.merge = merge
        self.bundle_size = bundle_size
        self.read_batch_size = read_batch_size or bundle_size
        self.max_conflict_retries = max_conflict_retries
        self.bundle_type = bundle_type
        self.on_contention = on_contention
        self.contention = 0
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        #: bundles sent at once (threads); 1 = one after the other, no threads
        self.max_in_flight = max_in_flight
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        #: Observations read or written before, used instead of a read (see ObservationCache);
        #: without one, a cache of size 0 (every lookup misses, nothing is kept)
        self.cache = cache if cache is not None else ObservationCache(0)

    def write(self, items: Sequence[WriteItem]) -> List[WriteOutcome]:
        outcomes: Dict[int, WriteOutcome] = {}
        by_id: Dict[str, List[int]] = {}
        for n, item in enumerate(items):
            by_id.setdefault(item.observation["id"], []).append(n)
        pending = list(by_id)
        #: the plans refused with 409/412 in the last round, by id (see _plan)
        refused: Dict[str, _Plan] = {}
        for round_no in range(self.max_conflict_retries + 1):
            if not pending:
                break
            sent = self._read_plan_send(pending, by_id, items, outcomes, refused)
            conflicts: List[str] = []
            for part, result in sent:
                conflicts.extend(self._classify(part, result(), by_id, outcomes))
            again = set(conflicts)
            refused = {p.rid: p for part, _ in sent for p in part if p.rid in again}
            pending = conflicts
        if pending:
            self._contended(len(pending))
        for rid in pending:
            err = ContentionError("Observation still conflicting after re-read and merge",
                                  status=412)
            for n in by_id[rid]:
                outcomes[n] = WriteOutcome(items[n], FAILED, err)
        return [outcomes[n] for n in range(len(items))]

    def _contended(self, n: int) -> None:
        self.contention += n
        if self.on_contention:
            self.on_contention(n)

    # -- steps ---------------------------------------------------------------------------
    def _plan(self, ids, by_id, items, outcomes, refused=None) -> List[_Plan]:
        """Read ``ids``, merge their items, and plan the writes of what changed.

        ``refused``: last round's plans answered 409/412. When the re-read shows exactly
        what such a plan sent, the write was ours after all and the item keeps that
        plan's outcome (created/updated, not "unchanged"): a failed transaction is not
        rolled back on some servers (Medplum), and a retried request whose first answer
        was lost (reset, timeout) meets the version it wrote itself. Only the others
        count as contention (someone else changed the resource).
        """
        refused = refused or {}
        current, to_read = {}, []
        for rid in ids:
            cached = None if rid in refused else self.cache.get(rid)
            if cached is None:
                to_read.append(rid)
            else:
                current[rid] = cached
        if to_read:
            try:
                read = read_many(self.client, "Observation", to_read, self.read_batch_size)
            except FhirError as err:
                read = {rid: err for rid in to_read}
            current.update(read)
            for rid, resource in read.items():
                if isinstance(resource, dict):
                    self.cache.put(rid, resource)
        plans = []
        for rid in ids:
            its = [items[n] for n in by_id[rid]]
            existing = current.get(rid)
            if isinstance(existing, (EntryResult, FhirError)):
                err = existing if isinstance(existing, FhirError) else FhirError(
                    f"read Observation answered {existing.status}: {existing.outcome_text}",
                    status=existing.status, outcome_text=existing.outcome_text)
                self._fail(by_id[rid], items, outcomes, err)
                continue
            prev = refused.get(rid)
            if prev is not None:
                if existing is not None and _without_meta(existing) == prev.resource:
                    self._done(prev, by_id, outcomes, prev.kind, existing)
                    continue
                self._contended(1)
            try:
                state, changed = existing, False
                for it in its:
                    if state is None:
                        state, changed = dict(it.observation), True
                    else:
                        state, step_changed = self.merge(it, state)
                        changed = changed or step_changed
            except Exception as err:  # a data/shape problem (NotSupportedException...)
                self._fail(by_id[rid], items, outcomes, err)
                continue
            if not changed:
                for n in by_id[rid]:
                    outcomes[n] = WriteOutcome(items[n], UNCHANGED, None, existing)
                continue
            version = ((existing or {}).get("meta") or {}).get("versionId")
            resource = _without_meta(state)
            plans.append(_Plan(rid, its, resource, version, UPDATED if existing else CREATED))
        return plans

    def _read_plan_send(self, ids, by_id, items, outcomes, refused) -> list:
        """Read ``ids`` in batches of ``read_batch_size``, merge, and send what changed in
        bundles of ``bundle_size``; returns ``[(plans, result getter)]`` per bundle.

        With ``max_in_flight`` > 1 the bundles go to worker threads as soon as they are
        full, so the next batch of reads overlaps the transactions already sent (ids are
        distinct, so those never touch what is being read)."""
        sent: list = []
        ready: List[_Plan] = []
        batches = list(chunks(ids, self.read_batch_size))
        for n, batch in enumerate(batches):
            ready.extend(self._plan(batch, by_id, items, outcomes, refused))
            last = n == len(batches) - 1
            while len(ready) >= self.bundle_size or (last and ready):
                part, ready = ready[:self.bundle_size], ready[self.bundle_size:]
                sent.append((part, self._submit(self._send_part, part)))
        return sent

    def _classify(self, part: Sequence[_Plan], results: list, by_id, outcomes) -> List[str]:
        """Record each plan's outcome from its entry result; returns the conflicting ids."""
        conflicts: List[str] = []
        for p, r in zip(part, results):
            if isinstance(r, EntryResult) and r.ok:
                stored = r.resource
                if stored is None and r.version_id:  # the server answered without a body
                    stored = dict(p.resource, meta={"versionId": r.version_id})
                self._done(p, by_id, outcomes, p.kind, stored)
                continue
            self.cache.drop(p.rid)
            if (isinstance(r, FhirVersionConflict) or _status(r) in (409, 412) or
                    (p.version is not None and _status(r) in (404, 410))):
                # stale (or, 404/410, deleted since it was read): re-read, merge again
                conflicts.append(p.rid)
            else:
                err = r if isinstance(r, BaseException) else FhirError(
                    f"write Observation answered {r.status}: {r.outcome_text}",
                    status=r.status, outcome_text=r.outcome_text,
                    retryable=r.status in (408, 429, 500, 502, 503, 504))
                self._fail(by_id[p.rid], p.items, outcomes, err, local=True)
        return conflicts

    def _send_part(self, part: Sequence[_Plan]) -> list:
        """One bundle; an ``EntryResult`` or a ``FhirError`` per plan. May run in a worker
        thread, so it touches nothing but the client."""
        entries = [put_entry(p.resource, p.version, self.client.base_url) for p in part]
        if len(part) > 1:
            kinds = ["transaction", "batch"] if self.bundle_type == "transaction" else ["batch"]
            for kind in kinds:
                send = self.client.transaction if kind == "transaction" else self.client.batch
                try:
                    return send(entries)
                except FhirError as err:
                    if err.retryable and self._time_budget_only():
                        # the outage budget is spent: splitting would spend it again
                        return [err] * len(part)
                    then = "re-sending it as one batch" if kind == "transaction" else "writing entries one by one"
                    log.info("%s of %d entries failed (%s %s); %s", kind, len(part), err.status,
                             type(err).__name__, then)
        return [self._put_one(p) for p in part]

    def _time_budget_only(self) -> bool:
        """True when the client retries until a time budget (an outage budget), not a
        number of attempts."""
        repeater = getattr(self.client, "repeater", None)
        return repeater is not None and repeater.policy.max_attempts is None

    def _submit(self, fn, arg) -> Callable[[], Any]:
        """Run ``fn(arg)`` now (one in flight) or on a worker thread; returns a getter of
        its result (which re-raises what ``fn`` raised).

        Why threads: bundles are independent (distinct ids), and while the server works
        on one, this process can read the next batch, merge, and encode or decode other
        bundles; that time is spent waiting on sockets, so the GIL is not the limit.
        The pool lives as long as the writer (``close``)."""
        if self.max_in_flight <= 1:
            result = fn(arg)
            return lambda: result
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.max_in_flight, thread_name_prefix="fhir-write")
        return self._pool.submit(fn, arg).result

    def close(self) -> None:
        """Stop the worker threads (if any were started)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _put_one(self, p: _Plan):
        try:
            resp = self.client.put(p.resource, if_match=p.version)
            return EntryResult(resp.status, resp.resource, etag=resp.etag)
        except FhirError as err:
            return err

    def _done(self, p: _Plan, by_id, outcomes, kind, resource):
        self.cache.put(p.rid, resource)
        for n, it in zip(by_id[p.rid], p.items):
            outcomes[n] = WriteOutcome(it, kind, None, resource)

    @staticmethod
    def _fail(indexes, items, outcomes, err, local=False):
        for k, n in enumerate(indexes):
            it = items[k] if local else items[n]
            outcomes[n] = WriteOutcome(it, FAILED, err)


def _status(result) -> Optional[int]:
    return getattr(result, "status", None)


#: ``meta`` elements the server owns; the rest (``profile`` from a template's ``profiles``,
#: tags) is the Observation's own and is sent with it.
SERVER_META = ("versionId", "lastUpdated", "source")


def _without_meta(resource: dict) -> dict:
    """``resource`` without the server's ``meta`` elements (what a write sends)."""
    out = dict(resource)
    meta = {k: v for k, v in (out.pop("meta", None) or {}).items() if k not in SERVER_META}
    if meta:
        out["meta"] = meta
    return out


#: what any write of an Observation read from the server sends (``iomt-fhir misattributed`` too)
without_server_meta = _without_meta
