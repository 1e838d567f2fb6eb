"""The launcher's Kafka read on Flink keeps reading: the expansion service it starts asks for the
unbounded-source read, and the launch says so in one line when a read would stall; a missing
topic is one line naming it (``pipelines.run.kafka_checks``, ``pipelines.run.runners``).

The expansion test runs the real cached expansion service (Java, 10-60 s on a busy box) and looks
at the expanded graph: what the Flink runner will be given, without starting Flink.
"""
from types import SimpleNamespace

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.run import java_artifacts, kafka_checks
from pipelines.run.runners import kafka_expansion_args, kafka_expansion_service
from transforms.sources.kafka import KafkaSource, ReadKafkaDeviceEvents


def proto(*transforms):
    """A pipeline proto's shape: components.transforms of (unique_name, urn)."""
    return SimpleNamespace(components=SimpleNamespace(transforms={
        str(i): SimpleNamespace(unique_name=name, spec=SimpleNamespace(urn=urn))
        for i, (name, urn) in enumerate(transforms)}))


LEGACY = proto(("Read/ReadKafka/KafkaIO.Read", ""),
               ("Read/ReadKafka/KafkaIO.Read/KafkaIO.Read.ReadFromKafkaViaUnbounded/Read(KafkaUnboundedSource)",
                "beam:transform:read:v1"))
SPLITTABLE = proto(("Read/ReadKafka/KafkaIO.Read", ""),
                   ("Read/ReadKafka/KafkaIO.Read/KafkaIO.Read.ReadFromKafkaViaSDF/Impulse",
                    "beam:transform:impulse:v1"))


def test_the_flink_expansion_service_asks_for_the_live_read_and_dataflow_keeps_beams_default():
    assert kafka_expansion_args("FlinkRunner") == ["--defaultEnvironmentType=EMBEDDED",
                                                   "--experiments=use_deprecated_read"]
    assert kafka_expansion_args("apache_beam.runners.portability.flink_runner.FlinkRunner")[-1] == \
        "--experiments=use_deprecated_read"
    assert kafka_expansion_args("DataflowRunner") == [] and kafka_expansion_args(None) == []


def test_which_read_the_expanded_graph_holds():
    assert kafka_checks.kafka_read_keeps_reading(LEGACY) is True
    assert kafka_checks.kafka_read_keeps_reading(SPLITTABLE) is False
    assert kafka_checks.kafka_read_keeps_reading(proto(("Read/ReadFiles", "beam:transform:read:v1"))) is None


def test_one_warning_line_only_where_the_read_would_stall():
    line = kafka_checks.stall_warning("flink", SPLITTABLE, "localhost:8097")
    assert line and "\n" not in line and "localhost:8097" in line and "use_deprecated_read" in line
    assert "chosen by the launcher" in kafka_checks.stall_warning("flink", SPLITTABLE, None)
    assert kafka_checks.stall_warning("flink", LEGACY, "localhost:8097") is None
    assert kafka_checks.stall_warning("dataflow", SPLITTABLE, None) is None  # Dataflow checkpoints it


def test_a_missing_topic_is_one_line_naming_it():
    text = ("Pipeline BeamApp failed in state FAILED: java.lang.IllegalStateException: Could not find any "
            "partitions. Please check Kafka configuration and topic names")
    assert kafka_checks.missing_topic_error(text, "devices", eventhubs=False).startswith(
        "Kafka topic 'devices' does not exist")
    assert kafka_checks.missing_topic_error(text, "hub1", eventhubs=True).startswith("Event Hub 'hub1' does not exist")
    assert kafka_checks.missing_topic_error("java.net.ConnectException: refused", "devices", False) is None


@pytest.mark.java_jars  # Beam 2.62's expansion service: the .venv-flink leg
def test_the_launchers_expansion_service_for_flink_expands_kafka_io_to_the_live_read():
    """The real cached expansion service, started as the launcher starts it for FlinkRunner
    (Dataflow's empty flags are checked above; its expansion is Beam's default)."""
    if not java_artifacts.kafka_expansion_service_jar():
        pytest.fail("expansion service jar missing: run scripts/setup (setup-java)")
    p = beam.Pipeline(options=PipelineOptions(["--streaming"]))
    _ = p | ReadKafkaDeviceEvents(KafkaSource(topic="t", bootstrap_servers="127.0.0.1:9"),
                                  expansion_service=kafka_expansion_service("FlinkRunner"))
    graph = p.to_runner_api()
    assert kafka_checks.kafka_read_keeps_reading(graph) is True
    assert kafka_checks.stall_warning("flink", graph, None) is None
