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
import json
import os
import time
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


#: Set by the launcher when the job's workers are other processes (``FnApiRunner`` with
#: ``--direct_running_mode=multi_processing``, the file backfill's default): each process then
#: also writes its counts to ``<dir>/<pid>.json`` at most once a second, and the progress
#: reporter adds the files up (``worker_counts``). Counts only, as everywhere here.
PROGRESS_DIR_ENV = "IOMT_FHIR_PROGRESS_DIR"
PUBLISH_SECONDS = 1.0
_published = [0.0]


def _publish() -> None:
    directory = os.environ.get(PROGRESS_DIR_ENV)
    if not directory:
        return
    now = time.monotonic()
    if now - _published[0] < PUBLISH_SECONDS:
        return
    _published[0] = now
    path = os.path.join(directory, f"{os.getpid()}.json")
    try:
        with open(path + ".tmp", "w") as f:
            json.dump(snapshot(), f)
        os.replace(path + ".tmp", path)  # a reader sees the old file or the new, never half
    except OSError:  # progress is best effort; the summary's counts come from Beam's metrics
        pass


def worker_counts(directory: str) -> Dict[str, int]:
    """The counts the worker processes last wrote to ``directory``, added up."""
    total: Dict[str, int] = {}
    try:
        names = [n for n in os.listdir(directory) if n.endswith(".json")]
    except OSError:
        return total
    for name in names:
        try:
            with open(os.path.join(directory, name)) as f:
                counts = json.load(f)
        except (OSError, ValueError):
            continue
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v
    return total


def inc(name: str, n: int = 1) -> None:
    _counts[name] = _counts.get(name, 0) + n
    _publish()


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
        _publish()


def counter(namespace: str, name: str) -> _Counter:
    """Like ``Metrics.counter``, and counted for progress lines (picklable, for DoFns)."""
    return _Counter(namespace, name)
