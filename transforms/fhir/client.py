"""A small FHIR R4 REST client: read, search, conditional-version PUT, transaction/batch.

Why not a generic FHIR client library: the writer needs exactly these interactions with
precise control of retries (bounded, ``Retry-After``, per-entry 429), auth refresh on 401,
and PHI hygiene. Results are typed (:class:`FhirResponse`, :class:`EntryResult`) so the
writer classifies outcomes without re-parsing HTTP.

PHI: bodies, search values and ids are never logged and never put in exception messages;
errors carry the interaction, resource type, status and the server's OperationOutcome text.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
import threading
import urllib.parse
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import requests
from requests.adapters import HTTPAdapter

from transforms.fhir.auth import Auth
from transforms.fhir.retry import (RETRYABLE_STATUSES, SYSTEM_CLOCK, Clock, Repeater,
                                   RetriesExhausted, RetryableError, RetryPolicy,
                                   parse_retry_after)
from transforms.fhir.throttle import NoThrottle, WorkerThrottle

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
Params = Union[Mapping[str, Any], Sequence[tuple]]


class FhirError(Exception):
    """A FHIR interaction failed for good (non-retryable status, or retries exhausted).

    ``status`` is None for transport failures (connection reset, timeout).
    """

    error_type = "FHIRServiceError"
    stage = "fhir_write"

    def __init__(self, message: str, status: Optional[int] = None, outcome_text: str = "",
                 retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.outcome_text = outcome_text
        #: True when the failure was transient but the retry budget ran out
        self.retryable = retryable


class FhirVersionConflict(FhirError):
    """409 Conflict or 412 Precondition Failed: someone changed the resource; re-read and merge."""


#: ``Patient/abc``, ``Observation/x/_history/3`` in a server's message: the type stays, the id goes
_REFERENCE_IN_TEXT = re.compile(r"\b([A-Z][A-Za-z]{2,})/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]+)?")
#: HAPI's ``ID[123]`` (HAPI-0960, refused client ids)
_BRACKETED_ID_IN_TEXT = re.compile(r"\bID\[[^\]]*\]")


def scrub_ids(text: str) -> str:
    """A server's message without resource ids: ``Resource Patient/abc is deleted`` ->
    ``Resource Patient/<id> is deleted``.

    Why: the text goes into errors, dead-letter reasons and logs, and ids are identifiers
    (a Create-mode Patient id is a hash of the patient's identifier). HAPI and Azure name the
    offending reference in their OperationOutcome; the type and the reason are what an operator
    needs, the id is in the dead-lettered Observation itself."""
    text = _REFERENCE_IN_TEXT.sub(lambda m: f"{m.group(1)}/<id>", text)
    return _BRACKETED_ID_IN_TEXT.sub("ID[<id>]", text)


def outcome_text(body: Any) -> str:
    """Human text of an OperationOutcome (details.text, else diagnostics, else code), without
    resource ids (:func:`scrub_ids`)."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    parts = []
    for issue in body.get("issue") or []:
        text = ((issue.get("details") or {}).get("text") or issue.get("diagnostics")
                or issue.get("code") or "")
        if text:
            parts.append(scrub_ids(str(text)))
    return "; ".join(parts)[:500]


def version_from_etag(etag: Optional[str]) -> Optional[str]:
    """``W/"3"`` -> ``3``."""
    if not etag:
        return None
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"') or None


def if_match_value(version_id: str) -> str:
    return f'W/"{version_id}"'


@dataclasses.dataclass
class FhirResponse:
    """A successful (2xx, or an accepted 404 for reads) HTTP answer."""

    status: int
    resource: Optional[dict]
    etag: Optional[str] = None
    location: Optional[str] = None

    @property
    def version_id(self) -> Optional[str]:
        meta = (self.resource or {}).get("meta") or {}
        return meta.get("versionId") or version_from_etag(self.etag)


@dataclasses.dataclass
class EntryResult:
    """One entry of a transaction/batch response."""

    status: int
    resource: Optional[dict] = None
    #: the entry's ``response.outcome`` (an OperationOutcome), kept raw: its text is only
    #: wanted for failures, and a batch of reads answers hundreds of 404 outcomes
    outcome: Optional[dict] = None
    etag: Optional[str] = None
    location: Optional[str] = None

    @property
    def outcome_text(self) -> str:
        return outcome_text(self.outcome)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def version_id(self) -> Optional[str]:
        meta = (self.resource or {}).get("meta") or {}
        return meta.get("versionId") or version_from_etag(self.etag)


def _entry_status(text: Any) -> int:
    """``"201 Created"`` -> 201; unparseable -> 500 (treated as a server error)."""
    try:
        return int(str(text).strip().split(" ", 1)[0])
    except (ValueError, IndexError):
        return 500


def parse_bundle_response(body: Any, expected: int) -> list[EntryResult]:
    """Entries of a transaction-/batch-response, in request order."""
    entries = (body or {}).get("entry") or []
    if len(entries) != expected:
        raise FhirError(f"bundle response has {len(entries)} entries, expected {expected}",
                        status=None)
    out = []
    for e in entries:
        resp = e.get("response") or {}
        out.append(EntryResult(status=_entry_status(resp.get("status")),
                               resource=e.get("resource"),
                               outcome=resp.get("outcome"),
                               etag=resp.get("etag"), location=resp.get("location")))
    return out


class FhirClient:
    """FHIR R4 client over one pooled ``requests.Session``.

    ``timeout`` is (connect, read) seconds. TLS verification is on unless ``verify`` says
    otherwise (a CA bundle path is the right way for private CAs). ``retry_policy`` bounds
    attempts and total time for transient failures (the pipeline's is the outage budget,
    ``RetryPolicy.for_outage``: the calling thread blocks meanwhile); a 401 triggers one
    token refresh. ``throttle`` holds requests back when the server refuses with 429 (and
    caps the rate when asked), shared by the worker's threads.
    """

    def __init__(self, base_url: str, auth: Optional[Auth] = None,
                 session: Optional[requests.Session] = None,
                 timeout: tuple[float, float] = (5.0, 60.0),
                 retry_policy: RetryPolicy = RetryPolicy(), clock: Clock = SYSTEM_CLOCK,
                 rng: Callable[[], float] = random.random, pool_maxsize: int = 16,
                 verify: Union[bool, str] = True,
                 on_retry: Optional[Callable[[RetryableError, float], None]] = None,
                 throttle: Optional[WorkerThrottle] = None):
        self.base_url = base_url.rstrip("/")
        #: client-side throttling shared with the other clients of this worker process
        #: (``transforms.fhir.throttle.worker_throttle``); none by default
        self.throttle = throttle or NoThrottle()
        self.auth = auth or Auth()
        self.timeout = timeout
        self.clock = clock
        self._user_on_retry = on_retry
        self.repeater = Repeater(retry_policy, clock, rng, self._on_retry)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            _pin_environment(session, self.base_url, verify)
        else:
            session.verify = verify
        self.session = session
        #: counters for tests/metrics: requests sent, 401 refreshes done (the writer may
        #: send from several threads, hence the lock)
        self.requests_sent = 0
        self.auth_refreshes = 0
        #: seconds this client waited because of throttling: held back locally, or a 429's
        #: Retry-After/backoff (Beam IOs report this as ``cumulativeThrottlingSeconds``, which
        #: Dataflow's autoscaler reads as "throttled, do not add workers")
        self.throttled_seconds = 0.0
        self._count_lock = threading.Lock()

    def _on_retry(self, err: RetryableError, delay: float) -> None:
        if err.status == 429:
            with self._count_lock:
                self.throttled_seconds += delay
        if self._user_on_retry is not None:
            self._user_on_retry(err, delay)

    def __repr__(self) -> str:
        return f"FhirClient({self.base_url!r}, auth={self.auth!r})"

    def close(self) -> None:
        self.session.close()

    # ---- transport -------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        if path.startswith("http://") or path.startswith("https://"):
            # HAPI's next links are ``[base]?_getpages=...`` (no path after the base)
            if not path.startswith((self.base_url + "/", self.base_url + "?")) and path != self.base_url:
                # never send our token to another host (e.g. a paging link elsewhere)
                raise FhirError("server returned a link outside the FHIR base URL")
            return path
        return self.base_url + ("/" + path.lstrip("/") if path else "")

    def _send_once(self, method: str, url: str, params: Optional[Params], body: Any,
                   headers: Mapping[str, str]) -> requests.Response:
        """One HTTP exchange, refreshing auth once on 401. Transient failures raise
        :class:`RetryableError` for the repeater."""
        refreshed = False
        while True:
            h = {"Accept": FHIR_JSON}
            if body is not None:
                h["Content-Type"] = FHIR_JSON
            h.update(headers)
            h.update(self.auth.headers())
            waited = self.throttle.before_request()
            with self._count_lock:
                self.requests_sent += 1
                self.throttled_seconds += waited
            try:
                resp = self.session.request(method, url, params=params, json=body, headers=h,
                                            timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as err:
                raise RetryableError(f"{method} transport error: {type(err).__name__}",
                                     cause=err) from None
            self.throttle.after_response(resp.status_code)
            if resp.status_code == 401 and not refreshed:
                refreshed = True
                with self._count_lock:
                    self.auth_refreshes += 1
                self.auth.invalidate()
                resp.close()
                continue
            if resp.status_code in RETRYABLE_STATUSES:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), self.clock.time())
                text = outcome_text(_json_or_none(resp))
                raise RetryableError(f"{method} answered {resp.status_code} {text}".strip(),
                                     status=resp.status_code, retry_after=retry_after)
            return resp

    def request(self, method: str, path: str, params: Optional[Params] = None,
                body: Any = None, headers: Optional[Mapping[str, str]] = None,
                accept_statuses: Iterable[int] = (), what: str = "") -> FhirResponse:
        """Send with retries; 2xx (and ``accept_statuses``) return, anything else raises.

        ``what`` names the interaction in errors ("read Observation") without ids.
        """
        what = what or method
        url = self._url(path)
        try:
            resp = self.repeater.repeat(
                lambda: self._send_once(method, url, params, body, headers or {}))
        except RetriesExhausted as err:
            raise FhirError(f"{what}: {err.last} (after {err.attempts} attempts)",
                            status=err.status, retryable=True) from None
        data = _json_or_none(resp)
        if 200 <= resp.status_code < 300 or resp.status_code in set(accept_statuses):
            return FhirResponse(resp.status_code, data if isinstance(data, dict) else None,
                                resp.headers.get("ETag"), resp.headers.get("Location"))
        text = outcome_text(data)
        cls = FhirVersionConflict if resp.status_code in (409, 412) else FhirError
        raise cls(f"{what} answered {resp.status_code}: {text or resp.reason}",
                  status=resp.status_code, outcome_text=text)

    # ---- interactions ----------------------------------------------------------------------
    def capabilities(self) -> dict:
        return self.request("GET", "metadata", what="capabilities").resource or {}

    def read(self, resource_type: str, resource_id: str) -> Optional[FhirResponse]:
        """The current version, or None when the resource does not exist (404/410)."""
        r = self.request("GET", f"{resource_type}/{_quote_id(resource_id)}",
                         accept_statuses=(404, 410), what=f"read {resource_type}")
        return None if r.status in (404, 410) else r

    def search(self, resource_type: str, params: Optional[Params] = None,
               max_pages: int = 100, limit: Optional[int] = None, fresh: bool = False) -> list[dict]:
        """Matching resources (``search.mode`` match only), following ``next`` links;
        stops early once ``limit`` resources are found (identity lookups read at most 2).

        ``fresh``: ask the server not to answer from its search cache (``Cache-Control:
        no-cache``; HAPI reuses a search's results for a minute by default, so a Device
        created meanwhile would not be found)."""
        out: list[dict] = []
        path: Optional[str] = resource_type
        page_params = params
        headers = {"Cache-Control": "no-cache"} if fresh else None
        for _ in range(max_pages):
            bundle = self.request("GET", path, params=page_params, headers=headers,
                                  what=f"search {resource_type}").resource or {}
            for e in bundle.get("entry") or []:
                if (e.get("search") or {}).get("mode", "match") == "match" and e.get("resource"):
                    out.append(e["resource"])
            if limit is not None and len(out) >= limit:
                return out[:limit]
            nxt = next((link.get("url") for link in bundle.get("link") or []
                        if link.get("relation") == "next"), None)
            if not nxt:
                return out
            path, page_params = nxt, None
        if limit is not None:
            return out
        raise FhirError(f"search {resource_type}: more than {max_pages} pages")

    def put(self, resource: dict, if_match: Optional[str] = None) -> FhirResponse:
        """Update-or-create ``resource`` at its id; ``if_match`` is a version id (not an ETag)."""
        rtype, rid = resource["resourceType"], resource["id"]
        headers = {"If-Match": if_match_value(if_match)} if if_match else {}
        return self.request("PUT", f"{rtype}/{_quote_id(rid)}", body=resource, headers=headers,
                            what=f"update {rtype}")

    def transaction(self, entries: Sequence[dict]) -> list[EntryResult]:
        """POST a transaction bundle; per-entry results in order.

        A whole-bundle failure (e.g. 412 from one stale entry, 400 over a size limit) raises
        :class:`FhirError`/:class:`FhirVersionConflict`. Entries answered 429/503 inside a
        2xx response are re-sent (alone) within the retry budget.
        """
        return self._bundle("transaction", entries)

    def batch(self, entries: Sequence[dict]) -> list[EntryResult]:
        """POST a batch bundle: entries succeed or fail independently; throttled ones retried."""
        return self._bundle("batch", entries)

    def _bundle(self, kind: str, entries: Sequence[dict]) -> list[EntryResult]:
        if not entries:
            return []

        def send(indexes: Sequence[int]):
            bundle = {"resourceType": "Bundle", "type": kind,
                      "entry": [entries[i] for i in indexes]}
            resp = self.request("POST", "", body=bundle, what=kind)
            results = parse_bundle_response(resp.resource, len(indexes))
            return [(r, None, r.status in RETRYABLE_STATUSES) for r in results]

        return self.repeater.repeat_entries(send, len(entries))


def _pin_environment(session: requests.Session, base_url: str, verify: Union[bool, str]) -> None:
    """Read the proxy and CA-bundle settings from the environment once, here.

    Why: with ``trust_env`` on, requests re-reads ``os.environ`` (and ``.netrc``) for every
    request to merge proxy settings, about 0.2 ms each, a tenth of a 50-entry transaction
    on a fast server. The settings are the same as requests would use: ``*_PROXY`` and
    ``NO_PROXY`` for the FHIR base URL, ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` when TLS
    verification is on without an explicit bundle. ``.netrc`` credentials are not used:
    auth is only what ``--fhir-auth`` configures.
    """
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    if verify is True:
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.verify = verify
    session.trust_env = False


def _quote_id(resource_id: str) -> str:
    return urllib.parse.quote(str(resource_id), safe="-.")


def _json_or_none(resp: requests.Response) -> Any:
    if not resp.content:
        return None
    try:
        return resp.json()
    except ValueError:
        return None
