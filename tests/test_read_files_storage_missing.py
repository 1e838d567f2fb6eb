"""A file that vanished between matching and reading, on each storage service (README: a
storage service's 404 is dead-lettered as ``FileNotFoundError``): the read unit becomes one
dead letter at stage ``read``, never a failed bundle, under the local name a runbook knows,
against the real emulators of tests/storage_fixtures.py. Each store answers a missing object
its own way, so each is checked: Google's client raises ``NotFound`` with the status (our code
maps it), Beam's S3 and Azure filesystems raise ``FileNotFoundError`` naming the path."""
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from storage_fixtures import AZURITE_ACCOUNT, azurite_connection_string
from transforms.records.dead_letter import DEAD_LETTER_TAG
from transforms.sources.files import ReadUnitFn

pytestmark = pytest.mark.storage_emulator


@pytest.fixture(autouse=True)
def worker_options(monkeypatch):
    """The options a runner gives the filesystems on a worker (S3 and Azure need them; the
    DoFn is called here directly, not by a runner)."""
    monkeypatch.setattr(FileSystems, "_pipeline_options", PipelineOptions([]))


def missing_object_dead_letters(root: str, message: str):
    """``message``: the dead letter's message for ``{path}`` (a status or the path, never a
    credential or a signed URL)."""
    for name, input_format in (("gone.jsonl", "body"), ("gone.avro", "capture-avro")):
        path = f"{root}/{name}"
        [dead] = list(ReadUnitFn(input_format).process((path, 0, None, 100)))
        assert dead.tag == DEAD_LETTER_TAG
        value = dead.value
        assert (value["stage"], value["error_type"]) == ("read", "FileNotFoundError"), value
        assert value["payload"]["file"] == path
        assert value["message"].split(" (Avro records")[0] == message.format(path=path)


def test_gcs_missing_object(gcs_emulator, monkeypatch, unique):
    from apache_beam.internal.gcp import auth
    from google.cloud import storage
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    monkeypatch.setattr(auth._Credentials, "_credentials_init", True)  # as in test_read_files_storage
    monkeypatch.setattr(auth._Credentials, "_credentials", None)
    storage.Client.create_anonymous_client().create_bucket(f"iomt-missing-{unique}")
    missing_object_dead_letters(f"gs://iomt-missing-{unique}", "the storage service answered HTTP 404 (NotFound)")


def test_s3_missing_object(s3_server, monkeypatch, unique):
    import boto3
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing-secret-key"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ENDPOINT_URL_S3", s3_server.endpoint)):
        monkeypatch.setenv(name, value)
    boto3.client("s3").create_bucket(Bucket=f"iomt-missing-{unique}")
    missing_object_dead_letters(f"s3://iomt-missing-{unique}", "Not found: {path}")


def test_azure_missing_blob(azurite, monkeypatch, unique):
    from azure.storage.blob import BlobServiceClient
    service = BlobServiceClient.from_connection_string(azurite_connection_string(azurite))
    service.create_container(f"missing-{unique}")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string(azurite))
    missing_object_dead_letters(f"azfs://{AZURITE_ACCOUNT}/missing-{unique}", "Not found: {path}")
