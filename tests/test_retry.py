"""Retry timing with a fake clock: no real sleeping."""
import email.utils

import pytest

from clock_fixtures import FakeClock
from transforms.fhir.retry import Repeater, RetriesExhausted, RetryableError, RetryPolicy, parse_retry_after


def failing(times, **err_kw):
    calls = {"n": 0}

    def fn():
        calls["n"] += 1
        if calls["n"] <= times:
            raise RetryableError("transient", **err_kw)
        return "ok"
    return fn, calls


def test_parse_retry_after_seconds_and_http_date():
    now = 1_700_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 0 ", now) == 0.0
    date = email.utils.formatdate(now + 12, usegmt=True)
    assert parse_retry_after(date, now) == 12.0
    past = email.utils.formatdate(now - 100, usegmt=True)
    assert parse_retry_after(past, now) == 0.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-3", now) is None


def test_exponential_backoff_with_full_jitter():
    clock = FakeClock()
    fn, calls = failing(4)
    rep = Repeater(RetryPolicy(max_attempts=6, initial_backoff=1, multiplier=2, max_backoff=5),
                   clock, rng=lambda: 0.5)
    assert rep.repeat(fn) == "ok"
    assert calls["n"] == 5
    assert clock.sleeps == [0.5, 1.0, 2.0, 2.5]  # half of 1, 2, 4, min(8, 5)


def test_retry_after_wins_over_shorter_backoff_and_is_capped():
    clock = FakeClock()
    fn, _ = failing(2, status=429, retry_after=9.0)
    rep = Repeater(RetryPolicy(initial_backoff=1, max_retry_after=60), clock, rng=lambda: 1.0)
    assert rep.repeat(fn) == "ok"
    assert clock.sleeps == [9.0, 9.0]
    clock = FakeClock()
    fn, _ = failing(1, status=503, retry_after=3600.0)
    rep = Repeater(RetryPolicy(max_retry_after=20, max_total_seconds=100), clock, rng=lambda: 0)
    assert rep.repeat(fn) == "ok"
    assert clock.sleeps == [20.0]


def test_gives_up_after_max_attempts():
    clock = FakeClock()
    fn, calls = failing(10, status=503)
    rep = Repeater(RetryPolicy(max_attempts=3, initial_backoff=1), clock, rng=lambda: 1.0)
    with pytest.raises(RetriesExhausted) as info:
        rep.repeat(fn)
    assert calls["n"] == 3
    assert info.value.attempts == 3
    assert info.value.status == 503
    assert clock.sleeps == [1.0, 2.0]


def test_total_time_bound_stops_before_sleeping_past_budget():
    clock = FakeClock()
    fn, calls = failing(10, status=429, retry_after=30.0)
    rep = Repeater(RetryPolicy(max_attempts=100, max_total_seconds=70), clock, rng=lambda: 0)
    with pytest.raises(RetriesExhausted):
        rep.repeat(fn)
    assert clock.sleeps == [30.0, 30.0]  # a third 30 s wait would end at 90 s > 70 s
    assert calls["n"] == 3


def test_non_retryable_errors_propagate_immediately():
    clock = FakeClock()

    def fn():
        raise ValueError("permanent")
    with pytest.raises(ValueError):
        Repeater(RetryPolicy(), clock).repeat(fn)
    assert clock.sleeps == []


def test_repeat_entries_resends_only_throttled_entries():
    clock = FakeClock()
    sent = []
    # entry 1 is throttled twice, entry 3 once; entries 0 and 2 succeed at once
    remaining = {1: 2, 3: 1}

    def send(indexes):
        sent.append(list(indexes))
        out = []
        for i in indexes:
            if remaining.get(i, 0) > 0:
                remaining[i] -= 1
                out.append((("429", i), None, True))
            else:
                out.append((("200", i), None, False))
        return out
    rep = Repeater(RetryPolicy(initial_backoff=1), clock, rng=lambda: 1.0)
    results = rep.repeat_entries(send, 4)
    assert sent == [[0, 1, 2, 3], [1, 3], [1]]
    assert results == [("200", 0), ("200", 1), ("200", 2), ("200", 3)]
    assert clock.sleeps == [1.0, 2.0]


def test_repeat_entries_keeps_last_failure_when_budget_ends():
    clock = FakeClock()

    def send(indexes):
        return [(("429", i), 5.0, True) if i == 0 else (("201", i), None, False)
                for i in indexes]
    rep = Repeater(RetryPolicy(max_attempts=3), clock, rng=lambda: 0)
    assert rep.repeat_entries(send, 2) == [("429", 0), ("201", 1)]
    assert clock.sleeps == [5.0, 5.0]


def test_outage_policy_retries_for_its_time_budget_not_a_number_of_attempts():
    from transforms.fhir.retry import outage_budget
    clock = FakeClock()
    fn, calls = failing(12)  # a server down for ~1.5 min at 10 s between attempts
    rep = Repeater(RetryPolicy.for_outage(900), clock, rng=lambda: 1.0)
    assert rep.repeat(fn) == "ok"
    assert calls["n"] == 13 and max(clock.sleeps) == 10.0  # backoff capped at 10 s
    fn, calls = failing(10_000)
    clock = FakeClock()
    with pytest.raises(RetriesExhausted):
        Repeater(RetryPolicy.for_outage(90), clock, rng=lambda: 1.0).repeat(fn)
    assert 80 <= clock.now - 1000 <= 90  # gave up at the budget, not past it
    assert (outage_budget(None, True), outage_budget(None, False), outage_budget(30, True)) == (
        900.0, 600.0, 30.0)
