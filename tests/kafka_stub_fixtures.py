"""An offline stand-in for Kafka / Event Hubs: ``stub_kafka`` (registered from conftest.py)
starts an in-process gRPC expansion service that answers ``ReadFromKafka``'s expansion with a
Python ``Create`` of rows in KafkaIO's ``with_metadata`` schema and records each request (what
a real Java expansion service would receive, and what ends up in the job). Nothing is
downloaded. ``KEY``/``SECRET``: a made-up Event Hubs key and connection string, for the
checks that a secret never reaches a log, the job or its display data.
"""
import typing
from concurrent import futures

import apache_beam as beam
import grpc
import numpy as np
import pytest
from apache_beam.internal import pickler
from apache_beam.portability import python_urns
from apache_beam.portability.api import (beam_artifact_api_pb2_grpc, beam_expansion_api_pb2_grpc,
                                         beam_runner_api_pb2)
from apache_beam.runners.portability import artifact_service
from apache_beam.runners.portability.expansion_service import ExpansionServiceServicer

KEY = "c2VjcmV0LWtleS12YWx1ZS1mb3ItdGVzdHMtb25seQ+/="
SECRET = (f"Endpoint=sb://demo-ns.servicebus.windows.net/;SharedAccessKeyName=listen;"
          f"SharedAccessKey={KEY}")


class KafkaHeaderRow(typing.NamedTuple):
    key: str
    value: typing.Optional[bytes]


class KafkaRecordRow(typing.NamedTuple):  # KafkaIO's ByteArrayKafkaRecord schema (with_metadata)
    topic: str
    partition: np.int32
    offset: np.int64
    timestamp: np.int64
    key: typing.Optional[bytes]
    value: typing.Optional[bytes]
    headers: typing.Optional[typing.List[KafkaHeaderRow]]
    timestampTypeId: np.int32
    timestampTypeName: str


def kafka_row(offset, body, headers=(), timestamp=1767225600000):
    return KafkaRecordRow("devices", np.int32(0), np.int64(offset), np.int64(timestamp), b"k",
                          body.encode(), [KafkaHeaderRow(k, v) for k, v in headers], np.int32(1), "LogAppendTime")


class StubKafkaExpansion(ExpansionServiceServicer):
    """Answers the Kafka read's expansion with a Create of ``rows``; keeps each request."""

    def __init__(self, rows):
        super().__init__()
        self.rows = rows
        self.requests = []

    def Expand(self, request, context=None):
        self.requests.append(request)
        stubbed = type(request)()
        stubbed.CopyFrom(request)
        stubbed.transform.spec.CopyFrom(beam_runner_api_pb2.FunctionSpec(
            urn=python_urns.PICKLED_TRANSFORM,
            payload=pickler.dumps(beam.Create(self.rows).with_output_types(KafkaRecordRow))))
        return super().Expand(stubbed, context)


@pytest.fixture
def stub_kafka():
    servers = []

    def start(rows):
        stub = StubKafkaExpansion(rows)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        beam_expansion_api_pb2_grpc.add_ExpansionServiceServicer_to_server(stub, server)
        # The expanded (Python) environment's dependencies are resolved through the expansion
        # service's artifact service, as Beam's own expansion_service_main serves it.
        beam_artifact_api_pb2_grpc.add_ArtifactRetrievalServiceServicer_to_server(
            artifact_service.ArtifactRetrievalService(artifact_service.BeamFilesystemHandler(None).file_reader),
            server)
        port = server.add_insecure_port("localhost:0")
        server.start()
        servers.append(server)
        return stub, f"localhost:{port}"

    yield start
    for server in servers:
        server.stop(0)
