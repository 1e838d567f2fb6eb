"""``fewer_collections``: the GC threshold is raised inside, and what was there comes back,
nested, on errors and across threads."""
import gc
import threading

import pytest

from transforms import gc_budget
from transforms.gc_budget import GEN0_THRESHOLD, fewer_collections


@pytest.fixture
def default_threshold():
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_raised_inside_restored_after(default_threshold):
    with fewer_collections():
        assert gc.get_threshold() == (GEN0_THRESHOLD, 10, 10)
        with fewer_collections():
            assert gc.get_threshold()[0] == GEN0_THRESHOLD
        assert gc.get_threshold()[0] == GEN0_THRESHOLD  # the outer call still runs
    assert gc.get_threshold() == (700, 10, 10)


def test_restored_after_an_error(default_threshold):
    with pytest.raises(KeyError):
        with fewer_collections():
            raise KeyError("x")
    assert gc.get_threshold() == (700, 10, 10)


def test_a_disabled_or_higher_threshold_is_left_alone(default_threshold):
    for threshold in ((0, 10, 10), (50_000, 10, 10)):
        gc.set_threshold(*threshold)
        with fewer_collections():
            assert gc.get_threshold() == threshold
        assert gc.get_threshold() == threshold


def test_overlapping_threads_restore_once_all_are_out(default_threshold):
    inside, release = threading.Barrier(3), threading.Event()

    def work():
        with fewer_collections():
            inside.wait(timeout=10)
            release.wait(timeout=10)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait(timeout=10)
    assert gc.get_threshold()[0] == GEN0_THRESHOLD
    release.set()
    for t in threads:
        t.join(timeout=10)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc_budget._depth == 0
