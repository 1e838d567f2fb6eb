"""Bundle entries for the writer: batched reads by id, conditional-version PUTs, chunking.

Why small builders: servers differ in bundle limits (Azure 500 entries, HealthLake 160,
the local Medplum server 50 updates), so the writer chunks to a configurable size and
reads per-entry results; these helpers keep the request shapes in one place.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence, TypeVar

from transforms.fhir.client import FhirClient, if_match_value

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    if size < 1:
        raise ValueError("bundle size must be >= 1")
    for i in range(0, len(items), size):
        yield items[i:i + size]


def read_entry(resource_type: str, resource_id: str) -> dict:
    return {"request": {"method": "GET", "url": f"{resource_type}/{resource_id}"}}


def put_entry(resource: dict, version_id: Optional[str] = None, base_url: Optional[str] = None) -> dict:
    """``PUT {type}/{id}``; with ``version_id`` an ``ifMatch`` so a concurrent change gives
    409/412.

    ``fullUrl`` is the resource's absolute URL on ``base_url``, or absent: FHIR R4 allows
    only an absolute URL there (HAPI's validator refuses ``Observation/x`` as an error), and
    an update entry is identified by ``request.url`` anyway."""
    rel = f"{resource['resourceType']}/{resource['id']}"
    request = {"method": "PUT", "url": rel}
    if version_id:
        request["ifMatch"] = if_match_value(version_id)
    entry = {"resource": resource, "request": request}
    if base_url:
        entry = {"fullUrl": f"{base_url.rstrip('/')}/{rel}", **entry}
    return entry


def read_many(client: FhirClient, resource_type: str, ids: Sequence[str],
              batch_size: int) -> dict:
    """``{id: resource or None}`` via batch bundles of GETs; ids whose read failed map to
    the :class:`EntryResult` (status and OperationOutcome text) instead."""
    out: dict = {}
    for part in chunks(list(ids), batch_size):
        results = client.batch([read_entry(resource_type, i) for i in part])
        for rid, r in zip(part, results):
            if r.ok and r.resource is not None:
                out[rid] = r.resource
            elif r.status in (404, 410):
                out[rid] = None
            else:
                out[rid] = r
    return out
