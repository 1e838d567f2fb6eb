"""The FHIR client a pipeline worker uses: auth from the environment, the outage budget,
and the process-wide throttle for the server (shared by the worker's threads)."""
from __future__ import annotations

from typing import Optional

from transforms.fhir.auth import auth_from_options
from transforms.fhir.client import FhirClient
from transforms.fhir.retry import RetryPolicy
from transforms.fhir.throttle import worker_throttle


def worker_client(fhir_url: str, auth_kind: str, outage_seconds: Optional[float] = None,
                  max_requests_per_second: float = 0.0) -> FhirClient:
    """``outage_seconds``: how long transient failures are retried (None: the client's
    short default); writes and identity lookups both get their clients here."""
    policy = RetryPolicy.for_outage(outage_seconds) if outage_seconds is not None else RetryPolicy()
    return FhirClient(fhir_url, auth_from_options(auth_kind, fhir_url), retry_policy=policy,
                      throttle=worker_throttle(fhir_url, max_requests_per_second))
