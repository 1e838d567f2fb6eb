"""The FHIR client a pipeline worker uses: auth from the environment, the outage budget,
and the process-wide throttle for the server (shared by the worker's threads).

``FhirClientFactory`` is what a pipeline ships to its workers (a session is not picklable):
the settings, and a call that builds the client there."""
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


class FhirClientFactory:
    """Builds the FHIR client on the worker (sessions are not picklable); auth from the environment."""

    def __init__(self, fhir_url: str, auth_kind: str, outage_seconds: Optional[float] = None,
                 max_requests_per_second: float = 0.0):
        self.fhir_url = fhir_url
        self.auth_kind = auth_kind
        self.outage_seconds = outage_seconds  # None: the client's short default budget
        self.max_requests_per_second = max_requests_per_second

    def __call__(self):
        return worker_client(self.fhir_url, self.auth_kind, self.outage_seconds,
                             self.max_requests_per_second)
