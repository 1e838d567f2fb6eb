"""``fewer_collections()``: a higher generation-0 threshold of Python's cyclic GC while a
batch DoFn call runs.

Why: a read unit turns every line into a few dicts and tuples, and a batch DoFn keeps up to
``MAX_BUFFERED`` measurements alive in its tables. With CPython's default threshold (700
allocations) a collection runs every few messages and walks the young objects each time;
measured on the batch backfill loop (100k simulated messages, ``ReadNormalizePrecombineFn``
alone) that was about a fifth of its CPU (2.08 s default, 1.58 s at 10,000). Nothing the
pipeline computes depends on when garbage is collected, so results cannot change; cyclic
garbage merely waits for a later collection (at most 10,000 allocations' worth).

Thread-safe and re-entrant (the SDK harness may run bundles on several threads): the first
caller in raises the threshold, the last one out restores what was there before.
"""
import contextlib
import gc
import threading

#: generation-0 threshold while a batch call runs (generations 1 and 2 keep theirs)
GEN0_THRESHOLD = 10_000

_lock = threading.Lock()
_depth = 0
_saved = None


@contextlib.contextmanager
def fewer_collections():
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            if _saved[0] and _saved[0] < GEN0_THRESHOLD:  # 0: collection off, leave it so
                gc.set_threshold(GEN0_THRESHOLD, *_saved[1:])
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.set_threshold(*_saved)
                _saved = None
