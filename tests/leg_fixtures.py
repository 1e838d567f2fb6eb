"""Which tests run in which environment: ``scripts/test`` runs the suite in two *legs*.

Why two: Beam starts the Flink job server and the Kafka IO expansion service from Java jars of
exactly its own version, and the Maven repository these machines reach serves them only for
Beam 2.62 (``scripts/setup-java``). So ``.venv`` holds the newest Beam (the README's demo, the
CLI, every other test) and ``.venv-flink`` holds Beam 2.62 with those jars.

A test that needs Beam's Java jars is marked ``java_jars`` (every ``flink`` test is, implicitly:
Flink runs from the job server jar). ``IOMT_TEST_LEG`` chooses the leg:

- ``main``: everything except ``java_jars`` tests (run in ``.venv``);
- ``java_jars``: only ``java_jars`` tests (run in ``.venv-flink``);
- unset: no selection (a plain ``pytest`` in one venv runs what it is asked to).

Deselected tests are reported as deselected, so a leg never passes a test silently.
"""
import os

import pytest

LEGS = ("main", "java_jars")


def needs_java_jars(item) -> bool:
    return item.get_closest_marker("java_jars") is not None or item.get_closest_marker("flink") is not None


def pytest_collection_modifyitems(config, items):
    leg = os.environ.get("IOMT_TEST_LEG", "")
    if not leg:
        return
    if leg not in LEGS:
        raise pytest.UsageError(f"IOMT_TEST_LEG={leg!r}: expected one of {', '.join(LEGS)}")
    keep, drop = [], []
    for item in items:
        (keep if needs_java_jars(item) == (leg == "java_jars") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
