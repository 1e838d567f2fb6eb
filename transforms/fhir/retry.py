"""Retry with exponential backoff, jitter and ``Retry-After``, bounded in total time.

Shaped like Beam's ``apache_beam/io/requestresponse.py``: a small ``Repeater`` that
re-invokes a caller, with its collaborators (clock, sleep, random source) injected so
tests run in microseconds with a fake clock instead of real sleeps.

Why our own and not ``urllib3.Retry``: we must (a) honour per-entry 429s inside a
batch/transaction response body, which urllib3 cannot see, (b) bound the *total* time
spent, not only the attempt count, so a throttled FHIR server cannot stall a Beam bundle
forever, and (c) refresh auth between attempts (handled by the client).

Transient (retried within the budget): connection refused or reset, timeouts, 408, 429,
500, 502, 503, 504. Everything else (400, 404 on a read by id, 409/412, 422 ...) is final at
once: the caller dead-letters or handles it.
"""
from __future__ import annotations

import dataclasses
import email.utils
import random
import time
from typing import Callable, Iterable, Optional, Sequence, TypeVar

T = TypeVar("T")

#: Statuses that mean "the server may succeed if asked again later".
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class Clock:
    """Wall time and sleeping, injectable so tests never really sleep."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        """Epoch seconds, only used to turn an HTTP-date ``Retry-After`` into a delay."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


SYSTEM_CLOCK = Clock()


class RetryableError(Exception):
    """A failure worth retrying: a retryable HTTP status or a connection problem.

    ``retry_after`` is the server's requested delay in seconds (already parsed), if any.
    ``cause`` keeps the final error to re-raise when retries run out.
    """

    def __init__(self, message: str, status: Optional[int] = None,
                 retry_after: Optional[float] = None, cause: Optional[BaseException] = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.cause = cause


class RetriesExhausted(Exception):
    """Retries ran out (attempts or total time); ``last`` is the last retryable failure."""

    def __init__(self, message: str, last: RetryableError, attempts: int):
        super().__init__(message)
        self.last = last
        self.attempts = attempts
        self.status = last.status


#: Outage budgets (``--fhir-outage-seconds``) when none is given. A stream has nowhere
#: better to keep data than its source (Pub/Sub, Event Hubs keep it while the writer waits),
#: so it waits long enough for a server restart or fail-over: 15 min. A batch run waits
#: 10 min: long enough for a restart, shorter because a backfill blocked longer holds a
#: fleet of idle workers, and what it dead-letters after that is replayed
#: (``iomt-fhir replay``) once the server is back.
STREAM_OUTAGE_SECONDS = 900.0
BATCH_OUTAGE_SECONDS = 600.0


def outage_budget(seconds: Optional[float], streaming: bool) -> float:
    """The outage budget to use: the option's value, else the stream or batch default."""
    if seconds is not None:
        return float(seconds)
    return STREAM_OUTAGE_SECONDS if streaming else BATCH_OUTAGE_SECONDS


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. The defaults are a short budget (tools, tests); the pipeline rides
    out outages with :meth:`for_outage`.

    ``max_attempts`` counts the first call (None: no limit, only time). ``max_total_seconds``
    bounds the time from the first call to the start of the last attempt; a
    ``Retry-After`` longer than what is left ends the retries at once rather than sleeping
    past the budget.
    """

    max_attempts: Optional[int] = 6
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    multiplier: float = 2.0
    max_total_seconds: float = 120.0
    #: cap on a server-requested Retry-After (a misconfigured server could say 1 day)
    max_retry_after: float = 60.0

    def backoff(self, retry_number: int, rng: Callable[[], float]) -> float:
        """Full-jitter backoff for the n-th retry (1-based): uniform(0, min(cap, base*m^(n-1))).

        Full jitter (AWS architecture blog) spreads many workers' retries so they do not
        hit a recovering server in lock-step.
        """
        exponent = min(retry_number - 1, 64)  # no float overflow on a long outage
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** exponent)
        return ceiling * rng()

    @classmethod
    def for_outage(cls, seconds: float) -> "RetryPolicy":
        """Ride out an outage of up to ``seconds``: no attempt limit, backoff capped at 10 s
        (so a recovered server is used again within seconds, not minutes)."""
        return cls(max_attempts=None, initial_backoff=0.5, max_backoff=10.0,
                   max_total_seconds=float(seconds))


NO_RETRY = RetryPolicy(max_attempts=1)


def parse_retry_after(value: Optional[str], now_epoch: float) -> Optional[float]:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date; None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT by definition
        import datetime
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - now_epoch)


class Repeater:
    """Calls a function until it returns without ``RetryableError`` or the policy says stop."""

    def __init__(self, policy: RetryPolicy = RetryPolicy(), clock: Clock = SYSTEM_CLOCK,
                 rng: Callable[[], float] = random.random,
                 on_retry: Optional[Callable[[RetryableError, float], None]] = None):
        self.policy = policy
        self.clock = clock
        self.rng = rng
        #: hook for metrics/logging: (error, delay); must not log bodies (PHI)
        self.on_retry = on_retry

    def next_delay(self, retry_number: int, error: RetryableError, elapsed: float) -> Optional[float]:
        """Delay before retry ``retry_number`` (1-based), or None when we must give up."""
        p = self.policy
        if p.max_attempts is not None and retry_number >= p.max_attempts:
            return None
        delay = p.backoff(retry_number, self.rng)
        if error.retry_after is not None:
            delay = max(delay, min(error.retry_after, p.max_retry_after))
        if elapsed + delay > p.max_total_seconds:
            return None
        return delay

    def repeat(self, fn: Callable[[], T]) -> T:
        start = self.clock.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except RetryableError as err:
                elapsed = self.clock.monotonic() - start
                delay = self.next_delay(attempt, err, elapsed)
                if delay is None:
                    raise RetriesExhausted(
                        f"gave up after {attempt} attempt(s) in {elapsed:.1f}s: {err}",
                        err, attempt) from err
                if self.on_retry is not None:
                    self.on_retry(err, delay)
                self.clock.sleep(delay)

    def repeat_entries(self, send: Callable[[Sequence[int]], Sequence[tuple]],
                       count: int) -> list:
        """Retry only the failed entries of a *batch*: ``send(indexes)`` returns, per index
        sent, ``(result, retry_after_or_None, retryable: bool)``.

        Why: in a batch (not a transaction) each entry succeeds or fails alone; a 429 on one
        entry must not re-send the ones already written. Entries still retryable when the
        budget ends keep their last result (the caller sees its status and dead-letters it).
        Whole-request failures raised by ``send`` propagate (the caller's own ``repeat``).
        """
        results: list = [None] * count
        pending: list[int] = list(range(count))
        start = self.clock.monotonic()
        attempt = 0
        while pending:
            attempt += 1
            answers = send(pending)
            still: list[int] = []
            wait: Optional[float] = None
            for idx, (result, retry_after, retryable) in zip(pending, answers):
                results[idx] = result
                if retryable:
                    still.append(idx)
                    if retry_after is not None:
                        wait = retry_after if wait is None else max(wait, retry_after)
            if not still:
                break
            err = RetryableError(f"{len(still)} batch entries throttled/unavailable",
                                 status=429, retry_after=wait)
            delay = self.next_delay(attempt, err, self.clock.monotonic() - start)
            if delay is None:
                break
            if self.on_retry is not None:
                self.on_retry(err, delay)
            self.clock.sleep(delay)
            pending = still
        return results


def is_retryable_status(status: int, extra: Iterable[int] = ()) -> bool:
    return status in RETRYABLE_STATUSES or status in set(extra)
