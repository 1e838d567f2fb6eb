"""ObservationCache: bounded by entries (LRU) and age; only versioned resources kept."""
import pytest

from transforms.fhir.observation_cache import ObservationCache


def res(rid, version="1"):
    return {"resourceType": "Observation", "id": rid, "meta": {"versionId": version}}


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_get_put_and_least_recently_used_goes_first():
    c = ObservationCache(max_entries=2)
    c.put("a", res("a"))
    c.put("b", res("b"))
    assert c.get("a") == res("a")  # a is now the most recent
    c.put("c", res("c"))
    assert (c.get("b"), c.get("a"), c.get("c")) == (None, res("a"), res("c"))
    assert (len(c), c.hits, c.misses) == (2, 3, 1)


def test_entries_expire_after_ttl_from_the_write():
    clock = Clock()
    c = ObservationCache(ttl_seconds=60, clock=clock)
    c.put("a", res("a"))
    clock.now += 59.9
    assert c.get("a") == res("a")  # reading does not extend the life (absolute expiry)
    clock.now += 0.1
    assert c.get("a") is None and len(c) == 0


def test_a_resource_without_version_is_not_kept_and_replaces_nothing():
    c = ObservationCache()
    c.put("a", res("a", "1"))
    c.put("a", {"resourceType": "Observation", "id": "a"})
    c.put("b", None)
    assert c.get("a") is None and c.get("b") is None


def test_drop_and_size_zero_keeps_nothing():
    c = ObservationCache()
    c.put("a", res("a"))
    c.drop("a")
    c.drop("never-there")
    assert c.get("a") is None
    off = ObservationCache(max_entries=0)
    off.put("a", res("a"))
    assert len(off) == 0


def test_negative_bounds_are_refused():
    with pytest.raises(ValueError):
        ObservationCache(max_entries=-1)
