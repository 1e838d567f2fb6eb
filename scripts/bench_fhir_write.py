"""Benchmark: Observations/s written by ``ObservationWriter`` vs a plain ``requests`` loop.

Both sides create N NEW Observations (built by the mapping engine: Quantity, one per
reading, many devices) on the same server with the same bundle size:

- ceiling: one ``requests.Session`` POSTing pre-built transaction bundles of
  ``PUT Observation/<id>`` entries (checking each answer is 200 with one entry per PUT);
- ours: ``ObservationWriter.write`` with the real ``MappingMerge``: batched reads by id,
  merge, transaction PUTs (with If-Match when a version was read), per-entry outcomes,
  ``--max-in-flight`` bundles at once (2, as the pipeline runs it by default).

Also measured, for like-for-like comparisons: the writer one bundle at a time
(``ours_seq``), and the same pre-built bundles sent ``--max-in-flight`` at a time
(``ceiling_xK``). The local server is a single Node process, so keeping 2 bundles in flight
lets this process encode/decode while the server works, which the plain loop cannot.

Reads are batched by ``--read-batch-size`` (500) ids, transactions by ``--bundle-size``
(50, the local server's cap on updates); the writer is driven like the Beam DoFn, one
``write`` per ``max(bundle size, read batch size)`` items.

Each repeat uses a fresh id space for each side (a run prefix in the device ids), the
order of the sides alternates, and the best run of each counts. The reads before writing
are inherent to create-or-merge; their time and the transactions' (summed over threads)
are printed per run.
Last line: ``ratio=<ours/ceiling> obs_per_s=<ours> ceiling_obs_per_s=<ceiling>``.
"""
import argparse
import concurrent.futures
import functools
import gc
import json
import time
import uuid
from typing import Optional

import requests

from transforms.fhir.client import FhirClient
from transforms.fhir.bundles import put_entry
from transforms.mapping.fhir_templates import build_observation, load_fhir_mapping
from transforms.mapping.grouping import observation_groups
from transforms.mapping.identifiers import ResolvedIds
from transforms.mapping.measurement import Measurement
from transforms.mapping.timeutil import parse_datetime
from transforms.fhir.observation_cache import ObservationCache
from transforms.fhir.writer import CREATED, UPDATED, MappingMerge, ObservationWriter, WriteItem

MAPPING = json.dumps({"templateType": "CollectionFhir", "template": [
    {"templateType": "CodeValueFhir", "template": {
        "typeName": "steps", "periodInterval": 0,
        "category": [{"text": "activity", "codes": [
            {"code": "activity", "system": "http://terminology.hl7.org/CodeSystem/observation-category"}]}],
        "codes": [{"code": "55423-8", "system": "http://loinc.org", "display": "Step count"}],
        "value": {"valueType": "Quantity", "valueName": "steps", "unit": "steps",
                  "system": "http://unitsofmeasure.org", "code": "{steps}"}}}]})


def build_items(n: int, prefix: str, devices: int, value_offset: int = 0):
    """N WriteItems with distinct ids: reading i of device i % devices, ten seconds apart
    (``value_offset`` changes the values, not the ids: a later pane of the same data)."""
    mapping = load_fhir_mapping(MAPPING).ensure_valid()
    template = mapping.template_for("steps")
    base = parse_datetime("2026-01-05T00:00:00Z")
    items = []
    for i in range(n):
        dev = f"{prefix}-dev-{i % devices:04d}"
        m = Measurement("steps", base + i * 10_000_000, dev, (("steps", str(100 + i % 900 + value_offset)),))
        (group,) = observation_groups(template, [m])
        ids = ResolvedIds(f"{prefix}-pat-{i % devices:04d}", dev)
        items.append(WriteItem(build_observation(template, group, ids), template.type_name, group))
    assert len({it.observation["id"] for it in items}) == n
    return mapping, items


def make_targets(base_url: str, built):
    """PUT the Patients and Devices the items' Observations reference (not timed): a server with
    referential integrity on write (HAPI, Azure) refuses an Observation whose subject does not
    exist. Returns ``built`` unchanged."""
    _mapping, items = built
    refs = sorted({o[k]["reference"] for o in (it.observation for it in items) for k in ("subject", "device")
                   if k in o})
    with requests.Session() as s:
        for i in range(0, len(refs), 100):
            entries = []
            for ref in refs[i:i + 100]:
                rtype, rid = ref.split("/", 1)
                entries.append({"fullUrl": f"{base_url}/{ref}", "resource": {"resourceType": rtype, "id": rid},
                                "request": {"method": "PUT", "url": ref}})
            r = s.post(base_url, json={"resourceType": "Bundle", "type": "batch", "entry": entries},
                       headers={"Content-Type": "application/fhir+json"}, timeout=120)
            r.raise_for_status()
    return built


def ceiling_run(base_url: str, items, bundle_size: int, in_flight: int = 1) -> float:
    """The plain loop (``in_flight`` 1, the issue's ceiling), or the same bundles from
    ``in_flight`` threads with a session each (the fair comparison for a writer that
    keeps that many bundles in flight)."""
    bundles = [{"resourceType": "Bundle", "type": "transaction",
                "entry": [put_entry(it.observation, base_url=base_url) for it in items[i:i + bundle_size]]}
               for i in range(0, len(items), bundle_size)]
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}

    def post_all(share):
        with requests.Session() as s:
            for b in share:
                r = s.post(base_url, json=b, headers=headers, timeout=60)
                entries = r.json().get("entry") or []
                if r.status_code != 200 or len(entries) != len(b["entry"]) or any(
                        not e["response"]["status"].startswith("2") for e in entries):
                    raise SystemExit(f"ceiling: transaction answered {r.status_code}")

    if in_flight <= 1:
        t0 = time.perf_counter()
        post_all(bundles)
        return time.perf_counter() - t0
    shares = [bundles[k::in_flight] for k in range(in_flight)]
    with concurrent.futures.ThreadPoolExecutor(in_flight) as pool:
        t0 = time.perf_counter()
        list(pool.map(post_all, shares))
        return time.perf_counter() - t0


class TimedClient(FhirClient):
    """Accumulates wall time of the writer's reads (batch GETs) and writes (transactions)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.read_s = 0.0
        self.write_s = 0.0

    def batch(self, entries):
        t0 = time.perf_counter()
        try:
            return super().batch(entries)
        finally:
            self.read_s += time.perf_counter() - t0

    def transaction(self, entries):
        t0 = time.perf_counter()
        try:
            return super().transaction(entries)
        finally:
            self.write_s += time.perf_counter() - t0


def ours_run(base_url: str, mapping, items, bundle_size: int, flush: int, read_batch: int,
             in_flight: int = 1, cache: Optional[ObservationCache] = None,
             expect: str = CREATED):
    client = TimedClient(base_url)
    writer = ObservationWriter(client, MappingMerge(mapping), bundle_size=bundle_size,
                               read_batch_size=read_batch, max_in_flight=in_flight,
                               cache=ObservationCache() if cache is None else cache)
    try:
        t0 = time.perf_counter()
        outcomes = []
        for i in range(0, len(items), flush):
            outcomes.extend(writer.write(items[i:i + flush]))
        elapsed = time.perf_counter() - t0
    finally:
        writer.close()
        client.close()
    bad = [o for o in outcomes if o.outcome != expect]
    if bad:
        raise SystemExit(f"ours: {len(bad)} items not {expect}, first: {bad[0].outcome} {bad[0].error}")
    return elapsed, client.read_s, client.write_s, client.requests_sent


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="FHIR base URL")
    ap.add_argument("-n", type=int, default=2000, help="Observations per run (default 2000)")
    ap.add_argument("--bundle-size", type=int, default=50)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--read-batch-size", type=int, default=500,
                    help="ids per batch of reads (default 500: Azure's bundle cap; the local "
                         "server has none for reads). 0 = the bundle size (the writer's default)")
    ap.add_argument("--flush", type=int, default=0,
                    help="items per writer.write call (default: max(bundle size, read batch "
                         "size), as the Beam DoFn buffers)")
    ap.add_argument("--max-in-flight", type=int, default=2,
                    help="bundles the writer keeps in flight (default 2, the pipeline's default)")
    args = ap.parse_args(argv)
    read_batch = args.read_batch_size or args.bundle_size
    flush = args.flush or max(args.bundle_size, read_batch)
    base = args.url.rstrip("/")
    k = args.max_in_flight

    # warm-up (server JIT, connection setup) on its own ids; not measured
    mapping, warm = make_targets(base, build_items(400, f"warm-{uuid.uuid4().hex[:8]}", 20))
    ceiling_run(base, warm[:100], args.bundle_size)
    ceiling_run(base, warm[100:200], args.bundle_size, k)
    ours_run(base, mapping, warm[200:300], args.bundle_size, flush, read_batch, k)
    ours_run(base, mapping, warm[300:], args.bundle_size, flush, read_batch, 1)

    # four sides: the plain loop (the ceiling), the same bundles k at a time, the writer
    # as the pipeline runs it (k in flight), and the writer one bundle at a time
    sides = ["ceiling", f"ceiling_x{k}", "ours", "ours_seq"]
    best = {side: None for side in sides}
    for r in range(args.repeat):
        runs = {side: make_targets(base, build_items(args.n, f"{side[0]}{r}-{uuid.uuid4().hex[:8]}", args.devices))
                for side in sides}
        gc.collect()
        gc.freeze()  # the pre-built inputs are not the measured work's garbage (all sides)
        order = sides if r % 2 == 0 else sides[::-1]  # the server slows as its store grows
        line = []
        for side in order:
            mapping, items = runs[side]
            if side.startswith("ceiling"):
                t = ceiling_run(base, items, args.bundle_size, 1 if side == "ceiling" else k)
                detail = ""
            else:
                t, read_s, write_s, sent = ours_run(base, mapping, items, args.bundle_size, flush,
                                                    read_batch, k if side == "ours" else 1)
                detail = (f" [reads {read_s:.3f}s, transactions {write_s:.3f}s summed over "
                          f"threads, {sent} requests]")
            if best[side] is None or t < best[side]:
                best[side] = t
            line.append(f"{side} {args.n / t:.0f}/s{detail}")
        gc.unfreeze()
        print(f"run {r + 1}: " + "; ".join(line))
    # updates (a stream's next pane of the same Observations): the writer's cache of what it
    # wrote stands in for the reads; without it (a fresh worker) every update reads first
    prefix = f"u-{uuid.uuid4().hex[:8]}"
    panes = [build_items(args.n, prefix, args.devices, offset) for offset in range(3)]
    make_targets(base, panes[0])
    cache = ObservationCache(max_entries=args.n)
    run = functools.partial(ours_run, base, bundle_size=args.bundle_size, flush=flush,
                            read_batch=read_batch, in_flight=k)
    run(panes[0][0], panes[0][1], cache=cache)
    t_cached, reads_cached = run(panes[1][0], panes[1][1], cache=cache, expect=UPDATED)[:2]
    t_read, reads = run(panes[2][0], panes[2][1], cache=ObservationCache(0), expect=UPDATED)[:2]
    print(f"updates of {args.n} existing Observations: {args.n / t_cached:.0f}/s with the "
          f"writer's cache (reads {reads_cached:.3f}s), {args.n / t_read:.0f}/s reading each "
          f"first (reads {reads:.3f}s)")

    rate = {side: args.n / t for side, t in best.items()}
    print(f"best of {args.repeat}: n={args.n} bundle_size={args.bundle_size} "
          f"read_batch_size={read_batch} flush={flush} max_in_flight={k}")
    print(f"ours one bundle at a time vs the plain loop: ratio={rate['ours_seq'] / rate['ceiling']:.3f} "
          f"({rate['ours_seq']:.0f} vs {rate['ceiling']:.0f} obs/s)")
    print(f"ours ({k} in flight) vs the same bundles {k} at a time: "
          f"ratio={rate['ours'] / rate[f'ceiling_x{k}']:.3f} "
          f"({rate['ours']:.0f} vs {rate[f'ceiling_x{k}']:.0f} obs/s)")
    print(f"ratio={rate['ours'] / rate['ceiling']:.3f} obs_per_s={rate['ours']:.1f} "
          f"ceiling_obs_per_s={rate['ceiling']:.1f}")


if __name__ == "__main__":
    main()
