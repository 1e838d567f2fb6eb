"""Progress lines of a local run and the summary as JSON (counts only: no content, no ids)."""
import io
import json

from pipelines.run import launch
from pipelines.run import progress as progress_report
from pipeline_fixtures import read_lines, write_inputs
from transforms import metrics as progress


def test_progress_line_has_counts_by_kind_and_rate():
    counts = {"FilesMatched": 4, "FilesRead": 1, "DeviceEvent": 300, "NormalizedEvent": 310,
              "ObservationCreated": 5, "ObservationNoOperation": 2, "DeadLetter.normalization": 3,
              "DeadLetter.fhir_write": 1}
    assert progress_report.progress_line(counts, 10.0) == (
        "progress: 10s files=1/4 messages=300 measurements=310 observations created=5 updated=0 "
        "unchanged=2 to_file=0 dead_letters=4 msgs_per_s=30")
    assert "files=" not in progress_report.progress_line({}, 0)


def test_reporter_prints_what_the_transforms_counted():
    out = io.StringIO()
    now = [100.0]
    reporter = progress_report.ProgressReporter(3600, out, clock=lambda: now[0]).start()
    progress.counter("iomt_fhir", "DeviceEvent").inc(40)
    progress_report.tally_dead_letter({"stage": "normalization", "payload": "secret-body"})
    progress_report.tally_outcome({"id": "obs-secret-id", "outcome": "updated"})
    now[0] = 104.0
    reporter.report()
    reporter.stop()
    line = out.getvalue()
    assert "messages=40" in line and "updated=1" in line and "dead_letters=1" in line
    assert "msgs_per_s=10" in line and "secret" not in line


def test_local_run_prints_progress_and_writes_the_summary_file(tmp_path, capsys):
    d = write_inputs(tmp_path)
    rc = launch.main([
        "--runner=FnApiRunner", f"--device-mapping={d / 'dm.json'}", f"--fhir-mapping={d / 'fm.json'}",
        f"--input={d / 'in.jsonl'}", f"--output={d / 'obs'}", f"--dead-letter={d / 'dead'}",
        "--window-seconds=300", "--single-file-outputs", "--progress-seconds=0.2",
        f"--summary-file={d / 'summary.json'}"])
    assert rc == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("progress: ")]
    assert lines, err
    assert "p-d1" not in err and "d1" not in " ".join(lines)  # counts, never ids
    # the counts of the finished run, kept by the transforms while it ran
    final = progress_report.progress_line(progress.snapshot(), 1.0)
    assert "files=1/1 messages=7 measurements=5 observations created=0 updated=0 unchanged=0 to_file=2 " \
           "dead_letters=2" in final
    summary = json.loads((d / "summary.json").read_text())
    assert summary["counters"]["DeviceEvent"] == 7 and summary["counters"]["NormalizedEvent"] == 5
    assert summary["dead_letters"] == {"normalization": {"IncompatibleDataException": 1,
                                                         "InvalidDataFormatException": 1}}
    assert summary["exit_code"] == 0 and summary["elapsed_seconds"] > 0
    assert len(read_lines(d / "obs.jsonl")) == 2


def test_worker_processes_counts_reach_the_progress_line(tmp_path, monkeypatch):
    """FnApiRunner with worker processes (the file backfill's default): each process writes its
    counts to the directory the launcher names, the reporter adds the files up."""
    monkeypatch.setenv(progress.PROGRESS_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(progress, "_published", [0.0])
    progress.reset()
    progress.counter("iomt_fhir", "DeviceEvent").inc(30)  # this process, as one worker
    (tmp_path / "12345.json").write_text(json.dumps({"DeviceEvent": 12, "NormalizedEvent": 5}))  # another
    (tmp_path / "half.json.tmp").write_text("{")  # a file being written is not read
    assert progress.worker_counts(str(tmp_path))["DeviceEvent"] == 30 + 12
    out = io.StringIO()
    reporter = progress_report.ProgressReporter(3600, out, counts=lambda: progress.worker_counts(str(tmp_path)))
    reporter.report()
    assert "messages=42 measurements=5" in out.getvalue()


def test_a_run_with_worker_processes_gets_a_reporter_reading_their_directory(monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(["--runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner",
                               "--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    monkeypatch.delenv(progress.PROGRESS_DIR_ENV, raising=False)
    reporter = progress_report.start_for(options, 3600)
    try:
        directory = reporter.workers_dir
        assert progress.os.environ[progress.PROGRESS_DIR_ENV] == directory
    finally:
        reporter.stop()
    assert progress.PROGRESS_DIR_ENV not in progress.os.environ and not progress.os.path.exists(directory)
