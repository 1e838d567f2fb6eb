"""The launcher's runner argv: aliases, and the cached Flink job server / Prism filled in
only when the user did not choose (pipelines/run/runners.py)."""
import pytest
from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions, PortableOptions

from conftest import REPO
from pipelines.run import java_artifacts
from pipelines.options import IomtFhirOptions
from pipelines.run.runners import FN_API_RUNNER, fill_cached_runner_artifacts, resolve_runner_aliases


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache as scripts/setup-java and scripts/setup-prism leave it, for the installed Beam."""
    monkeypatch.setenv("IOMT_CACHE", str(tmp_path))
    version = java_artifacts.beam_version()
    jdir = tmp_path / "java" / ("beam-" + version)
    jdir.mkdir(parents=True)
    (jdir / java_artifacts.FLINK_JOB_SERVER_JAR).write_bytes(b"PK")
    (jdir / java_artifacts.EXPANSION_SERVICE_JAR).write_bytes(b"PK")
    prism = tmp_path / "prism" / version / "prism"
    prism.parent.mkdir(parents=True)
    prism.write_bytes(b"")
    prism.chmod(0o755)
    return {"jar": str(jdir / java_artifacts.FLINK_JOB_SERVER_JAR), "prism": str(prism)}


def test_fnapirunner_alias():
    assert resolve_runner_aliases(["--runner=fnapirunner"]) == ["--runner=" + FN_API_RUNNER]
    assert resolve_runner_aliases(["--runner", "FnApiRunner"]) == ["--runner", FN_API_RUNNER]


@pytest.mark.parametrize("runner", ["--runner=FlinkRunner", "--runner=flink",
                                    "--runner=apache_beam.runners.portability.flink_runner.FlinkRunner"])
def test_flink_gets_the_cached_job_server(cache, runner):
    argv = fill_cached_runner_artifacts([runner, "--flink_master=[local]"])
    assert PipelineOptions(argv).view_as(FlinkRunnerOptions).flink_job_server_jar == cache["jar"]


@pytest.mark.parametrize("given", [["--flink_job_server_jar=/my.jar"], ["--flink_job_server_jar", "/my.jar"],
                                   ["--flink-job-server-jar=/my.jar"]])
def test_a_job_server_the_user_gave_wins(cache, given):
    argv = ["--runner", "FlinkRunner"] + given
    assert fill_cached_runner_artifacts(argv) == argv


def test_no_cached_jar_for_an_uber_jar_submission(cache):
    """The uber-jar path uploads the jar to the cluster; the launcher jar is only a manifest."""
    argv = ["--runner=FlinkRunner", "--flink_master=host:8081", "--flink_submit_uber_jar"]
    assert fill_cached_runner_artifacts(argv) == argv


def test_no_runner_is_beams_default_direct_runner(cache):
    assert fill_cached_runner_artifacts(["--streaming"]) == ["--streaming", "--prism_location=" + cache["prism"]]


@pytest.mark.parametrize("runner", ["PrismRunner", "DirectRunner", "direct"])
def test_prism_and_direct_get_the_cached_prism(cache, runner):
    argv = fill_cached_runner_artifacts(["--runner=" + runner])
    assert argv == ["--runner=" + runner, "--prism_location=" + cache["prism"]]
    assert fill_cached_runner_artifacts(["--runner=PrismRunner", "--prism_location=/p"]) == [
        "--runner=PrismRunner", "--prism_location=/p"]


@pytest.mark.parametrize("runner", ["--runner=" + FN_API_RUNNER, "--runner=DataflowRunner",
                                    "--runner=BundleBasedDirectRunner"])
def test_other_runners_are_left_alone(cache, runner):
    assert fill_cached_runner_artifacts([runner, "--output=o"]) == [runner, "--output=o"]


def test_nothing_cached_leaves_beams_default(tmp_path, monkeypatch):
    monkeypatch.setenv("IOMT_CACHE", str(tmp_path / "empty"))
    for argv in (["--runner=FlinkRunner"], ["--runner=PrismRunner"], []):
        assert fill_cached_runner_artifacts(argv) == argv


BEAM = tuple(int(n) for n in java_artifacts.beam_version().split(".")[:2])


@pytest.mark.parametrize("output", [["--output=/tmp/obs"], ["--output", "/tmp/obs"]])
def test_output_does_not_become_beams_output_executable_path(tmp_path, monkeypatch, output):
    """Found on Flink: Beam's PortableOptions view prefix-matches --output to
    --output_executable_path, and the runner then writes a jar there instead of running."""
    monkeypatch.setenv("IOMT_CACHE", str(tmp_path))
    argv = fill_cached_runner_artifacts(["--runner=FlinkRunner"] + output)
    options = PipelineOptions(argv)
    assert not options.view_as(PortableOptions).output_executable_path
    assert options.view_as(IomtFhirOptions).output == "/tmp/obs"
    beam_alone = PipelineOptions(["--runner=FlinkRunner"] + output).view_as(PortableOptions).output_executable_path
    if BEAM < (2, 63):
        assert beam_alone == "/tmp/obs"  # what Beam 2.62 does on its own (its parsers abbreviate)
    elif BEAM >= (2, 77):
        assert beam_alone is None  # Beam 2.77's parsers take no abbreviation: the fill is then moot
    mine = ["--runner=FlinkRunner", "--output=o", "--output_executable_path=/x.jar"]
    assert fill_cached_runner_artifacts(mine) == mine


def test_a_file_backfill_without_a_runner_gets_a_worker_process_per_core(monkeypatch):
    from pipelines.run.runners import runner_line, with_batch_workers

    monkeypatch.setattr("os.cpu_count", lambda: 4)
    argv = with_batch_workers(["--input=x"])
    assert argv == ["--input=x", "--runner=" + FN_API_RUNNER, "--direct_num_workers=4",
                    "--direct_running_mode=multi_processing"]
    assert "4 worker processes" in runner_line(argv, ["--input=x"])
    # the number of workers is the user's, in either spelling; one worker runs in this process
    assert with_batch_workers(["--direct_num_workers", "1"])[-2:] == ["--direct_num_workers=1",
                                                                    "--direct_running_mode=in_memory"]
    assert with_batch_workers(["--direct_num_workers=3"])[-2] == "--direct_num_workers=3"
    assert with_batch_workers(["--direct_num_workers=0"])[-2] == "--direct_num_workers=4"  # 0: every core
    # a runner the user names is left alone
    assert with_batch_workers(["--runner=PrismRunner"]) == ["--runner=PrismRunner"]


def test_a_stream_on_flink_gets_short_bundles_unless_the_user_chose():
    """Beam's Flink runner holds a Python stage's output and timers until its bundle closes (1 s
    by default); a stream gets ``FLINK_STREAM_BUNDLE_MS`` (README "Latency of a live stream")."""
    from pipelines.run.runners import FLINK_STREAM_BUNDLE_MS, flink_stream_args

    short = f"--max_bundle_time_mills={FLINK_STREAM_BUNDLE_MS}"
    assert flink_stream_args(["--runner=FlinkRunner"]) == [short]
    assert flink_stream_args(["--runner", "flink"]) == [short]
    assert flink_stream_args(["--runner=FlinkRunner", "--max_bundle_time_mills", "1000"]) == []
    assert flink_stream_args(["--runner=FlinkRunner", "--max-bundle-time-mills=50"]) == []
    assert flink_stream_args(["--runner=DataflowRunner"]) == flink_stream_args([]) == []


class _Built(Exception):
    """Raised in place of building the pipeline: the launcher's options are what was wanted."""


def _launched_options(monkeypatch, argv) -> dict:
    """Every option (Beam's unknown ones too) the launcher hands the pipeline for ``argv``."""
    from pipelines.run import launch

    seen = {}

    def capture(options=None):
        seen.update(options.get_all_options(retain_unknown_options=True))
        raise _Built()

    monkeypatch.setattr(launch.beam, "Pipeline", capture)
    with pytest.raises(_Built):
        launch._launch_and_run(argv, debug=False)
    return seen


@pytest.mark.parametrize("extra, want", [([], None), (["--max_bundle_time_mills=1000"], "1000")])
def test_the_launcher_hands_flink_the_bundle_time_of_a_stream(tmp_path, monkeypatch, extra, want):
    from pipelines.run.runners import FLINK_STREAM_BUNDLE_MS

    argv = ["--runner=FlinkRunner", "--flink_master=[local]", "--pubsub-subscription=projects/p/subscriptions/s",
            f"--device-mapping={REPO / 'templates/devicecontent.json'}",
            f"--fhir-mapping={REPO / 'templates/fhirmapping.json'}", f"--output={tmp_path / 'o'}",
            f"--dead-letter={tmp_path / 'd'}", "--skip-preflight", *extra]
    seen = _launched_options(monkeypatch, argv)
    assert seen["max_bundle_time_mills"] == (want or str(FLINK_STREAM_BUNDLE_MS))
    assert seen["streaming"] is True


def test_local_worker_processes():
    from pipelines.run.runners import local_worker_processes, with_batch_workers

    assert local_worker_processes(with_batch_workers(["--input=x", "--direct_num_workers=3"])) == 3
    assert local_worker_processes(with_batch_workers(["--input=x", "--direct_num_workers=1"])) == 1
    assert local_worker_processes(["--runner=DirectRunner", "--direct_num_workers=2",
                                   "--direct_running_mode=multi_processing"]) == 2
    assert local_worker_processes(["--runner=FnApiRunner", "--direct_num_workers=2"]) == 1  # in_memory: threads
    assert local_worker_processes(["--runner=FlinkRunner", "--direct_num_workers=4",
                                   "--direct_running_mode=multi_processing"]) == 1


@pytest.mark.parametrize("workers, extra, want", [
    ("4", ["--fhir-server-kind=healthlake"], 2.5),     # the profile's 10/s quota over 4 processes
    ("2", ["--max-fhir-requests-per-second=5"], 2.5),  # the user's cap, likewise
    ("1", ["--max-fhir-requests-per-second=5"], 5.0),  # one process: the cap as given
    ("4", [], 0.0)])                                   # no cap: nothing to share
def test_a_rate_cap_is_the_jobs_shared_by_local_worker_processes(tmp_path, monkeypatch, workers, extra, want):
    """Each worker process throttles on its own (``transforms.fhir.throttle``), so W local
    workers with the job's cap each would send W times what the server allows."""
    argv = [f"--input={REPO / 'templates/sample/messages.jsonl'}", f"--direct_num_workers={workers}",
            f"--device-mapping={REPO / 'templates/devicecontent.json'}",
            f"--fhir-mapping={REPO / 'templates/fhirmapping.json'}", "--fhir-url=http://127.0.0.1:9/fhir",
            f"--dead-letter={tmp_path / 'd'}", "--skip-preflight", *extra]
    seen = _launched_options(monkeypatch, argv)
    assert (seen["max_fhir_requests_per_second"] or 0.0) == pytest.approx(want)
