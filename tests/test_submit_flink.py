"""``scripts/submit-flink`` (``pipelines.deploy.submit_flink``): the options a remote Flink cluster needs.

No Flink cluster runs here (the Flink tests use the job server's embedded ``[local]`` cluster),
so this checks what the wrapper owns: the arguments it builds, that Beam hands the Flink-only
ones (checkpointing, state backend) on to the Java job server, and its refusals."""
import subprocess

import pytest
from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions, PortableOptions

from conftest import REPO
from pipelines.deploy import submit_flink
from pipelines.options import IomtFhirOptions
from pipelines.run.runners import FLINK_CHECKPOINT_INTERVAL_MS

RUN = ["--kafka-topic=devices", "--kafka-bootstrap-servers=kafka:9092", "--device-mapping=dm.json",
       "--fhir-mapping=fm.json", "--fhir-url=https://fhir.example.org/fhir", "--dead-letter=s3://b/dead"]


def argv(*own):
    args = submit_flink.parser().parse_args(list(own))
    return submit_flink.build_argv(args, RUN)


def test_remote_cluster_options_reach_beam_and_the_java_job_server():
    options = PipelineOptions(argv("--flink_master", "jm:8081", "--parallelism", "8", "--state-backend",
                                   "rocksdb", "--state-backend-storage-path", "s3://b/checkpoints"))
    flink = options.view_as(FlinkRunnerOptions)
    assert (flink.flink_master, flink.flink_version, flink.parallelism) == ("jm:8081", "1.19", 8)
    portable = options.view_as(PortableOptions)
    assert (portable.environment_type, portable.environment_config) == ("EXTERNAL", "localhost:50000")
    # what the portable runner sends the job server (unknown to Python, known to Flink's runner)
    sent = options.get_all_options(retain_unknown_options=True)
    assert sent["checkpointing_interval"] == str(FLINK_CHECKPOINT_INTERVAL_MS)
    assert sent["state_backend"] == "rocksdb" and sent["state_backend_storage_path"] == "s3://b/checkpoints"
    assert sent["runner"] == "FlinkRunner"
    ours = options.view_as(IomtFhirOptions)
    assert ours.kafka_topic == "devices" and ours.dead_letter == "s3://b/dead"


def test_process_environment_and_no_checkpoints():
    out = argv("--flink_master", "jm:8081", "--checkpointing-interval", "0", "--environment-type", "PROCESS",
               "--environment-config", '{"command": "/opt/apache/beam/boot"}')
    assert "--environment_type=PROCESS" in out and '--environment_config={"command": "/opt/apache/beam/boot"}' in out
    assert not [a for a in out if a.startswith("--checkpointing_interval")]


@pytest.mark.parametrize("own, complaint", [
    (["--parallelism", "2"], "--flink_master"),
    (["--flink_master", "jm:8081", "--state-backend", "rocksdb"], "--state-backend-storage-path"),
    (["--flink_master", "jm:8081", "--checkpointing-interval", "-1"], "--checkpointing-interval")])
def test_refusals(own, complaint, capsys):
    with pytest.raises(SystemExit) as exc:
        submit_flink.main(own + ["--dry-run", "--"] + RUN)
    assert exc.value.code != 0
    assert complaint in str(exc.value.code) + capsys.readouterr().err


def test_script_dry_run_prints_the_command():
    run = subprocess.run([str(REPO / "scripts" / "submit-flink"), "--dry-run", "--flink_master", "jm:8081",
                          "--uber-jar", "--"] + RUN, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("iomt-fhir run --runner=FlinkRunner --flink_master=jm:8081 ")
    assert "--flink_submit_uber_jar" in run.stdout and "--kafka-topic=devices" in run.stdout


def test_flink_versions_are_the_installed_beams(capsys):
    """Beam 2.77 runs Flink 2.x, Beam 2.62 does not: the choice follows the installed Beam."""
    from apache_beam.options.pipeline_options import FlinkRunnerOptions
    published = FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    assert submit_flink.DEFAULT_FLINK_VERSION in published
    for version in ("1.17", "2.0"):
        given = ["--flink_master=jm:8081", "--flink-version", version]
        if version in published:
            assert submit_flink.parser().parse_args(given).flink_version == version
        else:
            with pytest.raises(SystemExit):
                submit_flink.parser().parse_args(given)
            assert "invalid choice" in capsys.readouterr().err
