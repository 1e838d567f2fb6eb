"""Progress lines while a local run runs, and the summary as a JSON file.

A backfill over thousands of files runs for hours; without a sign of life an operator
cannot tell a slow run from a stuck one. Every ``--progress-seconds`` (10) a line goes to
stderr with counts only (never content or ids)::

    progress: 40s files=12/300 messages=812000 measurements=830112 observations created=2310
    updated=12 unchanged=0 to_file=0 dead_letters=3 msgs_per_s=20300

The counts come from ``transforms.metrics`` (in-process, see there), so lines appear on
runners that run the job in this process (``FnApiRunner``, the direct runners) or in worker
processes of this machine (``FnApiRunner`` multi-processing: they write their counts to a
directory this reads); elsewhere the runner's own console shows progress and only the final
summary is printed here.
``files`` appears once the read stage reports ``FilesMatched`` / ``FilesRead``.
"""
import json
import sys
import threading
import time
from typing import IO, Callable, Dict, Optional

from transforms import metrics as progress
from transforms.fhir.writer import METRIC_SAVED

#: runners that execute the job in the launching process
IN_PROCESS_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")

OUTCOMES = tuple(METRIC_SAVED.items()) + (("to_file", "ObservationToFile"),)


def runs_in_process(options) -> bool:
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    name = runner if isinstance(runner, str) else type(runner).__name__
    if name.rsplit(".", 1)[-1] not in IN_PROCESS_RUNNERS:
        return False
    return options.view_as(DirectOptions).direct_running_mode != "multi_processing"


def dead_letter_total(counts: Dict[str, int]) -> int:
    return sum(v for k, v in counts.items() if k.startswith("DeadLetter."))


def progress_line(counts: Dict[str, int], elapsed: float) -> str:
    """One line of counts (pure: tests and other callers)."""
    parts = [f"progress: {elapsed:.0f}s"]
    if "FilesMatched" in counts or "FilesRead" in counts:
        parts.append(f"files={counts.get('FilesRead', 0)}/{counts.get('FilesMatched', 0)}")
    messages = counts.get("DeviceEvent", 0)
    parts.append(f"messages={messages}")
    parts.append(f"measurements={counts.get('NormalizedEvent', 0)}")
    parts.append("observations " + " ".join(f"{label}={counts.get(name, 0)}" for label, name in OUTCOMES))
    parts.append(f"dead_letters={dead_letter_total(counts)}")
    parts.append(f"msgs_per_s={messages / elapsed if elapsed > 0 else 0:.0f}")
    return " ".join(parts)


class ProgressReporter:
    """A daemon thread printing ``progress_line`` every ``interval`` seconds until stopped."""

    def __init__(self, interval: float, stream: Optional[IO[str]] = None,
                 clock: Callable[[], float] = time.monotonic,
                 counts: Optional[Callable[[], Dict[str, int]]] = None):
        self._interval = interval
        self._counts = counts
        self._stream = stream
        self._clock = clock
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.started = clock()

    def start(self) -> "ProgressReporter":
        progress.reset()
        self.started = self._clock()
        self._thread = threading.Thread(target=self._run, name="iomt-fhir-progress", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.report()

    def report(self) -> None:
        stream = self._stream or sys.stderr
        # worker processes' counts (this process writes its own there too), else this process's
        counts = self._counts() if self._counts is not None else progress.snapshot()
        print(progress_line(counts, self.elapsed()), file=stream, flush=True)

    def elapsed(self) -> float:
        return self._clock() - self.started

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        directory = getattr(self, "workers_dir", None)
        if directory:  # the worker processes' count files (start_for)
            import os
            import shutil

            os.environ.pop(progress.PROGRESS_DIR_ENV, None)
            shutil.rmtree(directory, ignore_errors=True)


def runs_in_local_workers(options) -> bool:
    """``FnApiRunner`` with worker processes on this machine (the file backfill's default)."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    from pipelines.run.runners import runner_key

    return (runner_key(options.view_as(StandardOptions).runner) == "fnapi"
            and options.view_as(DirectOptions).direct_running_mode == "multi_processing")


def start_for(options, interval: float) -> Optional[ProgressReporter]:
    """A started reporter when the run is in this process, or in worker processes of this
    machine (they write their counts to a directory, ``transforms.metrics.PROGRESS_DIR_ENV``),
    and ``interval`` > 0; else None."""
    if interval <= 0:
        return None
    if runs_in_process(options):
        return ProgressReporter(interval).start()
    if runs_in_local_workers(options):
        import os
        import tempfile

        directory = tempfile.mkdtemp(prefix="iomt-fhir-progress-")
        os.environ[progress.PROGRESS_DIR_ENV] = directory  # the workers, started next, inherit it
        reporter = ProgressReporter(interval, counts=lambda: progress.worker_counts(directory))
        reporter.workers_dir = directory
        return reporter.start()
    return None


def tally_dead_letter(record) -> None:
    """Counts a dead-letter record by stage (a tap on the flattened dead letters)."""
    stage = record.get("stage") if isinstance(record, dict) else None
    progress.inc(f"DeadLetter.{stage or 'unknown'}")


def tally_outcome(outcome) -> None:
    """Counts a writer outcome (``{"id", "outcome"}``) under the writer's metric names."""
    name = METRIC_SAVED.get(outcome.get("outcome")) if isinstance(outcome, dict) else None
    if name:
        progress.inc(name)


def write_summary_file(path: str, summary, elapsed_seconds: float) -> None:
    """The final summary as JSON (counts, dead letters by stage, exit code; no content, no ids).

    Any Beam filesystem path (local, gs://, ...), written whole at the end of the run."""
    from apache_beam.io.filesystems import FileSystems

    doc = dict(summary.to_json())
    doc["elapsed_seconds"] = round(elapsed_seconds, 3)
    messages = doc.get("counters", {}).get("DeviceEvent", 0)
    doc["messages_per_second"] = round(messages / elapsed_seconds, 1) if elapsed_seconds > 0 else None
    with FileSystems.create(path, mime_type="application/json") as f:
        f.write((json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"))
