"""The pipeline's metric vocabulary, and running counts of an in-process run for progress lines.

``NAMESPACE`` is every counter's namespace; a dead letter counts as ``Errors.<stage>.<type>``
(``error_counter``), which the run summary reads back (``pipelines.run.summary``).

Why not Beam's metrics: a runner reports them in the result, and ``FnApiRunner`` (the
local backfill runner) returns its result only when the job is done. It runs the job in
this process, so the transforms also add their counts to a plain dict here, which the
launcher's progress reporter (``pipelines.run.progress``) reads every few seconds.
On a remote runner (Dataflow, Flink) the dict stays empty on the launcher and only the
Beam metrics count.

Counts only, under the same names as the Beam metrics: no content, no ids.
"""
from typing import Dict

from apache_beam.metrics import Metrics

#: the namespace of every counter the pipeline keeps (the writer's reference-named
#: ``FhirResourceSaved`` / ``Errors`` counters excepted; see ``transforms.sinks.fhir_server``)
NAMESPACE = "iomt_fhir"
#: dead letters per stage and error type: ``Errors.<stage>.<type>``
ERROR_PREFIX = "Errors."

_counts: Dict[str, int] = {}


def error_counter(stage: str, error_type: str):
    """The Beam counter of dead letters of ``stage`` and ``error_type``."""
    return Metrics.counter(NAMESPACE, f"{ERROR_PREFIX}{stage}.{error_type}")


def inc(name: str, n: int = 1) -> None:
    _counts[name] = _counts.get(name, 0) + n


def snapshot() -> Dict[str, int]:
    """A copy, taken while other threads may add names (retried if one did mid-copy)."""
    for _ in range(10):
        try:
            return dict(_counts)
        except RuntimeError:  # dictionary changed size during iteration
            continue
    return {}


def reset() -> None:
    _counts.clear()


class _Counter:
    """A Beam counter that also adds to the in-process counts."""

    __slots__ = ("_beam", "_name")

    def __init__(self, namespace: str, name: str):
        self._beam = Metrics.counter(namespace, name)
        self._name = name

    def inc(self, n: int = 1) -> None:
        self._beam.inc(n)
        _counts[self._name] = _counts.get(self._name, 0) + n


def counter(namespace: str, name: str) -> _Counter:
    """Like ``Metrics.counter``, and counted for progress lines (picklable, for DoFns)."""
    return _Counter(namespace, name)
