"""Dataflow Flex Template kit (``pipelines.deploy.flex_template``, ``deploy/dataflow/``).

``metadata.json`` must name exactly the pipeline's options (this fails when an option is
added without ``scripts/dataflow-flex-template --write-metadata``); the template's entry
point, given parameters the way Dataflow passes them (``--name=value``), translates the
batch (files), Pub/Sub and Event Hubs jobs with ``--dry_run=True``, no secret in the job.
The Dockerfile cannot be built here (no Docker engine): what it relies on is checked.
"""
import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
from unittest import mock

import apache_beam
import pytest
from apache_beam.runners.dataflow import dataflow_runner

from conftest import REPO
from pipelines.deploy import flex_template
from pipelines.options import IomtFhirOptions
from kafka_stub_fixtures import KEY, SECRET, kafka_row
from transforms.sources.kafka import CONNECTION_STRING_ENV

METADATA = REPO / "deploy" / "dataflow" / "metadata.json"
DOCKERFILE = REPO / "deploy" / "dataflow" / "Dockerfile"
SCRIPT = REPO / "scripts" / "dataflow-flex-template"
GCP = ["--runner=DataflowRunner", "--dry_run=True", "--project=demo-project", "--region=europe-west1",
       "--temp_location=gs://demo-bucket/tmp", "--no_auth"]


def option_dests():
    parser = argparse.ArgumentParser()
    IomtFhirOptions._add_argparse_args(parser)
    return {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}


# ------------------------------------------------------------------ metadata.json

def test_metadata_names_exactly_the_pipeline_options():
    on_disk = json.loads(METADATA.read_text(encoding="utf-8"))
    names = [p["name"] for p in on_disk["parameters"]]
    assert len(names) == len(set(names))
    assert set(names) == option_dests(), (
        "deploy/dataflow/metadata.json is stale: run scripts/dataflow-flex-template --write-metadata")
    assert METADATA.read_text(encoding="utf-8") == flex_template.metadata_json(), (
        "deploy/dataflow/metadata.json is stale: run scripts/dataflow-flex-template --write-metadata")


def test_every_parameter_has_label_help_and_a_valid_name():
    for p in flex_template.metadata()["parameters"]:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", p["name"]), p["name"]
        assert p["label"].strip() and p["helpText"].strip(), p["name"]
        for rx in p.get("regexes", []):
            re.compile(rx)
    by_name = {p["name"]: p for p in flex_template.metadata()["parameters"]}
    assert {n for n, p in by_name.items() if not p["isOptional"]} == {"device_mapping", "fhir_mapping",
                                                                       "dead_letter"}
    assert by_name["identity_mode"]["paramType"] == "ENUM"
    assert [o["value"] for o in by_name["identity_mode"]["enumOptions"]] == [
        "Create", "Lookup", "LookupWithEncounter", "LookupByDeviceUse", "LookupByDeviceUseWithEncounter"]
    assert by_name["bundle_size"]["paramType"] == "NUMBER" and "default 50" in by_name["bundle_size"]["helpText"]
    assert by_name["single_file_outputs"]["paramType"] == "BOOLEAN"
    assert by_name["pubsub_subscription"]["paramType"] == "PUBSUB_SUBSCRIPTION"


def test_tool_writes_the_template_spec(tmp_path):
    spec_path = tmp_path / "spec.json"
    image = "europe-docker.pkg.dev/demo-project/templates/iomt-fhir:0.1.0"
    assert flex_template.tool_main(["--image", image, "--output", str(spec_path)], str(METADATA)) == 0
    spec = json.loads(spec_path.read_text())
    assert spec["image"] == image and spec["sdkInfo"] == {"language": "PYTHON"}
    assert spec["defaultEnvironment"] == {"sdkContainerImage": image}
    assert spec["metadata"] == json.loads(METADATA.read_text())


def test_check_fails_on_a_stale_metadata_file_and_write_fixes_it(tmp_path, capsys):
    stale = json.loads(METADATA.read_text())
    stale["parameters"].pop()
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(stale))
    assert flex_template.tool_main(["--check"], str(path)) == 1
    assert "--write-metadata" in capsys.readouterr().err
    assert flex_template.tool_main(["--write-metadata", "--check"], str(path)) == 0
    assert path.read_text() == METADATA.read_text()


def test_script_checks_the_repository_metadata():
    run = subprocess.run([str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_launcher_argv_turns_boolean_parameters_into_flags():
    assert flex_template.launcher_argv(["--single_file_outputs=true", "--input=x"]) == [
        "--single_file_outputs", "--input=x"]
    assert flex_template.launcher_argv(["--single-file-outputs=false", "--bundle_size=5"]) == ["--bundle_size=5"]
    with pytest.raises(SystemExit):
        flex_template.launcher_argv(["--single_file_outputs=maybe"])


# ------------------------------------------------------------------ the template's jobs translate

@pytest.fixture
def repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


def translate_as_template(parameters):
    """Run the template's entry point as Dataflow's launcher does; return the translated job."""
    captured = {}
    original = dataflow_runner.DataflowRunner.run_pipeline

    def spy(self, pipeline, options, pipeline_proto=None):
        result = original(self, pipeline, options, pipeline_proto)
        captured["job"], captured["options"] = self.job, options
        return result

    argv = GCP + [f"--{k}={v}" for k, v in parameters.items()]
    with mock.patch.object(dataflow_runner.DataflowRunner, "run_pipeline", spy):
        assert flex_template.main(argv) == 0
    job = captured["job"]
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    return job, names, captured["options"]


MAPPINGS = {"device_mapping": "templates/devicecontent.json", "fhir_mapping": "templates/fhirmapping.json"}


def test_batch_files_template_job_translates(repo_cwd, tmp_path):
    job, names, _ = translate_as_template(dict(
        MAPPINGS, input="templates/sample/*.jsonl", output=tmp_path / "obs", single_file_outputs="true",
        dead_letter=tmp_path / "dead"))
    assert job.proto.type.name == "JOB_TYPE_BATCH"
    assert {"ReadNormalizeGroup/ReadNormalizePrecombine", "ReadNormalizeGroup/Group",
            "ReadNormalizeGroup/ConvertAndFold", "ObservationsWrite"} <= names


def test_pubsub_template_job_translates_without_secrets(repo_cwd, tmp_path, monkeypatch):
    monkeypatch.setenv("FHIR_BEARER_TOKEN", "s3cr3t-token-value")
    job, names, options = translate_as_template(dict(
        MAPPINGS, pubsub_subscription="projects/demo-project/subscriptions/devices",
        fhir_url="https://fhir.example.org/fhir", fhir_auth="bearer", identity_mode="Lookup",
        dead_letter="gs://demo-bucket/dead"))
    assert job.proto.type.name == "JOB_TYPE_STREAMING"
    assert {"Read/ReadPubSub", "Normalize", "Group", "ToObservations", "WriteFhir", "AllDeadLetters"} <= names
    everything = str(job.proto) + str(job.proto_pipeline) + json.dumps(options.get_all_options(), default=str)
    assert "s3cr3t-token-value" not in everything
    assert "projects/demo-project/subscriptions/devices" in str(job.proto_pipeline)


def test_eventhubs_template_job_translates_without_the_secret(repo_cwd, tmp_path, monkeypatch, stub_kafka):
    monkeypatch.setenv(CONNECTION_STRING_ENV, SECRET)
    _, address = stub_kafka([kafka_row(1, "{}")])
    job, names, options = translate_as_template(dict(
        MAPPINGS, eventhub_name="devices", kafka_expansion_service=address,
        fhir_url="https://fhir.example.org/fhir", fhir_auth="azure", dead_letter="gs://demo-bucket/dead"))
    assert job.proto.type.name == "JOB_TYPE_STREAMING"
    assert {"Read/ReadKafka/ReadKafka", "Normalize", "WriteFhir"} <= names
    assert KEY not in str(job.proto) + str(job.proto_pipeline) + json.dumps(options.get_all_options(), default=str)


# ------------------------------------------------------------------ the Dockerfile (not built here)

def dockerfile():
    return DOCKERFILE.read_text(encoding="utf-8")


def test_dockerfile_base_image_is_the_installed_beam_and_python(capsys):
    text = dockerfile()
    (pin,) = re.findall(r"^apache-beam==(\S+)$", (REPO / "constraints.txt").read_text(), re.M)
    assert re.search(rf"^ARG BEAM_VERSION={re.escape(pin)}$", text, re.M)  # the default: .venv's Beam
    assert flex_template.tool_main(["--build-args"]) == 0
    assert capsys.readouterr().out.split() == ["--build-arg", f"BEAM_VERSION={apache_beam.__version__}"]
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert re.search(rf"^FROM apache/beam_python{re.escape(py)}_sdk:\$\{{BEAM_VERSION\}}$", text, re.M)
    assert re.search(rf"^FROM gcr.io/dataflow-templates-base/python{py.replace('.', '')}-template-launcher-base",
                     text, re.M)
    # pip keeps the image's Beam: the install names it exactly, after ARG brings it into the stage
    assert re.search(r'^ARG BEAM_VERSION\nRUN pip install --no-cache-dir \. "apache-beam\[gcp,aws,azure\]==\$\{BEAM_VERSION\}"',
                     text, re.M)
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text


def test_dockerfile_context_builds_the_package_in_the_beam_range(tmp_path):
    """Copy exactly what the Dockerfile COPYs, build the package's metadata from it (what
    ``pip install .`` does first): the packages and the launcher file are there and it requires
    the image's Beam, so pip keeps the image's Beam."""
    text = dockerfile()
    context = tmp_path / "template"
    context.mkdir()
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        *sources, dest = line.split()
        for s in sources:
            src = REPO / s
            assert src.exists(), f"Dockerfile copies {s}, which is missing"
            target = context / (dest.rstrip("/") if dest not in ("./", ".") else "") / (
                src.name if dest in ("./", ".") else "")
            if src.is_dir():
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(src, target)
    (py_file,) = re.findall(r"^ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/(\S+)$", text, re.M)
    assert (context / py_file).is_file()
    run = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
                         cwd=context, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (info,) = tmp_path.glob("*.egg-info")
    requires = (info / "requires.txt").read_text().splitlines()
    (beam,) = [r for r in requires if r.startswith("apache-beam")]
    assert beam == "apache-beam[aws,azure,gcp]<3,>=2.62"  # a range: the image's Beam (held above) is in it
    assert (2, 62) <= tuple(int(n) for n in apache_beam.__version__.split(".")[:2]) < (3,)
    sources = (info / "SOURCES.txt").read_text().splitlines()
    assert py_file in sources and "transforms/fhir/identity.py" in sources
