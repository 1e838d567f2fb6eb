"""A clock for tests of time-dependent code (retry, auth, throttle, identity cache).

``sleep`` advances time at once and records the delay, so a test asserts the waits a
policy chose (counts and values) instead of measuring wall time on a shared machine.
"""
from transforms.fhir.retry import Clock


class FakeClock(Clock):
    """A clock for tests: ``sleep`` advances time instantly and records the delays."""

    def __init__(self, start: float = 1000.0, epoch: float = 1_700_000_000.0):
        self.now = start
        self.epoch_offset = epoch - start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + self.epoch_offset

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.now += seconds
