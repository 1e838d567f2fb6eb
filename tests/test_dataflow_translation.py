"""The pipeline translates for Dataflow (``--dry_run=True``: built and translated to a job,
nothing is submitted, no credentials). Catches what only a real runner's translation
rejects (unpicklable DoFns, options the service refuses, unsupported transforms)."""
from unittest import mock

import pytest
from apache_beam.runners.dataflow import dataflow_runner

from pipelines.run import launch

BASE = ["--runner=DataflowRunner", "--dry_run=True", "--project=demo-project", "--region=europe-west1",
        "--temp_location=gs://demo-bucket/tmp", "--no_auth",
        "--device-mapping=templates/devicecontent.json", "--fhir-mapping=templates/fhirmapping.json",
        "--input=templates/sample/*.jsonl"]


def translate(args, tmp_path):
    captured = {}
    original = dataflow_runner.DataflowRunner.run_pipeline

    def spy(self, pipeline, options, pipeline_proto=None):
        result = original(self, pipeline, options, pipeline_proto)
        captured["job"] = self.job
        return result

    with mock.patch.object(dataflow_runner.DataflowRunner, "run_pipeline", spy):
        rc = launch.main(BASE + args + [f"--dead-letter={tmp_path / 'dead'}"])
    assert rc == 0
    job = captured["job"]
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    return job, {n for n in names if "/" not in n}


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch):
    from conftest import REPO
    monkeypatch.chdir(REPO)


def test_batch_files_job_translates(tmp_path):
    job, top = translate([f"--output={tmp_path / 'obs'}"], tmp_path)
    # files, batch: read, normalize and pre-combine in one step, converted and folded per
    # Observation id in another (transforms.backfill)
    assert {"ReadNormalizeGroup", "ObservationsWrite", "AllDeadLetters", "DeadLettersWrite"} <= top
    assert "WriteFhir" not in top
    assert job.proto.type.name == "JOB_TYPE_BATCH"


def test_fhir_writer_job_translates_without_secrets_in_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FHIR_BEARER_TOKEN", "s3cr3t-token-value")
    job, top = translate(["--fhir-url=https://fhir.example.org/fhir", "--fhir-auth=bearer"], tmp_path)
    assert {"ToObservations", "WriteFhir", "AllDeadLetters"} <= top
    assert "s3cr3t-token-value" not in str(job.proto) + str(job.proto_pipeline)
