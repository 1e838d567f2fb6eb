"""The read stage against real storage emulators on loopback (tests/storage_fixtures.py):
Azurite for ``azfs://`` (where Event Hubs Capture lands), gcp-storage-emulator for ``gs://``,
moto's server for ``s3://``, through Beam's own filesystems. Credentials and endpoints come
from the environment as each SDK reads them; the job graph never holds them.

Each test uploads a Capture-style layout (two partitions of Capture Avro), a gzip JSON-lines
file and a truncated gzip, then reads a glob over it on FnApiRunner."""
import datetime as dt
import gzip
import json

import pytest

from archive_files import CAPTURE_SCHEMA, avro_bytes, capture_records, iot_events, summaries, summary
from storage_fixtures import AZURITE_ACCOUNT, AZURITE_KEY, azurite_connection_string

pytestmark = pytest.mark.storage_emulator

LINES = [json.dumps({"hr": 60 + i, "dev": "d1"}) for i in range(5)]


def archive_files():
    events = iot_events(6)
    full = gzip.compress(("\n".join(LINES * 50) + "\n").encode())
    return {
        "ns/hub/0/2024/01/01/08/00/00.avro": avro_bytes(CAPTURE_SCHEMA, capture_records(events[:3])),
        "ns/hub/1/2024/01/01/08/00/00.avro": avro_bytes(CAPTURE_SCHEMA, capture_records(events[3:])),
        "exports/p1/day.jsonl.gz": gzip.compress(("\n".join(LINES) + "\n").encode()),
        "exports/p2/cut.jsonl.gz": full[: len(full) // 2],
    }


def check_backfill(root: str, secret: str = None):
    """Read the uploaded files under ``root`` (scheme://bucket) through Beam's filesystem:
    a glob over a Capture layout and one over JSON-lines exports, in one pipeline."""
    def no_secret_in_graph(p):
        if secret:  # the options are what a job graph would carry of the environment
            assert secret not in json.dumps(p.options.get_all_options(), default=str)
    (events, dead), (lines, line_dead) = summaries(
        [(f"{root}/ns/hub/*/2024/01/01/*/*/*.avro", "capture-avro"), (f"{root}/exports/*/*.jsonl.gz", "body")],
        pipeline_check=no_secret_in_graph)
    assert [json.loads(text)["heartRate"] for text, _ in events] == [60, 61, 62, 63, 64, 65]
    assert not dead
    assert sorted(t for t, name in lines if name == "day.jsonl.gz") == sorted(LINES)
    assert [(d[0], d[1], d[2]) for d in line_dead] == [("read", "EOFError", "cut.jsonl.gz")]


def test_gcs(gcs_emulator, monkeypatch):
    from apache_beam.internal.gcp import auth
    from google.cloud import storage
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    # Beam 2.62 looks for Google credentials with 4 retries (~30 s) and probes the GCE
    # metadata server (not a loopback address) before it goes anonymous; record the outcome
    # that lookup has on a machine without credentials: none, anonymous client.
    monkeypatch.setattr(auth._Credentials, "_credentials_init", True)
    monkeypatch.setattr(auth._Credentials, "_credentials", None)
    client = storage.Client.create_anonymous_client()
    bucket = client.create_bucket("iomt-archive")
    for name, data in archive_files().items():
        bucket.blob(name).upload_from_string(data)
    check_backfill("gs://iomt-archive")


def test_s3(s3_server, monkeypatch):
    import boto3
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing-secret-key"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ENDPOINT_URL_S3", s3_server.endpoint)):
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="iomt-archive")
    for name, data in archive_files().items():
        s3.put_object(Bucket="iomt-archive", Key=name, Body=data)
    check_backfill("s3://iomt-archive", secret="testing-secret-key")


def test_azure_blob_storage_and_permission_denied(azurite, monkeypatch, caplog):
    from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas
    service = BlobServiceClient.from_connection_string(azurite_connection_string(azurite))
    container = service.create_container("capture")
    for name, data in archive_files().items():
        container.upload_blob(name, data)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string(azurite))
    check_backfill(f"azfs://{AZURITE_ACCOUNT}/capture", secret=AZURITE_KEY)

    # A SAS that may list but not read: every matched file is a PermissionError dead letter
    # of its own, nothing is read, the run still finishes.
    sas = generate_container_sas(AZURITE_ACCOUNT, "capture", account_key=AZURITE_KEY,
                                 permission=ContainerSasPermissions(list=True),
                                 expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string(azurite, sas))
    events, dead = summary(f"azfs://{AZURITE_ACCOUNT}/capture/ns/hub/*/2024/01/01/*/*/*.avro", "capture-avro",
                           pipeline_check=lambda p: _no(sas.split("sig=")[-1], p))
    assert events == []
    assert [d[:2] for d in dead] == [("read", "PermissionError")] * 2
    assert "HTTP 403" in dead[0][5] and "sig=" not in dead[0][5]
    assert all(sas.split("sig=")[-1] not in r.getMessage() for r in caplog.records)


def _no(secret, p):
    assert secret not in p.to_runner_api().SerializeToString().decode("latin-1")
