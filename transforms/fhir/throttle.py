"""Client-side throttling of FHIR requests, shared by the threads of one worker process.

Many Dataflow workers writing to one FHIR server make it answer 429. Retrying each refused
request on its own (even after ``Retry-After``) keeps the server busy refusing: the more
threads, the larger the share of refusals. Two mechanisms, both per worker process (a
Python SDK harness runs several DoFn threads; each FHIR client of the process uses the same
:class:`WorkerThrottle` for a base URL, see :func:`worker_throttle`):

- :class:`AdaptiveThrottler`: the client-side throttling of Google's SRE book ("Handling
  Overload"), the algorithm Beam's own IOs use (``apache_beam.io.components.
  adaptive_throttler``): over a sliding window, a request is held back locally with
  probability ``max(0, (requests - K * accepts) / (requests + 1))``, so the server sees
  about ``K`` (2) requests per request it accepts, i.e. refuses at most about half of what
  it sees. Only 429 counts as a refusal: connection failures and 5xx are an outage, which
  the retry policy's backoff handles (counting them would keep throttling for a whole
  window after the server is back). Our own, not Beam's class: this one is thread-safe,
  takes an injectable clock, and keeps the FHIR layer free of Beam.
- :class:`RateLimiter`: an optional hard cap (``--max-fhir-requests-per-second``), for servers
  with a known quota.

Retry-After is honoured by the retry policy (the refused request waits at least that long).
"""
from __future__ import annotations

import collections
import random
import threading
from typing import Callable, Dict, Optional, Tuple

from transforms.fhir.retry import SYSTEM_CLOCK, Clock


class AdaptiveThrottler:
    """Sliding-window request/accept counts and the SRE throttling decision (thread-safe)."""

    def __init__(self, window_seconds: float = 30.0, bucket_seconds: float = 1.0,
                 overload_ratio: float = 2.0, clock: Clock = SYSTEM_CLOCK,
                 rng: Callable[[], float] = random.random):
        if window_seconds <= 0 or bucket_seconds <= 0 or overload_ratio <= 0:
            raise ValueError("window, bucket and overload ratio must be positive")
        self.window = window_seconds
        self.bucket = bucket_seconds
        self.k = overload_ratio
        self.clock = clock
        self.rng = rng
        #: bucket start -> [requests, accepts], oldest first
        self._buckets: "collections.OrderedDict[float, list]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def _current(self, now: float) -> list:
        start = now - (now % self.bucket)
        while self._buckets:
            oldest = next(iter(self._buckets))
            if oldest > now - self.window:
                break
            del self._buckets[oldest]
        return self._buckets.setdefault(start, [0, 0])

    def _totals(self, now: float) -> Tuple[int, int]:
        self._current(now)
        requests = sum(b[0] for b in self._buckets.values())
        accepts = sum(b[1] for b in self._buckets.values())
        return requests, accepts

    def probability(self) -> float:
        with self._lock:
            requests, accepts = self._totals(self.clock.monotonic())
        return max(0.0, (requests - self.k * accepts) / (requests + 1))

    def throttle_request(self) -> bool:
        """Should this attempt be held back? A held-back attempt counts as a request (as in
        the SRE book and Beam): wanting more than the server accepts keeps the probability up."""
        with self._lock:
            now = self.clock.monotonic()
            requests, accepts = self._totals(now)
            p = max(0.0, (requests - self.k * accepts) / (requests + 1))
            held = self.rng() < p
            if held:
                self._current(now)[0] += 1
            return held

    def record(self, accepted: bool) -> None:
        """One request the server answered: ``accepted`` unless it was refused with 429."""
        with self._lock:
            bucket = self._current(self.clock.monotonic())
            bucket[0] += 1
            if accepted:
                bucket[1] += 1


class RateLimiter:
    """At most ``per_second`` requests per second (thread-safe; after idling, a burst of up
    to one second's worth). ``acquire`` reserves the next slot and returns the seconds the
    caller must wait before sending."""

    def __init__(self, per_second: float, clock: Clock = SYSTEM_CLOCK):
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self.interval = 1.0 / per_second
        self.burst = max(1, int(per_second))
        self.clock = clock
        self._next: Optional[float] = None  # earliest start of the next request
        self._lock = threading.Lock()

    def acquire(self) -> float:
        with self._lock:
            now = self.clock.monotonic()
            earliest = now if self._next is None else self._next
            earliest = max(earliest, now - (self.burst - 1) * self.interval)
            self._next = earliest + self.interval
            return max(0.0, earliest - now)


class WorkerThrottle:
    """What one worker process's FHIR clients of one server share: the adaptive throttler
    and the optional rate cap. ``before_request`` blocks the calling thread as needed and
    returns the seconds it waited (for metrics); ``after_response`` feeds the throttler."""

    def __init__(self, max_requests_per_second: float = 0.0, clock: Clock = SYSTEM_CLOCK,
                 rng: Callable[[], float] = random.random, throttle_delay: float = 1.0,
                 adaptive: Optional[AdaptiveThrottler] = None):
        self.clock = clock
        self.rng = rng
        self.adaptive = adaptive or AdaptiveThrottler(clock=clock, rng=rng)
        self.limiter = RateLimiter(max_requests_per_second, clock) if max_requests_per_second else None
        #: mean local wait when the adaptive throttler holds a request back (jittered 0.5-1.5x)
        self.throttle_delay = throttle_delay
        self.throttled_seconds = 0.0  # for tests and metrics
        self.held_back = 0
        self._lock = threading.Lock()

    def before_request(self) -> float:
        waited = 0.0
        while self.adaptive.throttle_request():
            delay = self.throttle_delay * (0.5 + self.rng())
            self.clock.sleep(delay)
            waited += delay
            with self._lock:
                self.held_back += 1
        if self.limiter is not None:
            delay = self.limiter.acquire()
            if delay > 0:
                self.clock.sleep(delay)
                waited += delay
        if waited:
            with self._lock:
                self.throttled_seconds += waited
        return waited

    def after_response(self, status: int) -> None:
        self.adaptive.record(status != 429)


#: no throttling at all (tools that send a handful of requests, tests of other things)
class NoThrottle(WorkerThrottle):
    def __init__(self):  # noqa: D401 - nothing to set up
        self.throttled_seconds = 0.0
        self.held_back = 0

    def before_request(self) -> float:
        return 0.0

    def after_response(self, status: int) -> None:
        pass


_WORKER: Dict[Tuple[str, float], WorkerThrottle] = {}
_WORKER_LOCK = threading.Lock()


def worker_throttle(base_url: str, max_requests_per_second: float = 0.0) -> WorkerThrottle:
    """The process-wide throttle for ``base_url`` (one per server and rate cap): every
    DoFn instance and thread of a worker that writes to that server shares it."""
    key = (base_url.rstrip("/"), float(max_requests_per_second or 0.0))
    with _WORKER_LOCK:
        throttle = _WORKER.get(key)
        if throttle is None:
            throttle = _WORKER[key] = WorkerThrottle(max_requests_per_second)
        return throttle
